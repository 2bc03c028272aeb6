"""The JSONL form of the op language: one JSON object per line, as ``Op.to_json`` writes it.

Integers only (no floats, NaN or 40+-digit numbers), each field of its type, and only the
fields the op takes; every op is then checked against the kernel's ranges (``check_op``).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ParseError
from .language import KINDS, Op, check_op, check_script

# Fields of the JSONL form and the types they take.
_JSON_FIELDS = {
    "addr": int, "length": int, "prot": int, "flags": list, "advice": str, "new_len": int,
    "new_addr": (int, type(None)), "write": bool, "name": (str, type(None)),
    "mode": (str, type(None)), "nodes": list, "fd": (str, type(None)), "offset": int,
    "index": int,
}
# Which fields each kind takes (others must be absent).
_KIND_FIELDS = {
    "mmap": {"addr", "length", "prot", "flags", "fd", "offset"},
    "munmap": {"addr", "length"},
    "mprotect": {"addr", "length", "prot"},
    "madvise": {"addr", "length", "advice"},
    "mremap": {"addr", "length", "new_len", "new_addr", "flags"},
    "touch": {"addr", "write"},
    "fork": {"index"},
    "name": {"addr", "length", "name"},
    "mbind": {"addr", "length", "mode", "nodes"},
    "heap": {"addr"},
    "brk": {"addr"},
    "mlock": {"addr", "length", "flags"},
    "munlock": {"addr", "length"},
    "mlockall": {"flags"},
    "munlockall": set(),
    "mseal": {"addr", "length"},
    "exit": {"index"},
    "memfd": {"name", "length"},
    "pkey_alloc": set(),
    "pkey_mprotect": {"addr", "length", "prot", "index"},
    "uffd": {"addr", "length", "flags"},
}



def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a number an op takes")


def _parse_int(token: str) -> int:
    if len(token.lstrip("-")) > 40:
        raise ValueError("an integer of more than 40 digits")
    return int(token)


def _parse_float(token: str) -> Any:
    raise ValueError(f"{token} is not an integer")


def op_from_json(data: dict[str, Any], source: str = "<json>", lineno: int = 0) -> Op:
    """Inverse of Op.to_json (the JSONL form of the language), validated like text."""
    def fail(expected: str) -> ParseError:
        return ParseError(source, lineno or None, f"expected {expected}")

    if not isinstance(data, dict):
        raise fail("a JSON object")
    kind = data.get("op")
    if not isinstance(kind, str) or kind not in KINDS:
        raise fail('"op": one of ' + ", ".join(KINDS))
    kwargs: dict[str, Any] = {}
    allowed = _KIND_FIELDS[kind]
    for key, value in data.items():
        if key == "op":
            continue
        if key not in allowed:
            raise fail(f"{kind}: fields {', '.join(sorted(allowed)) or '(none)'}; "
                       f"found {key[:40]!r}")
        types = _JSON_FIELDS[key]
        if isinstance(value, bool) and types is int or not isinstance(value, types):
            raise fail(f"{kind}: {key} of another type ({type(value).__name__} found)")
        kwargs[key] = value
    if "flags" in kwargs:
        if not all(isinstance(f, str) for f in kwargs["flags"]):
            raise fail(f"{kind}: flags as a list of names")
        kwargs["flags"] = frozenset(kwargs["flags"])
    elif kind == "mmap":
        kwargs["flags"] = frozenset({"private"})
    if kind == "mmap" and kwargs.get("fd") is None:
        kwargs["flags"] = kwargs["flags"] | {"anonymous"}  # implied, as in the text form
    if "nodes" in kwargs:
        kwargs["nodes"] = tuple(kwargs["nodes"])
    if kind == "fork":
        kwargs.setdefault("index", -1)  # no index: the script's process forks
    op = Op(kind, line=lineno, **kwargs)
    problem = check_op(op)
    if problem:
        raise fail(f"{kind}: {problem}")
    return op


def parse_jsonl(text: str, source: str = "<jsonl>") -> list[Op]:
    ops = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw, parse_constant=_reject_constant, parse_int=_parse_int,
                              parse_float=_parse_float)
        except json.JSONDecodeError as exc:
            raise ParseError(source, lineno, f"expected a JSON object ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ParseError(source, lineno, f"expected a JSON object of integers and "
                             f"strings ({why})") from None
        if not isinstance(data, dict):
            raise ParseError(source, lineno, "expected a JSON object")
        ops.append(op_from_json(data, source, lineno))
    problem = check_script(ops)
    if problem:
        raise ParseError(source, problem[0] or None, problem[1])
    return ops
