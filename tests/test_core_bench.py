"""What the trainer benchmarks share (`charrnn.core.bench`): the grid of models, the warm-up, the order the loops take
turns in, the figures named for the unit, and the trainer's speed read from its metrics.jsonl."""

import json

import pytest
import torch

from charrnn.core.bench import (
    check_bench_args,
    in_turns,
    model_grid,
    plain_rate,
    speed_fields,
    trainer_items_per_s,
    warmup_steps,
)
from charrnn.core.config import LoopConfig
from charrnn.core.errors import CharRNNError


def test_grid_is_the_default_model_or_the_product_of_the_sizes_given():
    assert model_grid(("lstm", 1, 256)) == [("lstm", 1, 256)]
    assert model_grid(("lstm", 2, 128), cells=["gru"], hidden_sizes=[8, 16]) == [("gru", 2, 8), ("gru", 2, 16)]


def test_warmup_is_a_quarter_at_least_two_and_bad_settings_are_refused():
    assert [warmup_steps(n) for n in (5, 8, 24, 60)] == [2, 2, 6, 15]
    for bad, flag in ((dict(steps=4), "--steps"), (dict(repeats=0), "--repeats"), (dict(batch_size=0), "--batch")):
        with pytest.raises(CharRNNError, match=flag):
            check_bench_args(**{"steps": 5, "repeats": 1, "batch_size": 1, **bad})


def test_loops_take_turns_one_way_then_the_other():
    order = []
    ours, plain = in_turns(lambda: order.append("charrnn") or 2.0, lambda: order.append("plain") or 1.0, 3,
                           on_run=lambda loop, repeat, speed: order.append((loop, repeat)))
    assert order == ["charrnn", ("charrnn", 0), "plain", ("plain", 0), "plain", ("plain", 1), "charrnn",
                     ("charrnn", 1), "charrnn", ("charrnn", 2), "plain", ("plain", 2)]
    assert (ours, plain) == ([2.0] * 3, [1.0] * 3)


def test_speed_fields_are_named_for_the_unit_with_each_loops_best():
    fields = speed_fields("lines", [100.0, 120.0], [110.0, 100.0])
    assert fields == {"train_lines_per_s": 120.0, "reference_train_lines_per_s": 110.0, "train_ratio": 1.091,
                      "runs": [100.0, 120.0], "reference_runs": [110.0, 100.0]}


def test_trainer_speed_is_read_after_the_warmup(tmp_path):
    def train(config, overwrite):  # a run that logged 6 steps, one every 0.5 s after a slow first one
        assert overwrite
        times = [3.0, 3.5, 4.0, 4.5, 5.0, 5.5]
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"kind": "train", "step": k + 1, "elapsed_s": t})
                                                        + "\n" for k, t in enumerate(times)))

    assert trainer_items_per_s(train, LoopConfig(out=str(tmp_path), batch_size=4), warmup=2) == pytest.approx(8.0)


def test_plain_rate_times_the_steps_after_the_warmup():
    seen = []
    rate = plain_rate(lambda batch: seen.append(batch) or torch.zeros(()), range(6), 2, 3, torch.device("cpu"))
    assert seen == list(range(6)) and rate > 0
