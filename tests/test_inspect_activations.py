import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEXT, tiny_config
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.config import CELLS
from charrnn.core.errors import CharRNNError
from charrnn.core.svg import loss_curve_svg
from charrnn.core.tokenizer import CharTokenizer
from charrnn.inspect.activations import (
    Trace,
    collect_activations,
    escape_symbol,
    gate_saturation,
    kinds_of,
    load_npz,
    save_lstmvis,
    save_npz,
)
from charrnn.inspect.plot import saturation_svg
from charrnn.inspect.probes import (
    after_newline,
    bracket_depth,
    in_brackets,
    in_comment,
    in_double_quotes,
    indent_depth,
    line_position,
    rank_cells,
    threshold_accuracy,
    word_start,
)
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN
from charrnn.lm.task import train


def test_probes_on_known_strings():
    chars = list('a "b" (c[d])\n  x # y\nz')
    assert in_double_quotes(chars)[:6].tolist() == [0, 0, 1, 1, 0, 0]
    # Cut inside a quotation: the closing quote is recognised as one, not taken for an opening.
    assert in_double_quotes(list('b" and "c" x="y"')).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0]
    assert bracket_depth(chars)[6:13].tolist() == [1, 1, 2, 2, 1, 0, 0]
    assert in_brackets(chars)[6:13].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert line_position(list("ab\ncd")).tolist() == [1, 2, 0, 1, 2]
    assert indent_depth(list("x\n  y\n\tz")).tolist() == [0, 0, 1, 2, 2, 0, 4, 4]
    # "//" comments start at the second slash
    assert in_comment(list('a # b\nc "#" d // e')).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
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
    assert "\\n 0\n" in (out / "train.dict").read_text()  # TEXT's first symbol, the line break


def _random_trace(cell: str, vocabulary: list[str], num_layers: int = 2, hidden: int = 3, T: int = 20) -> Trace:
    rng = np.random.default_rng(0)
    layers = [{k: rng.uniform(size=(T, hidden)).astype(np.float32) for k in kinds_of(cell)} for _ in range(num_layers)]
    ids = rng.integers(0, len(vocabulary), T).astype(np.int32)
    return Trace([vocabulary[i] for i in ids], ids, cell, layers, np.ones(T, np.float32), np.zeros((T, 1), np.int32),
                 np.ones((T, 1), np.float32), vocabulary)


def _read_dict_as_lstmvis_does(path) -> list[list[str]]:
    # LSTMVis's loader: a line that starts with a space is the space symbol (then its id); any other line is
    # split on whitespace, symbol then id.
    with open(path, encoding="utf-8") as f:
        return [[" ", *line.split()] if line.startswith(" ") else line.split() for line in f]


def test_lstmvis_dict_keeps_every_symbol_on_its_line(tmp_path):
    pytest.importorskip("h5py")
    vocabulary = ["a", "\x0c", "\xa0", "\u3000", "\\", " ", "\n", "\\n", "\r", "\x1c", "\x85", "\u2028",
                  "\u200b", "\U0001f600", "<eod>", "<unk>"]
    out = save_lstmvis(_random_trace("lstm", vocabulary), tmp_path / "vis")
    rows = _read_dict_as_lstmvis_does(out / "train.dict")
    assert [len(r) for r in rows] == [2] * len(vocabulary)
    assert [int(i) for _, i in rows] == list(range(len(vocabulary)))
    written = [s for s, _ in rows]
    # The space is written as itself, so LSTMVis shows a space (not `\\u0020`) between the words of the text.
    assert written[:8] == ["a", "\\f", "\\u00a0", "\\u3000", "\\\\", " ", "\\n", "\\\\n"]
    # Python escapes: decoding them gives back every symbol, so no two symbols are written alike.
    assert [s.encode("ascii", "backslashreplace").decode("unicode_escape") for s in written] == vocabulary


def test_escape_symbol_leaves_one_field_for_any_character():
    for code in [*range(0x3100), *range(0xfe00, 0x10000), 0x1f600]:
        if 0xd800 <= code < 0xe000:
            continue  # lone surrogates are no characters of a text
        assert len(escape_symbol(chr(code)).split()) == 1, hex(code)


@pytest.mark.parametrize("name", ["exp: lr 0.01 #x", 'it\'s "q" \\ - [a], {b} & *c \U0001f600 \xe9'])
def test_lstmvis_config_is_yaml_whatever_the_name(tmp_path, name):
    yaml = pytest.importorskip("yaml")
    h5py = pytest.importorskip("h5py")
    out = save_lstmvis(_random_trace("lstm", ["a", "b"], num_layers=2), tmp_path / "vis", name=name)
    config = yaml.safe_load((out / "lstm.yml").read_text(encoding="utf-8"))
    assert config["name"] == name
    assert config["files"] == {"states": "states.hdf5", "train": "train.hdf5", "words": "train.dict"}
    assert config["word_sequence"] == {"file": "train", "path": "words", "dict_file": "words"}
    types = {t["path"]: t for t in config["states"]["types"]}
    with h5py.File(out / "states.hdf5") as f:
        assert sorted(types) == sorted(f)
    assert types["h1"] == {"type": "output", "layer": 1, "path": "h1", "transform": "none"}
    assert types["c2"] == {"type": "state", "layer": 2, "path": "c2"}  # unbounded: LSTMVis squashes it
    assert types["f2"] == {"type": "state", "layer": 2, "path": "f2", "unsigned": True, "transform": "none"}
    assert types["g2"] == {"type": "state", "layer": 2, "path": "g2", "transform": "none"}  # tanh: in [-1, 1]


def test_lstmvis_squashes_no_bounded_state_a_second_time(tmp_path):
    # LSTMVis applies tanh unless a state says `transform: none`: only the LSTM's unbounded c is left to it.
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("h5py")
    for cell in CELLS:
        out = save_lstmvis(_random_trace(cell, ["a", "b"], num_layers=1), tmp_path / cell)
        config = yaml.safe_load((out / "lstm.yml").read_text(encoding="utf-8"))
        types = {t["path"]: t for t in config["states"]["types"]}
        squashed = sorted(path for path, t in types.items() if t.get("transform") != "none")
        assert squashed == (["c1"] if cell == "lstm" else []), cell
        assert all(t.get("unsigned") is True for path, t in types.items() if path[0] in "ifozr"), cell
        assert not any(t.get("unsigned") for path, t in types.items() if path[0] in "hcgn"), cell


def test_rank_cells_finds_planted_cells_and_skips_constant_probes():
    chars = list("ab (cd) ef\n" * 20)
    T = len(chars)
    h = np.random.default_rng(1).normal(size=(T, 6)).astype(np.float32)
    h[:, 4] = -in_brackets(chars)  # anti-correlated: ranks by |correlation|
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
    longer = tmp_path / "longer.txt"
    longer.write_text(TEXT * 2, encoding="utf-8")
    r = runner.invoke(app, ["cells", str(run), str(longer), "--json", "--plot", str(tmp_path / "sat.svg"),
                            "--html", str(tmp_path / "ranked.html")])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    page = (tmp_path / "ranked.html").read_text(encoding="utf-8")
    data = json.loads(page.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    # Every character analysed, and the ranking printed (tests/test_inspect_viewer.py has the rest of the page).
    assert len(data["chars"]) == len(TEXT * 2) and data["probes"] == result["probes"]
    assert "line_position" in result["probes"] and "gate_saturation" in result
    assert len(result["probes"]["line_position"]) == 5
    plot = ET.fromstring((tmp_path / "sat.svg").read_text())
    assert len(plot.findall(f"{SVG}circle")) == sum(len(g["left"]) for layer in result["gate_saturation"].values()
                                                    for g in layer.values())
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
    rows = result["probes"]["in_quotes"]
    assert {(r["kind"], r["unit"]) for r in rows} == {("h", 1), ("n", 1)}  # n is the same array as h here
    expected = np.corrcoef(h[:, 1].astype(np.float64), in_double_quotes(chars))[0, 1]
    assert all(abs(r["correlation"] - expected) < 1e-4 for r in rows)
    assert all(abs(r["correlation"]) <= 1.0 for rows in result["probes"].values() for r in rows)


SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("cell", CELLS)
def test_saturation_plot_has_one_dot_per_unit(cell):
    trace = _random_trace(cell, ["a"], num_layers=2, hidden=3)
    plot = ET.fromstring(saturation_svg(gate_saturation(trace)))
    gates = {"rnn": 0, "lstm": 3, "gru": 2}[cell]  # sigmoid gates only: i, f, o and r, z
    assert len(plot.findall(f"{SVG}circle")) == 2 * gates * 3
    labels = [t.text for t in plot.iter(f"{SVG}text")]
    if cell == "rnn":
        assert labels == ["no gates in an rnn cell"]
    else:
        assert {"layer0", "layer1"} <= set(labels) and len([x for x in labels if x.endswith(" gate")]) == gates


def test_loss_curve_plots_train_and_validation():
    records = [{"kind": "train", "step": s, "loss": 4.0 - s / 100} for s in range(1, 201)]
    records += [{"kind": "eval", "step": s, "val_loss": 3.5 - s / 200} for s in (100, 200)]
    plot = ET.fromstring(loss_curve_svg(records, "exp <1> & co"))
    train, val = plot.findall(f"{SVG}polyline")
    assert len(train.get("points").split()) == 200 and len(val.get("points").split()) == 2
    assert len(plot.findall(f"{SVG}circle")) == 2  # one per evaluation
    labels = [t.text for t in plot.iter(f"{SVG}text")]
    assert "exp <1> & co" in labels and "step" in labels and "200" in labels
    empty = ET.fromstring(loss_curve_svg([], "x"))
    assert [t.text for t in empty.iter(f"{SVG}text")] == ["no data yet"]


@pytest.mark.parametrize("path, name", [
    ("runs/exp: lr 0.01", "exp: lr 0.01"), ("runs/exp: lr 0.01/best.pt", "exp: lr 0.01"),
    ("runs/v1.2/last.pt", "v1.2"), ("models/lm.v2.pt", "lm.v2"), ("best.pt", "best")])
def test_run_name_is_the_whole_name(path, name):
    from charrnn.core.checkpoint import run_name

    assert run_name(path) == name


def test_lstmvis_export_is_named_after_the_whole_run_directory(tmp_path):
    import shutil

    import yaml
    from typer.testing import CliRunner

    from charrnn.cli import app

    run = tmp_path / "exp: lr 0.01"
    shutil.copytree(Path(__file__).parent / "fixtures" / "release-0.1.0" / "lm", run)
    result = CliRunner().invoke(app, ["dump", str(run), "--text", "ROMEO:\nHi.", "--format", "lstmvis",
                                      "--out", str(tmp_path / "vis")])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "vis" / "lstm.yml").read_text(encoding="utf-8"))["name"] == "exp: lr 0.01"


# ----- interrupted dumps leave nothing behind and the previous output whole --------------------------

def _model_and_tokenizer(cell: str = "lstm"):
    torch.manual_seed(0)
    tok = CharTokenizer.from_text(TEXT)
    return CharRNN(CharRNNConfig(tok.vocab_size, cell, num_layers=1, hidden_size=4, embedding_dim=4)), tok


def _signalled_after_first_chunk(monkeypatch, signum):
    """Trace as usual, but have `signum` arrive (as from `kill`) once the first chunk is written."""
    import signal

    import charrnn.inspect.activations as activations

    real = activations.iter_activations

    def chunks(*args, **kwargs):
        for n, part in enumerate(real(*args, **kwargs)):
            if n == 1:
                signal.raise_signal(signum)
            yield part

    monkeypatch.setattr(activations, "iter_activations", chunks)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_during_an_npz_dump_removes_its_temporary_file(tmp_path, monkeypatch, signame):
    import signal

    from charrnn.inspect.activations import dump_activations

    model, tok = _model_and_tokenizer()
    out = tmp_path / "acts.npz"
    dump_activations(model, tok, TEXT[:50], out)
    before = out.read_bytes()
    _signalled_after_first_chunk(monkeypatch, getattr(signal, signame))
    with pytest.raises(KeyboardInterrupt):
        dump_activations(model, tok, TEXT * 3, out, chunk=64)
    assert [p.name for p in tmp_path.iterdir()] == ["acts.npz"] and out.read_bytes() == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_an_interrupted_lstmvis_export_leaves_the_earlier_one_whole(tmp_path, monkeypatch, signame):
    import signal

    pytest.importorskip("h5py")
    from charrnn.inspect.activations import dump_activations

    model, tok = _model_and_tokenizer()
    out = tmp_path / "vis"
    dump_activations(model, tok, TEXT[:50], out, fmt="lstmvis")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _signalled_after_first_chunk(monkeypatch, getattr(signal, signame))
    with pytest.raises(KeyboardInterrupt):
        dump_activations(model, tok, TEXT * 3, out, fmt="lstmvis", chunk=64)
    assert [p.name for p in tmp_path.iterdir()] == ["vis"]  # no temporary directory left beside it
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_lstmvis_export_replaces_the_earlier_one_whole(tmp_path):
    h5py = pytest.importorskip("h5py")
    from charrnn.inspect.activations import dump_activations

    model, tok = _model_and_tokenizer()
    out = tmp_path / "vis"
    dump_activations(model, tok, TEXT[:50], out, fmt="lstmvis")
    dump_activations(model, tok, TEXT[:80], out, fmt="lstmvis")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vis"]
    with h5py.File(out / "states.hdf5") as f, h5py.File(out / "train.hdf5") as g:
        assert f["h1"].shape[0] == g["words"].shape[0] == 80  # states and words of the same export
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CharRNNError, match="holds 'notes.txt'.*give a new one"):
        dump_activations(model, tok, TEXT[:50], out, fmt="lstmvis")
    assert (out / "notes.txt").read_text() == "mine" and (out / "states.hdf5").exists()
