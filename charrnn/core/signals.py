"""Stop signals: Ctrl-C (SIGINT), SIGTERM (batch schedulers, Kubernetes, `timeout`) and SIGHUP (a closed
terminal). By default SIGTERM and SIGHUP end the process at once, skipping every `finally` block, so a file
being written is left behind half done; while these helpers are active they are handled as Ctrl-C is, or
turned into a request to stop at the next safe point.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _handling(handler) -> Iterator[None]:
    """`handler` for every stop signal while the block runs (only the main thread can install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def raise_on_signals():
    """While a file is being written (a corpus encoded, activations dumped), SIGTERM and SIGHUP interrupt at
    once, as Ctrl-C does, so that the files being written are cleaned up by their `finally` blocks instead of
    left behind."""
    return _handling(_interrupt)


@contextlib.contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[None]:
    """While active, Ctrl-C, SIGTERM and SIGHUP ask a loop to stop at its next safe point (training: after
    the current step, with a checkpoint) by setting `event`; a second signal interrupts at once."""

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    with _handling(handler):
        yield
