"""``softkvm`` command line, in QEMU's idiom.

``softkvm run [--smp N] [-m SIZE] [--gic v2|v3] [--irqchip kernel|user] [--initrd F]
[--append STR] [--dtb F] [--dump-dtb F] [--stats] [--timeout S] [--serial stdio|file:PATH]
(IMAGE | --kernel IMAGE)``

Exit status: 0 when the guest powers off (PSCI SYSTEM_OFF, or SYSTEM_RESET which ends the run as
QEMU's -no-reboot does); 1 with one readable line when it cannot (bad image, bad option, a guest
that hangs past --timeout); 2 for usage errors; 3 for an internal failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from softkvm.errors import ConfigError, SoftkvmError
from softkvm.vmm.config import VmConfig, parse_size
from softkvm.vmm.console import open_serial
from softkvm.vmm.stats_report import format_stats


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"softkvm: error: {message} (see 'softkvm {self.prog.split()[-1]} --help')\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="softkvm", description="KVM/arm64's interrupt machinery on an "
                     "emulated AArch64 core: boot arm64 guests on any host.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="boot a guest on a virt board")
    run.add_argument("image", nargs="?", type=Path, help="ELF, raw binary or Linux Image")
    run.add_argument("--kernel", type=Path, help="the same as IMAGE (QEMU's -kernel)")
    run.add_argument("--smp", type=int, default=1, help="number of vCPUs (default 1)")
    run.add_argument("-m", "--memory", default="256M", help="RAM size, e.g. 512M or 1G")
    run.add_argument("--gic", choices=("v2", "v3"), default="v3", help="GIC version")
    run.add_argument("--irqchip", choices=("kernel", "user"), default="kernel",
                     help="in-kernel vGIC, or a GICv2 emulated in the VMM")
    run.add_argument("--initrd", type=Path, help="initial ramdisk")
    run.add_argument("--append", default="", help="kernel command line (/chosen/bootargs)")
    run.add_argument("--dtb", type=Path, help="use this device tree instead of ours")
    run.add_argument("--dump-dtb", type=Path, help="write the generated device tree here")
    run.add_argument("--stats", action="store_true", help="print KVM's counters at exit")
    run.add_argument("--timeout", type=float, help="give up after this many seconds")
    run.add_argument("--serial", default="stdio", help="console: stdio (default) or file:PATH")
    return parser


def config_from_args(args: argparse.Namespace) -> VmConfig:
    if args.image and args.kernel:
        raise ConfigError("give the image either as IMAGE or with --kernel, not both")
    kernel = args.kernel or args.image
    if kernel is None:
        raise ConfigError("no guest image: give IMAGE or --kernel FILE")
    return VmConfig(kernel=kernel, smp=args.smp, mem_size=parse_size(args.memory), gic=args.gic,
                    irqchip=args.irqchip, initrd=args.initrd, append=args.append, dtb=args.dtb,
                    dump_dtb=args.dump_dtb, timeout=args.timeout, stats=args.stats,
                    console_out=open_serial(args.serial), console_in=sys.stdin.buffer)


def run_command(args: argparse.Namespace) -> int:
    from softkvm.vmm.builder import build

    config = config_from_args(args).validate()
    machine = build(config)
    try:
        result = machine.run()
    finally:
        machine.close()
    if config.stats:
        print(format_stats(machine.vm), file=sys.stderr)
    if result.exit_code:
        detail = f": {result.message}" if result.message else ""
        print(f"softkvm: {result.reason.value}{detail}", file=sys.stderr)
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return run_command(args)
    except SoftkvmError as err:
        print(f"softkvm: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("softkvm: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("SOFTKVM_DEBUG"):
            raise
        print(f"softkvm: internal error: {type(err).__name__}: {err} "
              "(set SOFTKVM_DEBUG=1 for a traceback)", file=sys.stderr)
        return 3
