"""Every byte vmascope writes goes through here: output files (``-o``) and stdout.

Output files
    :func:`safe_write` writes to a temporary file beside the target and renames it into
    place once everything is written and synced, so a reader never sees a partial file
    and a failure (no space, no permission, Ctrl-C) leaves nothing behind. The target
    must be a regular file or not exist yet: a symbolic link, a device node (``-o
    /dev/null``), a FIFO, a socket or a directory is refused, because the rename would
    replace it with a regular file. (To write to a pipe or a terminal, leave out ``-o``:
    the report goes to standard output.) Any failure is an :class:`OutputError` (exit 8)
    naming the file.

Standard output
    :func:`guard_stdout` makes a failed write to stdout (a full disk, ``> /dev/full``,
    an I/O error) an :class:`OutputError` too, instead of a traceback; a reader that
    went away (``| head``) still ends the program quietly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import OutputError

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_target(path: str | os.PathLike[str]) -> Path:
    """``path`` if it may be written (a regular file or nothing yet); else OutputError."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_why(exc)}") from None
    if stat.S_ISREG(st.st_mode):
        return path
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
    raise OutputError(
        f"{path}: is {kind}, not a regular file; refusing to replace it "
        "(leave out -o to write to standard output)"
    )


class _File:
    """A file object whose write errors are OutputErrors naming the target."""

    def __init__(self, fh: IO[Any], path: Path) -> None:
        self._fh = fh
        self._path = path

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            raise OutputError(f"{self._path}: cannot write: {_why(exc)}") from None

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            raise OutputError(f"{self._path}: cannot write: {_why(exc)}") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@contextlib.contextmanager
def safe_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` atomically (temporary file + rename); see the module docstring."""
    path = check_target(path)
    tmp: str | None = None
    fh: IO[Any] | None = None
    try:
        # The name is chosen before the file is created (one system call), so the
        # clean-up below knows it whenever a signal interrupts.
        for _ in range(100):
            tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileExistsError:
                tmp = None
            except OSError as exc:
                tmp = None
                raise OutputError(f"{path}: cannot write here: {_why(exc)}") from None
        else:
            raise OutputError(f"{path}: cannot write here: no free temporary name")
        fh = os.fdopen(fd, mode)
        try:
            yield _File(fh, path)  # type: ignore[misc]
            try:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
            except OSError as exc:
                raise OutputError(f"{path}: cannot write: {_why(exc)}") from None
        finally:
            if not fh.closed:
                # what is still buffered cannot be written: closing tries once more
                with contextlib.suppress(OSError):
                    fh.close()
        check_target(path)  # it may have become something else meanwhile
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {_why(exc)}") from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


# -- standard output -----------------------------------------------------------------------


class _GuardedStream:
    """Proxy of a text stream whose write/flush errors become OutputError.

    BrokenPipeError is let through: the caller ends quietly, as ``cat`` does.
    """

    def __init__(self, stream: Any, label: str) -> None:
        self._stream = stream
        self._label = label

    def _fail(self, exc: OSError) -> OutputError:
        # What is still buffered can never be written: send it (and anything later) to
        # /dev/null, so that the error is reported once, not again at every flush.
        _discard_stdout(self._stream)
        return OutputError(f"{self._label}: cannot write: {_why(exc)}")

    def write(self, data: str) -> int:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._fail(exc) from None

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._fail(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _discard_stdout(stream: Any = None) -> None:
    """Point stdout's fd at /dev/null so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = (stream or sys.stdout).fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


@contextlib.contextmanager
def guard_stdout() -> Iterator[None]:
    """While inside, sys.stdout write errors are OutputError; the last flush is checked."""
    real = sys.stdout
    sys.stdout = _GuardedStream(real, "standard output")  # type: ignore[assignment]
    try:
        yield
        sys.stdout.flush()
    finally:
        sys.stdout = real


def run_cli(main: Callable[[], int]) -> int:
    """Run the CLI's ``main`` with stdout guarded; the exit status.

    Errors that reach here (a failed last flush of stdout, Ctrl-C while the CLI's
    modules are still being imported) are one line on stderr, never a traceback.
    """
    try:
        with guard_stdout():
            return main()
    except OutputError as exc:
        _discard_stdout()
        print(f"vmascope: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        _discard_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        _discard_stdout()
        print("vmascope: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT

