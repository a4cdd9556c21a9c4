"""Typed host-side errors shared by every layer.

Guest misbehaviour never raises: it gets the architectural answer. These are for the host:
a bad image, a bad option, a wrong API call. Each message says what to do.
"""


class SoftkvmError(Exception):
    """Base of every error softkvm raises on purpose."""


class ConfigError(SoftkvmError):
    """A bad option or configuration value."""


class ImageError(SoftkvmError):
    """A kernel, ELF, raw image, initrd or DTB that cannot be loaded."""


class GuestTimeout(SoftkvmError):
    """The guest did not power off within the allowed time."""
