"""The CNN encoder that `caption` and `ctc` share: conv + BatchNorm + ReLU blocks over normalised pixels.

Shapes: B batch, C channels, S image side (H x W for text lines), h x w the feature grid.

    images (B, 3, S, S) uint8  ->  normalise  ->  [conv3x3 - BN - ReLU - maxpool] x n  ->  grid (B, C, h, w)

The caption model averages the grid into one vector (the decoder's initial state) and attends over its
cells; the line reader pools its height away and reads the width as time. Only the pooling differs.
Input normalisation and BatchNorm are not optional: without them a captioner's decoder learned only the
language model and gave every image the same caption while the training loss still fell.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ConvEncoder(nn.Module):
    """Images to a feature grid. `pools[k]` is block k's max-pool (height, width) stride: (2, 2) halves both,
    (2, 1) keeps the width (the time axis of a text line)."""

    def __init__(self, channels: tuple[int, ...], in_channels: int = 3,
                 pools: tuple[tuple[int, int], ...] | None = None):
        super().__init__()
        pools = pools or tuple((2, 2) for _ in channels)
        assert len(pools) == len(channels), "one pooling stride per block"
        blocks, c_in = [], in_channels
        for c_out, pool in zip(channels, pools):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if pool != (1, 1):
                blocks.append(nn.MaxPool2d(pool, pool))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = c_in
        # Per-channel pixel mean and std of the training images (set by `fit_normalisation`), kept with the
        # weights so a checkpoint normalises new images exactly as in training.
        self.register_buffer("pixel_mean", torch.full((in_channels,), 0.5))
        self.register_buffer("pixel_std", torch.full((in_channels,), 0.25))

    @torch.no_grad()
    def fit_normalisation(self, images) -> None:
        """Set the input normalisation from a sample of uint8 images (N, S, S, C) (a NumPy array is fine)."""
        sample = np.array(images[: min(len(images), 2048)])  # a copy: the cache is a read-only memory-map
        x = torch.from_numpy(sample).float().div_(255)
        x = x.reshape(-1, x.shape[-1])
        self.pixel_mean.copy_(x.mean(0))
        self.pixel_std.copy_(x.std(0).clamp_min(1e-3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature grid (B, C, h, w) of uint8 images (B, S, S, channels) or (B, H, W, channels)."""
        x = images.permute(0, 3, 1, 2).float().div(255)  # (B, channels, S, S)
        x = (x - self.pixel_mean[:, None, None]) / self.pixel_std[:, None, None]
        return self.blocks(x)
