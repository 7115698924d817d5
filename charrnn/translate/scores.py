"""Scoring a translator's outputs against references, torch-free.

A source may have several correct references (a word with two pronunciations, a sentence with two
translations): each output is scored against its closest reference, the one at the smallest token edit
distance (the first on a tie), and an output is right when it equals any of them, as G2P results on the
CMU dictionary are counted (Bisani & Ney 2008, "Joint-sequence models for grapheme-to-phoneme
conversion"). Rates are corpus level: edit distances summed over examples / reference lengths summed, as
fractions 0-1 (a rate can exceed 1 when an output inserts more than its reference holds).
"""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each 1) between two sequences of hashable
    items: the characters of two strings, or two lists of tokens. rapidfuzz, as ctc's CER: exact, in C++."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(a, b))


def _closest(output: list[str], references: list[list[str]]) -> tuple[list[str], int]:
    """The reference at the smallest token edit distance from `output` (the first on a tie), and the distance."""
    if not references:
        raise ValueError("every output needs at least one reference")
    distances = [edit_distance(output, reference) for reference in references]
    best = min(range(len(references)), key=distances.__getitem__)  # min keeps the first of equals
    return references[best], distances[best]


def translation_scores(outputs: list[list[str]], references: list[list[list[str]]], *, joiner: str) -> dict:
    """Exact match, error rate, token error rate, CER and WER of `outputs` against their closest references.

    `outputs[i]` is the output for source i as a list of target tokens (characters, or symbols such as
    phones); `references[i]` every correct reference for source i, each a list of tokens; `joiner` makes a
    text of tokens: "" for character targets, " " for word targets. Returned, all against the closest
    reference (chosen by token distance):

    - "examples": how many outputs were scored;
    - "exact_match": the fraction 0-1 of outputs equal to one of their references;
    - "error_rate": 1 - exact_match (the word error rate of G2P papers: a word is wrong when any phone is);
    - "token_error_rate": token edit distances / reference tokens (the phone error rate of G2P);
    - "cer": character edit distance of the joined texts / reference characters (spaces count);
    - "wer": word edit distance of the joined texts split on whitespace / reference words.
    """
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} reference lists: one list per output")
    if not outputs:
        raise ValueError("no outputs to score")
    exact = token_errors = token_total = char_errors = char_total = word_errors = word_total = 0
    for output, candidates in zip(outputs, references):
        output = list(output)
        reference, distance = _closest(output, [list(r) for r in candidates])
        exact += distance == 0  # distance 0 to the closest reference = equal to one of them
        token_errors += distance
        token_total += len(reference)
        output_text, reference_text = joiner.join(output), joiner.join(reference)
        char_errors += edit_distance(output_text, reference_text)
        char_total += len(reference_text)
        word_errors += edit_distance(output_text.split(), reference_text.split())
        word_total += len(reference_text.split())
    n = len(outputs)
    return {"examples": n,
            "exact_match": exact / n,
            "error_rate": 1 - exact / n,
            "token_error_rate": token_errors / max(token_total, 1),
            "cer": char_errors / max(char_total, 1),
            "wer": word_errors / max(word_total, 1)}


def sacrebleu_scores(outputs: list[str], references: list[list[str]]) -> dict | None:
    """Corpus BLEU and chrF (0-100, as sacrebleu gives them) of output texts against every reference text of
    each, by the optional `sacrebleu` package (`pip install charrnn[bleu]`); None when it is not installed.

    sacrebleu reads references as streams (the k-th reference of every output), all as long as `outputs`;
    where outputs have different numbers of references the shorter lists are padded with None, which
    sacrebleu documents as "no reference here" (its signature then says nrefs:var). "sacrebleu" holds the
    two metrics' signatures (settings and version), so a reader can reproduce the numbers.
    """
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError:
        return None
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} reference lists: one list per output")
    if not outputs or any(not refs for refs in references):
        raise ValueError("no outputs to score, or an output without a reference")
    depth = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(depth)]
    bleu, chrf = BLEU(), CHRF()
    bleu_score, chrf_score = bleu.corpus_score(outputs, streams), chrf.corpus_score(outputs, streams)
    return {"bleu": bleu_score.score, "chrf": chrf_score.score,
            "sacrebleu": f"BLEU {bleu.get_signature()} chrF {chrf.get_signature()}"}
