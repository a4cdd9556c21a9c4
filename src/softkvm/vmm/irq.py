"""The one contract between a device and whatever delivers its interrupt.

Counterpart: QEMU's ``qemu_irq``/``qemu_set_irq`` and rust-vmm's interrupt-line traits. A device
holds an :class:`InterruptLine` and never knows what is behind it: the in-kernel vGIC
(``Vm.irq_line`` with ``KVM_ARM_IRQ_TYPE_SPI``), an irqfd, the userspace GICv2, or a test fake.
"""

from __future__ import annotations

from typing import Protocol


class InterruptLine(Protocol):
    """A level-sensitive wire from one device output to one interrupt controller input.

    Semantics:
    - ``set_level(True)`` asserts the line, ``set_level(False)`` deasserts it. The level is the
      device's current output, not an event: the controller latches nothing beyond it.
    - Devices call it only when their output changes (never twice with the same level), so an
      implementation may forward every call without filtering.
    - It may be called from any thread (a vCPU thread doing MMIO, the VMM's input thread), with
      the device's own lock held to keep level changes in order. It must therefore not call back
      into the device, and must not block for long.
    """

    def set_level(self, level: bool) -> None: ...
