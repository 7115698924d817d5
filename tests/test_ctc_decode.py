import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ctc_helpers import benchmark, peaked_log_probs

from charrnn.core.checkpoint import save_checkpoint
from charrnn.core.errors import CharRNNError
from charrnn.core.tokenizer import CharTokenizer
from charrnn.ctc.decode import CharLM, load_char_lm
from charrnn.ctc.search import beam_decode, collapse, greedy_decode, prefix_beam_search, search_lines
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN

LABELS = ["", "h", "e", "l", "o"]


def text(ids):
    return "".join(LABELS[i] for i in ids)


def one_hot_path(path, p=0.97):
    """Log-probs (T, V) that put mass p on each frame's label of `path` and share the rest."""
    V = len(LABELS)
    lp = torch.full((len(path), V), (1 - p) / (V - 1))
    lp[torch.arange(len(path)), torch.tensor(path)] = p
    return lp.log()


# ----- collapse and greedy -----------------------------------------------------------------------

def test_collapse_merges_repeats_then_drops_blanks():
    h, e, l, o = 1, 2, 3, 4
    assert text(collapse([h, e, l, l, o])) == "helo"
    assert text(collapse([h, e, l, 0, l, o])) == "hello"  # a doubled letter needs a blank between
    assert text(collapse([0, h, h, 0, 0, e, 0])) == "he"
    assert collapse([]) == [] and collapse([0, 0]) == []
    assert text(collapse(torch.tensor([h, 0, h]))) == "hh"


def test_greedy_uses_only_each_lines_valid_frames():
    h, e, l, o = 1, 2, 3, 4
    line0 = one_hot_path([h, e, l, 0, l, o, o, o])  # all 8 frames valid
    line1 = one_hot_path([h, 0, e, o, o, o, o, o])  # 3 valid frames, then padding full of "o"
    out = greedy_decode(torch.stack([line0, line1], dim=1), torch.tensor([8, 3]))  # (T, B, V)
    assert [text(ids) for ids in out] == ["hello", "he"]
    assert greedy_decode(torch.stack([line0, line1], dim=1), torch.tensor([0, 8]))[0] == []


def test_greedy_refuses_lengths_that_do_not_fit():
    with pytest.raises(ValueError):
        greedy_decode(torch.zeros(4, 2, 5), torch.tensor([5, 1]))
    with pytest.raises(ValueError):
        greedy_decode(torch.zeros(4, 2, 5), torch.tensor([1]))


# ----- prefix beam search ------------------------------------------------------------------------

@pytest.mark.parametrize("prune", [math.log(1e-3), 0.0])
def test_beam_one_on_peaked_distributions_is_greedy(prune):
    g = torch.Generator().manual_seed(0)
    lp = peaked_log_probs(40, 12, 10, peak=10.0, generator=g)
    lengths = torch.tensor([40, 39, 1, 0, 17, 40, 25, 3, 40, 40, 8, 30])
    # prune = 0 keeps only each frame's most likely character: beam 1 must still follow the best path.
    assert beam_decode(lp, lengths, beam_size=1, prune=prune) == greedy_decode(lp, lengths)


def brute_force(lp: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log p(labelling) for every labelling: logsumexp over all V**T paths grouped by their collapse."""
    T, V = lp.shape
    paths: dict[tuple[int, ...], list[float]] = {}
    for path in itertools.product(range(V), repeat=T):
        paths.setdefault(tuple(collapse(path)), []).append(float(sum(lp[t, c] for t, c in enumerate(path))))
    return {k: float(np.logaddexp.reduce(v)) for k, v in paths.items()}


@pytest.mark.parametrize("T,V,seed", [(4, 4, 0), (4, 4, 1), (3, 3, 2), (4, 3, 3), (1, 4, 4)])
def test_wide_beam_is_exact_against_brute_force(T, V, seed):
    g = torch.Generator().manual_seed(seed)
    lp = (torch.randn(T, V, generator=g, dtype=torch.float64) * 1.5).log_softmax(-1)
    exact = brute_force(lp)
    hyps = prefix_beam_search(lp, beam_size=1000, prune=float("-inf"))
    assert {h.labels for h in hyps} == set(exact)  # every labelling, each once (identical prefixes merged)
    for h in hyps:
        assert h.ctc_log_prob == pytest.approx(exact[h.labels], abs=1e-6)
        assert h.score == h.beam_log_prob == pytest.approx(h.ctc_log_prob, abs=1e-9) and h.lm_log_prob == 0.0
    best = max(exact, key=exact.get)
    assert hyps[0].labels == best
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    if best:  # an independent implementation of the same sum (Graves 2006): torch's CTC loss
        loss = F.ctc_loss(lp.unsqueeze(1), torch.tensor([best]), torch.tensor([T]), torch.tensor([len(best)]),
                          reduction="none")
        assert -float(loss) == pytest.approx(hyps[0].ctc_log_prob, abs=1e-6)


def test_ctc_log_prob_is_exact_where_the_beam_lost_paths():
    # A narrow beam drops prefixes whose paths later lead into a kept one: its own sum is then a lower bound.
    # ctc_log_prob is the exact value, the same as torch's CTC loss of each hypothesis on its own.
    g = torch.Generator().manual_seed(0)
    lines = peaked_log_probs(30, 6, 6, peak=1.0, generator=g).double()  # flat frames: many paths, many prefixes
    gaps = []
    for beam_size in (1, 2, 8):
        for line in lines.unbind(1):
            hyps = prefix_beam_search(line, beam_size=beam_size, prune=float("-inf"))
            for h in hyps:
                loss = F.ctc_loss(line[:, None], torch.tensor([h.labels], dtype=torch.long).reshape(1, -1),
                                  torch.tensor([len(line)]), torch.tensor([len(h.labels)]), reduction="sum",
                                  zero_infinity=False)
                assert h.ctc_log_prob == pytest.approx(-float(loss), abs=1e-5)
                assert h.beam_log_prob <= h.ctc_log_prob + 1e-9 and h.score == h.beam_log_prob
                gaps.append(h.ctc_log_prob - h.beam_log_prob)
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)  # ranked by the beam
    assert max(gaps) > 0.1  # paths were lost, and the exact value does not miss them


def test_repeated_character_needs_a_blank():
    # Two frames of "l": as one "l" the paths ll, l-, -l sum; "ll" is impossible in two frames without a blank.
    lp = one_hot_path([3, 3], p=0.9)
    hyps = {h.labels: h for h in prefix_beam_search(lp, beam_size=50, prune=float("-inf"))}
    assert (3, 3) not in hyps
    lp3 = one_hot_path([3, 0, 3], p=0.9)
    assert prefix_beam_search(lp3, beam_size=8)[0].labels == (3, 3)


def test_empty_line_and_bad_options():
    assert prefix_beam_search(torch.zeros(0, 5), beam_size=4)[0].labels == ()
    with pytest.raises(CharRNNError, match="--beam-size"):
        prefix_beam_search(torch.zeros(3, 5), beam_size=0)
    with pytest.raises(CharRNNError, match="--lm-weight"):
        prefix_beam_search(torch.zeros(3, 5), beam_size=2, lm_weight=-1.0)


# ----- language-model fusion ---------------------------------------------------------------------

def tiny_lm(text: str = "ab", cell: str = "lstm", num_layers: int = 1, seed: int = 0):
    tok = CharTokenizer.from_text(text)
    torch.manual_seed(seed)
    model = CharRNN(CharRNNConfig(vocab_size=tok.vocab_size, cell=cell, num_layers=num_layers, hidden_size=8,
                                  embedding_dim=4)).eval()
    return model, tok


def prefer(model: CharRNN, tok: CharTokenizer, char: str, logit: float = 6.0) -> CharRNN:
    """Make the LM predict `char` after anything: the head ignores the state, its bias favours `char`."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[int(tok.encode(char)[0])] = logit
    return model


def test_fusion_moves_toward_the_lm_and_weight_zero_changes_nothing():
    model, tok = tiny_lm("ab")
    lm = CharLM(prefer(model, tok, "b"), tok, ["", "a", "b"])
    lp = torch.tensor([[0.1, 0.5, 0.4]]).log()  # the reader slightly prefers "a"
    assert prefix_beam_search(lp, beam_size=4)[0].labels == (1,)
    fused = prefix_beam_search(lp, beam_size=4, lm=lm, lm_weight=1.0)
    assert fused[0].labels == (2,)
    b = fused[0]
    assert b.lm_log_prob == pytest.approx(math.log(math.exp(6) / (math.exp(6) + 2)), abs=1e-5)  # a, b, <eod>
    assert b.score == pytest.approx(b.beam_log_prob + b.lm_log_prob, abs=1e-9)
    g = torch.Generator().manual_seed(3)
    for line in peaked_log_probs(30, 4, 3, peak=2.0, generator=g).unbind(1):
        plain = prefix_beam_search(line, beam_size=5)
        zero = prefix_beam_search(line, beam_size=5, lm=lm, lm_weight=0.0)
        assert [(h.labels, h.score, h.ctc_log_prob) for h in zero] == [(h.labels, h.score, h.ctc_log_prob)
                                                                       for h in plain]


def test_char_bonus_rewards_length():
    lp = torch.tensor([[0.6, 0.4]]).log()  # "" is likelier than "a"
    assert prefix_beam_search(lp, beam_size=4)[0].labels == ()
    hyp = prefix_beam_search(lp, beam_size=4, char_bonus=1.0)[0]
    assert hyp.labels == (1,) and hyp.score == pytest.approx(math.log(0.4) + 1.0)


@pytest.mark.parametrize("cell,num_layers", [("lstm", 2), ("gru", 1)])
def test_lm_scores_equal_a_full_forward_from_eod(cell, num_layers):
    model, tok = tiny_lm("abc", cell, num_layers, seed=1)
    labels = ["", "c", "a", "b"]  # reader ids differ from the LM's
    lm = CharLM(model, tok, labels)
    prefixes = [(1, 2, 3, 3), (), (2,), (3, 1), (1, 1), (2, 2), (3, 3), (1, 3), (2, 1, 1)]  # ancestors missing
    got = lm.log_probs(prefixes)
    assert got.shape == (len(prefixes), 4)
    for p, row in zip(prefixes, got):
        ids = [tok.eod_id] + [int(tok.encode(labels[i])[0]) for i in p]
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0][0, -1]
        logits[tok.unk_id] = float("-inf")  # never produced, as in sampling
        want = torch.log_softmax(logits, -1)[[int(tok.encode(s)[0]) for s in labels[1:]]]
        np.testing.assert_allclose(row[1:], want.double().numpy(), atol=1e-5)
        assert row[0] == 0.0


def test_lm_cache_steps_each_prefix_once_and_batches_a_frame():
    model, tok = tiny_lm("ab")
    lm = CharLM(model, tok, ["", "a", "b"])
    first = lm.log_probs([(1, 2)])
    steps, rows = lm.steps, lm.rows
    assert (steps, rows) == (2, 2)  # (1,) then (1, 2): the parent is scored first
    again = lm.log_probs([(1, 2), (1,), ()])
    assert (lm.steps, lm.rows) == (steps, rows)
    np.testing.assert_array_equal(first[0], again[0])
    lm.log_probs([(1, 2, 1), (1, 2, 2), (1, 1)])  # three new prefixes of two lengths, their parents known
    assert (lm.steps, lm.rows) == (steps + 1, rows + 3)  # one step for all of them
    g = torch.Generator().manual_seed(0)
    T = 25
    prefix_beam_search(peaked_log_probs(T, 1, 3, peak=2.0, generator=g)[:, 0], beam_size=6, lm=lm, lm_weight=1.0)
    assert 0 < lm.steps <= T  # at most one batched step per frame


def test_lines_searched_in_lockstep_read_as_each_alone():
    # Lines of different lengths share the LM's batched steps; each must still get its own result.
    model, tok = tiny_lm("hello", num_layers=2, seed=3)
    lm = CharLM(model, tok, LABELS)
    g = torch.Generator().manual_seed(5)
    lines = [peaked_log_probs(T, 1, len(LABELS), peak=3.0, generator=g)[:, 0] for T in (7, 3, 11, 1, 9)]
    together = search_lines(lines, beam_size=4, lm=lm, lm_weight=0.8, char_bonus=0.3, group=5)
    assert lm.steps <= 11  # one batched step per frame for the five lines together
    alone = [prefix_beam_search(lp, beam_size=4, lm=lm, lm_weight=0.8, char_bonus=0.3) for lp in lines]
    assert [[h.labels for h in hs] for hs in together] == [[h.labels for h in hs] for hs in alone]
    assert [h.score for hs in together for h in hs] == pytest.approx([h.score for hs in alone for h in hs])


def test_vocabulary_mismatch_is_refused_or_floored():
    model, tok = tiny_lm("ab")
    with pytest.raises(CharRNNError, match=r"'z'.*--lm-unknown floor"):
        CharLM(model, tok, ["", "a", "z"])
    lm = CharLM(model, tok, ["", "a", "z"], unknown="floor", floor=-7.0)
    rows = lm.log_probs([(), (2,), (1,)])
    assert rows[0, 2] == -7.0 and rows[2, 2] == -7.0
    np.testing.assert_array_equal(rows[1], rows[0])  # the LM does not read "z": the state stays
    with pytest.raises(CharRNNError, match="--lm-unknown"):
        CharLM(model, tok, ["", "a"], unknown="ignore")
    with pytest.raises(CharRNNError, match="reader labels"):
        prefix_beam_search(torch.zeros(2, 5), beam_size=2, lm=lm, lm_weight=1.0)


def test_load_char_lm_reads_lm_checkpoints_and_refuses_others(tmp_path):
    model, tok = tiny_lm("ab")
    save_checkpoint(tmp_path / "lm.pt", model, tok, task="lm")
    lm = load_char_lm(tmp_path / "lm.pt", ["", "b", "a"])
    np.testing.assert_allclose(lm.log_probs([(1,)]), CharLM(model, tok, ["", "b", "a"]).log_probs([(1,)]))
    save_checkpoint(tmp_path / "reader.pt", model, tok, task="ctc")
    with pytest.raises(CharRNNError, match="not a language model"):
        load_char_lm(tmp_path / "reader.pt", ["", "a"])


def test_benchmark_runs_small():
    speeds = benchmark(T=6, V=5, lines=2, beam_size=2, hidden_size=8)
    assert {"greedy", "beam", "beam_lm"} <= set(speeds) and all(v > 0 for v in speeds.values())


def test_reading_lines_stops_between_batches_when_asked(monkeypatch):
    # The evaluation of a line reader (read_images) checks for a stop (a signal during training) per batch.
    from pathlib import Path

    from charrnn.core.checkpoint import trained_with
    from charrnn.core.errors import StopRequested
    from charrnn.ctc import decode
    from charrnn.ctc.config import CTCTrainConfig
    from charrnn.ctc.model import load_reader

    fixtures = Path(__file__).parent / "fixtures" / "release-0.1.0"
    model, tok, ckpt = load_reader(fixtures / "ctc.pt")
    lines = decode.lines_from_files(sorted((fixtures / "lines").glob("*.png")), model.config.height,
                                    trained_with(ckpt, CTCTrainConfig).max_width)
    monkeypatch.setattr(decode, "EVAL_BATCH", 1)  # 4 lines, 4 batches
    asked, batches = [], []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a: batches.append(1) or forward(self, *a))
    with pytest.raises(StopRequested):
        decode.read_images(model, tok, lines, should_stop=lambda: asked.append(1) or len(asked) == 3)
    assert len(batches) == 2  # the stop asked for after the second batch came before the third
    texts, loss = decode.read_images(model, tok, lines, should_stop=lambda: False)
    assert len(texts) == 4 and math.isfinite(loss)
