"""Tools around the models: info (what a checkpoint holds) and bench (how fast training and sampling run)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Literal

import typer

from charrnn.cli import options, render
from charrnn.core.config import MAX_BATCH_SIZE
from charrnn.core.errors import CharRNNError

app = typer.Typer()


@app.command("info")
def info_command(
    checkpoint: Annotated[Path | None, typer.Argument(
        metavar="[CHECKPOINT]", show_default=False,
        help="Run directory (uses best.pt), checkpoint file, or a shipped model: shipped:lm, shipped:caption, "
             "shipped:ctc.")] = None,
    shipped: Annotated[bool, typer.Option(
        "--shipped", help="List the models that ship with charrnn instead; each one's name goes where a run "
                          "directory would.")] = False,
    json_output: options.JsonOpt = False,
) -> None:
    """Show a checkpoint's task, model, vocabulary, training progress and the device it was trained on.

    Example: charrnn info checkpoints/tinyshakespeare --json
    """
    from charrnn.core.checkpoint import checkpoint_info

    if shipped or checkpoint is None:
        if checkpoint is not None:
            raise CharRNNError("give a CHECKPOINT or --shipped, not both")
        if not shipped:
            raise CharRNNError("give the run directory or checkpoint to describe, or --shipped to list the "
                               "shipped models")
        _show_shipped(json_output)
        return
    info = checkpoint_info(options.model_path(checkpoint, None))
    if json_output:
        render.print_json(info)  # JSON escapes control characters itself
    else:
        render.out.print(render.info_table(printable(info)))


# Characters a terminal acts on instead of showing: C0 and C1 controls (ESC starts the sequences that set the
# window title or clear the screen; 0x9b is a one-byte CSI), DEL, and the bidirectional overrides and isolates
# that make text read differently from what it is.
_UNSHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(value):
    """`value` (nested dicts, lists) with every string's terminal controls written as escapes (\\x1b, \\u202e):
    a checkpoint's strings are whatever its file says, and must not drive the terminal they are shown on."""
    if isinstance(value, str):
        return _UNSHOWN.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


def _show_shipped(json_output: bool) -> None:
    from charrnn.core.pretrained import shipped_models

    models = shipped_models()
    if json_output:
        render.print_json({"models": models})
        return
    table = render.Table(title="models shipped with charrnn (give the name where a run directory would go)")
    for name in ("name", "task", "file", "size", "what it is"):
        table.add_column(name)
    for m in models:
        size = "-" if m["bytes"] is None else f"{m['bytes'] / 1e6:.1f} MB"
        table.add_row(m["name"], m["task"], Path(m["file"]).name, size, m["what"])
    render.out.print(table)


BenchTask = Literal["lm", "caption", "ctc"]
TASK_STEPS = {"caption": 24, "ctc": 60}  # each a few seconds of training on 2 CPU cores, after the warm-up
LM_ONLY = {"full": "--full", "seq_len": "--seq-len", "sample_chars": "--sample-chars", "corpus_mb": "--corpus-mb",
           "corpus": "--corpus"}


@app.command("bench")
def bench_command(
    ctx: typer.Context,
    task: Annotated[BenchTask, typer.Option(
        "--task", help="Whose training to measure: lm (the language model over the grid, and its sampling), or "
                       "caption or ctc (the run's default model, or the sizes given, each against a plain PyTorch "
                       "loop of the same model, batches and precision).")] = "lm",
    full: Annotated[bool, typer.Option(
        "--full", help="torch-rnn's grid: rnn/lstm/gru x 1-3 layers x hidden 64-512 (long).")] = False,
    cell: Annotated[list[str], typer.Option(
        "--cell", show_default=False,
        help="Measure this cell: rnn, lstm or gru (repeatable); with --num-layers/--hidden-size it replaces the grid. "
             "Unspecified: all cells, 2 layers, 512 units (lm), or the run's default (the other tasks).")] = [],
    num_layers: Annotated[list[int], typer.Option(
        "--num-layers", show_default=False, help="Measure this many layers (repeatable).")] = [],
    hidden_size: Annotated[list[int], typer.Option(
        "--hidden-size", show_default=False, help="Measure this hidden size (repeatable).")] = [],
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, max=MAX_BATCH_SIZE, show_default=False,
        help="Items per step: parallel streams (lm), or what the task's run trains on at once. \\[default: 64 for lm, "
             "the run's own default for the others]")] = 64,
    seq_len: options.SeqLenOpt = 128,
    steps: Annotated[int, typer.Option(
        "--steps", show_default=False,
        help="Training steps per measurement (the first quarter, at least 2, are warm-up). \\[default: 8 for lm "
             f"at 2x512, more for smaller models; {TASK_STEPS['caption']} for caption, {TASK_STEPS['ctc']} for ctc]")
    ] = 8,
    repeats: Annotated[int, typer.Option(
        "--repeats",
        help="Measure charrnn and the reference alternately this many times; keep each one's best.")] = 2,
    sample_chars: Annotated[int, typer.Option(
        "--sample-chars",
        help="Characters generated per batch-1 sampling measurement (timed from the first one).")] = 2000,
    device: options.DeviceOpt = "auto",
    precision: options.PrecisionOpt = "fp32",
    corpus_mb: Annotated[float | None, typer.Option(
        "--corpus-mb",
        help="Instead: encode a corpus of this many MB (generated, or --corpus) and report MB/s and peak memory.")
    ] = None,
    corpus: Annotated[Path | None, typer.Option(
        "--corpus", help="With --corpus-mb: the text file to encode (its first N MB are used).")] = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Measure training and sampling speed against a plain PyTorch loop, and the hardware's limit.

    Both loops run at --precision. --corpus-mb measures corpus encoding instead, --task another task's trainer.

    Example: charrnn bench --cell lstm --num-layers 2 --hidden-size 256 --device cpu
    """
    if task != "lm":
        _bench_task(task, options.given(ctx), cells=cell, num_layers=num_layers, hidden_sizes=hidden_size,
                    batch_size=batch_size, steps=steps, repeats=repeats, device=device, precision=precision,
                    json_output=json_output)
        return
    from charrnn.lm import bench

    if corpus_mb is not None:
        result = bench.bench_encoding(corpus_mb, corpus)
        if json_output:
            render.print_json(result)
        else:
            render.out.print(render.key_value_table("corpus encoding", result))
        return

    grid = bench.make_grid(full=full, cells=cell, num_layers=num_layers, hidden_sizes=hidden_size)
    result = bench.run_bench(grid=grid, batch_size=batch_size, seq_len=seq_len, steps=steps, sample_chars=sample_chars,
                             device=device, precision=precision, repeats=repeats,
                             on_row=None if json_output else _say_measured)
    if json_output:
        render.print_json(result)
        return
    render.out.print(render.bench_table(result["rows"]))
    render.out.print(f"device {result['device']}, {result['threads']} threads, {result['precision']}, "
                     f"matmul {result['matmul_flops'] / 1e9:.1f} GFLOP/s measured", markup=False)


def _say_measured(row) -> None:
    render.err.print(f"measured {row.cell} {row.num_layers}x{row.hidden_size}")


def _bench_task(task: str, given: set[str], *, cells: list[str], num_layers: list[int], hidden_sizes: list[int],
                batch_size: int, steps: int, repeats: int, device: str, precision: str, json_output: bool) -> None:
    """`bench --task caption|ctc`: the task's trainer against a plain loop of its model, one row per model."""
    wrong = [flag for name, flag in LM_ONLY.items() if name in given]
    if wrong:
        raise CharRNNError(f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for --task lm only; leave "
                           f"{'it' if len(wrong) == 1 else 'them'} out with --task {task}")
    if task == "caption":
        from charrnn.caption import bench
    else:
        from charrnn.ctc import bench
    kwargs = {"batch_size": batch_size} if "batch_size" in given else {}
    result = bench.run_bench(cells=cells, num_layers=num_layers, hidden_sizes=hidden_sizes, repeats=repeats,
                             steps=steps if "steps" in given else TASK_STEPS[task], device=device, precision=precision,
                             on_run=None if json_output else functools.partial(_say_run, bench.UNIT), **kwargs)
    if json_output:
        render.print_json(result)
        return
    render.out.print(render.task_bench_table(result))
    render.out.print(f"device {result['device']}, {result['threads']} threads, {result['precision']}; "
                     f"{result['steps']} steps, the first {result['warmup_steps']} untimed; best of "
                     f"{result['repeats']} in turns; data: {result['data']}; load average at the start "
                     f"{result['load_average_at_start']}", markup=False)


def _say_run(unit: str, loop: str, repeat: int, speed: float) -> None:
    render.err.print(f"measured {loop} (repeat {repeat + 1}): {speed:,.1f} {unit}/s", markup=False)
