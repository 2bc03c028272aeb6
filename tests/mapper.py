"""A test process with a chosen number of VMAs: ``python mapper.py N [GROW_PER_S]``.

It maps one PROT_NONE region and makes every other page readable (each page its own
VMA), prints its map count once ready, then (with GROW_PER_S) adds that many VMAs a
second. It exits when its stdin closes or after 300 s, whichever comes first.
"""

import ctypes
import os
import select
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_NONE, PROT_READ = 0, 1
MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0x02, 0x20, 0x4000


def map_count() -> int:
    with open("/proc/self/maps", "rb") as fh:
        return fh.read().count(b"\n")


def main() -> None:
    if os.environ.get("MAPPER_COMM"):
        with open("/proc/self/comm", "w") as fh:
            fh.write(os.environ["MAPPER_COMM"])
    want = int(sys.argv[1])
    grow = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    pages = 2 * (want + 20_000) + 2
    base = libc.mmap(None, pages * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0)
    if base in (None, ctypes.c_void_p(-1).value):
        sys.exit("mmap failed")
    done = [0]

    def add(n: int) -> None:
        for _ in range(n):
            libc.mprotect(base + (2 * done[0] + 1) * PAGE, PAGE, PROT_READ)
            done[0] += 1

    # each readable page inside the PROT_NONE region is one VMA more (two boundaries)
    add(max(0, (want - map_count()) // 2))
    while map_count() < want:
        add(1)
    print(map_count(), flush=True)
    deadline = time.monotonic() + 300
    last = time.monotonic()
    while time.monotonic() < deadline:
        r, _, _ = select.select([sys.stdin], [], [], 0.05 if grow else 5)
        if r and not os.read(sys.stdin.fileno(), 4096):
            return
        if grow:
            now = time.monotonic()
            add(int((now - last) * grow / 2))
            last = now


if __name__ == "__main__":
    main()
