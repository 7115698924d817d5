"""Using a translator: each source's output, greedy or by beam search with length normalisation, with its score,
the n best, and the attention that wrote it (`charrnn translate run`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from charrnn.core.batches import in_batches, pad
from charrnn.core.decoding import beam_search_n, decode
from charrnn.core.errors import CharRNNError, check_stop
from charrnn.core.tokenizer import CharTokenizer, PairTokenizer, WordTokenizer
from charrnn.translate.model import Translator

DECODE_BATCH = 256  # sources decoded together (sorted by length, so a batch is little padding)
RUN_BATCH = 64  # sources read from a file or stdin are answered this many at a time, as they come
MAX_LEN_RATIO, MAX_LEN_EXTRA = 4, 16  # an output stops after 4 tokens per source token + 16, or at --max-target-len


def tokens_of(tokenizer, text: str) -> list[str]:
    """The symbols of `text` as `tokenizer` reads it: its characters, or its space-separated words."""
    return WordTokenizer.tokens_of(text, tokenizer.split) if isinstance(tokenizer, WordTokenizer) else list(text)


def joiner(tokenizer) -> str:
    return " " if isinstance(tokenizer, WordTokenizer) else ""


def folds_case(tokenizer: PairTokenizer) -> bool:
    """A source vocabulary without a capital letter (the pronouncing dictionary's): such a model reads its input
    lower-cased, so that "Nakamura" is read as the "nakamura" it could have seen."""
    source = tokenizer.source
    symbols = source.words if isinstance(source, WordTokenizer) else [chr(c) for c in source.codes]
    return not any(ch.isupper() for s in symbols for ch in s)


def source_ids(tokenizer: PairTokenizer, texts: list[str]) -> list[np.ndarray]:
    """The ids the encoder reads for each text (lower-cased where the model never saw a capital; a symbol it never
    saw becomes `<unk>`)."""
    fold = folds_case(tokenizer)
    return [tokenizer.source.encode(t.lower() if fold else t, map_unknown=True) for t in texts]


@dataclass
class Output:
    tokens: list[str]  # the target symbols written
    text: str  # joined (characters together, words with spaces)
    score: float  # log-probability, divided by length ** length_alpha under a beam
    attention: np.ndarray | None  # (len(tokens) + 1, source tokens): the weights that chose each token and the end


@torch.no_grad()
def translate_ids(model: Translator, tokenizer: PairTokenizer, ids: list[np.ndarray], *, beam_size: int = 1,
                  n_best: int = 1, length_alpha: float = 1.0, max_target_len: int = 256,
                  should_stop: Callable[[], bool] | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> list[list[Output]]:
    """The `n_best` outputs of each source (given as ids), best first: greedy when `beam_size` is 1, else beam
    search ranked by log-probability / length ** `length_alpha`. Sources are decoded in batches of similar
    lengths; an output stops at `<eod>`, after `max_target_len` tokens, or 4 tokens per source token + 16."""
    if any(len(x) == 0 for x in ids):
        raise CharRNNError("an empty source has no translation; give at least one character")
    device = model.head.weight.device
    target = tokenizer.target
    order = np.argsort([len(x) for x in ids], kind="stable")
    out: list[list[Output]] = [[] for _ in ids]
    eod = tokenizer.eod_id
    for start in range(0, len(order), DECODE_BATCH):
        check_stop(should_stop)
        rows = order[start:start + DECODE_BATCH]
        batch, lengths = pad([ids[r] for r in rows], tokenizer.source.eod_id)
        source = (batch.to(device), lengths.to(device))
        max_len = min(max_target_len, MAX_LEN_RATIO * int(lengths.max()) + MAX_LEN_EXTRA) + 1  # + the end
        if beam_size == 1:
            found = [[d] for d in decode(model, source, bos=eod, eos=eod, max_len=max_len, should_stop=should_stop)]
        else:
            found = beam_search_n(model, source, bos=eod, eos=eod, max_len=max_len, beam_size=beam_size,
                                  n_best=n_best, length_alpha=length_alpha, should_stop=should_stop)
        for k, r in enumerate(rows):
            n = int(lengths[k])
            for d in found[k]:
                symbols = [target.symbol(i) for i in d.tokens]
                attention = None if d.attention is None else d.attention[:, :n].float().numpy()
                out[r].append(Output(symbols, target.decode(d.tokens), d.score, attention))
        if on_progress is not None:
            on_progress(min(start + DECODE_BATCH, len(order)), len(order))
    return out


def iter_translations(model: Translator, tokenizer: PairTokenizer, texts: Iterable[str], *, beam_size: int = 1,
                      n_best: int = 1, length_alpha: float = 1.0, max_target_len: int = 256) -> Iterator[dict]:
    """{"source", "output", "score", "n_best": [{"output", "score"}, ...]} of each text in order, answered a batch
    at a time (a stream on stdin is answered as it comes); "source_tokens", "output_tokens" and "attention"
    (the weights of the best output) for pictures."""
    for batch in in_batches(texts, RUN_BATCH):
        if not all(t.strip() for t in batch):
            raise CharRNNError("an empty text has no translation; give at least one character")
        ids = source_ids(tokenizer, batch)
        results = translate_ids(model, tokenizer, ids, beam_size=beam_size, n_best=n_best,
                                length_alpha=length_alpha, max_target_len=max_target_len)
        fold = folds_case(tokenizer)
        for text, found in zip(batch, results):
            best = found[0]
            read = text.lower() if fold else text
            yield {"source": text, "output": best.text, "score": round(best.score, 4),
                   "n_best": [{"output": o.text, "score": round(o.score, 4)} for o in found],
                   "source_tokens": tokens_of(tokenizer.source, read), "output_tokens": best.tokens,
                   "attention": best.attention}


def translate_texts(checkpoint: str | os.PathLike, texts: list[str], *, beam_size: int = 1, n_best: int = 1,
                    length_alpha: float = 1.0, device: str = "auto") -> list[dict]:
    """The translation of each text by a translate run or checkpoint (see `iter_translations`)."""
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.device import resolve_device
    from charrnn.translate.config import TranslateTrainConfig
    from charrnn.translate.model import load_translator

    model, tokenizer, ckpt = load_translator(checkpoint, resolve_device(device))
    max_target_len = trained_with(ckpt, TranslateTrainConfig).max_target_len
    return list(iter_translations(model, tokenizer, texts, beam_size=beam_size, n_best=n_best,
                                  length_alpha=length_alpha, max_target_len=max_target_len))


def pair_tokenizer(sources: list[str], targets: list[str], source_tokens: str, target_tokens: str) -> PairTokenizer:
    """The vocabularies of training pairs: characters, or words split on spaces, on each side."""
    def side(texts: list[str], kind: str):
        if kind == "words":
            return WordTokenizer.from_texts(texts, split="spaces")
        return CharTokenizer.from_text("".join(texts))
    return PairTokenizer(side(sources, source_tokens), side(targets, target_tokens))
