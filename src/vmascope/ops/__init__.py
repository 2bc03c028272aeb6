"""The operation language shared by the simulator, the lab and traces."""

from .jsonl import op_from_json, parse_jsonl
from .language import (
    KINDS,
    MADV_NUMBERS,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    Op,
    format_number,
    format_op,
    load_script,
    parse_line,
    parse_number,
    parse_script,
    prot_text,
    script_text,
)

__all__ = [
    "KINDS", "MADV_NUMBERS", "PAGE_SIZE", "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE",
    "Op", "format_number", "format_op", "load_script", "op_from_json", "parse_jsonl",
    "parse_line", "parse_number", "parse_script", "prot_text", "script_text",
]
