"""The CNN encoder that `caption` and `ctc` share: conv + BatchNorm + ReLU blocks over normalised pixels.

Shapes: B batch, C channels, S image side (H x W for text lines), h x w the feature grid.

    images (B, 3, S, S) uint8  ->  normalise  ->  [conv3x3 - BN - ReLU - maxpool] x n  ->  grid (B, C, h, w)

The caption model averages the grid into one vector (the decoder's initial state) and attends over its
cells; the line reader pools its height away and reads the width as time. Only the pooling differs.
Input normalisation and BatchNorm are not optional: without them a captioner's decoder learned only the
language model and gave every image the same caption while the training loss still fell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from charrnn.core.errors import CharRNNError


class PixelNormalisation(nn.Module):
    """Per-channel pixel mean and std, kept with the weights so a checkpoint normalises new images exactly as
    in training. Fitted on the training images, or ImageNet's for a pretrained ResNet."""

    def __init__(self, channels: int, mean: float | tuple = 0.5, std: float | tuple = 0.25):
        super().__init__()
        self.register_buffer("pixel_mean", torch.as_tensor(mean, dtype=torch.float32).expand(channels).clone())
        self.register_buffer("pixel_std", torch.as_tensor(std, dtype=torch.float32).expand(channels).clone())

    @torch.no_grad()
    def fit_normalisation(self, images) -> None:
        """Set the input normalisation from a sample of uint8 images (N, S, S, C) (a NumPy array is fine)."""
        sample = np.array(images[: min(len(images), 2048)])  # a copy: the cache is a read-only memory-map
        x = torch.from_numpy(sample).float().div_(255)
        x = x.reshape(-1, x.shape[-1])
        self.pixel_mean.copy_(x.mean(0))
        self.pixel_std.copy_(x.std(0).clamp_min(1e-3))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) to normalised float (B, C, H, W)."""
        x = images.permute(0, 3, 1, 2).float().div(255)
        return (x - self.pixel_mean[:, None, None]) / self.pixel_std[:, None, None]


class ConvEncoder(PixelNormalisation):
    """Images to a feature grid. `pools[k]` is block k's max-pool (height, width) stride: (2, 2) halves both,
    (2, 1) keeps the width (the time axis of a text line)."""

    def __init__(self, channels: tuple[int, ...], in_channels: int = 3,
                 pools: tuple[tuple[int, int], ...] | None = None):
        super().__init__(in_channels)
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
        self.downsampling = 2 ** len(channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature grid (B, C, h, w) of uint8 images (B, S, S, channels) or (B, H, W, channels)."""
        return self.blocks(self.normalise(images))


RESNETS = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ResNetEncoder(PixelNormalisation):
    """A torchvision ResNet without its pooling and classifier: (B, S, S, 3) uint8 to (B, C, S/32, S/32).

    Built with random weights (nothing is ever downloaded); `load_weights(FILE)` reads a local torchvision
    state dict with `weights_only=True`. Only used when torchvision is installed."""

    def __init__(self, name: str):
        super().__init__(3, IMAGENET_MEAN, IMAGENET_STD)
        try:
            import torchvision
        except ImportError:
            raise CharRNNError(f"--encoder {name} needs torchvision (a build matching your torch): pip install "
                               "torchvision, or use the built-in --encoder cnn") from None
        net = getattr(torchvision.models, name)(weights=None)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                                  net.layer4)
        self.out_channels = net.fc.in_features
        self.downsampling = 32

    def load_weights(self, path: str | Path) -> None:
        """Weights from a local torchvision checkpoint of the same architecture (its classifier is ignored)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CharRNNError(f"--encoder-weights {str(path)!r}: no such file") from None
        except Exception:  # noqa: BLE001 - anything else means the file is not usable weights
            raise CharRNNError(f"--encoder-weights {str(path)!r} is not a state dict torch can read safely "
                               "(weights_only); save one with torch.save(model.state_dict(), FILE)") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else {}
        ours = {f"body.{k}": v for k, v in _torchvision_names(state).items()}
        expected = {k: v.shape for k, v in self.state_dict().items() if not k.startswith("pixel_")}
        missing = [k for k in expected if k not in ours]
        wrong = [k for k in ours if k not in expected or getattr(ours[k], "shape", None) != expected[k]]
        if missing or wrong:
            raise CharRNNError(f"--encoder-weights {str(path)!r} does not fit this ResNet ({len(missing)} weights "
                               f"missing, {len(wrong)} unknown or of another shape, e.g. {(missing or wrong)[0]}); "
                               "give the state dict of the same architecture")
        self.load_state_dict(ours, strict=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalise(images))


def _torchvision_names(state: dict) -> dict:
    """A torchvision ResNet state dict renamed to `body`'s Sequential indices; the classifier (fc) dropped."""
    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in index:
            out[f"{index[head]}.{rest}"] = value
    return out


def make_encoder(name: str, channels: tuple[int, ...]) -> nn.Module:
    """The built-in CNN (`cnn`) or a torchvision ResNet by name."""
    return ConvEncoder(channels) if name == "cnn" else ResNetEncoder(name)
