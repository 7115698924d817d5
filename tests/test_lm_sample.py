import math

import pytest
import torch

import charrnn.lm.sample as sample_module
from charrnn.core.errors import CharRNNError
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.evaluate import evaluate, evaluate_file
from charrnn.lm.model import CharRNN, load_model
from charrnn.lm.sample import (
    SampleSettings,
    beam_search,
    choose,
    iter_sample,
    make_generator,
    next_token_distribution,
    prime_ids,
    sample,
)
from charrnn.lm.stepper import Stepper


@pytest.fixture(scope="module")
def model_and_tok(trained_run):
    model, tok, _ = load_model(trained_run[0])
    return model, tok


def test_same_seed_same_text(model_and_tok):
    model, tok = model_and_tok
    kw = dict(prime="First", length=80, settings=SampleSettings(1.0), num_samples=2, stop_at_eod=False)
    a = sample(model, tok, **kw, seed=7)
    b = sample(model, tok, **kw, seed=7)
    c = sample(model, tok, **kw, seed=8)
    assert a == b and a != c and len(a) == 2 and a[0] != a[1]
    assert all(0 < len(t) <= 80 for t in a)  # <eod> (possible here, not stopped at) is printed as ""


def test_temperature_zero_is_argmax(model_and_tok):
    model, tok = model_and_tok
    text = sample(model, tok, prime="First", length=30, settings=SampleSettings(0.0), seed=1, stop_at_eod=False)[0]
    # Recompute the greedy path by hand from full forward passes.
    ids = [tok.eod_id, *tok.encode("First").tolist()]
    out = []
    for _ in range(30):
        logits, _ = model(torch.tensor([ids]))
        last = logits[0, -1]
        last[tok.unk_id] = float("-inf")
        nxt = int(last.argmax())
        ids.append(nxt)
        out.append(nxt)
    assert text == tok.decode(out)


def test_top_k_and_top_p_never_emit_excluded():
    torch.manual_seed(0)
    logits = torch.randn(4, 30)
    probs = next_token_distribution(logits, SampleSettings(1.0, top_k=3))
    assert ((probs > 0).sum(-1) == 3).all()
    assert torch.equal((probs > 0), logits >= torch.topk(logits, 3).values[:, -1:])
    p = next_token_distribution(logits, SampleSettings(1.0, top_p=0.5))
    full = torch.softmax(logits, -1)
    for row in range(4):
        kept = p[row] > 0
        order = torch.argsort(full[row], descending=True)
        n = int(kept.sum())
        assert set(order[:n].tolist()) == set(torch.nonzero(kept).flatten().tolist())  # the most likely ones
        assert full[row][order[: n - 1]].sum() < 0.5 <= full[row][order[:n]].sum() + 1e-6  # smallest such set


def test_top_k_1_streams_the_greedy_text(model_and_tok):
    model, tok = model_and_tok
    gen = torch.Generator().manual_seed(0)
    steps = list(iter_sample(model, tok, length=50, settings=SampleSettings(2.0, top_k=1), generator=gen,
                             stop_at_eod=False))
    assert len(steps) == 50 and all(len(pieces) == 1 and len(pieces[0]) == 1 for pieces in steps)
    greedy = sample(model, tok, length=50, settings=SampleSettings(0.0), stop_at_eod=False)
    assert "".join(pieces[0] for pieces in steps) == greedy[0]
    topk1 = sample(model, tok, length=50, settings=SampleSettings(2.0, top_k=1), seed=3, stop_at_eod=False)
    assert topk1 == greedy


def test_stop_string_cuts_the_sample(model_and_tok):
    model, tok = model_and_tok
    free = sample(model, tok, prime="First", length=200, settings=SampleSettings(0.0), stop_at_eod=False)[0]
    stop = free[10:13]
    first = free.find(stop)
    cut = sample(model, tok, prime="First", length=200, settings=SampleSettings(0.0), stop=[stop],
                 stop_at_eod=False)[0]
    assert cut == free[:first]


def test_unknown_prime_is_a_clear_error(model_and_tok):
    model, tok = model_and_tok
    with pytest.raises(CharRNNError, match="'Z'"):
        sample(model, tok, prime="Zebra", length=10)
    assert len(sample(model, tok, prime="Zebra", length=10, map_unknown=True, stop_at_eod=False)[0]) == 10


def test_beam_search_is_deterministic_and_scores_well(model_and_tok):
    model, tok = model_and_tok
    prime = "First Citizen:\n"
    text, score = beam_search(model, tok, prime=prime, length=20, beam_size=4, stop_at_eod=False)
    again, _ = beam_search(model, tok, prime=prime, length=20, beam_size=4, stop_at_eod=False)
    greedy = sample(model, tok, prime=prime, length=20, settings=SampleSettings(0.0), stop_at_eod=False)[0]
    assert text == again and len(text) == 20

    def logp(cont):
        ids = torch.tensor([[tok.eod_id, *tok.encode(prime + cont).tolist()]])
        logits = model(ids)[0][0, :-1]
        logits[:, tok.unk_id] = float("-inf")  # never produced: the sampler bans it
        lp = torch.log_softmax(logits, -1)
        n = len(cont)
        return lp[-n:].gather(1, ids[0, -n:, None]).sum().item()

    assert score == pytest.approx(logp(text) / 20, abs=1e-4)  # log-probability per character (alpha 1)
    assert logp(text) >= logp(greedy) - 1e-4  # a beam of 4 finds at least the greedy path's probability


def test_streams_and_burn_in_agree_with_a_single_pass(model_and_tok, trained_run):
    model, tok = model_and_tok
    ids = tok.encode(trained_run[1].read_text())
    one = evaluate(model, ids, streams=1)
    many = evaluate(model, ids, streams=8, burn_in=64)
    assert one.chars == many.chars == len(ids) - 1
    assert abs(one.nats_per_char - many.nats_per_char) < 0.02
    file_result = evaluate_file(model, tok, trained_run[1], streams=1)
    assert file_result.chars == len(trained_run[1].read_text())


def test_sampled_frequencies_follow_the_distribution():
    from charrnn.lm.sample import choose

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, -1)
    gen = torch.Generator().manual_seed(0)
    picks = choose(logits, SampleSettings(1.0, top_k=2), gen)
    counts = torch.bincount(picks, minlength=4).float() / len(picks)
    assert counts[2] == 0 and counts[3] == 0  # excluded by top-k: never drawn
    assert abs(counts[0] - 0.5 / 0.8) < 0.03 and abs(counts[1] - 0.3 / 0.8) < 0.03


def full_logits_primed(model, tokenizer, prime, batch, *, map_unknown=False):
    """The straightforward priming: every stream reads the prime, with logits at every position."""
    model.eval()
    ids = prime_ids(tokenizer, prime, map_unknown)
    logits, state = model(ids.unsqueeze(0).expand(batch, -1), model.init_state(batch))
    logits = logits[:, -1].clone()
    logits[:, tokenizer.unk_id] = float("-inf")
    stepper = Stepper(model, batch, banned=[tokenizer.unk_id])
    stepper.load_state(state)
    return logits, stepper


@pytest.mark.parametrize("cell", ["trained gru", "lstm", "rnn"])
def test_reading_the_prime_once_gives_the_same_text(model_and_tok, monkeypatch, cell):
    model, tok = model_and_tok
    if cell != "trained gru":
        torch.manual_seed(0)
        model = CharRNN(CharRNNConfig(vocab_size=tok.vocab_size, cell=cell, num_layers=2, hidden_size=24,
                                      embedding_dim=8))
    monkeypatch.setattr(sample_module, "PRIME_CHUNK", 5)  # the 21-character prime is read in 5 pieces
    prime = "First Citizen:\nBefore"
    kw = dict(prime=prime, length=60, settings=SampleSettings(1.0), num_samples=3, stop_at_eod=False, seed=11)
    texts = sample(model, tok, **kw)
    best = beam_search(model, tok, prime=prime, length=30, beam_size=4, stop_at_eod=False)
    with torch.no_grad():
        logits = sample_module.primed(model, tok, prime, 3)[0]
        monkeypatch.setattr(sample_module, "primed", full_logits_primed)
        reference = full_logits_primed(model, tok, prime, 3)[0]
    assert torch.allclose(logits, reference, atol=1e-5)
    assert sample(model, tok, **kw) == texts  # to the character
    again = beam_search(model, tok, prime=prime, length=30, beam_size=4, stop_at_eod=False)
    assert again[0] == best[0] and again[1] == pytest.approx(best[1], abs=1e-5)  # float32 rounding aside


@pytest.mark.parametrize("temperature", [1e-300, 1e-40, 5e-324, 1e-29])
def test_a_tiny_temperature_is_greedy(model_and_tok, temperature):
    model, tok = model_and_tok
    kw = dict(prime="First", length=60, stop_at_eod=False, seed=0)
    assert sample(model, tok, settings=SampleSettings(temperature), **kw) == sample(
        model, tok, settings=SampleSettings(0.0), **kw)


@pytest.mark.parametrize("temperature", [1e300, 1e39, 1.7e308, 1e29])
def test_a_huge_temperature_is_uniform_over_the_allowed_characters(model_and_tok, temperature):
    logits = torch.randn(6000, 5) * 30
    logits[:, 4] = float("-inf")  # banned, like <unk>
    picks = choose(logits, SampleSettings(temperature), torch.Generator().manual_seed(0))
    counts = torch.bincount(picks, minlength=5).float() / len(picks)
    assert counts[4] == 0 and (counts[:4] - 0.25).abs().max() < 0.03
    top2 = choose(logits, SampleSettings(temperature, top_k=2), torch.Generator().manual_seed(0))
    assert torch.equal(torch.sort(logits, -1, descending=True).indices[:, :2].eq(top2[:, None]).any(-1),
                       torch.ones(6000, dtype=torch.bool))
    model, tok = model_and_tok
    text = sample(model, tok, length=300, settings=SampleSettings(temperature), stop_at_eod=False, seed=1)[0]
    assert len(text) > 250 and "\ufffd" not in text  # <unk> is decoded as U+FFFD: never produced (<eod> as "")


@pytest.mark.parametrize("temperature", [1e-29, 1e-5, 0.8, 1.0, 1e5, 1e29])
def test_the_distribution_is_never_nan_even_for_huge_logits(temperature):
    logits = torch.tensor([[1e30, -1e30, 0.0, 1.0, float("-inf")], [1e-3, 2e-3, 0.0, -5.0, float("-inf")]])
    probs = next_token_distribution(logits, SampleSettings(temperature, top_p=0.95))
    assert torch.isfinite(probs).all() and (probs[:, -1] == 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(2))


@pytest.mark.parametrize("settings, flag", [
    (dict(temperature=math.nan), "--temperature"), (dict(temperature=math.inf), "--temperature"),
    (dict(temperature=-1.0), "--temperature"), (dict(temperature=-1e-300), "--temperature"),
    (dict(top_p=0.0), "--top-p"), (dict(top_p=1.5), "--top-p"), (dict(top_p=math.nan), "--top-p"),
    (dict(top_p=-0.1), "--top-p"), (dict(top_k=0), "--top-k"), (dict(top_k=-3), "--top-k"),
])
def test_bad_sampling_settings_are_refused(settings, flag):
    with pytest.raises(CharRNNError, match=flag):
        SampleSettings(**settings)


def test_bad_options_fail_at_the_call_before_any_text(model_and_tok):
    model, tok = model_and_tok
    for kw, flag in ((dict(length=-1), "--length"), (dict(num_samples=0), "--num-samples"),
                     (dict(prime="Zebra"), "'Z'")):
        with pytest.raises(CharRNNError, match=flag):
            iter_sample(model, tok, **kw)  # raises here, not at the first next()


@pytest.mark.parametrize("alpha", [math.nan, math.inf, -1.0, 10.5, 1e6])
def test_bad_length_alpha_is_refused(model_and_tok, alpha):
    model, tok = model_and_tok
    with pytest.raises(CharRNNError, match="--length-alpha"):
        beam_search(model, tok, prime="First", length=10, beam_size=2, length_alpha=alpha)


@pytest.mark.parametrize("alpha", [0.0, 10.0])
def test_length_alpha_at_the_ends_of_its_range(model_and_tok, alpha):
    model, tok = model_and_tok
    text, score = beam_search(model, tok, prime="First", length=40, beam_size=3, length_alpha=alpha)
    assert math.isfinite(score) and len(text) <= 40


@pytest.mark.parametrize("seed", [-1, 2**64, -(2**63)])
def test_seeds_outside_64_bits_are_refused(model_and_tok, seed):
    model, tok = model_and_tok
    with pytest.raises(CharRNNError, match="--seed"):
        make_generator(model, seed)
    with pytest.raises(CharRNNError, match="--seed"):
        sample(model, tok, length=5, seed=seed)


def test_the_largest_seed_is_taken(model_and_tok):
    model, _ = model_and_tok
    assert make_generator(model, 2**64 - 1).initial_seed() == 2**64 - 1
