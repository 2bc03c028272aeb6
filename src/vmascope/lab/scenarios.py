"""Named lab scenarios, written as op scripts (arena-relative addresses).

* ``seed``, ``seed-hack``: the seed investigation's C program (6 pages reserved PROT_NONE,
  the pre-step at page 5, then three workers that each make 2 pages read-write at
  ``id * 2`` pages and write their first byte). Each worker sleeps
  ``((3 - id) % 3 + 1) * 10`` seconds first, so they run in the order id 0 (10 s),
  id 2 (20 s), id 1 (30 s). The hack maps the 6 pages read-write, writes the first byte
  (an anon_vma for the whole range) and makes the first page PROT_NONE, exactly as in the
  seed's code, before the same steps.
* ``merge-*``: the anonymous-merge cases of the kernel's tools/testing/selftests/mm/merge.c
  (a 30-page PROT_NONE carve-out mapped over with MAP_FIXED; "far away" moves go 1000 or
  2000 pages up, inside the arena). The selftests that continue inside a forked child
  cannot be written in the op language (its ``fork`` keeps the parent running the
  script) and are not included.
* ``exhaust``: the seed's pattern repeated up to vm.max_map_count; see :func:`exhaust`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import ParseError, UsageError
from ..kconst import DEFAULT_MAX_MAP_COUNT
from ..ops.language import Op, load_script, parse_script

# The seed's pre-step and its three workers, in the order their sleeps give:
# second = (3 - id) % 3 + 1, so id 0 sleeps 10 s, id 2 20 s and id 1 30 s.
_SEED_STEPS = """\
# pre-step: give page 5 an anon_vma, then make it PROT_NONE again
mprotect 5p 1p rw-
touch 5p
mprotect 5p 1p ---
# worker id 0 (sleeps 10 s)
mprotect 0p 2p rw-
touch 0p
# worker id 2 (sleeps 20 s)
mprotect 4p 2p rw-
touch 4p
# worker id 1 (sleeps 30 s)
mprotect 2p 2p rw-
touch 2p
"""

SEED = """\
# the seed's reproducer: reserve 6 pages
mmap 0 6p ---
""" + _SEED_STEPS

SEED_HACK = """\
# the seed's pre-fault hack: map read-write and fault once, so one anon_vma covers all
mmap 0 6p rw-
touch 0p
mprotect 0p 1p ---
""" + _SEED_STEPS

# The non-PROT_NONE VMAs each selftest leaves, in pages, as its diagrams and asserts say
# (they are written for kernels with the 6.16 anonymous-merge
# fix, 879bca0a2c4f).
MERGE_EXPECT_616: dict[str, list[tuple[int, int]]] = {
    "merge-mprotect-unfaulted-left": [(1, 11)],
    "merge-mprotect-unfaulted-right": [(1, 11)],
    "merge-mprotect-unfaulted-both": [(2, 11)],
    "merge-mprotect-faulted-left-unfaulted-right": [(2, 11)],
    "merge-mprotect-unfaulted-left-faulted-right": [(2, 11)],
    "merge-mremap-unfaulted-to-faulted": [(1, 11)],
    "merge-mremap-unfaulted-behind-faulted": [(1, 11)],
    "merge-mremap-unfaulted-between-faulted": [(1, 11), (11, 16)],
    "merge-mremap-unfaulted-between-faulted-unfaulted": [(1, 16)],
    "merge-mremap-unfaulted-between-correctly-placed-faulted": [(1, 16)],
    "merge-mremap-correct-placed-faulted": [(1, 11), (2011, 2016)],  # ptr3 stays away
}

# The selftests' op scripts (lab/merge/NAME.ops), in the order of merge.c.
MERGE_DIR = Path(__file__).with_name("merge")
MERGE: dict[str, str] = {name: (MERGE_DIR / f"{name}.ops").read_text()
                         for name in MERGE_EXPECT_616}


def exhaust(max_map_count: int = DEFAULT_MAX_MAP_COUNT, blocks: int | None = None) -> list[Op]:
    """The seed's commit pattern repeated until vm.max_map_count is reached.

    One large PROT_NONE reservation; every 7-page block runs the seed's program on its
    first 6 pages (the 7th stays a PROT_NONE guard between blocks). Kernels before the
    6.16 anonymous-merge fix keep 3 VMAs a block, later ones 2, so ENOMEM (a failed
    mprotect to read-write: the seed's "Failed to create RW mapping") arrives at a
    different op depending on the kernel.
    """
    if blocks is None:
        blocks = max_map_count // 3 + 16
    text = [f"mmap 0 {7 * blocks + 1}p ---"]
    for b in range(blocks):
        p = 7 * b
        text += [f"mprotect {p + 5}p 1p rw-", f"touch {p + 5}p", f"mprotect {p + 5}p 1p ---"]
        for first in (0, 4, 2):
            text += [f"mprotect {p + first}p 2p rw-", f"touch {p + first}p"]
    return parse_script("\n".join(text) + "\n", "exhaust")


SCENARIOS: dict[str, Callable[[], list[Op]]] = {
    "seed": lambda: parse_script(SEED, "seed"),
    "seed-hack": lambda: parse_script(SEED_HACK, "seed-hack"),
    **{name: (lambda text=text, name=name: parse_script(text, name))
       for name, text in MERGE.items()},
}


def names() -> list[str]:
    return [*SCENARIOS, "exhaust"]


def get(name: str, *, max_map_count: int | None = None) -> list[Op]:
    if name == "exhaust":
        return exhaust(max_map_count or DEFAULT_MAX_MAP_COUNT)
    if name == "merge":
        raise UsageError("several merge scenarios exist: " + ", ".join(MERGE))
    try:
        return SCENARIOS[name]()
    except KeyError:
        import difflib

        near = difflib.get_close_matches(name, names(), n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise UsageError(f"{name}: no such script file, and an unknown scenario ({hint}"
                         "`vmascope lab scenarios` lists them)") from None


def load(spec: str, *, max_map_count: int | None = None, base: int = 0) -> list[Op]:
    """What ``simulate`` and ``lab`` accept as a script: an op script file (text or JSONL),
    ``-`` for standard input, or a scenario's name. A scenario's addresses are relative to
    an arena: ``base`` places it (the lab's backends place every script themselves)."""
    if spec == "-":
        return load_script(sys.stdin.read(), "<stdin>")
    if not os.path.lexists(spec) and "/" not in spec:
        ops = get(spec, max_map_count=max_map_count)
        return [op.shifted(base) for op in ops] if base else ops
    from ..procfs.load import open_input

    with open_input(spec, spec, "an op script file or a scenario's name") as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(spec, None, "expected a text op script (not valid UTF-8)") from None
    return load_script(text, spec)


def text(name: str) -> str:
    if name == "seed":
        return SEED
    if name == "seed-hack":
        return SEED_HACK
    if name in MERGE:
        return MERGE[name]
    raise UsageError(f"no text for scenario {name!r}")
