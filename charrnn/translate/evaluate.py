"""Scoring a translator: the teacher-forced loss, and what its outputs get right (exact match, token error rate,
CER, WER; BLEU and chrF by sacrebleu when it is installed), greedy and under a beam side by side; and
`charrnn translate eval`.

Every distinct source is translated once and its output scored against all of its targets (`Pairs.references`),
so a word with two listed pronunciations is right when the output is either of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from charrnn.core.batches import pad
from charrnn.core.errors import CharRNNError, check_stop
from charrnn.core.tokenizer import PairTokenizer
from charrnn.translate.data import Pairs
from charrnn.translate.decode import DECODE_BATCH, joiner, source_ids, tokens_of, translate_ids
from charrnn.translate.model import Translator, encode_targets, translate_loss
from charrnn.translate.scores import sacrebleu_scores, translation_scores

DEFAULT_BEAM = 5  # `translate eval`'s beam beside greedy decoding


@torch.no_grad()
def teacher_forced_loss(model: Translator, tokenizer: PairTokenizer, pairs: Pairs,
                        should_stop: Callable[[], bool] | None = None) -> float:
    """Mean cross-entropy per target token (nats) of every pair, in batches of similar lengths."""
    device = model.head.weight.device
    sources = source_ids(tokenizer, pairs.sources)
    targets = [tokenizer.target.encode(t, map_unknown=True) for t in pairs.targets]
    order = np.argsort([len(s) for s in sources], kind="stable")
    total, count = 0.0, 0
    for start in range(0, len(order), DECODE_BATCH):
        check_stop(should_stop)
        rows = order[start:start + DECODE_BATCH]
        ids, lengths = pad([sources[r] for r in rows], tokenizer.source.eod_id)
        gold = encode_targets([targets[r] for r in rows], tokenizer.eod_id, tokenizer.unk_id).to(device)
        n = int((gold[:, 1:] != tokenizer.unk_id).sum())
        total += float(translate_loss(model, ids.to(device), lengths.to(device), gold, tokenizer.unk_id)) * n
        count += n
    return total / max(count, 1)


def score_outputs(tokenizer: PairTokenizer, references: dict[str, list[str]], outputs: list[list[str]]) -> dict:
    """Exact match, error rate, token error rate, CER and WER of one output per source of `references`."""
    target = tokenizer.target
    refs = [[tokens_of(target, t) for t in targets] for targets in references.values()]
    return translation_scores(outputs, refs, joiner=joiner(target))


def translate_references(model: Translator, tokenizer: PairTokenizer, references: dict[str, list[str]], *,
                         beam_size: int = 1, length_alpha: float = 1.0, max_target_len: int = 256,
                         should_stop: Callable[[], bool] | None = None,
                         on_progress: Callable[[int, int], None] | None = None) -> list[list[str]]:
    """The best output (as target tokens) of every distinct source, in the order of `references`."""
    ids = source_ids(tokenizer, list(references))
    found = translate_ids(model, tokenizer, ids, beam_size=beam_size, length_alpha=length_alpha,
                          max_target_len=max_target_len, should_stop=should_stop, on_progress=on_progress)
    return [f[0].tokens for f in found]


def evaluate_translator(checkpoint: str | os.PathLike, data: str | None = None, *, part: str = "test",
                        beam_size: int = DEFAULT_BEAM, length_alpha: float = 1.0, skip_bad: bool = False,
                        device: str = "auto", on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Scores on `data` (every pair of a TSV file, read with the run's columns and tokens), or, without `data`, on
    the run's own held-out part (`part`: "test", "val" or "train"): greedy, and under a beam of `beam_size`
    (1: greedy only)."""
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.device import resolve_device
    from charrnn.translate.config import DEFAULT_DATA, TranslateTrainConfig
    from charrnn.translate.data import read_pair_data
    from charrnn.translate.model import load_translator
    from charrnn.translate.task import read_run_data

    model, tokenizer, ckpt = load_translator(checkpoint, resolve_device(device))
    run = trained_with(ckpt, TranslateTrainConfig)
    if data is None:
        pairs = getattr(read_run_data(run), part)
        if pairs is None:
            raise CharRNNError(f"this run held out no {part} pairs (--{part}-frac 0); name the pairs to score: "
                               "charrnn translate eval RUN DATA")
        where = f"{run.source or run.data or DEFAULT_DATA} ({part})"
    else:
        pairs = read_pair_data(data, source_column=run.source_column, target_column=run.target_column,
                               source_tokens=run.source_tokens, target_tokens=run.target_kind, val_frac=0.0,
                               test_frac=0.0, skip_bad=skip_bad, max_target_len=run.max_target_len).train
        where = str(data)
    references = pairs.references()
    decodings = {"greedy": 1, **({f"beam {beam_size}": beam_size} if beam_size > 1 else {})}
    total = len(references) * len(decodings)
    result: dict = {"data": where, "pairs": len(pairs), "sources": len(references),
                    "loss": teacher_forced_loss(model, tokenizer, pairs), "decodings": {}}
    for k, (name, width) in enumerate(decodings.items()):
        progress = None if on_progress is None else (
            lambda done, n, k=k: on_progress(k * len(references) + done, total))
        outputs = translate_references(model, tokenizer, references, beam_size=width, length_alpha=length_alpha,
                                       max_target_len=run.max_target_len, on_progress=progress)
        scores = score_outputs(tokenizer, references, outputs)
        scores["beam_size"] = width
        if any(" " in t for t in pairs.targets):  # targets of several words: BLEU and chrF as well
            bleu = sacrebleu_scores([joiner(tokenizer.target).join(o) for o in outputs], list(references.values()))
            if bleu is not None:
                scores.update(bleu)
        result["decodings"][name] = scores
    return result
