"""softkvm: KVM/arm64's virtual interrupt and timer machinery around an emulated AArch64 core.

Layers, lowest first: ``arch`` (facts) -> ``hw`` (the emulated silicon) -> ``kvm`` (the
"kernel") -> ``vmm`` (the userspace side) -> ``cli``. Imports point down only.
"""

__version__ = "0.1.0"
