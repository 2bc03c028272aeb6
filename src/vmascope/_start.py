"""The ``vmascope`` console script: Ctrl-C at any point once vmascope's code runs is one
line ("vmascope: interrupted", exit 130), never a traceback, also while the CLI's
modules are still being imported.

(Before this module runs, the interpreter itself starts: a Ctrl-C in those first
milliseconds is Python's own business; docs/reliability.md has the figure.)
"""

import sys

_interrupted = False


def _on_sigint(signum: int, frame: object) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _unraisable(hook_args: object) -> None:
    # A KeyboardInterrupt raised inside a callback the interpreter cannot propagate
    # (an import lock's weakref callback, a __del__) would print "Exception ignored"
    # with a traceback and be lost: remember it, and end as interrupted.
    global _interrupted
    if isinstance(getattr(hook_args, "exc_value", None), KeyboardInterrupt):
        _interrupted = True  # acted on when the command returns
        return
    sys.__unraisablehook__(hook_args)  # type: ignore[arg-type]


def _interrupted_exit() -> None:
    sys.stderr.write("vmascope: interrupted\n")
    sys.exit(130)


def entry() -> None:
    try:
        sys.unraisablehook = _unraisable
        import signal

        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
        from .cli import main
        from .output import run_cli

        code = run_cli(main)
    except KeyboardInterrupt:
        _interrupted_exit()
    except Exception:
        # A module interrupted while it initialises can turn the KeyboardInterrupt into
        # another error (numpy: ImportError; a class body: RuntimeError): the
        # interruption is the cause.
        if _interrupted:
            _interrupted_exit()
        raise
    if _interrupted and code == 0:
        _interrupted_exit()
    sys.exit(code)
