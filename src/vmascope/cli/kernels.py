"""``vmascope kernels list|fetch|path``: the kernels the lab can boot."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_format, add_group, add_output, print_json


def register(subparsers: Any) -> None:
    sub = add_group(subparsers, "kernels",
                    "list, fetch or locate the Debian kernels the lab boots",
                    "Debian cloud kernels by suite (5.10 = bullseye, 6.1 = bookworm, 6.12 = "
                    "trixie, stable = trixie-backports, newest = sid, next = experimental), "
                    "fetched with apt into the cache, plus the host's own kernel.")
    ls = sub.add_parser("list", help="the known kernels and whether they are fetched")
    add_format(ls)
    add_output(ls)
    ls.set_defaults(run=run_list)
    fe = sub.add_parser("fetch", help="fetch kernels (default: all of them)")
    fe.add_argument("names", nargs="*", metavar="KERNEL", help="5.10, 6.1, 6.12, stable, newest, next or a suite")
    fe.add_argument("--force", action="store_true", help="fetch again even if cached")
    fe.set_defaults(run=run_fetch)
    pa = sub.add_parser("path", help="print the vmlinuz path of a kernel (fetching it if needed)")
    pa.add_argument("name", metavar="KERNEL")
    pa.add_argument("--no-fetch", action="store_true", help="fail instead of fetching")
    pa.set_defaults(run=run_path)


def _alias(name: str) -> str:
    from ..errors import KernelError
    from ..lab import kernels

    if name in kernels.SUITES:
        return name
    if name in kernels.SUITE_ALIASES:
        return kernels.SUITE_ALIASES[name]
    raise KernelError(f"unknown kernel {name!r}: expected one of "
                     + ", ".join([*kernels.SUITES, *kernels.SUITES.values()]))


def run_list(args: argparse.Namespace) -> int:
    from ..lab import kernels
    from ..util import cache_dir

    host = kernels.host_kernel()
    rows: list[dict[str, Any]] = [{"name": "host", "suite": None, "fetched": True,
                                   "version": host.version, "release": host.release, "path": None}]
    for alias, suite in kernels.SUITES.items():
        info = kernels.cached(alias)
        row: dict[str, Any] = {"name": alias, "suite": suite, "fetched": info is not None,
                               "version": None, "release": None, "path": None}
        if info:
            path = cache_dir("kernels") / info["file"]
            row.update(version=info["version"], path=str(path), package=info["package"])
            if path.exists():
                row["release"] = kernels.vmlinuz_version(path)[0]
        rows.append(row)
    if args.json:
        print_json(rows)
        return 0
    from rich.console import Console

    from ..report.lab import print_kernels

    print_kernels(rows, Console(highlight=False))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from ..lab import kernels
    from ..util import cache_dir

    from ..report.progress import display

    names = [_alias(n) for n in args.names] or list(kernels.SUITES)
    with display() as bar:
        tasks = {a: bar.add_task(f"{a} ({kernels.SUITES[a]})", total=None, state="waiting")
                 for a in names}
        for alias in names:
            bar.update(tasks[alias], state="fetching with apt (index, package, vmlinuz)")
            info = kernels.fetch(alias, force=args.force)
            bar.update(tasks[alias], state="done", total=1, completed=1)
            print(f"{alias}: {info['package']} {info['version']} -> "
                  f"{cache_dir('kernels') / info['file']}")
    return 0


def run_path(args: argparse.Namespace) -> int:
    from ..lab import kernels

    if args.name == "host":
        from ..errors import UsageError

        raise UsageError("the host kernel has no vmlinuz for the lab: it runs scripts directly")
    print(kernels.kernel_path(_alias(args.name), fetch=not args.no_fetch))
    return 0
