import json
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.errors import CharRNNError
from charrnn.lm.bench import (
    FULL_GRID,
    SMALL_GRID,
    PeakMemory,
    flops_per_char,
    in_fresh_process,
    make_grid,
    run_bench,
    sample_bytes_per_char,
)


def test_flops_per_char_counts_gates_and_layers():
    # LSTM, 1 layer, input 2, hidden 3, vocab 5: forward 2*4*3*(2+3) + 2*3*5 = 150 FLOPs; x3 with backward.
    assert flops_per_char("lstm", 1, 3, 2, 5) == 450
    assert flops_per_char("gru", 2, 4, 4, 5) == 3 * (2 * 3 * 4 * 8 * 2 + 2 * 4 * 5)


def test_grid_from_the_options():
    assert make_grid() == SMALL_GRID and make_grid(full=True) == FULL_GRID and len(FULL_GRID) == 36
    assert make_grid(cells=["lstm"]) == [("lstm", 2, 512)]
    assert make_grid(num_layers=[1, 3], hidden_sizes=[64]) == [(c, n, 64) for c in ("rnn", "lstm", "gru")
                                                               for n in (1, 3)]
    with pytest.raises(CharRNNError, match="--cell"):
        make_grid(cells=["transformer"])


def test_bad_bench_settings_fail_before_measuring():
    with pytest.raises(CharRNNError, match="--steps"):
        run_bench(grid=[("gru", 1, 8)], steps=4)
    with pytest.raises(CharRNNError, match="--repeats"):
        run_bench(grid=[("gru", 1, 8)], repeats=0)


def allocate_and_free(mb: int) -> float | None:
    with PeakMemory(torch.device("cpu")) as mem:
        block = np.ones(mb * 2 ** 20, dtype=np.uint8)  # written, so resident
        del block
    return mem.peak_mb


@pytest.mark.skipif(sys.platform == "win32", reason="no getrusage on Windows")
def test_peak_memory_sees_a_block_freed_again_in_a_fresh_process():
    parent = np.ones(512 * 2 ** 20, dtype=np.uint8)  # a parent larger than the child's peak must not hide it
    peak = in_fresh_process(allocate_and_free, 128)
    del parent
    # A little under 128 when importing took and gave back some memory: the block's peak is measured from
    # the process's peak so far.
    assert 100 < peak < 160


def test_bench_cli_reports_every_field():
    r = CliRunner().invoke(app, ["bench", "--cell", "gru", "--num-layers", "1", "--hidden-size", "16",
                                 "--batch-size", "4", "--seq-len", "8", "--steps", "5", "--repeats", "1",
                                 "--sample-chars", "20", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["device"] == "cpu" and out["precision"] == "fp32" and out["matmul_flops"] > 0
    [row] = out["rows"]
    shape = (row["cell"], row["num_layers"], row["hidden_size"], row["batch_size"], row["seq_len"])
    assert shape == ("gru", 1, 16, 4, 8)
    assert row["train_chars_per_s"] > 0 and row["reference_train_chars_per_s"] > 0
    ratio = row["train_chars_per_s"] / row["reference_train_chars_per_s"]
    assert row["train_ratio"] == pytest.approx(ratio, abs=2e-3)
    assert row["sample_chars_per_s_batch1"] > 0 and row["sample_chars_per_s_batch64"] > 0
    assert row["flops_per_char_train"] == flops_per_char("gru", 1, 16, 64, 67)
    assert row["peak_memory_mb"] is not None and row["peak_memory_mb"] >= 0
    assert out["memory_bandwidth"] > 0 and row["sample_fraction_of_bandwidth"] > 0
    assert row["sample_bytes_per_char"] == sample_bytes_per_char("gru", 1, 16, 67) == 4 * (3 * 16 * 16 + 16 * 67)


def test_bench_corpus_encoding():
    r = CliRunner().invoke(app, ["bench", "--corpus-mb", "0.2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["reused"] and out["encode_mb_per_s"] > 0 and out["dtype"] == "uint8"
    assert out["corpus_mb"] == 0.2 and out["encoded_array_mb"] == 0.2  # one byte per character
    assert out["peak_memory_growth_mb"] is not None and out["peak_memory_growth_mb"] >= 0
