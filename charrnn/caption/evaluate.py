"""Caption metrics (corpus BLEU-1..4 and CIDEr-D with every reference, the exact-match rate) and the line
reader's (character and word error rates, line accuracy).

The scores come from `pycocoevalcap`, the Python port of the MS-COCO caption evaluation code that captioning
papers report with (its BLEU is corpus-level with the "closest" reference length; its CIDEr is CIDEr-D:
TF-IDF n-grams with a Gaussian length penalty and clipped counts, sigma 6, times 10). Captions are compared
as lower-case tokens with punctuation split off, as the COCO tokenizer does.
"""

from __future__ import annotations

import re

from charrnn.core.errors import CharRNNError

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
