"""Helpers shared by verb modules: the conventions every verb follows.

* ``TARGET`` (a pid, a file or -) or ``--pid PID``, where a verb reads a process;
* ``--format text|json[|html]``, with ``--json`` the same as ``--format json``;
* ``-o FILE``: the output goes to FILE (written atomically) and one line on standard
  error says what was written (``vmascope: wrote FILE (N bytes)``);
* ``--max-map-count N`` wherever the headroom is computed, for a dump without the limit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


TRACE_TARGET = "<the trace's last snapshot>"


def add_target(parser: Any, help_text: str | None = None) -> None:
    parser.add_argument(
        "target",
        metavar="TARGET", nargs="?",
        help=help_text
        or "a pid, a snapshot file, a raw maps or smaps text file, or - for stdin",
    )
    parser.add_argument("--pid", metavar="PID", dest="pid_option",
                        help="the process to read (the same as giving PID as TARGET)")
    parser.set_defaults(_takes_target=True)


def add_format(parser: Any, formats: tuple[str, ...] = ("text", "json"),
               json_help: str = "the same as --format json") -> None:
    parser.add_argument("--format", choices=formats, default="text",
                        help="output format (default text)")
    parser.add_argument("--json", dest="format", action="store_const", const="json",
                        help=json_help)


def add_output(parser: Any, help_text: str = "write the output to FILE (atomically) "
               "instead of standard output; one line on stderr says what was written") -> None:
    parser.add_argument("-o", "--output", metavar="FILE", help=help_text)


def add_max_map_count(parser: Any) -> None:
    parser.add_argument("--max-map-count", type=int, metavar="N",
                        help="vm.max_map_count to compute the headroom against (default: "
                        "the snapshot's, or this host's for a live process)")


def finish_args(args: argparse.Namespace) -> None:
    """What every verb's arguments go through after parsing: the target (TARGET or
    --pid), ``args.json`` from ``--format``, and the checks the conventions share."""
    from ..errors import UsageError

    if getattr(args, "_takes_target", False):
        pid = args.pid_option
        if pid is not None:
            if args.target is not None:
                raise UsageError("give TARGET or --pid PID, not both")
            if not pid.strip().isdigit():
                raise UsageError(f"--pid: not a pid: {pid!r}")
            args.target = pid.strip()
        elif args.target is None and getattr(args, "target_from_trace", False) and args.trace:
            args.target = TRACE_TARGET  # analyze --trace: the trace's end state
        elif args.target is None:
            raise UsageError("expected a TARGET (a pid, a file or -) or --pid PID")
    if hasattr(args, "format"):
        args.json = args.format == "json"
    mmc = getattr(args, "max_map_count", None)
    if mmc is not None and mmc < 1:
        raise UsageError("--max-map-count must be at least 1")


def wrote(path: str, size: int) -> None:
    """The one line that says what ``-o FILE`` wrote (on stderr: stdout stays clean)."""
    print(f"vmascope: wrote {path} ({size:,} bytes)", file=sys.stderr)


def write_output(path: str, text: str) -> None:
    """``text`` into ``path`` through the one safe writer, then the line that says so."""
    from ..output import safe_write

    data = text.encode()
    with safe_write(path, "wb") as fh:
        fh.write(data)
    wrote(path, len(data))


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


def add_verb(subparsers: Any, name: str, help_text: str, description: str,
             run: Callable[[argparse.Namespace], int] | None = None,
             aliases: tuple[str, ...] = ()) -> Any:
    """Add a verb's parser (and its ``run``): every verb module starts with this."""
    p = subparsers.add_parser(name, help=help_text, description=description,
                              aliases=list(aliases))
    if run is not None:
        p.set_defaults(run=run)
    return p


def add_group(subparsers: Any, name: str, help_text: str, description: str) -> Any:
    """A verb with commands of its own (``lab run``): returns the commands' subparsers.
    The verb alone prints its help and exits 2."""
    p = add_verb(subparsers, name, help_text, description)
    p.set_defaults(run=lambda args: (p.print_help(sys.stderr), 2)[1])
    return p.add_subparsers(dest=f"{name}_cmd", metavar="COMMAND", parser_class=type(p))


def add_kernel_view(parser: Any, what: str) -> None:
    parser.add_argument(
        "--kernel-view", action=argparse.BooleanOptionalAction, default=None,
        help=f"{what} also read each VMA's anon_vma, page offset and open file from the "
        "kernel (a BPF iterator; needs root and a kernel with BTF; built on first use). "
        "Where it cannot be read, one line says why and /proc alone is used. Default: "
        "off, unless the environment sets VMASCOPE_KERNEL_VIEW=1")


def kernel_view_notice(exc: Exception) -> None:
    """The one line that says the kernel view could not be read (the run goes on with
    /proc alone: the reasons are inferred)."""
    print(f"vmascope: {exc}", file=sys.stderr)


def read_live(pid: int | str, option: bool | None, **kwargs: Any) -> Any:
    """/proc/PID read into a Snapshot, with the kernel view when it is wanted (the
    option, else the setting) and can be read; otherwise a notice and /proc alone."""
    from ..errors import KernelViewUnavailable
    from ..procfs import kview
    from ..procfs.live import read_process

    if kview.wanted(option):
        try:
            return kview.read_consistent(int(pid), lambda: read_process(pid, **kwargs))
        except KernelViewUnavailable as exc:
            kernel_view_notice(exc)
    return read_process(pid, **kwargs)
