"""Scoring a line reader: CER, WER and line accuracy of each decoder side by side, and tuning the LM's weight."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from charrnn.core.checkpoint import trained_with
from charrnn.core.errors import CharRNNError
from charrnn.ctc.config import CTCTrainConfig
from charrnn.ctc.data import LineImages, cache_lines, read_lines
from charrnn.ctc.decode import Fusion, beam_texts, char_lm, greedy_texts, run_reader
from charrnn.ctc.model import LineReader, frames, load_reader


def error_rates(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus CER and WER (edit distance summed over lines / reference length summed, as fractions 0-1; a
    rate can exceed 1 when the reader inserts more than the truth holds) and the fraction of lines read
    exactly. Levenshtein distance from rapidfuzz: exact, in C++, over characters or over lists of words."""
    from rapidfuzz.distance import Levenshtein

    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("one hypothesis per line, and at least one line")
    chars = sum(Levenshtein.distance(h, r) for h, r in zip(hypotheses, references))
    words = sum(Levenshtein.distance(h.split(), r.split()) for h, r in zip(hypotheses, references))
    return {"cer": chars / max(sum(map(len, references)), 1),
            "wer": words / max(sum(len(r.split()) for r in references), 1),
            "line_accuracy": sum(h == r for h, r in zip(hypotheses, references)) / len(references)}


def eval_lines(ckpt: dict, data: str | None, model: LineReader, skip_bad: bool, cache: Path,
               progress: Callable[[int, int], None] | None = None) -> LineImages:
    """The lines to score: the run's own validation lines, or every line of `data` (the validation part
    when `data` is a make-lines set, which names its parts). `progress(done, total)` after each line decoded."""
    run = trained_with(ckpt, CTCTrainConfig)
    if data is None:
        read = read_lines(run.data, val_dir=run.val_dir, val_frac=run.val_frac, seed=run.seed,
                          iam_ok_only=run.iam_ok_only, skip_bad=skip_bad)
        if read.val is None:
            raise CharRNNError("this run had no validation lines; name the lines to score: charrnn ctc eval RUN DATA")
    else:
        read = read_lines(data, val_frac=0.0, skip_bad=skip_bad)
    split = read.val if read.val is not None else read.train
    return cache_lines(split, cache, height=model.config.height, max_width=run.max_width, frames=frames,
                       skip_bad=skip_bad, progress=progress)


class _Passes:
    """Progress through several passes over the lines as one count of lines, every pass's together:
    `on_progress(done, total)`. The first pass (decoding the images) says how many lines there are, and
    `lengths(n)` how long each pass is then."""

    def __init__(self, on_progress: Callable[[int, int], None] | None, lengths: Callable[[int], list[int]]):
        self.on_progress, self.lengths = on_progress, lengths
        self.sizes: list[int] = []
        self.current = 0

    def __call__(self, done: int, lines: int | None = None) -> None:
        """`done` lines of the current pass are finished; `lines`: the number of lines, in the first pass."""
        if not self.sizes and lines is not None:
            self.sizes = self.lengths(lines)
        if self.on_progress is not None and self.current < len(self.sizes):
            before = sum(self.sizes[:self.current])
            self.on_progress(before + min(done, self.sizes[self.current]), sum(self.sizes))

    def next(self) -> None:
        """The current pass is finished."""
        if self.current < len(self.sizes):
            self(self.sizes[self.current])
        self.current += 1


def _beam_texts(tokenizer, log_probs: list, passes: _Passes, **search) -> list[str]:
    """`beam_texts` of the lines, LM_GROUP at a time to report progress (the search takes them so anyway:
    the texts are the same)."""
    from charrnn.ctc.search import LM_GROUP

    texts: list[str] = []
    for start in range(0, len(log_probs), LM_GROUP):
        texts += beam_texts(tokenizer, log_probs[start:start + LM_GROUP], **search)
        passes(len(texts))
    passes.next()
    return texts


def _timed(read: Callable[[], list[str]], references: list[str]) -> dict:
    import time

    start = time.perf_counter()
    texts = read()
    seconds = time.perf_counter() - start
    return {**error_rates(texts, references), "lines_per_s": len(texts) / max(seconds, 1e-9)}


def evaluate_reader(checkpoint: str | os.PathLike, data: str | None = None, *, beam_size: int = 8,
                    fusion: Fusion | None = None, skip_bad: bool = False, device: str = "auto",
                    on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Corpus CER, WER and line accuracy of greedy, beam and (with `fusion`) beam + LM readings, side by
    side, with each decoder's speed in lines/s (the network's own time excluded: it is shared).
    `on_progress(done, total)` counts lines through every pass: decoding the images, the network, each decoder."""
    import tempfile

    from charrnn.core.device import resolve_device

    passes = _Passes(on_progress, lambda n: [n] * (5 if fusion is not None else 4))
    model, tokenizer, ckpt = load_reader(checkpoint, resolve_device(device))
    with tempfile.TemporaryDirectory() as tmp:  # decode into a throw-away cache: nothing is left behind
        images = eval_lines(ckpt, data, model, skip_bad, Path(tmp) / "lines", progress=passes)
        passes.next()
        out = run_reader(model, tokenizer, images)
        passes.next()
        truth = list(images.split.texts)
    greedy = _timed(lambda: greedy_texts(tokenizer, out.log_probs), truth)
    passes.next()
    result = {"lines": len(truth), "data": str(data if data is not None else trained_with(ckpt, CTCTrainConfig).data),
              "beam_size": beam_size, "ctc_loss": out.loss, "greedy": greedy,
              "beam": _timed(lambda: _beam_texts(tokenizer, out.log_probs, passes, beam_size=beam_size), truth)}
    if fusion is not None:
        lm = char_lm(fusion, tokenizer, resolve_device(device))
        result["beam_lm"] = _timed(lambda: _beam_texts(tokenizer, out.log_probs, passes, beam_size=beam_size, lm=lm,
                                                       lm_weight=fusion.lm_weight, char_bonus=fusion.char_bonus),
                                   truth)
        result["lm"], result["lm_weight"], result["char_bonus"] = fusion.lm, fusion.lm_weight, fusion.char_bonus
    return result


LM_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


CHAR_BONUSES = (0.0, 0.5, 1.0, 2.0)


def tune_lm(checkpoint: str | os.PathLike, lm: str, data: str | None = None, *, beam_size: int = 8,
            lm_weights: tuple[float, ...] = LM_WEIGHTS, char_bonuses: tuple[float, ...] = CHAR_BONUSES,
            max_lines: int = 300, lm_unknown: str = "error", skip_bad: bool = False, device: str = "auto",
            on_progress: Callable[[int, int], None] | None = None) -> dict:
    """CER of beam + LM for each (lm_weight, char_bonus) of a small grid on validation lines (the first
    `max_lines`), the best pair first. Tune on lines the reader did not train on, and report on others.
    `on_progress(done, total)` counts lines through every pass: decoding the images, the network, each pair."""
    import tempfile

    from charrnn.core.device import resolve_device

    pairs = [(a, b) for a in lm_weights for b in char_bonuses]
    passes = _Passes(on_progress, lambda n: [n, n] + [min(n, max_lines)] * len(pairs))
    model, tokenizer, ckpt = load_reader(checkpoint, resolve_device(device))
    with tempfile.TemporaryDirectory() as tmp:
        images = eval_lines(ckpt, data, model, skip_bad, Path(tmp) / "lines", progress=passes)
        passes.next()
        out = run_reader(model, tokenizer, images)
        passes.next()
        truth = list(images.split.texts)
    log_probs, truth = out.log_probs[:max_lines], truth[:max_lines]
    scorer = char_lm(Fusion(lm, lm_unknown=lm_unknown), tokenizer, resolve_device(device))
    grid = []
    for a, b in pairs:
        texts = _beam_texts(tokenizer, log_probs, passes, beam_size=beam_size, lm=scorer, lm_weight=a, char_bonus=b)
        grid.append({"lm_weight": a, "char_bonus": b, **error_rates(texts, truth)})
    grid.sort(key=lambda row: (row["cer"], row["wer"]))
    greedy = error_rates(greedy_texts(tokenizer, log_probs), truth)
    return {"lines": len(truth), "beam_size": beam_size, "greedy": greedy, "grid": grid, "best": grid[0]}
