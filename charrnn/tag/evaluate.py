"""Scoring a tagger: per-tag precision, recall and F1 over characters, and for truecasing the F1 of finding
the capitalised words; and `charrnn tag eval`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import numpy as np
import torch

from charrnn.core.batches import pad
from charrnn.core.errors import check_stop
from charrnn.core.scores import confusion_matrix, f1, per_label_scores
from charrnn.core.tokenizer import CharTokenizer
from charrnn.tag.data import UPPER
from charrnn.tag.model import Tagger

EVAL_BATCH = 64
WORD = re.compile(r"[^\W\d_]+")  # a run of letters


@torch.no_grad()
def predict_tags(model: Tagger, tokenizer: CharTokenizer, texts: list[str], *, truth: list[str] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> tuple[list[str], float | None]:
    """The tags of each text (a string as long as the text), in batches of similar lengths; with `truth`, also
    the mean cross-entropy per character of the true tags (a tag the model does not know is left out)."""
    device = model.head.weight.device
    index = {t: k for k, t in enumerate(model.config.tags)}
    order = np.argsort([len(t) for t in texts], kind="stable")
    out: list[str] = [""] * len(texts)
    total, count = 0.0, 0
    for start in range(0, len(order), EVAL_BATCH):
        check_stop(should_stop)
        rows = order[start:start + EVAL_BATCH]
        ids, lengths = pad([tokenizer.encode(texts[r], map_unknown=True) for r in rows], tokenizer.eod_id)
        log_probs = model(ids.to(device), lengths.to(device)).float().log_softmax(-1).cpu()  # (B, T, K)
        best = log_probs.argmax(-1).numpy()
        for k, r in enumerate(rows):
            out[r] = "".join(model.config.tags[j] for j in best[k, : len(texts[r])])
        if truth is not None:
            wanted, _ = pad([[index.get(t, -1) for t in truth[r]] for r in rows], -1)  # (B, T); -1: unknown, padding
            known = wanted >= 0
            total -= float(log_probs.gather(-1, wanted.clamp(min=0)[..., None])[..., 0][known].sum())
            count += int(known.sum())
        if on_progress is not None:
            on_progress(min(start + EVAL_BATCH, len(order)), len(order))
    return out, (total / max(count, 1) if truth is not None else None)


def capitalised_word_f1(texts: list[str], truth: list[str], predicted: list[str]) -> dict:
    """Precision, recall and F1 of finding the capitalised words (a run of letters whose first letter is upper
    case), counted over the words of `texts` (lower-cased), the tags telling which letters were upper case."""
    tp = fp = fn = 0
    for text, true_tags, tags in zip(texts, truth, predicted):
        for word in WORD.finditer(text):
            want, got = true_tags[word.start()] == UPPER, tags[word.start()] == UPPER
            tp, fp, fn = tp + (want and got), fp + (got and not want), fn + (want and not got)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": f1(precision, recall), "capitalised_words": tp + fn}


def tag_scores(texts: list[str], truth: list[str], predicted: list[str], tags: tuple[str, ...],
               case: bool) -> dict:
    """Character accuracy, per-tag precision/recall/F1 and macro-F1; with `case`, the capitalised-word F1."""
    index = {t: k for k, t in enumerate(tags)}
    y = [index.get(t, -1) for row in truth for t in row]
    p = [index[t] for row in predicted for t in row]
    known = [k for k, v in enumerate(y) if v >= 0]
    matrix = confusion_matrix([y[k] for k in known], [p[k] for k in known], len(tags))
    per_tag, macro_f1 = per_label_scores(matrix, tags)
    result = {"texts": len(texts), "characters": len(y), "accuracy": int(np.trace(matrix)) / max(len(y), 1),
              "macro_f1": macro_f1, "per_tag": per_tag}
    if case:
        result["words"] = capitalised_word_f1(texts, truth, predicted)
    return result


def evaluate_tagger(checkpoint: str | os.PathLike, data: str | None = None, *, part: str = "test",
                    skip_bad: bool = False, device: str = "auto",
                    on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Scores on `data` (every example of it: a text file for a truecaser, text<TAB>tags rows otherwise), or,
    without `data`, on the run's own held-out part (`part`: "test", "val" or "train")."""
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.device import resolve_device
    from charrnn.core.errors import CharRNNError
    from charrnn.tag.config import TagTrainConfig
    from charrnn.tag.data import case_data, tsv_data
    from charrnn.tag.model import load_tagger
    from charrnn.tag.task import read_run_data

    model, tokenizer, ckpt = load_tagger(checkpoint, resolve_device(device))
    run = trained_with(ckpt, TagTrainConfig)
    case = run.derive == "case"
    if data is None:
        examples = getattr(read_run_data(run), part)
        if examples is None:
            raise CharRNNError(f"this run held out no {part} text (--{part}-frac 0); name the text to score: "
                               "charrnn tag eval RUN DATA")
        where = f"{run.data} ({part})"
    elif case:
        examples, where = case_data(data, max_chars=run.max_chars, val_frac=0.0, test_frac=0.0).train, str(data)
    else:
        examples = tsv_data(data, max_chars=run.max_chars, val_frac=0.0, test_frac=0.0, skip_bad=skip_bad).train
        where = str(data)
    predicted, loss = predict_tags(model, tokenizer, examples.texts, truth=examples.tags, on_progress=on_progress)
    scores = tag_scores(examples.texts, examples.tags, predicted, model.config.tags, case)
    scores["loss"] = loss
    scores["data"] = where
    return scores
