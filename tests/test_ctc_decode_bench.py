"""The decoding benchmark's machinery (no figure is asserted: speed is never tested)."""

import torch

from charrnn.ctc.decode_bench import run_decode_bench, time_decoders, torch_threads


def test_rounds_are_interleaved_and_the_best_kept():
    calls = []
    runs = {"a": lambda: calls.append(("a", torch.get_num_threads())) or ["x"],
            "b": lambda: calls.append(("b", torch.get_num_threads())) or ["y"]}
    out = time_decoders(runs, threads=(1, 2), rounds=2, lines=1)
    assert calls == [("a", 1), ("b", 1), ("a", 2), ("b", 2)] * 2  # every decoder at every count, then again
    assert set(out) == {"a@1t", "b@1t", "a@2t", "b@2t"}
    assert all(len(r["rounds"]) == 2 and r["lines_per_s"] == max(r["rounds"]) for r in out.values())
    assert out["b@2t"]["texts"] == ["y"] and torch.get_num_threads() == 1  # the caller's setting is back
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_bench_reads_rendered_lines_with_every_decoder():
    result = run_decode_bench(count=2, rounds=1, threads=(1,), pyctcdecode=False)
    assert result["lines"] == 2 and result["frames"] > 0 and result["load"] == 0
    assert set(result["speeds"]) == {"greedy@1t", "beam@1t", "beam_lm@1t"}
    assert all(v > 0 for v in result["speeds"].values())
