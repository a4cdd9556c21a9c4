"""``softkvm`` command line, in QEMU's idiom.

``softkvm run [--smp N] [-m SIZE] [--gic v2|v3] [--irqchip kernel|user] [--initrd F]
[--append STR] [--dtb F] [--dump-dtb F] [--stats] [--timeout S] [--serial stdio|file:PATH]
[--stat-socket PATH | --no-stat-socket] [--trace FILE.json] (IMAGE | --kernel IMAGE)``

``softkvm stat [PID | --socket PATH] [--once | -n COUNT] [--interval S] [--all] [--json]``: a
running VM's counters, live, with rates per second (as kvm_stat).

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
from softkvm.vmm import stat_socket
from softkvm.vmm.config import VmConfig, parse_size
from softkvm.vmm.console import open_serial
from softkvm.vmm.stats_report import print_stats, snapshot


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
    run.add_argument("--dtb-randomness", choices=("on", "off"), default="on",
                     help="fresh kaslr-seed and rng-seed in the generated tree's /chosen "
                     "(default on, as QEMU's virt dtb-randomness)")
    run.add_argument("--stats", action="store_true", help="print KVM's counters at exit")
    serve = run.add_mutually_exclusive_group()
    serve.add_argument("--stat-socket", type=Path, metavar="PATH",
                       help="serve live counters on this Unix socket (default: a per-PID one "
                       "that 'softkvm stat PID' finds)")
    serve.add_argument("--no-stat-socket", action="store_true", help="serve no live counters")
    run.add_argument("--timeout", type=float, help="give up after this many seconds")
    run.add_argument("--trace", type=Path, metavar="FILE.json", help="record KVM's tracepoints "
                     "and write them at exit as a Perfetto / Chrome JSON trace")
    run.add_argument("--serial", default="stdio", help="console: stdio (default) or file:PATH")
    _add_stat_parser(sub)
    return parser


def _add_stat_parser(sub: argparse._SubParsersAction) -> None:
    stat = sub.add_parser("stat", help="show a running VM's counters live, like kvm_stat")
    stat.add_argument("pid", nargs="?", type=int,
                      help="the 'softkvm run' process (default: the only one running)")
    stat.add_argument("--socket", type=Path, metavar="PATH",
                      help="read this socket (run --stat-socket PATH)")
    stat.add_argument("--interval", type=float, default=1.0, metavar="S",
                      help="seconds between refreshes (default 1)")
    stat.add_argument("-n", "--count", type=int, help="exit after COUNT refreshes")
    stat.add_argument("--once", action="store_true", help="one refresh, then exit (-n 1)")
    stat.add_argument("--all", action="store_true", help="also show counters still at zero")
    stat.add_argument("--json", action="store_true",
                      help="print the raw snapshots, one JSON object per line")


def config_from_args(args: argparse.Namespace) -> VmConfig:
    if args.image and args.kernel:
        raise ConfigError("give the image either as IMAGE or with --kernel, not both")
    kernel = args.kernel or args.image
    if kernel is None:
        raise ConfigError("no guest image: give IMAGE or --kernel FILE")
    return VmConfig(kernel=kernel, smp=args.smp, mem_size=parse_size(args.memory), gic=args.gic,
                    irqchip=args.irqchip, initrd=args.initrd, append=args.append, dtb=args.dtb,
                    dump_dtb=args.dump_dtb, dtb_randomness=args.dtb_randomness == "on",
                    timeout=args.timeout, stats=args.stats,
                    trace=args.trace,
                    stat_socket=args.stat_socket or (
                        None if args.no_stat_socket else stat_socket.default_socket_path()),
                    stat_socket_optional=args.stat_socket is None,
                    console_out=open_serial(args.serial), console_in=sys.stdin.buffer)


def run_command(args: argparse.Namespace) -> int:
    from softkvm.vmm.builder import build

    config = config_from_args(args).validate()
    machine = build(config)
    try:
        with stat_socket.serving(config, lambda: snapshot(machine.vm)):
            result = machine.run()
    finally:
        machine.close()
    if config.stats:
        print_stats(snapshot(machine.vm), sys.stderr)
    if machine.trace_records is not None:
        print(f"softkvm: trace: {machine.trace_records} records in {config.trace} (open it in "
              "https://ui.perfetto.dev)", file=sys.stderr)
    if result.exit_code:
        detail = f": {result.message}" if result.message else ""
        print(f"softkvm: {result.reason.value}{detail}", file=sys.stderr)
    return result.exit_code


def stat_command(args: argparse.Namespace) -> int:
    if args.pid is not None and args.socket is not None:
        raise ConfigError("give either a PID or --socket PATH, not both")
    if args.interval <= 0 or (args.count is not None and args.count < 1):
        raise ConfigError("--interval must be positive and -n at least 1")
    count = 1 if args.once else args.count
    options = stat_socket.WatchOptions(args.interval, count, args.all, args.json)
    path, what = stat_socket.find_socket(args.pid, args.socket)
    client = stat_socket.StatClient.connect(path, what)
    try:
        return stat_socket.watch(client, sys.stdout, options)
    except KeyboardInterrupt:
        return 0  # the way to leave a live view
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return stat_command(args) if args.command == "stat" else run_command(args)
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
