"""The `charrnn` command line: parse, call one library function, render with Rich.

Progress, tables and diagnostics go to stderr; generated text and `--json` output go to stdout, so
`charrnn sample ... > out.txt` and `charrnn eval ... --json | jq` work. A user error prints one line
and exits with status 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from charrnn.common import CharRNNError
from charrnn.device import resolve_device

err = Console(stderr=True, highlight=False)


class OneLineErrors(TyperGroup):
    """Every usage error and `CharRNNError` becomes one line on stderr and exit status 2; no traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        try:
            result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                  standalone_mode=False, **extra)
        except CharRNNError as e:
            _fail(str(e), 2)
        except typer.TyperException as e:  # Typer's usage errors: bad option, missing argument, ...
            _fail(f"{e.format_message()} (see --help)", getattr(e, "exit_code", 2))
        except (typer.Abort, KeyboardInterrupt):
            _fail("aborted", 130)
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int):
    """One line on stderr (red on a terminal), then exit with `code`."""
    message = " ".join(str(message).split())
    if err.is_terminal:
        err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    else:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  help="Character-level RNN / LSTM / GRU language models: train on any text, sample, evaluate, inspect.",
                  context_settings={"help_option_names": ["-h", "--help"]})


def main() -> None:
    """Console-script entry point."""
    app()


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "0": "\0"}


def unescape(text: str | None) -> str | None:
    """Read backslash escapes \\n, \\t, \\r, \\0 and \\\\ as typed on a shell line; other text is kept."""
    if text is None or "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _given(**options) -> dict:
    """The options the user actually passed (Typer gives None for the rest)."""
    return {k: v for k, v in options.items() if v is not None}


# ----- train ----------------------------------------------------------------------------------------

def _d(name: str) -> str:
    """'[default: X]' for a TrainConfig field, so help text and config share one default."""
    from charrnn.train import TrainConfig
    value = TrainConfig.__dataclass_fields__[name].default
    return f"\\[default: {value}]"  # the backslash stops Rich reading it as markup


class TrainView:
    """Renders training events: a live progress bar, log lines above it, a summary table at the end."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(bar_width=28),
            TextColumn("step {task.fields[step]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("val {task.fields[val]}"), TextColumn("{task.fields[rate]} chars/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, refresh_per_second=4)
        self.task = None
        self.val = "-"
        self.smoothed = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, event: dict) -> None:
        kind = event["kind"]
        if kind == "start":
            what = "resuming" if event["resumed"] else "training"
            limits = [f"{event['max_steps']} steps" if event["max_steps"] else "",
                      f"{event['epochs']:g} epochs" if event["epochs"] else "",
                      f"{event['time_budget_s'] / 60:.1f} min" if event["time_budget_s"] else ""]
            c = event["config"]
            self.console.print(
                f"{what} {c['cell']} {c['num_layers']}x{c['hidden_size']} ({event['num_parameters']:,} parameters) "
                f"on {event['device']} | vocab {event['vocab_size']} | train {event['train_chars']:,} chars, "
                f"val {event['val_chars']:,} | {event['steps_per_epoch']} steps/epoch | until "
                + " or ".join(x for x in limits if x) + f" | run dir {event['run_dir']}")
            if event["corpus_reused"]:
                self.console.print("reusing the encoded corpus in the run directory")
            self.task = self.progress.add_task("train", total=1.0, step=event["step"], loss="-", val="-", rate="-")
        elif kind == "train" and self.task is not None:
            loss = event["loss"]
            self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
            self.progress.update(self.task, completed=min(event["progress"], 1.0), step=event["step"],
                                 loss=f"{self.smoothed:.3f}", rate=f"{event['chars_per_s']:,.0f}")
        elif kind == "eval":
            self.val = f"{event['val_loss']:.4f}"
            if self.task is not None:
                self.progress.update(self.task, val=self.val)
            self.console.print(f"step {event['step']:>6}  val {event['val_loss']:.4f} nats/char  "
                               f"{event['val_bpc']:.4f} bits/char  ppl {event['val_ppl']:.3f}  "
                               f"(best {event['best_val_loss']:.4f})")


def _summary_table(summary) -> Table:
    table = Table(title="training summary", show_header=False)
    rows = [("run directory", summary.run_dir), ("stopped by", summary.stop_reason),
            ("steps", f"{summary.step:,} ({summary.epoch:.2f} epochs)"),
            ("time", f"{summary.elapsed_s / 60:.2f} min"), ("parameters", f"{summary.num_parameters:,}"),
            ("last train loss", f"{summary.train_loss:.4f}" if summary.train_loss is not None else "-"),
            ("validation loss", f"{summary.val_loss:.4f} nats/char" if summary.val_loss is not None else "-"),
            ("best validation", (f"{summary.best_val_loss:.4f} nats/char = {summary.best_val_loss / math.log(2):.4f} "
                                 f"bits/char at step {summary.best_step}") if summary.best_val_loss is not None else "-")]
    for k, v in rows:
        table.add_row(k, str(v))
    return table


@app.command("train")
def train_command(
    corpus: Optional[Path] = typer.Argument(None, help="Text file to train on. \\[default: the bundled corpora/tinyshakespeare.txt]", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory for checkpoints, metrics and the loss curve. \\[default: checkpoints/<corpus name>]"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory exactly where it stopped; it remembers its corpus and settings. --max-steps, --epochs or --time-budget given with it extend the run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the checkpoints of an earlier run in the run directory."),
    encoding: Optional[str] = typer.Option(None, help=f"Text encoding of the corpus. {_d('encoding')}"),
    byte_level: Optional[bool] = typer.Option(None, "--byte-level", help="Tokens are bytes, not Unicode characters (for binary-ish corpora).", show_default=False),
    document_separator: Optional[str] = typer.Option(None, help="String that separates documents in the corpus, e.g. '\\n\\n' for a blank line (\\n, \\t, \\\\ escapes are read); it becomes an end-of-document token that samples stop at."),
    val_frac: Optional[float] = typer.Option(None, help=f"Fraction at the end of the corpus held out for validation. {_d('val_frac')}"),
    test_frac: Optional[float] = typer.Option(None, help=f"Fraction at the very end held out for a test split (never used in training). {_d('test_frac')}"),
    cell: Optional[str] = typer.Option(None, help=f"Recurrent cell: rnn (tanh), lstm or gru. {_d('cell')}"),
    num_layers: Optional[int] = typer.Option(None, help=f"Stacked recurrent layers. {_d('num_layers')}"),
    hidden_size: Optional[int] = typer.Option(None, help=f"Units per recurrent layer. {_d('hidden_size')}"),
    embedding_dim: Optional[int] = typer.Option(None, help=f"Character embedding size; 0 = one-hot input. {_d('embedding_dim')}"),
    dropout: Optional[float] = typer.Option(None, help=f"Dropout between layers and before the output. {_d('dropout')}"),
    batch_size: Optional[int] = typer.Option(None, help=f"Parallel contiguous streams per step. {_d('batch_size')}"),
    seq_len: Optional[int] = typer.Option(None, help=f"Characters per step: gradients are truncated every seq_len steps, the state is carried. {_d('seq_len')}"),
    optimizer: Optional[str] = typer.Option(None, help=f"adamw, adam, rmsprop, sgd or adagrad. {_d('optimizer')}"),
    lr: Optional[float] = typer.Option(None, "--lr", "--learning-rate", help=f"Peak learning rate. {_d('lr')}"),
    weight_decay: Optional[float] = typer.Option(None, help=f"Weight decay. {_d('weight_decay')}"),
    momentum: Optional[float] = typer.Option(None, help=f"Momentum for sgd and rmsprop. {_d('momentum')}"),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov", help="Nesterov momentum for sgd.", show_default=False),
    schedule: Optional[str] = typer.Option(None, help=f"Learning-rate schedule: constant, cosine (with warmup, spread over the steps, epochs or time budget) or exponential (per epoch). {_d('schedule')}"),
    warmup_steps: Optional[int] = typer.Option(None, help=f"Linear warmup steps for cosine. {_d('warmup_steps')}"),
    min_lr_frac: Optional[float] = typer.Option(None, help=f"Cosine ends at lr x this. {_d('min_lr_frac')}"),
    lr_decay: Optional[float] = typer.Option(None, help=f"Exponential: factor per epoch. {_d('lr_decay')}"),
    lr_decay_after: Optional[int] = typer.Option(None, help=f"Exponential: start decaying after this many epochs. {_d('lr_decay_after')}"),
    grad_clip: Optional[float] = typer.Option(None, help=f"Clip the global gradient L2 norm to this; 0 = off. {_d('grad_clip')}"),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many steps (counted from the run's start)."),
    epochs: Optional[float] = typer.Option(None, help="Stop after this many passes over the training text."),
    time_budget: Optional[float] = typer.Option(None, help="Stop after this many minutes (training and periodic evaluation). \\[default: 5 when no other stop is given]"),
    eval_every: Optional[int] = typer.Option(None, help=f"Evaluate on the whole validation split and checkpoint every N steps. {_d('eval_every')}"),
    eval_streams: Optional[int] = typer.Option(None, help=f"Validation text is read as this many parallel contiguous pieces (state carried in each). {_d('eval_streams')}"),
    patience: Optional[int] = typer.Option(None, help="Stop when the validation loss has not improved for this many evaluations."),
    explode_factor: Optional[float] = typer.Option(None, help=f"Stop when the training loss exceeds this x ln(vocab size), keeping the last good checkpoint; 0 = only on NaN/inf. {_d('explode_factor')}"),
    seed: Optional[int] = typer.Option(None, help=f"Random seed. {_d('seed')}"),
    device: Optional[str] = typer.Option(None, help=f"auto (CUDA, then MPS, then CPU), cpu, cuda or mps. {_d('device')}"),
    precision: Optional[str] = typer.Option(None, help=f"auto (bf16 autocast where the GPU or CPU computes bfloat16 natively, else fp32), fp32 or bf16. {_d('precision')}"),
    compile: Optional[bool] = typer.Option(None, "--compile", help="torch.compile the model for training.", show_default=False),
    sample_length: int = typer.Option(500, help="Characters of sample printed when training ends; 0 = none."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout instead of tables and a sample."),
) -> None:
    """Train a character-level language model (no arguments: a GRU on the bundled tiny-shakespeare for 5 minutes)."""
    from charrnn.checkpoint import load_model
    from charrnn.sample import SampleSettings, sample
    from charrnn.train import TrainConfig, resume_config, train

    options = _given(out=str(out) if out else None, encoding=encoding, byte_level=byte_level,
                     document_separator=unescape(document_separator), val_frac=val_frac, test_frac=test_frac, cell=cell,
                     num_layers=num_layers, hidden_size=hidden_size, embedding_dim=embedding_dim, dropout=dropout,
                     batch_size=batch_size, seq_len=seq_len, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                     momentum=momentum, nesterov=nesterov, schedule=schedule, warmup_steps=warmup_steps,
                     min_lr_frac=min_lr_frac, lr_decay=lr_decay, lr_decay_after=lr_decay_after, grad_clip=grad_clip,
                     max_steps=max_steps, epochs=epochs, time_budget=time_budget, eval_every=eval_every,
                     eval_streams=eval_streams, patience=patience, explode_factor=explode_factor, seed=seed,
                     device=device, precision=precision, compile=compile)
    if resume is not None:
        if corpus is not None:
            raise CharRNNError("give either a CORPUS or --resume RUN_DIR, not both: a run directory remembers its corpus")
        if overwrite:
            raise CharRNNError("--overwrite and --resume contradict each other; choose one")
        if out is not None:
            raise CharRNNError("--out cannot change when resuming; the run continues in its own directory")
        config = resume_config(resume, **options)
    else:
        if corpus is not None:
            options["corpus"] = str(corpus)
        config = TrainConfig(**options)

    from charrnn.distributed import world_from_env

    if not world_from_env().is_main:  # under torchrun, rank 0 alone reports
        train(config, None, resume=resume is not None, overwrite=overwrite)
        return
    console = err
    with TrainView(console) as view:
        summary = train(config, view if not json_output else None, resume=resume is not None, overwrite=overwrite)
    if json_output:
        print(json.dumps({k: v for k, v in summary.__dict__.items() if k != "history"}))
    else:
        console.print(_summary_table(summary))
    if summary.stop_reason == "diverged":
        _fail(summary.message, 1)
    if summary.message:
        console.print(summary.message)
    if summary.stop_reason == "interrupted":
        raise typer.Exit(130)
    if sample_length > 0 and not json_output:
        model, tokenizer, _ = load_model(summary.run_dir, resolve_device(config.device))
        console.rule(f"sample (temperature 0.8, {sample_length} characters, from {summary.run_dir}/best.pt)")
        text = sample(model, tokenizer, length=sample_length, settings=SampleSettings(temperature=0.8),
                      seed=config.seed)[0]
        print(text)
        console.print(f"more: charrnn sample {summary.run_dir} --prime 'ROMEO:' --length 1000")


# ----- sample ---------------------------------------------------------------------------------------

@app.command("sample")
def sample_command(
    checkpoint: Path = typer.Argument(..., help="Run directory (uses best.pt) or checkpoint file."),
    prime: str = typer.Option("", "--prime", "-p", help="Text to start from (\\n, \\t, \\\\ escapes are read). \\[default: the start of a document]", show_default=False),
    length: int = typer.Option(500, "--length", "-n", help="Characters to generate per sample."),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="Sampling temperature; 0 = always the most likely character."),
    top_k: Optional[int] = typer.Option(None, help="Sample only among the k most likely characters."),
    top_p: Optional[float] = typer.Option(None, help="Sample only among the most likely characters covering probability p (nucleus)."),
    greedy: bool = typer.Option(False, "--greedy", help="Same as --temperature 0."),
    seed: Optional[int] = typer.Option(None, help="Random seed: the same seed gives the same text. \\[default: fresh randomness]"),
    num_samples: int = typer.Option(1, help="Independent samples, generated together as one batch."),
    stop: list[str] = typer.Option([], "--stop", help="End a sample where this string appears (not included; \\n escapes are read); repeatable."),
    no_stop_at_eod: bool = typer.Option(False, "--no-stop-at-eod", help="Keep going past an end-of-document token (it is printed as the document separator)."),
    beam_size: Optional[int] = typer.Option(None, help="Beam search with this many beams instead of sampling (deterministic)."),
    length_alpha: float = typer.Option(1.0, help="Beam search: rank hypotheses by log-probability / length**alpha."),
    map_unknown: bool = typer.Option(False, "--map-unknown", help="Read prime characters the model never saw as <unk> instead of failing."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    json_output: bool = typer.Option(False, "--json", help="Print {\"samples\": [...]} as JSON instead of streaming text."),
) -> None:
    """Generate text from a trained model, streaming characters as they are produced."""
    from charrnn.checkpoint import load_model
    from charrnn.sample import SampleSettings, beam_search, iter_sample, make_generator

    settings = SampleSettings(temperature=0.0 if greedy else temperature, top_k=top_k, top_p=top_p)
    prime = unescape(prime)
    stop = [unescape(s) for s in stop]
    model, tokenizer, _ = load_model(checkpoint, resolve_device(device))
    if beam_size is not None:
        if num_samples != 1:
            raise CharRNNError("--beam-size gives one best text; drop --num-samples")
        text, score = beam_search(model, tokenizer, prime, length, beam_size, length_alpha,
                                  stop_at_eod=not no_stop_at_eod, map_unknown=map_unknown)
        if json_output:
            print(json.dumps({"samples": [text], "prime": prime, "normalised_log_prob": score}))
        else:
            print(prime + text)
        return
    generator = make_generator(model, seed)
    stream = iter_sample(model, tokenizer, prime, length, settings, num_samples, stop, not no_stop_at_eod,
                         generator, map_unknown)
    if json_output or num_samples > 1:
        texts = [""] * num_samples
        for pieces in stream:
            for k, piece in enumerate(pieces):
                texts[k] += piece
        if json_output:
            print(json.dumps({"samples": texts, "prime": prime}))
        else:
            for k, text in enumerate(texts):
                err.rule(f"sample {k + 1}/{num_samples}")
                print(prime + text, flush=True)
        return
    out = sys.stdout
    out.write(prime)
    for pieces in stream:
        out.write(pieces[0])
        out.flush()
    out.write("\n")


# ----- eval -----------------------------------------------------------------------------------------

@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., help="Run directory (uses best.pt) or checkpoint file."),
    text_file: Path = typer.Argument(..., help="Text to score."),
    encoding: str = typer.Option("utf-8", help="Text encoding of the file (ignored for byte-level models)."),
    map_unknown: bool = typer.Option(False, "--map-unknown", help="Read characters the model never saw as <unk> and leave them unscored, instead of failing."),
    streams: int = typer.Option(16, help="Score the text as this many parallel contiguous pieces, each warmed up on the text before it; 1 = one exact pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object: nats_per_char, bits_per_char, perplexity, chars, unknown_chars."),
) -> None:
    """Score a text with a model: nats per character, bits per character and perplexity."""
    from charrnn.checkpoint import load_model
    from charrnn.evaluate import evaluate_file

    model, tokenizer, _ = load_model(checkpoint, resolve_device(device))
    result = evaluate_file(model, tokenizer, text_file, encoding=encoding, map_unknown=map_unknown, streams=streams)
    if json_output:
        print(json.dumps(result.to_dict()))
        return
    table = Table(title=f"{text_file}", show_header=False)
    table.add_row("nats/char", f"{result.nats_per_char:.4f}")
    table.add_row("bits/char", f"{result.bits_per_char:.4f}")
    table.add_row("perplexity", f"{result.perplexity:.4f}")
    table.add_row("characters scored", f"{result.chars:,}")
    if result.unknown_chars:
        table.add_row("unknown (unscored)", f"{result.unknown_chars:,}")
    Console().print(table)


# ----- info -----------------------------------------------------------------------------------------

@app.command("info")
def info_command(
    checkpoint: Path = typer.Argument(..., help="Run directory (uses best.pt) or checkpoint file."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Show a checkpoint's model, vocabulary, training progress and the device it was trained on."""
    from charrnn.checkpoint import checkpoint_info

    info = checkpoint_info(checkpoint)
    if json_output:
        print(json.dumps(info))
        return
    table = Table(title=info["path"], show_header=False)
    for key, value in info.items():
        if key in ("path", "vocabulary", "train_config"):
            continue
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    table.add_row("vocabulary", info["vocabulary"])
    Console().print(table)


# ----- bench ----------------------------------------------------------------------------------------

@app.command("bench")
def bench_command(
    full: bool = typer.Option(False, "--full", help="torch-rnn's grid: rnn/lstm/gru x 1-3 layers x hidden 64-512 (long)."),
    cell: list[str] = typer.Option([], "--cell", help="Measure this cell (repeatable); with --num-layers/--hidden-size it replaces the grid. Unspecified: all cells, 2 layers, 512 units."),
    num_layers: list[int] = typer.Option([], "--num-layers", help="Measure this many layers (repeatable)."),
    hidden_size: list[int] = typer.Option([], "--hidden-size", help="Measure this hidden size (repeatable)."),
    batch_size: int = typer.Option(64, help="Training batch size (streams)."),
    seq_len: int = typer.Option(128, help="Training sequence length."),
    steps: int = typer.Option(8, help="Training steps per measurement for 2x512 (more for smaller models; the first quarter, at least 2, are warm-up)."),
    repeats: int = typer.Option(2, help="Measure charrnn and the reference alternately this many times; keep each one's best."),
    sample_chars: int = typer.Option(2000, help="Characters generated per batch-1 sampling measurement (timed from the first one)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    precision: str = typer.Option("fp32", help="fp32, bf16 or auto, for both charrnn and the reference loop."),
    corpus_mb: Optional[float] = typer.Option(None, help="Instead: encode a corpus of this many MB (generated, or --corpus) and report MB/s and peak memory."),
    corpus: Optional[Path] = typer.Option(None, help="With --corpus-mb: the text file to encode (its first N MB are used)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Measure training and sampling speed against a plain PyTorch loop, and the hardware's limit."""
    from charrnn import bench

    if corpus_mb is not None:
        result = bench.bench_encoding(corpus_mb, corpus)
        if json_output:
            print(json.dumps(result))
            return
        table = Table(title="corpus encoding", show_header=False)
        for k, v in result.items():
            table.add_row(k.replace("_", " "), str(v))
        Console().print(table)
        return
    bench.check_grid_args(steps, batch_size, seq_len)
    grid = bench.FULL_GRID if full else bench.SMALL_GRID
    if cell or num_layers or hidden_size:  # an explicit grid: unspecified dimensions default to all cells, 2 x 512
        grid = [(c, l, h) for c in (cell or ["rnn", "lstm", "gru"]) for l in (num_layers or [2])
                for h in (hidden_size or [512])]
    table = Table(title="charrnn bench: training (chars/s, forward+backward+step) and sampling (chars/s)")
    for name in ("cell", "layers", "hidden", "train", "reference", "ratio", "% of matmul peak", "sample b=1",
                 "sample b=64", "peak MB"):
        table.add_column(name, justify="right")
    console = err

    def add(row):
        table.add_row(row.cell, str(row.num_layers), str(row.hidden_size), f"{row.train_chars_per_s:,.0f}",
                      f"{row.reference_train_chars_per_s:,.0f}", f"{row.train_ratio:.2f}",
                      f"{100 * row.train_fraction_of_peak:.1f}", f"{row.sample_chars_per_s_batch1:,.0f}",
                      f"{row.sample_chars_per_s_batch64:,.0f}", f"{row.peak_memory_mb:,.0f}")
        if not json_output:
            console.print(f"measured {row.cell} {row.num_layers}x{row.hidden_size}")

    if repeats < 1:
        raise CharRNNError("--repeats must be at least 1")
    result = bench.run_bench(grid, batch_size, seq_len, steps, sample_chars, device, precision, repeats, add)
    if json_output:
        print(json.dumps(result))
        return
    Console().print(table)
    Console().print(f"device {result['device']}, {result['threads']} threads, {result['precision']}, "
                    f"matmul {result['matmul_flops'] / 1e9:.1f} GFLOP/s measured")


# ----- dump / viz / cells ---------------------------------------------------------------------------

def _trace_text(text_file: Optional[Path], text: Optional[str], encoding: str) -> str:
    from charrnn.data import iter_text

    if (text_file is None) == (text is None):
        raise CharRNNError("give either a TEXT_FILE or --text \"...\" to trace")
    return unescape(text) if text is not None else "".join(iter_text(text_file, encoding))


@app.command("dump")
def dump_command(
    checkpoint: Path = typer.Argument(..., help="Run directory (uses best.pt) or checkpoint file."),
    text_file: Optional[Path] = typer.Argument(None, help="Text to run through the model."),
    text: Optional[str] = typer.Option(None, "--text", help="Trace this text instead of a file (\\n escapes are read)."),
    out: Path = typer.Option(Path("acts.npz"), "--out", "-o", help="Output .npz file, or directory for --format lstmvis."),
    fmt: str = typer.Option("npz", "--format", help="npz (NumPy) or lstmvis (a project directory LSTMVis opens; needs h5py)."),
    top_k: int = typer.Option(5, help="Top next-character predictions stored per character."),
    encoding: str = typer.Option("utf-8", help="Text encoding of TEXT_FILE."),
    map_unknown: bool = typer.Option(False, "--map-unknown", help="Read characters the model never saw as <unk> instead of failing."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary instead of a line of text."),
) -> None:
    """Record every hidden state, cell state and gate of every layer for each character of a text."""
    from charrnn.activations import collect_activations, describe, save_lstmvis, save_npz
    from charrnn.checkpoint import load_model

    if fmt not in ("npz", "lstmvis"):
        raise CharRNNError(f"unknown --format {fmt!r}: choose npz or lstmvis")
    if top_k < 1:
        raise CharRNNError("--top-k must be at least 1")
    source = _trace_text(text_file, text, encoding)
    model, tokenizer, _ = load_model(checkpoint, resolve_device(device))
    trace = collect_activations(model, tokenizer, source, top_k=top_k, map_unknown=map_unknown)
    written = save_npz(trace, out) if fmt == "npz" else save_lstmvis(trace, out, name=Path(str(checkpoint)).stem)
    summary = {**describe(trace), "out": str(written), "format": fmt}
    if json_output:
        print(json.dumps(summary))
    else:
        err.print(f"traced {trace.length:,} characters through {trace.cell} {len(trace.layers)}x"
                  f"{summary['hidden_size']} ({', '.join(summary['kinds'])} per layer) -> {written}")


@app.command("viz")
def viz_command(
    activations: Path = typer.Argument(..., help="A .npz written by charrnn dump."),
    out: Path = typer.Option(Path("cells.html"), "--out", "-o", help="The HTML file to write."),
    max_chars: int = typer.Option(3000, help="Show the first N characters (the page embeds their activations)."),
    kinds: str = typer.Option("", help="Comma-separated kinds offered in the picker: h, c (lstm), gates i,f,g,o (lstm) or r,z,n (gru). \\[default: h and c]"),
    top: int = typer.Option(5, help="Top cells listed per probe."),
) -> None:
    """Write a self-contained HTML page showing the text coloured by any cell's activation."""
    from charrnn.activations import load_npz
    from charrnn.viz import render_html

    if max_chars < 1 or top < 1:
        raise CharRNNError("--max-chars and --top must be at least 1")
    trace = load_npz(activations)
    wanted = tuple(k.strip() for k in kinds.split(",") if k.strip()) or tuple(k for k in ("h", "c") if k in trace.layers[0])
    unknown = [k for k in wanted if k not in trace.layers[0]]
    if unknown:
        raise CharRNNError(f"--kinds {','.join(unknown)}: this {trace.cell} dump has {', '.join(trace.layers[0])}")
    page = render_html(trace, max_chars, wanted, top, title=f"charrnn cells: {activations.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    err.print(f"wrote {out} ({len(page) / 1e6:.1f} MB, {min(trace.length, max_chars):,} characters); open it in a browser")


@app.command("cells")
def cells_command(
    source: Path = typer.Argument(..., help="Run directory or checkpoint (with TEXT_FILE), or a .npz from charrnn dump."),
    text_file: Optional[Path] = typer.Argument(None, help="Text to analyse (not needed for a .npz)."),
    top: int = typer.Option(5, help="Cells listed per probe."),
    max_chars: int = typer.Option(20000, help="Analyse the first N characters of the text."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Also write the HTML viewer with these results."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the gate-saturation scatter plot (SVG) here."),
    encoding: str = typer.Option("utf-8", help="Text encoding of TEXT_FILE."),
    map_unknown: bool = typer.Option(False, "--map-unknown", help="Read characters the model never saw as <unk>."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    json_output: bool = typer.Option(False, "--json", help="Print {\"probes\": {...}, \"gate_saturation\": {...}} as JSON."),
) -> None:
    """Find interpretable cells: rank every cell by correlation with probes of the text (quotes, brackets,
    position in line, indentation, comments, word starts, line breaks), and measure gate saturation."""
    from charrnn.activations import collect_activations, load_npz, saturation_svg
    from charrnn.checkpoint import load_model
    from charrnn.probes import rank_cells
    from charrnn.viz import render_html

    if top < 1 or max_chars < 2:
        raise CharRNNError("--top must be at least 1 and --max-chars at least 2")
    if source.suffix == ".npz":
        trace = load_npz(source).head(max_chars)
    else:
        if text_file is None:
            raise CharRNNError("give the TEXT_FILE to analyse after the run directory or checkpoint")
        model, tokenizer, _ = load_model(source, resolve_device(device))
        text = _trace_text(text_file, None, encoding)[:max_chars]
        trace = collect_activations(model, tokenizer, text, map_unknown=map_unknown)
    result = rank_cells(trace, top=top)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot.write_text(saturation_svg(result["gate_saturation"]), encoding="utf-8")
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(render_html(trace, min(trace.length, 3000), top=top), encoding="utf-8")
    if json_output:
        print(json.dumps(result))
        return
    table = Table(title=f"interpretable cells ({trace.length:,} characters)")
    for name in ("probe", "rank", "cell", "correlation", "threshold accuracy (base rate)"):
        table.add_column(name)
    for probe, rows in result["probes"].items():
        for rank, r in enumerate(rows, 1):
            acc = f"{r['accuracy']:.3f} ({r['base_rate']:.3f})" if "accuracy" in r else ""
            table.add_row(probe if rank == 1 else "", str(rank), f"layer{r['layer']}/{r['kind']}/{r['unit']}",
                          f"{r['correlation']:+.3f}", acc)
    Console().print(table)
    if result["constant"]:
        Console().print(f"constant in this text (not ranked): {', '.join(result['constant'])}")
    sat = Table(title="gate saturation (mean fraction of time per unit)")
    for name in ("layer", "gate", "left-saturated (< 0.1)", "right-saturated (> 0.9)"):
        sat.add_column(name)
    for layer, gates in result["gate_saturation"].items():
        for gate, stats in gates.items():
            sat.add_row(layer, gate, f"{stats['mean_left']:.3f}", f"{stats['mean_right']:.3f}")
    Console().print(sat)
