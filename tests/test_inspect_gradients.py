"""`charrnn gradients`: the mean gradient norm k characters back (charrnn/inspect/gradients.py), checked against
autograd and against networks whose curve is known in closed form; the memory length; the command."""

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TEXT, tiny_config
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.config import CELLS
from charrnn.core.errors import CharRNNError
from charrnn.inspect.gradients import (
    check_memory_settings,
    initial_model,
    load_memory_runs,
    memory_curve,
    memory_length,
    memory_report,
    spread_positions,
)
from charrnn.inspect.plot import memory_svg
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN

SVG = "{http://www.w3.org/2000/svg}"
SOD = 2  # the start-of-document id of the hand-built models: any id of their 3-letter vocabulary


def _set(model: CharRNN, **weights) -> CharRNN:
    """`model` with the named parameters set by hand (the rest zero), in eval mode."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.as_tensor(weights.get(name.replace(".", "_"), np.zeros(p.shape)), dtype=p.dtype))
    return model.eval()


def _hand_rnn() -> CharRNN:
    """A 1-layer tanh rnn, hidden 2, embedding 2, vocabulary 3, every weight written out."""
    model = CharRNN(CharRNNConfig(vocab_size=3, cell="rnn", num_layers=1, hidden_size=2, embedding_dim=2))
    return _set(model, embedding_weight=[[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]],
                rnn_weight_ih_l0=[[0.5, -0.3], [0.2, 0.8]], rnn_weight_hh_l0=[[0.4, 0.1], [-0.2, 0.3]],
                rnn_bias_ih_l0=[0.1, -0.1], rnn_bias_hh_l0=[0.0, 0.05],
                head_weight=[[1.0, -1.0], [0.5, 0.5], [-1.0, 2.0]], head_bias=[0.1, 0.0, -0.1])


def _by_hand(model: CharRNN, ids: np.ndarray, t: int) -> tuple[float, float]:
    """The gradient norms of log p(ids[t + 1] | sod, ids[..t]) with respect to the inputs of characters t and
    t - 1 of the hand-built rnn, by the chain rule written out: h_s = tanh(W_ih x_s + b + W_hh h_{s-1})."""
    p = {n: v.detach().double().numpy() for n, v in model.named_parameters()}
    W_ih, W_hh, E = p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["embedding.weight"]
    b = p["rnn.bias_ih_l0"] + p["rnn.bias_hh_l0"]
    h, hs = np.zeros(2), []
    for i in [SOD, *ids[:t + 1]]:
        h = np.tanh(W_ih @ E[i] + b + W_hh @ h)
        hs.append(h)
    logits = p["head.weight"] @ hs[-1] + p["head.bias"]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    d_h = p["head.weight"].T @ (np.eye(3)[ids[t + 1]] - probs)  # d log p / d h_t
    d_pre = (1 - hs[-1] ** 2) * d_h  # through the tanh of step t
    d_prev = (1 - hs[-2] ** 2) * (W_hh.T @ d_pre)  # ... and of step t - 1
    return float(np.linalg.norm(W_ih.T @ d_pre)), float(np.linalg.norm(W_ih.T @ d_prev))


def _by_autograd(model: CharRNN, ids: np.ndarray, t: int, k: int) -> float:
    """The same norm from autograd on the whole sequence from the start-of-document token (no windows, no
    carried state)."""
    x = model.embed(torch.as_tensor([[SOD, *ids[:t + 1]]])).detach().requires_grad_(True)
    out, _ = model.rnn(x)
    log_p = F.log_softmax(model.head(out[0, -1]), -1)[ids[t + 1]]
    (grad,) = torch.autograd.grad(log_p, x)
    return float(grad[0, -1 - k].norm())


def test_curve_matches_the_chain_rule_and_autograd_on_the_whole_sequence():
    model = _hand_rnn()
    ids = np.array([0, 1, 1, 0, 2, 1, 0, 0, 1, 2, 0, 1])
    curve, n = memory_curve(model, ids, SOD, max_distance=1, positions=100, batch_size=3)  # 3 batches of windows
    ends = range(1, len(ids) - 1)  # every position with a character before it and one after
    assert n == len(ends)
    by_hand = np.mean([_by_hand(model, ids, t) for t in ends], axis=0)
    by_autograd = [np.mean([_by_autograd(model, ids, t, k) for t in ends]) for k in (0, 1)]
    assert np.allclose(curve, by_hand, rtol=0, atol=1e-6), (curve, by_hand)
    assert np.allclose(curve, by_autograd, rtol=0, atol=1e-6), (curve, by_autograd)


def test_an_open_forget_gate_without_recurrence_gives_a_flat_curve():
    """An lstm with every recurrent weight 0 whose forget and output gates are saturated open (bias 60:
    sigmoid(60) is 1.0 in float32, and its derivative 0), on one character repeated: c_t = c_{t-1} + i g, where
    i and g depend on the input of their own step only, and h_t = tanh(c_t). So d c_t / d x_{t-k} is the same
    d(i g)/dx for every k, and so is the gradient of the prediction at t with respect to x_{t-k}: the curve is
    flat, to float32 rounding. (The character's embedding is in the null space of g's weights: g = 0, so the
    cell stays at 0, far from tanh's saturation, while g's derivative is 1.)"""
    H = 2
    model = CharRNN(CharRNNConfig(vocab_size=3, cell="lstm", num_layers=1, hidden_size=H, embedding_dim=2))
    bias = np.zeros(4 * H)  # gates i, f, g, o
    bias[H:2 * H] = bias[3 * H:] = 60.0
    w_ih = np.zeros((4 * H, 2))
    w_ih[:H] = [[0.3, -0.2], [0.1, 0.4]]  # i: the input reaches the cell through the input gate ...
    w_ih[2 * H:3 * H] = [[0.5, -1.0], [-1.0, 2.0]]  # ... and the candidate g, 0 for the embedding of id 0
    model = _set(model, embedding_weight=[[1.0, 0.5], [0.0, 1.0], [0.5, -0.5]], rnn_weight_ih_l0=w_ih,
                 rnn_bias_ih_l0=bias, head_weight=[[1.0, -1.0], [0.5, 0.5], [-1.0, 2.0]])
    ids = np.zeros(400, dtype=np.int64)
    curve, _ = memory_curve(model, ids, SOD, max_distance=60, positions=16)
    assert curve[0] > 0.1
    assert np.abs(curve / curve[0] - 1).max() < 1e-6, curve
    assert memory_length(curve, 1e-3) is None


@pytest.mark.parametrize("w", [0.5, 0.8])
def test_a_small_recurrent_weight_makes_the_curve_fall_at_its_rate(w):
    """A tanh rnn with W_hh = w I, no bias and inputs of size 1e-4 stays in tanh's linear range, where
    h_t = W_ih x_t + w h_{t-1}: the gradient k characters back is w^k times the one at k = 0."""
    torch.manual_seed(0)
    H = 3
    model = CharRNN(CharRNNConfig(vocab_size=3, cell="rnn", num_layers=1, hidden_size=H, embedding_dim=2))
    model = _set(model, embedding_weight=1e-4 * torch.randn(3, 2), rnn_weight_ih_l0=torch.randn(H, 2),
                 rnn_weight_hh_l0=w * np.eye(H), head_weight=torch.randn(3, H))
    ids = torch.randint(0, 3, (200,)).numpy()
    curve, _ = memory_curve(model, ids, SOD, max_distance=40, positions=20)
    assert np.allclose(curve[1:] / curve[:-1], w, rtol=1e-4), curve[1:] / curve[:-1]
    assert memory_length(curve, 1e-3) == math.ceil(math.log(1e-3) / math.log(w))


@pytest.mark.parametrize("cell", CELLS)
def test_curves_of_every_cell_and_depth_match_autograd(cell):
    """Batches, the carried state and several layers change nothing: each k's mean equals autograd's on the
    whole sequence."""
    torch.manual_seed(1)
    model = CharRNN(CharRNNConfig(vocab_size=5, cell=cell, num_layers=3, hidden_size=6, embedding_dim=0)).eval()
    ids = torch.randint(0, 5, (40,)).numpy()
    curve, n = memory_curve(model, ids, 4, max_distance=5, positions=7, batch_size=2)
    ends = spread_positions(len(ids), 5, 7)
    assert n == 7

    def norm(t, k):  # one-hot inputs (--embedding-dim 0): the gradient with respect to the one-hot vector
        x = model.embed(torch.as_tensor([[4, *ids[:t + 1]]])).requires_grad_(True)
        out, _ = model.rnn(x)
        (grad,) = torch.autograd.grad(F.log_softmax(model.head(out[0, -1]), -1)[ids[t + 1]], x)
        return float(grad[0, -1 - k].norm())

    expected = [np.mean([norm(t, k) for t in ends]) for k in range(6)]
    assert np.allclose(curve, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
def test_states_before_in_any_order_and_in_groups(cell):
    """The state before each start equals a fresh run over the prefix, in the order the starts were given; grouped,
    the same states come a group at a time (`iter_states_before`, which `memory_curve` reads)."""
    from charrnn.inspect.gradients import iter_states_before, states_before

    torch.manual_seed(2)
    model = CharRNN(CharRNNConfig(vocab_size=5, cell=cell, num_layers=2, hidden_size=4, embedding_dim=3)).eval()
    ids = torch.randint(0, 5, (30,)).numpy()
    starts = np.array([7, 0, 12, 7, 29])
    states = states_before(model, ids, starts, 4, chunk=5)
    for j, s in enumerate(starts):
        _, expected = model(torch.as_tensor([[4, *ids[:s]]]))
        assert all(torch.allclose(got[:, j], want[:, 0], atol=1e-6) for got, want in zip(states, expected))
    ascending = np.sort(starts)
    groups = list(iter_states_before(model, ids, ascending, 4, group=2, chunk=5))
    assert [g[0].shape[1] for g in groups] == [2, 2, 1]
    whole = states_before(model, ids, ascending, 4)
    assert all(torch.allclose(torch.cat(parts, 1), w, atol=1e-6) for parts, w in zip(zip(*groups), whole))
    assert states_before(model, ids, np.array([], dtype=np.int64), 4)[0].shape == (2, 0, 4)


def test_memory_length_on_synthetic_curves():
    curve = [2.0, 1.0, 0.02, 0.0021, 0.0001]
    assert memory_length(curve, 1e-3) == 4  # 0.0021 is not below 0.002
    assert memory_length(curve, 1e-2) == 3 and memory_length(curve, 0.6) == 1  # 0.02 is not below 0.02
    assert memory_length([2.0, 1.0, 0.002, 0.0019], 1e-3) == 3  # exactly 1e-3 x curve[0] is not below it
    assert memory_length([1.0, 0.5, 0.4, 0.3], 1e-3) is None  # never falls within K
    assert memory_length([1.0, 2.0, 40.0], 1e-3) is None  # grows
    assert memory_length([1.0, 0.999999], 0.99999999) == 1  # a threshold just under 1
    assert memory_length([1.0, 1e-300, 0.0], 1e-299) == 1  # a threshold just over 0
    assert memory_length([0.0, 0.0], 1e-3) is None and memory_length([math.nan, 0.0], 1e-3) is None


def test_positions_are_spread_and_the_settings_checked():
    assert spread_positions(10, 3, 100).tolist() == [3, 4, 5, 6, 7, 8]  # every one when there are few
    assert spread_positions(1000, 10, 3).tolist() == [10, 504, 998]
    assert spread_positions(12, 10, 5).tolist() == [10]  # K + 2 characters: one position
    with pytest.raises(CharRNNError, match="11 characters long; a distance of 10 needs at least 12"):
        spread_positions(11, 10, 5)
    check_memory_settings(1, 1, 0.5, None)
    for bad in [(0, 1, 0.5, None), (1, 0, 0.5, None), (1, 1, 0.0, None), (1, 1, 1.0, None), (1, 1, math.nan, None),
                (1, 1, 0.5, 0)]:
        with pytest.raises(CharRNNError, match="--"):
            check_memory_settings(*bad)


def test_untrained_is_the_runs_own_starting_weights(tmp_path, corpus, monkeypatch):
    """Training seeds with the run's seed and builds the model first: seeded again, the same model comes back."""
    import charrnn.lm.task

    started = {}
    build = charrnn.lm.task.LanguageModelTask.__init__

    def remember(self, *args, **kwargs):
        build(self, *args, **kwargs)
        started.update({k: v.clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(charrnn.lm.task.LanguageModelTask, "__init__", remember)
    charrnn.lm.task.train(tiny_config(corpus, tmp_path / "run", num_layers=2, max_steps=1, eval_every=1, seed=5))
    from charrnn.core.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "run")
    model, seed = initial_model(ckpt)
    assert seed == 5 and all(torch.equal(model.state_dict()[k], v) for k, v in started.items())
    assert not torch.equal(ckpt["model_state"]["head.weight"], started["head.weight"])  # it did train
    state = torch.random.get_rng_state()
    del ckpt["meta"]["train_config"]  # a checkpoint that records no seed: a seeded initialisation, said so
    again, seed = initial_model(ckpt)
    assert seed is None and torch.equal(again.head.weight, initial_model(ckpt)[0].head.weight)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone


def test_report_labels_runs_and_untrained_ones(trained_run):
    run, corpus = trained_run
    runs = load_memory_runs([run, run / "best.pt", run], TEXT[:300], untrained=True)
    assert [r.name for r in runs] == ["run", "run (untrained)", "run #2", "run #2 (untrained)", "run #3",
                                      "run #3 (untrained)"]
    report = memory_report(runs[:2], max_distance=8, positions=5, threshold=0.1, text_chars=300)
    assert [r["untrained"] for r in report["runs"]] == [False, True]
    first = report["runs"][0]
    assert len(first["curve"]) == len(first["relative"]) == 9 and first["relative"][0] == 1.0
    assert first["memory_length"] == memory_length(first["curve"], 0.1)
    svg = ET.fromstring(memory_svg(report, "a <title>"))
    lines = svg.findall(f"{SVG}polyline")
    assert len(lines) == 2 and lines[0].get("stroke") == lines[1].get("stroke")
    assert lines[0].get("stroke-dasharray") is None and lines[1].get("stroke-dasharray")


runner = CliRunner()


def _one_line_error(args: list[str], says: str) -> None:
    r = runner.invoke(app, ["gradients", *args])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.output
    assert "Traceback" not in r.output


def test_the_command(tmp_path, trained_run):
    run, corpus = trained_run
    plot = tmp_path / "plots" / "memory.svg"
    r = runner.invoke(app, ["gradients", str(run), str(corpus), "--max-distance", "20", "--positions", "6",
                            "--untrained", "--json", "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert set(report) == {"max_distance", "threshold", "positions", "text_chars", "runs"}
    assert report["max_distance"] == 20 and report["threshold"] == 1e-3 and report["text_chars"] == len(TEXT)
    assert [(x["name"], x["untrained"]) for x in report["runs"]] == [("run", False), ("run (untrained)", True)]
    assert set(report["runs"][0]) == {"name", "cell", "num_layers", "hidden_size", "untrained", "positions", "curve",
                                      "relative", "memory_length"}
    assert len(report["runs"][0]["curve"]) == 21 and report["runs"][0]["positions"] == 6
    assert ET.fromstring(plot.read_text()).findall(f"{SVG}polyline")
    r = runner.invoke(app, ["gradients", str(run), "--text", TEXT[:100], "--max-distance", "20", "--positions", "3"])
    assert r.exit_code == 0, r.output
    assert "memory length" in r.stdout and "run" in r.stdout and "k = 20" in r.stdout


def test_command_errors_are_one_line(tmp_path, trained_run):
    from charrnn.core.pretrained import pretrained

    run, corpus = trained_run
    _one_line_error([str(run), "--text", "First Citizen", "--max-distance", "20"], "needs at least 22")
    _one_line_error([str(run), str(corpus), "--max-distance", "0"], "--max-distance")
    _one_line_error([str(run), str(corpus), "--positions", "0"], "--positions")
    _one_line_error([str(run), str(corpus), "--threshold", "1.5"], "--threshold must lie between 0 and 1")
    _one_line_error([str(pretrained("classify")), str(corpus)], "gradients reads language models")
    _one_line_error([str(run), str(corpus), "--plot", str(run / "run.json")], "--plot")
    _one_line_error([str(run), "--text", "First Citizen: Zzz"], "--map-unknown")
    _one_line_error([str(run)], "TEXT_FILE")
    _one_line_error([str(corpus)], "at least one RUN")
