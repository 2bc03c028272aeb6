"""The ``vmascope`` console script: Ctrl-C at any point once vmascope's code runs is one
line ("vmascope: interrupted", exit 130), never a traceback, also while the CLI's
modules are still being imported. SIGTERM and SIGHUP end it with 128 + the signal after
the same clean-up (no partial output file).

(Before this module runs, the interpreter itself starts: a Ctrl-C in those first
milliseconds is Python's own business; docs/reliability.md has the figure.)
"""

import os
import sys

_interrupted = False
_terminated: int | None = None


RETRY = 0.002  # seconds: a signal that came during an import is acted on after it


def _importing(frame: object) -> bool:
    """Whether the interrupted code runs inside an import. An extension module whose
    initialisation is cut short (numpy: "ImportError: _multiarray_umath failed to
    import") prints its own error and leaves the interpreter unable to shut down."""
    f = frame
    while f is not None:
        if f.f_code.co_filename.startswith("<frozen importlib"):  # type: ignore[attr-defined]
            return True
        f = f.f_back  # type: ignore[attr-defined]
    return False


def _later(signum: int) -> None:
    import signal

    signal.signal(signal.SIGALRM, lambda _s, f: _deliver(signum, f))
    signal.setitimer(signal.ITIMER_REAL, RETRY)


def _deliver(signum: int, frame: object) -> None:
    if _importing(frame):
        _later(signum)
        return
    if signum == 2:  # SIGINT
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _on_sigint(signum: int, frame: object) -> None:
    global _interrupted
    _interrupted = True
    _deliver(signum, frame)


def _on_terminate(signum: int, frame: object) -> None:
    global _terminated
    _terminated = 128 + signum
    _deliver(signum, frame)


def _unraisable(hook_args: object) -> None:
    # A KeyboardInterrupt raised inside a callback the interpreter cannot propagate
    # (an import lock's weakref callback, a __del__) would print "Exception ignored"
    # with a traceback and be lost: remember it, and end as interrupted.
    global _interrupted, _terminated
    exc = getattr(hook_args, "exc_value", None)
    if isinstance(exc, KeyboardInterrupt):
        _interrupted = True  # acted on when the command returns
        return
    if isinstance(exc, SystemExit):  # SIGTERM, SIGHUP
        _terminated = exc.code if isinstance(exc.code, int) else 1
        return
    sys.__unraisablehook__(hook_args)  # type: ignore[arg-type]


def _exit_now(code: int) -> None:
    """After a signal, once everything has unwound (a file being written is removed):
    flush and leave without the interpreter's finalisation, which can crash in an
    extension module whose import the signal cut short."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class _Stderr:
    """sys.stderr that remembers whether anything was written: a signal that lands
    just after an error line adds no second line."""

    def __init__(self, stream: object) -> None:
        self._stream = stream
        self.used = False

    def write(self, text: str) -> int:
        self.used = self.used or bool(text)
        return self._stream.write(text)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def _interrupted_exit() -> None:
    if not getattr(sys.stderr, "used", False):
        sys.stderr.write("vmascope: interrupted\n")
    _exit_now(130)


# Commands that read and report, and write only through closed files and stdout: they
# may leave without the interpreter's teardown (see _leave).
_QUICK_EXIT = frozenset({"snapshot", "analyze", "analyse"})


def _leave(code: int) -> None:
    """End the process once the command is done and its output written. After a
    command of _QUICK_EXIT, the interpreter's own teardown (every module and object
    freed one at a time: about 30 ms after ``analyze`` of 2M VMAs) is skipped when
    nothing could need it: no atexit callback is registered (weakref.finalize, an
    embedding program's), no thread but daemons is left to wait for, and standard
    output and error flush cleanly. Otherwise the usual exit, which reports what it
    finds."""
    import atexit
    import threading

    ncallbacks = getattr(atexit, "_ncallbacks", None)
    if (sys.argv[1:2] and sys.argv[1] in _QUICK_EXIT and ncallbacks is not None
            and ncallbacks() == 0 and all(t.daemon or t is threading.main_thread()
                                          for t in threading.enumerate())):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)
        os._exit(code)
    sys.exit(code)


def entry() -> None:
    if sys.argv[1:] == ["--version"]:  # the quickest answer: no parser, no imports
        from . import __version__

        try:
            sys.stdout.write(f"vmascope {__version__}\n")
            sys.stdout.flush()
        except OSError as exc:  # > /dev/full, | true: as any other command would end
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            if isinstance(exc, BrokenPipeError):
                os._exit(141)
            sys.stderr.write(f"vmascope: error: standard output: cannot write: "
                             f"{exc.strerror}\n")
            os._exit(8)
        sys.exit(0)
    try:
        sys.unraisablehook = _unraisable
        sys.stderr = _Stderr(sys.stderr)  # type: ignore[assignment]
        import signal

        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
        # SIGTERM and SIGHUP unwind like Ctrl-C (so a file being written is removed,
        # not left half-written) and end with 128 + the signal, silently.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, _on_terminate)
        from ._prefetch import prefetch

        prefetch(sys.argv[1:])  # before the CLI's modules load
        from .cli import main
        from .output import run_cli

        code = run_cli(main)
        # The command is done and its output written: a signal from now on would only
        # turn a clean exit into a kill while the interpreter shuts down.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
    except KeyboardInterrupt:
        _interrupted_exit()
    except SystemExit:
        if _terminated is not None:
            _exit_now(_terminated)
        raise
    except Exception:
        # A module interrupted while it initialises can turn the KeyboardInterrupt into
        # another error (numpy: ImportError; a class body: RuntimeError): the
        # interruption is the cause.
        if _terminated is not None:
            _exit_now(_terminated)
        if _interrupted:
            _interrupted_exit()
        raise
    if _terminated is not None:
        _exit_now(_terminated)
    if _interrupted:
        if code == 0:  # the interrupt was lost in a callback: it still ends the command
            _interrupted_exit()
        _exit_now(code)
    _leave(code)
