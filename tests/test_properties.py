"""Property-based tests (hypothesis) for the parts of charrnn that obey laws: the tokenizer's round trip, the
coverage of the truncated-BPTT batches, the CTC collapse and greedy decoding, the exclusions of top-k and
top-p, and CER / BLEU against naive implementations written here.

Each property was seen to fail against a deliberately broken version of the code it tests. The examples
are few and small (the whole file runs in a few seconds on a 2-core CPU). They are derived from each
test's name (`derandomize`), so CI draws exactly what the last local run drew and cannot turn red on a
draw nobody saw; `HYPOTHESIS_EXPLORE=1 python -m pytest tests/test_properties.py` draws ten times as many
fresh random examples to hunt for new failures. `database=None`: no failing examples are replayed from
earlier runs; a failure prints its shrunk example.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from itertools import groupby

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from charrnn.caption import evaluate as metrics
from charrnn.core.tokenizer import CharTokenizer
from charrnn.ctc import evaluate as ctc_evaluate
from charrnn.ctc import search as ctc_decode
from charrnn.lm import data, sample

EXPLORE = os.environ.get("HYPOTHESIS_EXPLORE") == "1"
FAST = settings(max_examples=600 if EXPLORE else 60, derandomize=not EXPLORE, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# Arbitrary text: every code point except surrogates (hypothesis leaves out category Cs by default), so
# astral-plane emoji, combining marks, NUL and control characters all appear.
texts = st.text(max_size=60)


# ----- tokenizer --------------------------------------------------------------------------------------

@FAST
@given(texts)
def test_tokenizer_round_trip_of_its_own_text(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one id per code point, whatever the plane
    assert tok.decode(ids) == text
    again = CharTokenizer.from_dict(tok.to_dict())  # what a checkpoint stores
    assert again.decode(again.encode(text)) == text


@FAST
@given(st.data(), st.text(min_size=1, max_size=30))
def test_tokenizer_round_trip_of_any_text_in_its_vocabulary(draw, vocabulary_text):
    tok = CharTokenizer.from_text(vocabulary_text)
    text = draw.draw(st.text(alphabet=sorted(set(vocabulary_text)), max_size=80))
    assert tok.decode(tok.encode(text)) == text
    assert tok.unknown_symbols(text) == []


@FAST
@given(st.binary(max_size=80))
def test_byte_level_round_trip_of_any_bytes(blob):
    tok = CharTokenizer.from_text(blob, byte_level=True)
    assert tok.decode_bytes(tok.encode(blob)) == blob  # invalid UTF-8 included


@FAST
@given(texts)
def test_byte_level_round_trip_of_any_text(text):
    tok = CharTokenizer.from_text(text, byte_level=True)
    assert len(tok.encode(text)) == len(text.encode("utf-8"))
    assert tok.decode(tok.encode(text)) == text


@FAST
@given(st.text(alphabet="ab\n ", max_size=60), st.text(alphabet="ab\n", min_size=1, max_size=3),
       st.booleans())
def test_document_separator_round_trip(text, separator, byte_level):
    """Every separator becomes one `<eod>` and comes back: the split is undone by the join, even for separators
    that overlap themselves ("aa" in "aaa")."""
    tok = CharTokenizer.from_text(text + separator, byte_level=byte_level, document_separator=separator)
    ids = tok.encode(text)
    assert int((ids == tok.eod_id).sum()) == text.count(separator)
    assert tok.decode(ids) == text


@FAST
@given(st.lists(st.sampled_from(["a", " ", "\n", "\n\n", "\r", "\r\n", "é", "中", "😀"]), min_size=1,
                max_size=40).map("".join),
       st.sampled_from([None, "\n\n", "é\n"]), st.sampled_from(["keep", "lf"]), st.integers(1, 9))
def test_chunked_encoding_equals_whole_text_encoding(text, separator, newline, chunk_bytes):
    """`iter_encoded` reads a file a few bytes at a time (multi-byte characters, separators and CRLFs cut across
    chunks); its ids are `<eod>` followed by the encoding of the whole text, its line ends normalised first."""
    fd, path = tempfile.mkstemp(suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        tok = data.build_tokenizer(path, document_separator=separator, newline=newline)
        chunked = np.concatenate(list(data.iter_encoded(path, tok, chunk_bytes=chunk_bytes, newline=newline)))
    finally:
        os.unlink(path)
    whole = data.normalize_newlines(text, newline)
    assert chunked.astype(np.int64).tolist() == [tok.eod_id, *tok.encode(whole).tolist()]
    assert newline == "keep" or "\r" not in tok.decode(chunked)


# ----- truncated-BPTT batches ---------------------------------------------------------------------------

@FAST
@given(st.integers(2, 400), st.integers(1, 8), st.integers(1, 20))
def test_stream_batches_cover_every_target_once_per_epoch(n_ids, batch_size, seq_len):
    """With N ids (the leading `<eod>` included, so N - 1 targets), B streams and T steps per chunk:

    - every stream is L = (N - 1) // B characters long and an epoch has S = L // T steps;
    - no target appears twice in an epoch, and each target's input is the character just before it;
    - the targets are exactly positions p in 1..B*L with (p - 1) mod L < S*T: what is left out is the last
      (N - 1) mod B characters of the text and the last L mod T characters of each stream, so
      B*S*T + B*(L mod T) + (N - 1) mod B = N - 1;
    - row k of step i + 1 continues row k of step i (the carried state reads contiguous text);
    - the rows a DDP rank owns are its slice of the full batch.
    """
    ids = np.arange(n_ids)  # every "character" is its own position: targets name themselves
    L = (n_ids - 1) // batch_size
    assume(L >= seq_len)  # shorter texts are refused with a CharRNNError (tested in test_lm_data.py)
    batches = data.StreamBatches(ids, batch_size, seq_len)
    S = L // seq_len
    assert len(batches) == S
    seen: list[int] = []
    previous = None
    for i in range(S):
        x, y = batches.batch(i)
        assert x.shape == y.shape == (batch_size, seq_len)
        assert torch.equal(x + 1, y)
        if previous is not None:
            assert torch.equal(x[:, 0], previous[:, -1] + 1)
        previous = x
        seen += y.flatten().tolist()
    assert len(seen) == len(set(seen)) == batch_size * S * seq_len
    expected = {p for p in range(1, batch_size * L + 1) if (p - 1) % L < S * seq_len}
    assert set(seen) == expected
    assert batch_size * S * seq_len + batch_size * (L % seq_len) + (n_ids - 1) % batch_size == n_ids - 1
    for world in (w for w in (2, 4) if batch_size % w == 0):
        share = batch_size // world
        parts = [data.StreamBatches(ids, batch_size, seq_len, slice(r * share, (r + 1) * share)).batch(S - 1)[1]
                 for r in range(world)]
        assert torch.equal(torch.cat(parts), batches.batch(S - 1)[1])


@FAST
@given(st.integers(2, 500), st.floats(0.0, 0.5), st.floats(0.0, 0.4))
def test_split_is_contiguous_and_complete(n_ids, val_frac, test_frac):
    """The three splits are consecutive pieces of the ids, together exactly the ids, with validation + test
    holding int(n*(val+test))-ish characters of the n = N - 1 after `<eod>` (the first split keeps `<eod>`).
    A split's first character is context only: evaluation scores ids[1:] of each part."""
    assume(val_frac + test_frac < 1.0)
    ids = np.arange(n_ids)
    train, val, test = data.split_ids(ids, val_frac, test_frac)
    assert np.concatenate([train, val, test]).tolist() == ids.tolist()
    n = n_ids - 1
    assert len(train) == 1 + int(n * (1.0 - val_frac - test_frac))
    assert len(test) == n - int(n * (1.0 - test_frac))


# ----- CTC collapse and greedy decoding -----------------------------------------------------------------

BLANK = ctc_decode.BLANK
paths = st.lists(st.integers(0, 4), max_size=40)  # labels 1..4, 0 the blank
labelings = st.lists(st.integers(1, 4), max_size=20)


def naive_collapse(path: list[int]) -> list[int]:
    """Graves's map B written as a loop: keep a label when it differs from the frame before and is no blank."""
    out, previous = [], None
    for label in path:
        if label != previous and label != BLANK:
            out.append(label)
        previous = label
    return out


@FAST
@given(paths)
def test_collapse_matches_the_map_b(path):
    out = ctc_decode.collapse(path)
    assert out == naive_collapse(path)
    assert BLANK not in out
    assert ctc_decode.collapse(torch.tensor(path, dtype=torch.long)) == out


@FAST
@given(paths)
def test_collapse_is_idempotent_when_its_output_has_no_repeats(path):
    out = ctc_decode.collapse(path)
    if all(a != b for a, b in zip(out, out[1:])):
        assert ctc_decode.collapse(out) == out
    else:  # a doubled label in the text had a blank between its copies in the path: collapsing again merges it
        assert ctc_decode.collapse(out) == [k for k, _ in groupby(out)]


@FAST
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 4)), max_size=15))
def test_collapse_emits_one_label_per_run(runs):
    """A path made of runs (label, length), consecutive runs of different labels: the output is the labels of
    the non-blank runs, one each, so two equal neighbours in the output come from two runs with a blank run
    between them, never from one run."""
    merged = [label for label, _ in groupby(label for label, _ in runs)]  # neighbouring runs of one label are one
    path = [label for label, n in runs for _ in range(n)]
    out = ctc_decode.collapse(path)
    assert out == [label for label in merged if label != BLANK]
    for k, (a, b) in enumerate(zip(out, out[1:])):
        if a == b:
            non_blank = [i for i, label in enumerate(merged) if label != BLANK]
            between = merged[non_blank[k] + 1: non_blank[k + 1]]
            assert BLANK in between


@FAST
@given(labelings, st.lists(st.integers(1, 3), max_size=20))
def test_blanks_between_frames_give_back_the_labels(labels, repeats):
    """Any labelling, each label held for one or more frames and a blank after each, collapses to itself; this
    is why CTC needs a blank between doubled letters."""
    repeats = (repeats + [1] * len(labels))[: len(labels)]
    path = [frame for label, n in zip(labels, repeats) for frame in [label] * n + [BLANK]]
    assert ctc_decode.collapse(path) == labels
    interleaved = [frame for label in labels for frame in (BLANK, label)]
    assert ctc_decode.collapse(interleaved) == labels


@FAST
@given(st.integers(1, 12), st.integers(1, 4), st.integers(2, 6), st.integers(0, 2**31 - 1), st.data())
def test_greedy_decode_is_collapse_of_argmax_on_valid_frames(T, B, V, seed, draw):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(T, B, V, generator=g).log_softmax(-1)
    lengths = torch.tensor(draw.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    decoded = ctc_decode.greedy_decode(log_probs, lengths)
    lp = log_probs.numpy()
    for b in range(B):
        best = [int(np.argmax(lp[t, b])) for t in range(int(lengths[b]))]  # frames past the length are padding
        assert decoded[b] == naive_collapse(best)


# ----- top-k and top-p ------------------------------------------------------------------------------------

logit_rows = st.lists(st.floats(-12, 12, allow_nan=False, width=32), min_size=2, max_size=24)


def reference_allowed(logits: list[float], top_k: int | None, top_p: float | None, temperature: float) -> np.ndarray:
    """Which ids the settings allow, computed here in float64: the k largest logits (ties at the k-th value all
    kept), then, of the tempered distribution over those, every id whose strictly more likely ids hold less than
    p of the mass (a tie-proof form of "the smallest set of most likely ids reaching p")."""
    z = np.array(logits, dtype=np.float64)
    allowed = np.ones(len(z), dtype=bool)
    if top_k is not None and top_k < len(z):
        allowed &= z >= np.sort(z)[::-1][top_k - 1]
    if top_p is not None and top_p < 1:
        w = np.where(allowed, np.exp((z - z[allowed].max()) / temperature), 0.0)
        p = w / w.sum()
        ahead = np.array([p[p > p[i]].sum() for i in range(len(z))])
        allowed &= ahead < top_p + 1e-5  # float32 in the sampler: a hair of slack at the boundary
    return allowed


@FAST
@given(logit_rows, st.one_of(st.none(), st.integers(1, 8)), st.one_of(st.none(), st.floats(0.05, 1.0)),
       st.floats(0.25, 4.0), st.integers(0, 2**31 - 1))
def test_sampling_never_emits_an_excluded_id(logits, top_k, top_p, temperature, seed):
    settings_ = sample.SampleSettings(temperature=temperature, top_k=top_k, top_p=top_p)
    allowed = reference_allowed(logits, top_k, top_p, temperature)
    rows = torch.tensor([logits] * 256, dtype=torch.float32)  # 256 draws of the same distribution
    probs = sample.next_token_distribution(rows[:1], settings_)[0]
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.all(probs[torch.from_numpy(~allowed)] == 0)  # exactly 0, not merely small
    ids = sample.choose(rows, settings_, torch.Generator().manual_seed(seed))
    assert allowed[ids.numpy()].all()


@FAST
@given(st.lists(st.floats(-12, 12, allow_nan=False, width=32), min_size=2, max_size=24, unique=True))
def test_top_p_keeps_the_smallest_nucleus(logits):
    """Without ties, top-p keeps exactly the smallest set of most likely ids whose mass reaches p."""
    z = np.array(logits, dtype=np.float64)
    # Distinct floats are not enough: 0 and 7e-30 give the same float32 probability, and which of the two
    # is "more likely" is then up to the sort, so near-ties are left out rather than given an order.
    assume(np.diff(np.sort(z)).min() > 1e-3)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    order = np.argsort(-p)
    top_p = 0.6
    cumulative = np.cumsum(p[order])
    assume(np.all(np.abs(cumulative - top_p) > 1e-4))  # float32 rounding decides ties with the boundary
    size = int(np.searchsorted(cumulative, top_p) + 1)  # the first prefix whose mass reaches p
    probs = sample.next_token_distribution(torch.tensor([logits]), sample.SampleSettings(top_p=top_p))[0]
    assert set(torch.nonzero(probs).flatten().tolist()) == set(order[:size].tolist())


# ----- CER and BLEU against naive versions ----------------------------------------------------------------

def levenshtein(a, b) -> int:
    """The textbook dynamic programme: insertions, deletions and substitutions cost 1."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


lines = st.text(alphabet="ab c", max_size=12)


@FAST
@given(st.lists(st.tuples(lines, lines), min_size=1, max_size=6))
def test_error_rates_match_a_plain_levenshtein(pairs):
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    rates = ctc_evaluate.error_rates(hyps, refs)
    assert rates["cer"] == pytest.approx(sum(levenshtein(h, r) for h, r in pairs) / max(sum(map(len, refs)), 1))
    words = sum(levenshtein(h.split(), r.split()) for h, r in pairs)
    assert rates["wer"] == pytest.approx(words / max(sum(len(r.split()) for r in refs), 1))
    assert rates["line_accuracy"] == pytest.approx(sum(h == r for h, r in pairs) / len(pairs))


words = st.lists(st.sampled_from(["a", "b", "c", "cat", "dog"]), min_size=4, max_size=12)
BLEU = settings(FAST, max_examples=250 if EXPLORE else 25)  # pycocoevalcap's CIDEr costs a few ms a call


@BLEU
@given(words)
def test_bleu_of_a_hypothesis_equal_to_its_reference_is_100(tokens):
    caption = " ".join(tokens)
    scores = metrics.caption_scores([caption], [[caption]])
    for n in range(1, 5):  # at least 4 words, so every n-gram order has counts
        assert scores[f"bleu{n}"] == pytest.approx(100.0, abs=1e-4)
    assert scores["exact_match"] == 100.0


def clipped_precision(hyp: list[str], ref: list[str], n: int) -> float:
    grams = lambda t: Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))  # noqa: E731
    h, r = grams(hyp), grams(ref)
    return sum(min(c, r[g]) for g, c in h.items()) / max(sum(h.values()), 1)


@BLEU
@given(st.data(), words)
def test_bleu_with_equal_lengths_is_the_clipped_ngram_precision(draw, reference):
    """One hypothesis as long as its one reference: no brevity penalty, so BLEU-1 is the clipped unigram
    precision and BLEU-2 the geometric mean of the clipped uni- and bigram precisions (pycocoevalcap's
    smoothing adds 1e-15 / 1e-9 to the counts: only invisible when every count is above 0)."""
    hypothesis = draw.draw(st.lists(st.sampled_from(["a", "b", "c", "cat", "dog"]),
                                    min_size=len(reference), max_size=len(reference)))
    p1, p2 = (clipped_precision(hypothesis, reference, n) for n in (1, 2))
    scores = metrics.caption_scores([" ".join(hypothesis)], [[" ".join(reference)]])
    assert scores["bleu1"] == pytest.approx(100.0 * p1, abs=1e-4)
    if p2 > 0:
        assert scores["bleu2"] == pytest.approx(100.0 * math.sqrt(p1 * p2), abs=1e-4)
