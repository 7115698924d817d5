"""Caption metrics (corpus BLEU-1..4 and CIDEr-D with every reference, the exact-match rate) and the line
reader's (character and word error rates, line accuracy).

The scores come from `pycocoevalcap`, the Python port of the MS-COCO caption evaluation code that captioning
papers report with (its BLEU is corpus-level with the "closest" reference length; its CIDEr is CIDEr-D:
TF-IDF n-grams with a Gaussian length penalty and clipped counts, sigma 6, times 10). Captions are compared
as lower-case tokens with punctuation split off, as the COCO tokenizer does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from charrnn.caption.config import CaptionTrainConfig
from charrnn.caption.data import CaptionSplit, cache_images, read_captions
from charrnn.caption.decode import EVAL_BATCH, caption_images
from charrnn.caption.model import Captioner, caption_loss, encode_captions, load_captioner
from charrnn.core.checkpoint import trained_with
from charrnn.core.errors import CharRNNError, check_stop

_TOKEN = re.compile(r"\w+|[^\w\s]")


def caption_tokens(text: str) -> str:
    """`text` as the scorers read it: lower-case words and punctuation marks separated by single spaces."""
    return " ".join(_TOKEN.findall(text.lower()))


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4 (0-100), CIDEr-D, and exact match (% of hypotheses equal to one of their references)."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("one hypothesis per image, and at least one image")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise CharRNNError("caption scores need pycocoevalcap: pip install 'charrnn[caption]'") from None
    hyp = {i: [caption_tokens(h) or "<empty>"] for i, h in enumerate(hypotheses)}
    refs = {i: [caption_tokens(r) for r in rs] for i, rs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(refs, hyp, verbose=0)
    cider, _ = Cider().compute_score(refs, hyp)
    exact = sum(hyp[i][0] in refs[i] for i in hyp) / len(hyp)
    return {**{f"bleu{n + 1}": 100.0 * float(b) for n, b in enumerate(bleu)}, "cider": float(cider),
            "exact_match": 100.0 * exact}


@torch.no_grad()
def teacher_forced_loss(model: Captioner, tokenizer, images, captions: list[list[str]], *,
                        should_stop: Callable[[], bool] | None = None) -> float:
    """Mean cross-entropy per token of every reference caption given its image; `should_stop()` is asked
    before each batch (`StopRequested` when it says so)."""
    device = model.head.weight.device
    pairs = [(k, c) for k, refs in enumerate(captions) for c in refs]
    total, count = 0.0, 0
    for start in range(0, len(pairs), EVAL_BATCH):
        check_stop(should_stop)
        chunk = pairs[start:start + EVAL_BATCH]
        images_ = torch.from_numpy(np.array(images[[k for k, _ in chunk]])).to(device)
        tokens = encode_captions(tokenizer, [c for _, c in chunk]).to(device)
        _, ce = caption_loss(model, images_, tokens, tokenizer.unk_id)
        n = int((tokens[:, 1:] != tokenizer.unk_id).sum())
        total, count = total + float(ce) * n, count + n
    return total / max(count, 1)


def evaluate_captioner(checkpoint: str | os.PathLike, data: str | None = None, *, part: str = "val",
                       beam_size: int = 3, length_alpha: float = 0.0, skip_bad: bool = False,
                       device: str = "auto", on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Corpus BLEU-1..4, CIDEr-D and exact match of greedy and beam-search captions on `data` (the run's own
    data by default): its validation side as the run split it (`part="val"`) or every image (`"all"`).
    `on_progress(done, total)` counts images through the three passes: decoding them, greedy, beam search."""
    import tempfile

    from charrnn.core.device import resolve_device

    model, tokenizer, ckpt = load_captioner(checkpoint, resolve_device(device))
    run = trained_with(ckpt, CaptionTrainConfig)
    data_path = data if data is not None else run.data
    read = read_captions(data_path, split=run.split if data is None else None, val_frac=run.val_frac,
                         seed=run.seed, skip_bad=skip_bad)
    split = read.val if part == "val" and read.val is not None else read.train
    if part == "all" and read.val is not None:
        split = _joined(read.train, read.val)
    n = len(split)

    def progress(k: int, fraction: float) -> None:
        """Pass k (0: decoding the images, 1: greedy, 2: beam search) is `fraction` done."""
        if on_progress is not None:
            on_progress(k * n + round(fraction * n), 3 * n)

    with tempfile.TemporaryDirectory() as tmp:  # decode into a throw-away cache: nothing is left behind
        images = cache_images(split, Path(tmp) / "images", size=model.config.image_size, skip_bad=skip_bad,
                              progress=lambda done, total: progress(0, done / max(total, 1)))
        pixels = np.array(images.pixels)
    references = images.captions
    result = {"images": len(pixels), "references": sum(map(len, references)), "data": str(data_path), "part": part}
    for k, (name, beam) in enumerate((("greedy", 1), ("beam", beam_size)), 1):
        decoded = []
        for start in range(0, len(pixels), EVAL_BATCH):  # the batches caption_images makes: progress after each
            decoded += caption_images(model, tokenizer, pixels[start:start + EVAL_BATCH], max_len=run.max_caption_len,
                                      beam_size=beam, length_alpha=length_alpha)
            progress(k, len(decoded) / len(pixels))
        result[name] = caption_scores([tokenizer.decode(d.tokens) for d in decoded], references)
    result["beam_size"] = beam_size
    return result


def _joined(a: CaptionSplit, b: CaptionSplit) -> CaptionSplit:
    """Two splits of one dataset as one."""
    groups = None if a.groups is None or b.groups is None else a.groups + b.groups
    return CaptionSplit(a.root, a.files + b.files, a.captions + b.captions, groups, a.origins + b.origins)
