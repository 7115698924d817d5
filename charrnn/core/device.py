"""The machine a run uses: device choice, numeric precision and seeding."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from charrnn.core.errors import CharRNNError


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


def bf16_is_native(device: torch.device) -> bool:
    """Whether this device does bfloat16 arithmetic in hardware (Ampere+ GPUs; CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` becomes bf16 where the hardware computes it natively, else fp32."""
    if precision == "auto":
        return "bf16" if bf16_is_native(device) else "fp32"
    if precision == "bf16" and device.type == "mps":
        raise CharRNNError("--precision bf16 is not supported on MPS here; use --precision fp32")
    return precision


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed forward pass at `precision` ("fp32" or "bf16").

    bf16 autocast runs the matrix products in bfloat16; weights, optimizer state and anything carried
    between steps stay in float32. On a CPU without native bfloat16 (AVX2 only), oneDNN has no bf16 LSTM
    kernel and fails to build one, so there oneDNN is switched off for the forward pass: the LSTM then
    runs PyTorch's own float32 kernel, as GRU and RNN layers do on every CPU, and the rest stays bf16.
    """
    if precision != "bf16":
        yield
        return
    emulated = device.type == "cpu" and not bf16_is_native(device)
    previous = torch.backends.mkldnn.enabled
    if emulated:
        torch.backends.mkldnn.enabled = False
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        torch.backends.mkldnn.enabled = previous


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
