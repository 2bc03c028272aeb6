"""Parsing /proc text into Snapshot columns (the C extension does the line work).

The line formats are those of fs/proc/task_mmu.c (show_map_vma, show_smap,
show_smap_vma_flags) and mm/mempolicy.c (show_numa_map):

* maps:  ``START-END PERMS OFFSET MAJOR:MINOR INODE`` then, for a named VMA, spaces up to
  column 73 and the name (``seq_pad``); an unnamed VMA ends in one space.
* smaps: a maps line followed by ``Key:   N kB`` lines (kept in bytes), plain numbers
  (``THPeligible``, ``ProtectionKey``) and ``VmFlags: rd wr ...``.
* numa_maps: ``START POLICY key=value ...``.

Names are kept exactly as printed: the kernel escapes a newline in a path as ``\\012``
(``seq_file_path(m, file, "\\n")``); :func:`unescape_name` undoes that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model import Snapshot, SnapshotMeta
from .text import (TextParser, parse_kb_fields, parse_rollup,  # noqa: F401 - re-exported
                   parse_status)

DELETED_SUFFIX = " (deleted)"


def _col(res: Mapping[str, Any], key: str, dtype: Any) -> np.ndarray:
    return np.frombuffer(res[key], dtype=dtype)


def snapshot_from_result(res: Mapping[str, Any], meta: SnapshotMeta | None = None, *,
                         numa: Mapping[str, Any] | None = None) -> Snapshot:
    """A Snapshot whose columns are the parser's buffers (no copy); ``numa``: a
    numa_maps parse whose policies are attached (VMAs it does not match are counted in
    ``meta.extra["numa_unmatched"]``)."""
    smaps = {
        name: np.frombuffer(col, dtype=np.int64)
        for name, col in zip(res["field_names"], res["fields"])
    }
    meta = meta or SnapshotMeta()
    if res.get("skipped_lines"):
        meta.extra["skipped_smaps_lines"] = int(res["skipped_lines"])
    snap = Snapshot(
        start=_col(res, "start", np.uint64),
        end=_col(res, "end", np.uint64),
        perms=_col(res, "perms", np.uint8),
        offset=_col(res, "offset", np.uint64),
        dev=_col(res, "dev", np.uint32),
        inode=_col(res, "inode", np.uint64),
        name_id=_col(res, "name_id", np.int32),
        names=res["names"],
        meta=meta,
        smaps=smaps,
        vmflags=_col(res, "vmflags", np.uint64) if res["has_vmflags"] else None,
        flag_names=res["flag_names"],
    )
    if numa is not None:
        unmatched = attach_numa(snap, numa)
        if unmatched:
            meta.extra["numa_unmatched"] = unmatched
    return snap


def attach_numa(snap: Snapshot, res: Mapping[str, Any]) -> int:
    """Set ``policy_id``/``policies`` from a numa_maps parse, matching VMAs by start.

    Returns how many numa_maps lines matched no VMA (the process changed between the
    reads, or a dump of another process).
    """
    starts = _col(res, "start", np.uint64)
    pol = _col(res, "name_id", np.int32)
    policy_id = np.full(len(snap), -1, dtype=np.int32)
    k = len(starts)
    if k <= len(snap) and np.array_equal(starts, snap.start[:k]):
        # the usual case: the same VMAs in both reads, but the [vsyscall] page at the
        # top of maps (the gate area is no VMA of the mm: numa_maps leaves it out)
        policy_id[:k] = pol
        snap.policy_id = policy_id
        snap.policies = list(res["names"])
        return 0
    if len(snap) and len(starts):
        idx = np.searchsorted(snap.start, starts)
        inside = idx < len(snap)
        ok = np.zeros(len(starts), dtype=bool)
        ok[inside] = snap.start[idx[inside]] == starts[inside]
        policy_id[idx[ok]] = pol[ok]
        unmatched = int(len(starts) - ok.sum())
    else:
        unmatched = len(starts)
    snap.policy_id = policy_id
    snap.policies = list(res["names"])
    return unmatched


def parse_text(
    data: bytes | str, source: str = "<text>", meta: SnapshotMeta | None = None
) -> Snapshot:
    """Parse a whole maps or smaps text (which one is seen from the content)."""
    if isinstance(data, str):
        data = os.fsencode(data)
    parser = TextParser(source)
    parser.feed(data)
    res = parser.finish()
    meta = meta or SnapshotMeta()
    if meta.source == "unknown":
        meta.source = "smaps-dump" if res["field_lines"] else "maps-dump"
    return snapshot_from_result(res, meta)


def parse_numa_text(data: bytes | str, source: str = "<numa_maps>") -> dict[str, Any]:
    if isinstance(data, str):
        data = os.fsencode(data)
    parser = TextParser(source, kind="numa")
    parser.feed(data)
    return parser.finish()


_HEADER_LINE = re.compile(rb"^[0-9a-fA-F]+-.*\n?", re.M)


def maps_text_from_smaps(smaps: bytes) -> bytes:
    """The maps text inside smaps text: smaps prints each VMA's maps line (the same
    show_map_vma() output) before its fields, so this is /proc/PID/maps byte for byte."""
    return b"".join(m.group(0) for m in _HEADER_LINE.finditer(smaps))


_ESCAPE = re.compile(rb"\\([0-7]{3})")


def unescape_name(name: str) -> str:
    """Undo the kernel's octal escapes (``\\012`` for a newline in a path)."""
    raw = os.fsencode(name)
    if b"\\" not in raw:
        return name
    return os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), raw))


def split_deleted(name: str) -> tuple[str, bool]:
    """('/memfd:x (deleted)') -> ('/memfd:x', True): the file was unlinked."""
    if name.endswith(DELETED_SUFFIX):
        return name[: -len(DELETED_SUFFIX)], True
    return name, False
