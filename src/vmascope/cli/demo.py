"""`vmascope demo`: start a small process that fragments its heap like a GC, then look at it.

The child reserves a region PROT_NONE and commits it page by page in the order a GC that
commits every other page first would; every committed page is written, so each gets its
own anon_vma and the kernel cannot merge the pieces back. vmascope then snapshots the live
child and explains what it sees. The child is always killed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from ..errors import LabError
from .common import add_verb

CHILD = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
pages, page = int(sys.argv[1]), mmap.PAGESIZE
base = libc.mmap(None, pages * page, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000, -1, 0)
if base in (None, ctypes.c_void_p(-1).value):
    sys.exit("mmap failed")
for first in (0, 1):                      # even pages first, then the odd ones between them
    for i in range(first, pages, 2):
        if libc.mprotect(base + i * page, page, mmap.PROT_READ | mmap.PROT_WRITE):
            sys.exit("mprotect failed")
        ctypes.c_char.from_address(base + i * page).value = b"a"
print(hex(base), flush=True)
sys.stdin.read()
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "demo", "fragment a child's heap like a GC, then snapshot and explain it",
                 "Start a child that commits a reservation page by page as a GC does, then "
                 "snapshot and explain it.", run=run)
    p.add_argument("--pages", type=int, default=4000, help="pages the child commits (default 4000)")
    p.add_argument("--report", metavar="FILE", default="vmascope-demo.html",
                   help="where to write the HTML report of the child (default %(default)s)")


GLOSSARY = (  # two lines of at most 80 columns
    "VMA: a line of /proc/PID/maps. Reservation: PROT_NONE space committed in pieces.\n"
    "anon_vma: the kernel's record of written anon pages; VMAs with two never merge.\n"
)


def run(args: argparse.Namespace) -> int:
    from . import main

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(args.pages)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        if not line:
            raise LabError("demo child failed to build its heap")
        import textwrap

        sys.stdout.write(GLOSSARY)
        print(textwrap.fill(f"demo: pid {child.pid} committed {args.pages} pages of a "
                            f"reservation at {line.strip()}, every other page first",
                            width=80), flush=True)
        rc = main(["snapshot", str(child.pid)])
        if rc == 0:
            rc = main(["analyze", str(child.pid)])
        if rc == 0:
            sys.stdout.flush()  # before the line on stderr that names the report
            rc = main(["analyze", str(child.pid), "--format", "html", "-o", args.report])
        if rc == 0:
            print("Next, on your own process (its pid, or a saved maps/smaps dump):\n"
                  "  vmascope analyze --pid $(pgrep -n YOUR_PROGRAM) --format html "
                  "-o report.html", flush=True)
        return rc
    finally:
        child.kill()
        child.wait(timeout=10)
