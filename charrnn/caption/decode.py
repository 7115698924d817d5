"""Captions for images: greedy, sampled or beam-search decoding of many images, and `charrnn caption sample`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from charrnn.caption.config import CaptionTrainConfig
from charrnn.caption.model import Captioner, Decoded, beam_search, decode, load_captioner
from charrnn.core.errors import CharRNNError

EVAL_BATCH = 128


def caption_images(model: Captioner, tokenizer, images, *, max_len: int, beam_size: int = 1,
                   length_alpha: float = 0.0, temperature: float = 0.0,
                   generator: torch.Generator | None = None) -> list[Decoded]:
    """A caption for each of `images` (N, S, S, 3) uint8, decoded in batches (greedy, sampled or beam)."""
    device = model.head.weight.device
    out: list[Decoded] = []
    ends = dict(bos=tokenizer.eod_id, eos=tokenizer.eod_id, max_len=max_len)
    for start in range(0, len(images), EVAL_BATCH):
        batch = torch.from_numpy(np.array(images[start:start + EVAL_BATCH])).to(device)
        if beam_size > 1:
            out += beam_search(model, batch, beam_size=beam_size, length_alpha=length_alpha, **ends)
        else:
            out += decode(model, batch, temperature=temperature, generator=generator, **ends)
    return out


def read_image_files(paths: list[Path], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8, each file decoded exactly as the training cache decodes it."""
    from charrnn.caption.data import decode_image

    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                out[k] = decode_image(f, size)
        except FileNotFoundError:
            raise CharRNNError(f"no such image: {str(path)!r}") from None
        except (OSError, ValueError) as e:  # Pillow: not an image, truncated, unsupported
            raise CharRNNError(f"{str(path)!r} cannot be read as an image ({e})") from None
    return out


def describe_images(checkpoint: str | os.PathLike, paths: list[Path], *, beam_size: int = 1,
                    length_alpha: float = 0.0, temperature: float = 0.0, num_samples: int = 1,
                    seed: int | None = None, device: str = "auto", attention_png: Path | None = None) -> dict:
    """Captions for image files: {"images": [{"image", "captions": [...]}]}; optionally a picture of where
    the model looked for each token of each image's first caption."""
    from charrnn.core.device import resolve_device

    model, tokenizer, ckpt = load_captioner(checkpoint, resolve_device(device))
    if attention_png is not None and not model.config.attention:
        raise CharRNNError("--show-attention needs a model trained with attention (this one was not)")
    pixels = read_image_files(paths, model.config.image_size)
    max_len = (ckpt["meta"].get("train_config") or {}).get("max_caption_len", CaptionTrainConfig.max_caption_len)
    generator = torch.Generator(device=model.head.weight.device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    runs = [caption_images(model, tokenizer, pixels, max_len=max_len, beam_size=beam_size, length_alpha=length_alpha,
                           temperature=temperature, generator=generator) for _ in range(num_samples)]
    if attention_png is not None:
        from charrnn.caption.attention_png import attention_grid

        pictures = [(pixels[k], [tokenizer.decode([t]) for t in d.tokens], d.attention) for k, d in enumerate(runs[0])]
        attention_grid(pictures, attention_png)
    return {"images": [{"image": str(p), "captions": [tokenizer.decode(run[k].tokens) for run in runs]}
                       for k, p in enumerate(paths)]}
