import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.activations import Trace, collect_activations, gate_saturation, load_npz, save_lstmvis, save_npz
from charrnn.cli import app
from charrnn.model import CELLS, CharRNN, CharRNNConfig
from charrnn.probes import (after_newline, bracket_depth, in_brackets, in_comment, in_double_quotes, indent_depth,
                            line_position, rank_cells, threshold_accuracy, word_start)
from charrnn.tokenizer import CharTokenizer
from charrnn.train import train
from charrnn.viz import render_html

from conftest import TEXT, tiny_config


def test_probes_on_known_strings():
    chars = list('a "b" (c[d])\n  x # y\nz')
    assert in_double_quotes(chars)[:6].tolist() == [0, 0, 1, 1, 0, 0]
    # Cut inside a quotation: the closing quote is recognised as one, not taken for an opening.
    assert in_double_quotes(list('b" and "c" x="y"')).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0]
    assert bracket_depth(chars)[6:13].tolist() == [1, 1, 2, 2, 1, 0, 0]
    assert in_brackets(chars)[6:13].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert line_position(list("ab\ncd")).tolist() == [1, 2, 0, 1, 2]
    assert indent_depth(list("x\n  y\n\tz")).tolist() == [0, 0, 1, 2, 2, 0, 4, 4]
    assert in_comment(list('a # b\nc "#" d // e')).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]  # from the second slash
    assert word_start(list("hi there, 42")).tolist() == [1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    assert after_newline(list("a\nb")).tolist() == [0, 1, 0]


def test_threshold_accuracy():
    assert threshold_accuracy(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert threshold_accuracy(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 1.0  # either direction
    assert threshold_accuracy(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 1, 1])) == 0.75  # the base rate


@pytest.mark.parametrize("cell", CELLS)
def test_traced_states_equal_the_fast_path(cell):
    torch.manual_seed(0)
    tok = CharTokenizer.from_text(TEXT)
    model = CharRNN(CharRNNConfig(tok.vocab_size, cell, num_layers=2, hidden_size=16, embedding_dim=8)).eval()
    text = TEXT[:300]
    trace = collect_activations(model, tok, text, chunk=64)  # several chunks: the state must carry across
    ids = torch.as_tensor(np.concatenate([[tok.eod_id], tok.encode(text)])).unsqueeze(0)
    with torch.no_grad():
        out, final = model.rnn(model.embed(ids))
        logits = model.head(out)
    final = final if isinstance(final, tuple) else (final,)
    assert np.allclose(trace.layers[1]["h"], out[0, 1:].numpy(), atol=1e-5)
    for l in range(2):
        assert np.allclose(trace.layers[l]["h"][-1], final[0][l, 0].numpy(), atol=1e-5)
        if cell == "lstm":
            assert np.allclose(trace.layers[l]["c"][-1], final[1][l, 0].numpy(), atol=1e-5)
    probs = torch.softmax(logits[0, 1:-1], -1)
    true_next = probs[torch.arange(len(text) - 1), ids[0, 2:]].numpy()
    assert np.allclose(trace.next_prob[:-1], true_next, atol=1e-5) and np.isnan(trace.next_prob[-1])
    assert trace.top_ids.shape == (len(text), 5)


def test_npz_and_lstmvis_round_trip(tmp_path):
    torch.manual_seed(0)
    tok = CharTokenizer.from_text(TEXT)
    model = CharRNN(CharRNNConfig(tok.vocab_size, "lstm", num_layers=2, hidden_size=8, embedding_dim=4))
    trace = collect_activations(model, tok, TEXT[:120])
    path = save_npz(trace, tmp_path / "acts.npz")
    back = load_npz(path)
    assert back.chars == trace.chars and back.cell == "lstm"
    assert set(back.layers[0]) == {"h", "c", "i", "f", "g", "o"}
    assert np.array_equal(back.layers[1]["c"], trace.layers[1]["c"])
    h5py = pytest.importorskip("h5py")
    out = save_lstmvis(trace, tmp_path / "vis")
    with h5py.File(out / "states.hdf5") as f:
        assert f["h2"].shape == (120, 8) and "c1" in f and "f2" in f
    with h5py.File(out / "train.hdf5") as f:
        assert f["words"][:].tolist() == trace.ids.tolist()
    assert "word_sequence:" in (out / "lstm.yml").read_text()
    assert "<newline>" in (out / "train.dict").read_text()


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.external, self.data, self._in_data = [], None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http", "//")):
                self.external.append(attrs[key])
        self._in_data = attrs.get("id") == "data"

    def handle_data(self, data):
        if self._in_data:
            self.data = json.loads(data)
            self._in_data = False


def test_html_is_self_contained_and_complete():
    chars = list('He said "hi" (twice)\nand left.\n') * 3
    T = len(chars)
    pos = np.array([float(x) for x in __import__("charrnn.probes", fromlist=["x"]).line_position(chars)])
    h = np.random.default_rng(0).normal(size=(T, 4)).astype(np.float32)
    h[:, 2] = pos / pos.max()  # a perfect line-position cell
    trace = Trace(chars, np.zeros(T, np.int32), "gru",
                  [{"h": h, "r": np.full((T, 4), 0.95, np.float32), "z": np.zeros((T, 4), np.float32),
                    "n": h.copy()}], np.ones(T, np.float32), np.zeros((T, 5), np.int32),
                  np.full((T, 5), 0.2, np.float32), ["a", "b", "c", "d", "e"])
    page = render_html(trace)
    parser = _Collect()
    parser.feed(page)
    assert parser.external == [] and "http://" not in page.replace("http://www.w3.org", "")
    assert parser.data["chars"] == chars
    best = parser.data["probes"]["line_position"][0]
    assert (best["layer"], best["kind"], best["unit"]) == (0, "h", 2) and best["correlation"] > 0.99
    assert "layer0/h/2" in parser.data["series"]
    sat = gate_saturation(trace)
    assert sat["layer0"]["r"]["mean_right"] == 1.0 and sat["layer0"]["z"]["mean_left"] == 1.0


def test_rank_cells_finds_planted_cells_and_skips_constant_probes():
    chars = list("ab (cd) ef\n" * 20)
    T = len(chars)
    from charrnn.probes import in_brackets as ib

    h = np.random.default_rng(1).normal(size=(T, 6)).astype(np.float32)
    h[:, 4] = -ib(chars)  # anti-correlated: ranks by |correlation|
    trace = Trace(chars, np.zeros(T, np.int32), "rnn", [{"h": h}], np.ones(T), np.zeros((T, 1), np.int32),
                  np.ones((T, 1)), ["x"])
    result = rank_cells(trace, top=3)
    top = result["probes"]["in_brackets"][0]
    assert top["unit"] == 4 and top["correlation"] < -0.99 and top["accuracy"] == 1.0
    assert "in_quotes" in result["constant"] and "in_quotes" not in result["probes"]


@pytest.mark.parametrize("cell", CELLS)
def test_dump_viz_cells_through_the_cli(tmp_path, corpus, cell):
    run = tmp_path / "run"
    train(tiny_config(corpus, run, cell=cell, num_layers=2, max_steps=3, eval_every=3))
    runner = CliRunner()
    r = runner.invoke(app, ["dump", str(run), str(corpus), "--out", str(tmp_path / "acts.npz"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["chars"] == len(corpus.read_text())
    r = runner.invoke(app, ["viz", str(tmp_path / "acts.npz"), "--out", str(tmp_path / "cells.html")])
    assert r.exit_code == 0, r.output
    assert "<script" in (tmp_path / "cells.html").read_text()
    r = runner.invoke(app, ["cells", str(run), str(corpus), "--json", "--plot", str(tmp_path / "sat.svg")])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert "line_position" in result["probes"] and "gate_saturation" in result
    assert len(result["probes"]["line_position"]) == 5
    if cell != "rnn":
        assert (tmp_path / "sat.svg").read_text().startswith("<svg")
    r = runner.invoke(app, ["cells", str(tmp_path / "acts.npz")])
    assert r.exit_code == 0 and "interpretable cells" in r.stdout


def test_activation_errors_are_one_line(tmp_path, trained_run):
    runner = CliRunner()
    r = runner.invoke(app, ["dump", str(trained_run[0])])
    assert r.exit_code == 2 and "TEXT_FILE or --text" in r.stderr
    r = runner.invoke(app, ["viz", str(tmp_path / "nothing.npz")])
    assert r.exit_code == 2 and "no such activations file" in r.stderr
    r = runner.invoke(app, ["dump", str(trained_run[0]), "--text", "Zzz", "--out", str(tmp_path / "a.npz")])
    assert r.exit_code == 2 and "--map-unknown" in r.stderr


def test_saturated_units_do_not_pass_for_signals():
    # A gate stuck at 1 carries only float32 rounding noise; centring must happen before correlating.
    chars = list('"a b" c d\n' * 2000)
    T = len(chars)
    rng = np.random.default_rng(0)
    z = (1.0 + rng.normal(scale=1e-7, size=(T, 3))).astype(np.float32)
    h = rng.normal(size=(T, 3)).astype(np.float32)
    h[:, 1] = in_double_quotes(chars) + rng.normal(scale=0.5, size=T)
    trace = Trace(chars, np.zeros(T, np.int32), "gru", [{"h": h, "r": z, "z": z, "n": h}], np.ones(T),
                  np.zeros((T, 1), np.int32), np.ones((T, 1)), ["x"])
    result = rank_cells(trace, top=2)
    best = result["probes"]["in_quotes"][0]
    assert (best["kind"] in ("h", "n"), best["unit"]) == (True, 1) and 0.5 < best["correlation"] <= 1.0
    assert all(abs(r["correlation"]) <= 1.0 for rows in result["probes"].values() for r in rows)
