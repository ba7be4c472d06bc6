"""Ctrl-C that cannot be lost.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT arrives. If
that is inside a ``__del__`` method or a weakref callback (run by the garbage collector in the
middle of a training step), the exception is printed as "Exception ignored" and dropped, and the
run goes on. :func:`install` makes SIGINT also set a flag, and long loops call :func:`check`,
which raises ``KeyboardInterrupt`` again once the flag is set, so a dropped interrupt is raised at
the next iteration instead.
"""
from __future__ import annotations

import signal
import threading

_requested = False


def _on_sigint(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through the flag (main thread only; a no-op elsewhere or where SIGINT is ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # e.g. a background job started with nohup
        return
    signal.signal(signal.SIGINT, _on_sigint)


def requested() -> bool:
    return _requested


def check() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT arrived (its first raise may have been dropped)."""
    if _requested:
        raise KeyboardInterrupt


def reset() -> None:
    global _requested
    _requested = False
