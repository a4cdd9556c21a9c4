"""``KvmError``: an ioctl that fails, as KVM would fail it (errno + what to do)."""

import errno as _errno

from softkvm.errors import SoftkvmError


class KvmError(SoftkvmError):
    """API misuse, reported with the errno the real ioctl would set."""

    def __init__(self, errno: int, message: str) -> None:
        self.errno = errno
        name = _errno.errorcode.get(errno, str(errno))
        super().__init__(f"{name}: {message}")
