import pytest
import torch

from charrnn.checkpoint import load_model
from charrnn.common import CharRNNError
from charrnn.evaluate import evaluate, evaluate_file
from charrnn.sample import SampleSettings, beam_search, iter_sample, next_token_distribution, sample


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
    from charrnn.sample import choose

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, -1)
    gen = torch.Generator().manual_seed(0)
    picks = choose(logits, SampleSettings(1.0, top_k=2), gen)
    counts = torch.bincount(picks, minlength=4).float() / len(picks)
    assert counts[2] == 0 and counts[3] == 0  # excluded by top-k: never drawn
    assert abs(counts[0] - 0.5 / 0.8) < 0.03 and abs(counts[1] - 0.3 / 0.8) < 0.03
