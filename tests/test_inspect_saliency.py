"""Saliency: which earlier characters each prediction used (gradient x input), stored by `dump --saliency`,
read back, checked, and summed up for closing quotes and brackets by `cells`."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.cli.inspect import SALIENCY_TOP, SALIENCY_WINDOW
from charrnn.core.checkpoint import save_checkpoint
from charrnn.core.config import CELLS
from charrnn.core.errors import CharRNNError
from charrnn.core.tokenizer import CharTokenizer
from charrnn.inspect.activations import Trace, collect_activations, dump_activations, kinds_of, load_npz, save_npz
from charrnn.inspect.probes import bracket_pairs, closing_pairs, influence_summary, quote_pairs
from charrnn.inspect.saliency import TOP, WINDOW, Saliency, SaliencySettings, offset_dtype
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN

TEXT = 'He said "yes (and [no]) maybe," she said. "Go {x} (now)!"\n' * 2


def _model(cell="lstm", embedding_dim=4, num_layers=2, hidden_size=6, text=TEXT, seed=0):
    torch.manual_seed(seed)
    tok = CharTokenizer.from_text(text)
    config = CharRNNConfig(tok.vocab_size, cell, num_layers=num_layers, hidden_size=hidden_size,
                           embedding_dim=embedding_dim)
    return CharRNN(config).eval(), tok


def _autograd_saliency(model, tok, text) -> np.ndarray:
    """s[t, j]: gradient x input of input j (0 = the start-of-document token, 1 + i = character i) for the
    prediction after character t, by autograd on the whole sequence at once, in float64."""
    model = model.double()
    ids = torch.as_tensor(np.concatenate([[tok.eod_id], tok.encode(text)])).long()[None]
    x = model.embed(ids).detach().double().requires_grad_(True)
    out, _ = model.rnn(x)
    log_probs = F.log_softmax(model.head(out[0]), dim=-1)  # row 1 + t: after reading character t
    T = ids.shape[1] - 1
    s = np.zeros((T - 1, T + 1))
    for t in range(T - 1):
        (g,) = torch.autograd.grad(log_probs[1 + t, ids[0, 2 + t]], x, retain_graph=True)
        s[t] = (g[0] * x[0]).sum(-1).detach().numpy()
    model.float()
    return s


def _entries(saliency: Saliency, t: int) -> dict[int, float]:
    return {int(k): float(v) for k, v in zip(saliency.offsets[t], saliency.values[t]) if not np.isnan(v)}


@pytest.mark.parametrize("embedding_dim", [4, 0], ids=["embedding", "one-hot"])
@pytest.mark.parametrize("cell", CELLS)
def test_stored_values_equal_autograd_on_the_whole_sequence(cell, embedding_dim):
    model, tok = _model(cell, embedding_dim)
    text = TEXT[:50]
    # A window longer than a chunk: the states it starts from come from chunks before the one being traced.
    W = 11
    trace = collect_activations(model, tok, text, chunk=8, saliency=SaliencySettings(W, W))
    ref = _autograd_saliency(model, tok, text)
    for t in range(len(text) - 1):
        expected = {k: ref[t, 1 + t - k] for k in range(min(W, t + 1))}  # only characters 0..t exist
        got = _entries(trace.saliency, t)
        assert got.keys() == expected.keys(), t
        for k, value in expected.items():
            assert got[k] == pytest.approx(value, rel=2e-3, abs=1e-5), (t, k)  # float16: 11 bits
    assert np.isnan(trace.saliency.values[-1]).all()  # the last character predicts nothing


def test_the_top_entries_are_the_largest_by_magnitude_with_their_signs():
    model, tok = _model("gru")
    every = collect_activations(model, tok, TEXT[:40], saliency=SaliencySettings(12, 12)).saliency
    top = collect_activations(model, tok, TEXT[:40], saliency=SaliencySettings(12, 3)).saliency
    assert top.offsets.shape == (40, 3) and top.offsets.dtype == np.uint8 and top.values.dtype == np.float16
    for t in range(39):
        full = _entries(every, t)
        best = sorted(full, key=lambda k: -abs(full[k]))[:3]
        assert top.offsets[t, :len(best)].tolist() == best, t  # largest |s| first
        assert top.values[t, :len(best)].tolist() == [full[k] for k in best]  # signed
        assert np.isnan(top.values[t, len(best):]).all() and (top.offsets[t, len(best):] == 0).all()
    assert (np.sign(top.values[:-1, 0]) == -1).any() and (np.sign(top.values[:-1, 0]) == 1).any()
    assert offset_dtype(256) == np.uint8 and offset_dtype(257) == np.uint16
    wide = collect_activations(model, tok, TEXT[:30], saliency=SaliencySettings(300, 4)).saliency
    assert wide.offsets.dtype == np.uint16 and wide.window == 300


def _linear_model(scale: float) -> tuple[CharRNN, CharTokenizer]:
    """A one-layer vanilla RNN with no biases, whose start-of-document token reads as a zero vector: its
    log-probabilities are a function of the characters' embeddings alone, and, with the embeddings scaled down
    by `scale`, a linear one (tanh(u) ~ u, log_softmax(z) ~ z - mean(z) - log V for small u and z)."""
    model, tok = _model("rnn", embedding_dim=5, num_layers=1, hidden_size=8, seed=1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias" in name:
                p.zero_()
        model.embedding.weight.mul_(scale)
        model.embedding.weight[tok.eod_id] = 0
    return model, tok


def test_saliency_of_a_linear_model_sums_to_its_log_probability():
    """Gradient x input is complete for a linear function: the s of all its inputs sum to its value less its
    value at zero input (Euler's theorem for homogeneous functions of degree 1). Here the function is
    log p(next) + log V, which is 0 at zero input; the model is made linear by scaling its inputs down, so the
    sums agree up to second-order terms (relative size about |z|, the logits: here 1e-3). At full scale the
    model is no longer linear and the sums miss, which shows the check can fail."""
    text = TEXT[:30]
    for scale, linear in ((1e-2, True), (30.0, False)):
        model, tok = _linear_model(scale)
        trace = collect_activations(model, tok, text, saliency=SaliencySettings(len(text), len(text)))
        sums = np.nansum(trace.saliency.values[:-1].astype(np.float64), axis=1)
        value = np.log(trace.next_prob[:-1].astype(np.float64)) + np.log(tok.vocab_size)
        gap = np.abs(sums - value) / np.abs(value).max()
        assert (gap < 0.01).all() if linear else gap.max() > 0.1, (scale, gap.max())


def test_settings_are_checked():
    assert (SALIENCY_WINDOW, SALIENCY_TOP) == (WINDOW, TOP)  # the CLI's defaults, written out without torch
    with pytest.raises(CharRNNError, match="--saliency-top must be 1 to the window's 5"):
        SaliencySettings(5, 6)
    with pytest.raises(CharRNNError, match="--saliency-window must be 1 to 65,536"):
        SaliencySettings(70000, 3)


# ----- the .npz -----------------------------------------------------------------------------------------

def test_dump_round_trip(tmp_path):
    model, tok = _model("lstm")
    settings = SaliencySettings(20, 5)  # a window longer than the 16-character chunks
    summary = dump_activations(model, tok, TEXT, tmp_path / "acts.npz", dtype="float16", chunk=16, saliency=settings)
    assert summary["saliency"] == {"window": 20, "top": 5}
    trace = collect_activations(model, tok, TEXT, chunk=16, saliency=settings)
    # Traced and written chunk by chunk, or computed whole and saved: the same bytes.
    assert save_npz(trace, tmp_path / "whole.npz", dtype="float16", chunk=1000).read_bytes() == \
        (tmp_path / "acts.npz").read_bytes()
    with np.load(tmp_path / "acts.npz") as z:
        assert json.loads(str(z["meta"]))["saliency"] == {"window": 20, "top": 5}
        assert z["saliency_offsets"].dtype == np.uint8 and z["saliency_values"].dtype == np.float16  # whatever --dtype
    back = load_npz(tmp_path / "acts.npz")
    assert back.saliency.window == 20 and back.saliency.top == 5
    assert np.array_equal(back.saliency.offsets, trace.saliency.offsets)
    assert np.array_equal(back.saliency.values, trace.saliency.values, equal_nan=True)
    head = load_npz(tmp_path / "acts.npz", max_chars=30)
    assert head.saliency.values.shape == (30, 5) and trace.head(30).saliency.offsets.shape == (30, 5)


def test_a_dump_without_saliency_loads_without(tmp_path):
    model, tok = _model("gru")
    summary = dump_activations(model, tok, TEXT[:40], tmp_path / "acts.npz")
    assert summary["saliency"] is None
    with np.load(tmp_path / "acts.npz") as z:
        assert "saliency_offsets" not in z.files and "saliency" not in json.loads(str(z["meta"]))
    assert load_npz(tmp_path / "acts.npz").saliency is None


def test_lstmvis_has_no_place_for_saliency(tmp_path):
    model, tok = _model("lstm")
    with pytest.raises(CharRNNError, match="leave out --format lstmvis or --saliency"):
        dump_activations(model, tok, TEXT, tmp_path / "vis", fmt="lstmvis", saliency=SaliencySettings())
    assert not (tmp_path / "vis").exists()


def _good_arrays(tmp_path) -> dict:
    model, tok = _model("gru", num_layers=1)
    path = tmp_path / "good.npz"
    dump_activations(model, tok, TEXT[:40], path, saliency=SaliencySettings(8, 3))
    with np.load(path) as z:
        return {name: z[name] for name in z.files}


def _meta_with(arrays, saliency):
    return np.array(json.dumps({**json.loads(str(arrays["meta"])), "saliency": saliency}))


def _pointing_before_the_start(arrays):
    offsets = arrays["saliency_offsets"].copy()
    offsets[1, 0] = 5  # character 1 can look 1 back at most
    return offsets


DAMAGE = {
    "offsets outside the window": lambda a: {"saliency_offsets": a["saliency_offsets"] + 8},
    "offsets before the text": lambda a: {"saliency_offsets": _pointing_before_the_start(a)},
    "signed offsets": lambda a: {"saliency_offsets": a["saliency_offsets"].astype(np.int8)},
    "values of the wrong kind": lambda a: {"saliency_values": a["saliency_offsets"]},
    "values of the wrong shape": lambda a: {"saliency_values": a["saliency_values"][:, :2]},
    "a missing member": lambda a: {"saliency_offsets": None},
    "top larger than the window": lambda a: {"meta": _meta_with(a, {"window": 8, "top": 9})},
    "settings not numbers": lambda a: {"meta": _meta_with(a, {"window": "8", "top": 3})},
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_saliency_gives_one_line(tmp_path, damage):
    arrays = _good_arrays(tmp_path)
    changed = {k: v for k, v in {**arrays, **DAMAGE[damage](arrays)}.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **changed)
    with pytest.raises(CharRNNError) as err:
        load_npz(tmp_path / "bad.npz")
    assert "\n" not in str(err.value) and "not an activations file written by charrnn dump" in str(err.value)
    assert "saliency" in str(err.value)


# ----- pairs and the influence summary ------------------------------------------------------------------

def test_pairs_are_read_as_the_probes_read_them():
    assert quote_pairs(list('a "b" c "d"')) == [(2, 4), (8, 10)]
    assert quote_pairs(list('b" and "c" x="y"')) == [(7, 9), (13, 15)]  # cut inside a quotation: the first closes none
    assert bracket_pairs(list("f(a[b](c)) (d"), "(", ")") == [(6, 8), (1, 9)]
    assert bracket_pairs(list("f(a[b](c)) (d"), "[", "]") == [(3, 5)]
    assert bracket_pairs(list("(a]b)"), "(", ")") == [(0, 4)]  # a stray ] closes nothing
    assert bracket_pairs(list("a)b"), "(", ")") == []
    assert set(closing_pairs(list("{x}"))) == {"quotes", "parentheses", "brackets", "braces"}
    assert closing_pairs(list("{x}"))["braces"] == [(0, 2)]


def _planted_trace(text: str, window: int, top: int, found: set[int]) -> Trace:
    """A trace whose saliency puts, for the closing quotes at the indices in `found`, the opening quote second
    among the influences of their prediction; elsewhere only the characters just before."""
    chars, T = list(text), len(text)
    offsets = np.zeros((T, top), np.uint8)
    offsets[:] = np.arange(top)
    offsets[np.arange(T)[:, None] < offsets] = 0
    values = np.where(np.arange(T)[:, None] >= np.arange(top), 1.0 / (1 + np.arange(top)), np.nan).astype(np.float16)
    for opening, closing in quote_pairs(chars):
        if closing in found:
            offsets[closing - 1, 1] = closing - 1 - opening
    values[-1] = np.nan
    layers = [{k: np.zeros((T, 2), np.float32) for k in kinds_of("rnn")}]
    return Trace(chars, np.zeros(T, np.int32), "rnn", layers, np.ones(T, np.float32), np.zeros((T, 1), np.int32),
                 np.ones((T, 1), np.float32), ["x"], saliency=Saliency(window, offsets, values))


def test_influence_summary_counts_openings_among_the_top_influences():
    text = 'a "bcdefgh" d "efghijklmnopqrstuvwxyz" e "fghijkl" (g)'
    pairs = quote_pairs(list(text))
    assert len(pairs) == 3
    found = {pairs[0][1], pairs[1][1]}  # the first two closing quotes' predictions used their opening ones
    summary = influence_summary(_planted_trace(text, 12, 6, found), top=5)
    quotes = summary["pairs"]["quotes"]
    # The second quotation is 24 characters long: its opening quote is outside the window of 12. The first
    # closing quote's prediction has only 10 characters before it to choose 5 from.
    assert quotes == {"closing": 3, "in_window": 2, "opening_in_top": 1, "fraction": 0.5,
                      "chance": pytest.approx((5 / 10 + 5 / 12) / 2)}
    # "(g)": the prediction of ")" has the character 1 back, "(", second among its influences.
    assert summary["pairs"]["parentheses"] == {"closing": 1, "in_window": 1, "opening_in_top": 1, "fraction": 1.0,
                                               "chance": pytest.approx(5 / 12)}
    assert summary["pairs"]["braces"] == {"closing": 0, "in_window": 0, "opening_in_top": 0, "fraction": None,
                                          "chance": None}
    assert influence_summary(_planted_trace(text, 40, 6, found), top=1)["pairs"]["quotes"]["opening_in_top"] == 0
    early = influence_summary(_planted_trace('"a"', 12, 6, {2}))["pairs"]["quotes"]
    assert early["chance"] == 1.0  # two characters in the window: a top 5 holds both


# ----- the command line ---------------------------------------------------------------------------------

@pytest.fixture
def checkpoint(tmp_path):
    model, tok = _model("lstm", hidden_size=8)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, tok, task="lm")
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    return path, text


def test_dump_viz_and_cells_with_saliency(tmp_path, checkpoint):
    runner = CliRunner()
    model, text = map(str, checkpoint)
    acts = str(tmp_path / "acts.npz")
    r = runner.invoke(app, ["dump", model, text, "--out", acts, "--saliency", "--saliency-window", "30",
                            "--saliency-top", "6", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["saliency"] == {"window": 30, "top": 6}
    r = runner.invoke(app, ["viz", acts, "--out", str(tmp_path / "page.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    data = json.loads(page.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    assert data["saliency"]["window"] == 30 and data["saliency"]["top"] == 6
    r = runner.invoke(app, ["cells", acts, "--json"])
    assert r.exit_code == 0, r.output
    influence = json.loads(r.stdout)["influence"]
    assert influence["window"] == 30 and influence["top"] == 5 and influence["pairs"]["quotes"]["closing"] == 4
    r = runner.invoke(app, ["cells", acts])
    assert r.exit_code == 0 and "influence" in r.stdout and '"..."' in r.stdout and "chance" in r.stdout
    # Traced here rather than read from a dump.
    r = runner.invoke(app, ["cells", model, text, "--saliency", "--saliency-window", "10", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["influence"]["window"] == 10
    r = runner.invoke(app, ["viz", model, text, "--saliency", "--out", str(tmp_path / "traced.html")])
    assert r.exit_code == 0 and '"saliency":{"window":100' in (tmp_path / "traced.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("args, message", [
    (["--format", "lstmvis", "--saliency"], "LSTMVis project has no place for it"),
    (["--saliency-window", "5"], "give --saliency too"),
    (["--saliency", "--saliency-window", "5", "--saliency-top", "6"], "--saliency-top must be 1 to the window's 5"),
])
def test_dump_refuses_saliency_settings_that_cannot_be(tmp_path, checkpoint, args, message):
    model, text = map(str, checkpoint)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["dump", model, text, "--out", str(out), *args])
    assert r.exit_code == 2 and message in r.stderr and r.stderr.strip().count("\n") == 0, r.output
    assert not out.exists() and not out.with_suffix(".npz").exists()


def test_saliency_of_a_dump_is_the_dumps_own(tmp_path, checkpoint):
    model, text = map(str, checkpoint)
    acts = str(tmp_path / "acts.npz")
    assert CliRunner().invoke(app, ["dump", model, text, "--out", acts]).exit_code == 0
    for command in (["viz", acts, "--out", str(tmp_path / "x.html")], ["cells", acts]):
        r = CliRunner().invoke(app, [*command, "--saliency"])
        assert r.exit_code == 2 and "charrnn dump --saliency" in r.stderr, r.output
