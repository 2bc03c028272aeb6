"""Error types. Each carries the exit code the CLI returns for it.

A user's mistake (a bad pid, a malformed dump, a bad option) becomes one of these and is
printed as one line on stderr; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VmascopeError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(VmascopeError):
    """Bad command-line arguments or an impossible request."""

    exit_code = 2


class ProcessNotFound(VmascopeError):
    """The pid does not exist, or exited while it was being read."""

    exit_code = 3

    def __init__(self, pid: int, detail: str = "") -> None:
        msg = f"pid {pid}: no such process" + (f" ({detail})" if detail else "")
        super().__init__(msg)
        self.pid = pid


class AccessDenied(VmascopeError):
    """The process exists but its /proc files cannot be read."""

    exit_code = 4

    def __init__(self, pid: int, path: str, advice: str) -> None:
        # the advice comes from host.read_access_advice: why, and what to do
        super().__init__(f"pid {pid}: permission denied reading {path}: {advice}")
        self.pid = pid
        self.path = path


class FileAccessDenied(VmascopeError):
    """An input file exists but the user may not read it."""

    exit_code = 4

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: permission denied (cannot read it as this user)")
        self.path = path


class KernelThread(VmascopeError):
    """The pid is a kernel thread: it exists but has no user address space."""

    exit_code = 3

    def __init__(self, pid: int) -> None:
        super().__init__(f"pid {pid} is a kernel thread: it has no address space")
        self.pid = pid


class ParseError(VmascopeError):
    """Malformed input: names the file and line and what was expected."""

    exit_code = 5

    def __init__(self, source: str, line: int | None, expected: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {expected}")
        self.source = source
        self.line = line
        self.expected = expected


class SnapshotFormatError(ParseError):
    """A snapshot file that is truncated, corrupt or of an unknown version."""


class KernelError(VmascopeError):
    """A kernel could not be fetched, found or booted."""

    exit_code = 6


class LabError(VmascopeError):
    """The lab could not run a script (compiler missing, executor crashed, timeout)."""

    exit_code = 7


class OutputError(VmascopeError):
    """An output file could not be written (no such directory, no space, no permission)."""

    exit_code = 8


class KernelViewUnavailable(VmascopeError):
    """The BPF kernel view cannot be read here (not root, no BTF, no compiler, ...). The
    commands turn it into a one-line notice and go on with /proc alone."""

    exit_code = 10


class RecordingUnavailable(VmascopeError):
    """A process cannot be recorded here (not root, no BTF, not x86_64, no compiler,
    ...): one line saying why."""

    exit_code = 11
