"""The user-error type every module raises, and the stop request that long work raises. Torch-free."""

from __future__ import annotations

from collections.abc import Callable


class CharRNNError(Exception):
    """A problem with the user's input (file, option, checkpoint), not a bug.

    The message is one line that says what was wrong and how to fix it; the CLI prints it and exits 2.
    """


class CharRNNWarning(UserWarning):
    """Something the user should know that did not stop the work (a damaged best.pt read from its last.pt
    instead); one line, which the CLI prints on stderr."""


class StopRequested(Exception):
    """A stop was asked for (Ctrl-C, SIGTERM, a caller's event) during long work that checks for one between
    batches (an evaluation, a decoding). Not a user error: the training loop turns it into a checkpoint and a
    resumable stop, as a signal during a step."""


def check_stop(should_stop: Callable[[], bool] | None) -> None:
    """Raise `StopRequested` when `should_stop()` says so (None: never)."""
    if should_stop is not None and should_stop():
        raise StopRequested
