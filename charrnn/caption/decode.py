"""Captions for images: greedy, sampled or beam-search decoding of many images, and `charrnn caption sample`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from charrnn.caption.config import CaptionTrainConfig
from charrnn.caption.model import Captioner, load_captioner
from charrnn.core.decoding import Decoded, beam_search, decode
from charrnn.core.errors import CharRNNError

EVAL_BATCH = 128


def caption_images(model: Captioner, tokenizer, images, *, max_len: int, beam_size: int = 1,
                   length_alpha: float = 0.0, temperature: float = 0.0,
                   generator: torch.Generator | None = None,
                   should_stop: Callable[[], bool] | None = None) -> list[Decoded]:
    """A caption for each of `images` (N, S, S, 3) uint8, decoded in batches (greedy, sampled or beam).
    `should_stop()` is asked before each decoding step (`StopRequested` when it says so)."""
    device = model.head.weight.device
    out: list[Decoded] = []
    ends = dict(bos=tokenizer.eod_id, eos=tokenizer.eod_id, max_len=max_len, should_stop=should_stop)
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
    from charrnn.vision.image import read_image_file

    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):  # missing, not an image, truncated, too many pixels: one line naming it
        out[k] = read_image_file(path, lambda f: decode_image(f, size))
    return out


def describe_images(checkpoint: str | os.PathLike, paths: list[Path], *, beam_size: int = 1,
                    length_alpha: float = 0.0, temperature: float = 0.0, num_samples: int = 1,
                    seed: int | None = None, device: str = "auto", attention_png: Path | None = None) -> dict:
    """Captions for image files: {"images": [{"image", "captions": [...]}]}; optionally a picture of where
    the model looked for each token of each image's first caption. `iter_descriptions` gives the same
    captions one at a time, as they are decoded."""
    captions: list[list[str]] = [[] for _ in paths]
    for item in iter_descriptions(checkpoint, paths, beam_size=beam_size, length_alpha=length_alpha,
                                  temperature=temperature, num_samples=num_samples, seed=seed, device=device,
                                  attention_png=attention_png):
        captions[item["index"]].append(item["caption"])
    return {"images": [{"image": str(p), "captions": c} for p, c in zip(paths, captions)]}


def iter_descriptions(checkpoint: str | os.PathLike, paths: list[Path], *, beam_size: int = 1,
                      length_alpha: float = 0.0, temperature: float = 0.0, num_samples: int = 1,
                      seed: int | None = None, device: str = "auto",
                      attention_png: Path | None = None) -> Iterator[dict]:
    """The captions of `describe_images`, each yielded as soon as it is decoded: {"image", "index" (of the
    image in `paths`), "sample" (0 to num_samples - 1), "caption"}. Sample 0 of every image comes first, a
    batch of images at a time, then sample 1 of every image, and so on; the same seed gives the same captions
    as `describe_images`. The model is loaded and the images read at the first `next()`, so a bad input fails
    before any caption; the attention picture is written once every image has its first caption."""
    from charrnn.core.device import resolve_device

    model, tokenizer, ckpt = load_captioner(checkpoint, resolve_device(device))
    if attention_png is not None and not model.config.attention:
        raise CharRNNError("--show-attention needs a model trained with attention (this one was not)")
    pixels = read_image_files(paths, model.config.image_size)
    max_len = (ckpt["meta"].get("train_config") or {}).get("max_caption_len", CaptionTrainConfig.max_caption_len)
    generator = torch.Generator(device=model.head.weight.device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    first: list[Decoded] = []  # each image's first caption, for the attention picture
    for sample in range(num_samples):
        for start in range(0, len(pixels), EVAL_BATCH):  # caption_images' own batches: the same random draws
            decoded = caption_images(model, tokenizer, pixels[start:start + EVAL_BATCH], max_len=max_len,
                                     beam_size=beam_size, length_alpha=length_alpha, temperature=temperature,
                                     generator=generator)
            if sample == 0 and attention_png is not None:
                first += decoded
            for k, d in enumerate(decoded, start):
                yield {"image": str(paths[k]), "index": k, "sample": sample, "caption": tokenizer.decode(d.tokens)}
        if sample == 0 and attention_png is not None:
            from charrnn.caption.attention_png import attention_grid

            attention_grid([(pixels[k], [tokenizer.decode([t]) for t in d.tokens], d.attention)
                            for k, d in enumerate(first)], attention_png)
            first = []
