import json

from typer.testing import CliRunner

from charrnn.bench import flops_per_char
from charrnn.cli import app


def test_flops_per_char_counts_gates_and_layers():
    # LSTM, 1 layer, input 2, hidden 3, vocab 5: forward 2*4*3*(2+3) + 2*3*5 = 150 FLOPs; x3 with backward.
    assert flops_per_char("lstm", 1, 3, 2, 5) == 450
    assert flops_per_char("gru", 2, 4, 4, 5) == 3 * (2 * 3 * 4 * 8 * 2 + 2 * 4 * 5)


def test_bench_cli_reports_every_field():
    r = CliRunner().invoke(app, ["bench", "--cell", "gru", "--num-layers", "1", "--hidden-size", "16", "--batch-size", "4",
                                 "--seq-len", "8", "--steps", "5", "--repeats", "1", "--sample-chars", "20", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    row = out["rows"][0]
    for key in ("cell", "num_layers", "hidden_size", "train_chars_per_s", "reference_train_chars_per_s",
                "sample_chars_per_s_batch1", "sample_chars_per_s_batch64", "peak_memory_mb", "train_ratio"):
        assert key in row
    assert row["train_chars_per_s"] > 0 and row["reference_train_chars_per_s"] > 0 and out["matmul_flops"] > 0


def test_bench_corpus_encoding():
    r = CliRunner().invoke(app, ["bench", "--corpus-mb", "0.2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["reused"] and out["encode_mb_per_s"] > 0 and out["dtype"] == "uint8"
