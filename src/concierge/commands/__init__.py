"""Thin CLI shells (typer) over the core packages."""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType


def exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """A SIGTERM handler that ends the command through SystemExit (exit status 128 + 15), so its
    ``finally`` blocks run: child services stopped, engines closed. SIGTERM's default action ends
    the process at once; uvicorn, which catches it while serving, raises it again when it is done."""
    raise SystemExit(128 + signum)


def stop_on_sigterm() -> Callable[[], None]:
    """Install :func:`exit_on_sigterm` (main thread only: elsewhere ``signal`` cannot); returns what
    puts the previous handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)
