"""The user-error type every module raises. Torch-free."""

from __future__ import annotations


class CharRNNError(Exception):
    """A problem with the user's input (file, option, checkpoint), not a bug.

    The message is one line that says what was wrong and how to fix it; the CLI prints it and exits 2.
    """
