"""Bounded-memory dumps: streamed .npz and LSTMVis files, float16, memory-mapped loading, damaged files."""

import json
import os
import zipfile

import numpy as np
import pytest
import torch
from conftest import TEXT
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.errors import CharRNNError
from charrnn.core.tokenizer import CharTokenizer
from charrnn.inspect.activations import (
    collect_activations,
    describe,
    dump_activations,
    load_npz,
    save_lstmvis,
    save_npz,
)
from charrnn.inspect.npz import NpzArchive, write_npz
from charrnn.inspect.probes import rank_cells
from charrnn.inspect.viewer import render_html
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN


def _model(cell="lstm"):
    torch.manual_seed(0)
    tok = CharTokenizer.from_text(TEXT)
    return CharRNN(CharRNNConfig(tok.vocab_size, cell, num_layers=2, hidden_size=8, embedding_dim=4)), tok


def _arrays(trace) -> dict:
    layers = {f"layer{l}_{k}": v for l, layer in enumerate(trace.layers) for k, v in layer.items()}
    return {"chars": np.array(trace.chars), "ids": trace.ids, "next_prob": trace.next_prob, "top_ids": trace.top_ids,
            "top_probs": trace.top_probs, **layers}


def _assert_same(trace, expected, n=None):
    for name, values in _arrays(expected).items():
        assert np.array_equal(_arrays(trace)[name], values[:n], equal_nan=values.dtype.kind == "f"), name


def test_dump_written_in_chunks_equals_one_written_at_once(tmp_path):
    model, tok = _model("gru")
    text = TEXT[:150]
    trace = collect_activations(model, tok, text, chunk=64)
    summary = dump_activations(model, tok, text, tmp_path / "streamed.npz", chunk=64)  # traced and written by 64
    whole = save_npz(trace, tmp_path / "whole.npz", chunk=10_000)
    by_seven = save_npz(trace, tmp_path / "by7.npz", chunk=7)
    assert (tmp_path / "streamed.npz").read_bytes() == whole.read_bytes() == by_seven.read_bytes()
    with np.load(whole) as z:  # a plain .npz, no pickles
        assert json.loads(str(z["meta"]))["dtype"] == "float32"
        for name, values in _arrays(trace).items():
            assert np.array_equal(z[name], values, equal_nan=values.dtype.kind == "f"), name
    assert zipfile.ZipFile(whole).testzip() is None  # every checksum right
    assert summary["chars"] == 150 and summary["out"] == str(tmp_path / "streamed.npz")
    assert summary["nats_per_char"] == pytest.approx(describe(trace)["nats_per_char"], rel=1e-5)


def test_float16_dump_is_half_the_size_and_says_so(tmp_path):
    model, tok = _model("lstm")
    trace = collect_activations(model, tok, TEXT[:200])
    small = save_npz(trace, tmp_path / "half.npz", dtype="float16")
    full = save_npz(trace, tmp_path / "full.npz")
    with np.load(small) as z:
        assert json.loads(str(z["meta"]))["dtype"] == "float16"
        assert z["layer1_c"].dtype == np.float16 and z["next_prob"].dtype == np.float32  # probabilities stay float32
    assert small.stat().st_size < 0.6 * full.stat().st_size
    back = load_npz(small)
    assert back.layers[0]["h"].dtype == np.float16
    assert np.allclose(back.layers[1]["c"], trace.layers[1]["c"], rtol=1e-3, atol=1e-4)
    assert rank_cells(back)["probes"] and "<script" in render_html(back, max_chars=50)
    with pytest.raises(CharRNNError, match="float32 or float16"):
        save_npz(trace, tmp_path / "x.npz", dtype="int8")


def test_memory_mapped_load_reads_the_same_values(tmp_path):
    model, tok = _model("gru")
    trace = collect_activations(model, tok, TEXT[:120])
    path = save_npz(trace, tmp_path / "acts.npz")
    back = load_npz(path)
    assert isinstance(back.layers[1]["z"], np.memmap) and back.cell == "gru" and back.vocabulary == trace.vocabulary
    _assert_same(back, trace)
    head = load_npz(path, max_chars=50)  # maps the first 50 rows only
    assert head.length == 50 and head.layers[0]["h"].shape == (50, 8)
    _assert_same(head, trace, 50)
    assert rank_cells(head) == rank_cells(trace.head(50))
    assert render_html(head, max_chars=50) == render_html(trace, max_chars=50)


def test_a_dump_written_the_old_way_still_loads(tmp_path):
    model, tok = _model("lstm")
    trace = collect_activations(model, tok, TEXT[:90])
    path = tmp_path / "old.npz"
    # What save_npz wrote in format version 1: one compressed archive, everything float32.
    meta = {"format": "charrnn-activations", "version": 1, "cell": "lstm", "num_layers": 2}
    layers = {f"layer{l}_{k}": v for l, layer in enumerate(trace.layers) for k, v in layer.items()}
    np.savez_compressed(path, chars=np.array(trace.chars, dtype=object).astype(str), ids=trace.ids,
                        vocabulary=np.array(trace.vocabulary, dtype=str), next_prob=trace.next_prob,
                        top_ids=trace.top_ids, top_probs=trace.top_probs, meta=np.array(json.dumps(meta)), **layers)
    _assert_same(load_npz(path), trace)
    _assert_same(load_npz(path, max_chars=30), trace, 30)


def test_lstmvis_export_is_written_chunk_by_chunk(tmp_path):
    h5py = pytest.importorskip("h5py")
    model, tok = _model("lstm")
    text = TEXT[:130]
    trace = collect_activations(model, tok, text, chunk=32)
    dump_activations(model, tok, text, tmp_path / "streamed", fmt="lstmvis", chunk=32)
    save_lstmvis(trace, tmp_path / "at_once", chunk=10_000)
    save_lstmvis(trace, tmp_path / "half", dtype="float16", chunk=9)
    for out in ("streamed", "at_once"):
        with h5py.File(tmp_path / out / "states.hdf5") as f:
            assert np.array_equal(f["c2"][:], trace.layers[1]["c"]) and np.array_equal(f["o1"][:], trace.layers[0]["o"])
        assert (tmp_path / out / "lstm.yml").read_text() == (tmp_path / "at_once" / "lstm.yml").read_text()
    with h5py.File(tmp_path / "half" / "states.hdf5") as f:
        assert f["h2"].dtype == np.float16 and np.allclose(f["h2"][:], trace.layers[1]["h"], atol=1e-3)


def test_npz_writer_refuses_incomplete_arrays_and_leaves_no_file(tmp_path):
    path = tmp_path / "a.npz"
    with pytest.raises(ValueError, match="not completely written"), write_npz(path, {"a": ((4, 2), np.float32)}) as f:
        f.write("a", np.zeros((3, 2)))
    assert os.listdir(tmp_path) == []
    with write_npz(path, {"a": ((4, 2), np.float32), "s": ((), np.dtype("<U3"))}) as f:
        f.write("a", np.ones((4, 2)))
        f.write("s", np.array("abc"))
    with NpzArchive(path) as archive:
        assert archive.rows("a", 2).shape == (2, 2) and str(archive.read("s")) == "abc"
        assert archive.rows("a").offset % 64 == 0  # aligned for memory maps


# ----- damaged files: each family must give one line through viz and cells, never a traceback -------------

class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _good(tmp_path) -> tuple[dict, dict]:
    model, tok = _model("gru")
    trace = collect_activations(model, tok, TEXT[:40])
    path = save_npz(trace, tmp_path / "good.npz")
    with np.load(path) as z:
        return {name: z[name] for name in z.files}, {"path": path}


def _resave(tmp_path, arrays, **changes) -> object:
    path = tmp_path / "bad.npz"
    arrays = {k: v for k, v in {**arrays, **changes}.items() if v is not None}
    np.savez(path, **arrays)
    return path


def _truncated(tmp_path, arrays, good):
    data = good["path"].read_bytes()
    (tmp_path / "bad.npz").write_bytes(data[:len(data) // 2])
    return tmp_path / "bad.npz"


def _not_a_zip(tmp_path, arrays, good):
    (tmp_path / "bad.npz").write_text("layer0_h: 1 2 3\n")
    return tmp_path / "bad.npz"


def _member_cut_short(tmp_path, arrays, good):
    # The zip is intact (checksums right), but a member's .npy header promises more rows than it holds.
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, values in arrays.items():
            with z.open(f"{name}.npy", "w") as f:
                header = np.lib.format.header_data_from_array_1_0(values)
                if name == "layer1_n":
                    header["shape"] = (2 * len(values), *values.shape[1:])
                np.lib.format.write_array_header_1_0(f, header)
                f.write(values.tobytes())
    return path


DAMAGE = {
    "truncated": _truncated,
    "not a zip": _not_a_zip,
    "member cut short": _member_cut_short,
    "missing member": lambda tmp, a, g: _resave(tmp, a, layer1_z=None),
    "wrong shape": lambda tmp, a, g: _resave(tmp, a, layer1_h=a["layer1_h"].T.copy()),
    "non-matching lengths": lambda tmp, a, g: _resave(tmp, a, chars=a["chars"][:-3]),
    "wrong kind of values": lambda tmp, a, g: _resave(tmp, a, next_prob=a["chars"]),
    "ids outside the vocabulary": lambda tmp, a, g: _resave(tmp, a, top_ids=a["top_ids"] + 1000),
    "foreign meta": lambda tmp, a, g: _resave(tmp, a, meta=np.array('{"format": "something else"}')),
    "newer version": lambda tmp, a, g: _resave(tmp, a, meta=np.array(json.dumps(
        {**json.loads(str(a["meta"])), "version": 99}))),
    "pickled objects": lambda tmp, a, g: _resave(tmp, a, chars=np.array(
        [_RunsCodeWhenUnpickled(tmp / "pwned")] * len(a["chars"]), dtype=object)),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_files_give_one_line(tmp_path, damage):
    arrays, good = _good(tmp_path)
    path = DAMAGE[damage](tmp_path, arrays, good)
    with pytest.raises(CharRNNError) as err:
        load_npz(path, max_chars=10)
    message = str(err.value)
    assert "\n" not in message and "not an activations file written by charrnn dump" in message
    runner = CliRunner()
    for command in (["viz", str(path), "--out", str(tmp_path / "x.html")], ["cells", str(path)]):
        r = runner.invoke(app, command)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert r.stderr.strip().count("\n") == 0 and "charrnn dump" in r.stderr
    assert not (tmp_path / "pwned").exists()  # nothing was unpickled
