"""What every module shares: the user-error type, device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch


class CharRNNError(Exception):
    """A problem with the user's input (file, option, checkpoint), not a bug.

    The message is one line that says what was wrong and how to fix it; the CLI prints it and exits 2.
    """


def resolve_device(name: str = "auto") -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N|mps` into a device; auto prefers CUDA, then MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CharRNNError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CharRNNError("--device cuda was asked for but this PyTorch sees no CUDA GPU: use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CharRNNError("--device mps was asked for but MPS is not available here: use --device auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise CharRNNError(f"unsupported device {name!r}: use auto, cpu, cuda or mps")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
