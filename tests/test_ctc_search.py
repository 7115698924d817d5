"""The lockstep prefix beam search reads exactly what the plain per-line search read (`reference_beam_search`, the
search before issue 19): on synthetic frames of many shapes, with and without a language model, and on real lines
of the shipped reader fused with the shipped LM, at 1 and 2 torch threads."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ctc_helpers import peaked_log_probs, reference_beam_search

from charrnn.core.checkpoint import trained_with
from charrnn.core.pretrained import pretrained
from charrnn.core.tokenizer import CharTokenizer
from charrnn.ctc.config import CTCTrainConfig
from charrnn.ctc.decode import CharLM, beam_texts, lines_from_files, load_char_lm, run_reader
from charrnn.ctc.model import labels, load_reader
from charrnn.ctc.search import search_lines
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN

FIXTURES = Path(__file__).parent / "fixtures" / "ctc-search"
FUSION = dict(lm_weight=0.25, char_bonus=2.0)  # the defaults of `ctc decode --lm`


def hypotheses(lines, **search):
    return [[(h.labels, h.score, h.lm_log_prob) for h in hs] for hs in search_lines(lines, **search)]


def ragged_lines(seed: int, count: int = 9, T: int = 30, V: int | None = None):
    """`count` lines of peaked frames, 0 to T frames long, V labels (random when None)."""
    g = torch.Generator().manual_seed(seed)
    V = V or int(torch.randint(3, 12, (1,), generator=g))
    frames = peaked_log_probs(T, count, V, peak=float(torch.rand(1, generator=g)) * 6, generator=g)
    return [frames[:int(n), b] for b, n in enumerate(torch.randint(0, T + 1, (count,), generator=g))]


@pytest.mark.parametrize("seed", range(6))
def test_lockstep_search_equals_the_per_line_search_to_the_last_bit(seed):
    lines = ragged_lines(seed)
    for search in (dict(beam_size=1 + seed), dict(beam_size=5, prune=-math.inf),
                   dict(beam_size=4, prune=0.0, lm_weight=0.3, char_bonus=0.7)):
        want = [reference_beam_search(lp, **search) for lp in lines]
        for group in (1, 4, 64):  # alone, in groups of mixed lengths, all together
            assert hypotheses(lines, group=group, **search) == want


def tiny_lm(labels: list[str]) -> CharLM:
    tok = CharTokenizer.from_text("".join(labels))
    torch.manual_seed(3)
    model = CharRNN(CharRNNConfig(vocab_size=tok.vocab_size, cell="gru", num_layers=2, hidden_size=8,
                                  embedding_dim=4)).eval()
    return CharLM(model, tok, labels)


@pytest.mark.parametrize("seed", range(3))
def test_lockstep_search_with_an_lm_reads_as_the_per_line_search(seed):
    lm = tiny_lm(["", "h", "e", "l", "o", " ", "w", "r"])
    lines = ragged_lines(seed, V=8)
    for search in (dict(beam_size=6, lm_weight=0.8, char_bonus=0.5), dict(beam_size=3, lm_weight=2.0, char_bonus=1.5)):
        want = [reference_beam_search(lp, lm=lm, **search) for lp in lines]
        got = hypotheses(lines, lm=lm, **search)
        assert [[h[0] for h in hs] for hs in got] == [[h[0] for h in hs] for hs in want]
        np.testing.assert_allclose([h[1:] for hs in got for h in hs], [h[1:] for hs in want for h in hs], atol=1e-6)


@pytest.fixture(scope="module")
def real_lines():
    """The shipped reader's output on 12 validation lines that `make_lines` rendered (seed 0), and the shipped LM."""
    model, tokenizer, ckpt = load_reader(pretrained("ctc"))
    images = lines_from_files(sorted(FIXTURES.glob("*.png")), model.config.height,
                              trained_with(ckpt, CTCTrainConfig).max_width)
    return tokenizer, run_reader(model, tokenizer, images).log_probs, load_char_lm(pretrained("lm"), labels(tokenizer))


@pytest.mark.parametrize("threads", [1, 2])
def test_real_lines_read_as_the_search_before_issue_19_did(real_lines, threads):
    torch.set_num_threads(threads)
    tokenizer, log_probs, lm = real_lines
    expected = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))  # written by the old search
    assert beam_texts(tokenizer, log_probs, beam_size=8) == expected["beam"]
    assert beam_texts(tokenizer, log_probs, beam_size=8, lm=lm, **FUSION) == expected["beam_lm"]
    assert expected["beam_lm"] != expected["beam"]  # the LM changes some of these lines: a real test of fusion


def test_real_lines_every_hypothesis_as_the_per_line_search_with_fewer_lm_steps(real_lines):
    # Every hypothesis of the beam, not only the best; and the LM stepped fewer prefixes than the per-line
    # search asked it for (a new prefix whose extensions cannot reach the beam is not stepped), reading the same.
    _, log_probs, lm = real_lines
    stepped = asked = 0
    for lp in log_probs:
        want = reference_beam_search(lp, beam_size=8, lm=lm, **FUSION)
        asked += lm.rows
        got = hypotheses([lp], beam_size=8, lm=lm, **FUSION)[0]
        stepped += lm.rows
        assert [h[0] for h in got] == [h[0] for h in want]
        np.testing.assert_allclose([h[1:] for h in got], [h[1:] for h in want], atol=1e-5)
    assert stepped < asked


def test_lm_steps_run_on_one_thread_and_the_callers_setting_comes_back(monkeypatch):
    lm = tiny_lm(["", "h", "e", "l", "o"])
    threads = []
    extend = CharLM.extend
    monkeypatch.setattr(CharLM, "extend", lambda self, *a: threads.append(torch.get_num_threads()) or extend(self, *a))
    torch.set_num_threads(2)
    search_lines(ragged_lines(0, V=5), beam_size=4, lm=lm, lm_weight=1.0)
    assert threads and set(threads) == {1}
    assert torch.get_num_threads() == 2
