"""The language model's commands: train, sample, eval."""

from __future__ import annotations

import importlib
import itertools
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli import options, render
from charrnn.cli.options import config_options, given, unescape
from charrnn.core.errors import CharRNNError
from charrnn.lm.config import LMTrainConfig

app = typer.Typer()

SAMPLE_TEMPERATURE = 0.8  # of the sample printed after training and of `charrnn sample`
SAMPLE_BATCH = 256  # samples generated side by side; more are generated a batch after another, each printed when done
HINT_PRIME_CHARS = 20  # the longest prime the hint after training suggests


# ----- train ----------------------------------------------------------------------------------------

@app.command("train")
def train_command(
    ctx: typer.Context,
    corpus: options.CorpusArg = LMTrainConfig.corpus,
    out: options.OutOpt = LMTrainConfig.out,
    resume: options.ResumeOpt = None,
    overwrite: options.OverwriteOpt = False,
    use_cached_corpus: options.UseCachedCorpusOpt = LMTrainConfig.use_cached_corpus,
    encoding: options.EncodingOpt = LMTrainConfig.encoding,
    byte_level: options.ByteLevelOpt = LMTrainConfig.byte_level,
    document_separator: options.DocumentSeparatorOpt = LMTrainConfig.document_separator,
    newline: options.NewlineOpt = LMTrainConfig.newline,
    val_frac: options.ValFracOpt = LMTrainConfig.val_frac,
    test_frac: options.TestFracOpt = LMTrainConfig.test_frac,
    cell: options.CellOpt = LMTrainConfig.cell,
    num_layers: options.NumLayersOpt = LMTrainConfig.num_layers,
    hidden_size: options.HiddenSizeOpt = LMTrainConfig.hidden_size,
    embedding_dim: options.EmbeddingDimOpt = LMTrainConfig.embedding_dim,
    dropout: options.DropoutOpt = LMTrainConfig.dropout,
    batch_size: options.BatchSizeOpt = LMTrainConfig.batch_size,
    seq_len: options.SeqLenOpt = LMTrainConfig.seq_len,
    optimizer: options.OptimizerOpt = LMTrainConfig.optimizer,
    lr: options.LrOpt = LMTrainConfig.lr,
    weight_decay: options.WeightDecayOpt = LMTrainConfig.weight_decay,
    momentum: options.MomentumOpt = LMTrainConfig.momentum,
    nesterov: options.NesterovOpt = LMTrainConfig.nesterov,
    schedule: options.ScheduleOpt = LMTrainConfig.schedule,
    warmup_steps: options.WarmupStepsOpt = LMTrainConfig.warmup_steps,
    min_lr_frac: options.MinLrFracOpt = LMTrainConfig.min_lr_frac,
    lr_decay: options.LrDecayOpt = LMTrainConfig.lr_decay,
    lr_decay_after: options.LrDecayAfterOpt = LMTrainConfig.lr_decay_after,
    grad_clip: options.GradClipOpt = LMTrainConfig.grad_clip,
    max_steps: options.MaxStepsOpt = LMTrainConfig.max_steps,
    epochs: options.EpochsOpt = LMTrainConfig.epochs,
    time_budget: options.TimeBudgetOpt = LMTrainConfig.time_budget,
    eval_every: options.EvalEveryOpt = LMTrainConfig.eval_every,
    eval_streams: options.EvalStreamsOpt = LMTrainConfig.eval_streams,
    patience: options.PatienceOpt = LMTrainConfig.patience,
    explode_factor: options.ExplodeFactorOpt = LMTrainConfig.explode_factor,
    seed: options.SeedOpt = LMTrainConfig.seed,
    device: options.DeviceOpt = LMTrainConfig.device,
    precision: options.PrecisionOpt = LMTrainConfig.precision,
    compile: options.CompileOpt = LMTrainConfig.compile,
    sample_length: Annotated[int, typer.Option(
        "--sample-length", min=0, help="Characters of sample printed when training ends; 0 = none.")] = 500,
    json_output: options.JsonOpt = False,
) -> None:
    """Train a character-level language model (no arguments: a GRU on the bundled tiny-shakespeare for 5 minutes).

    Example: charrnn train corpora/tinyshakespeare.txt --cell lstm --time-budget 10 --out checkpoints/shakespeare-lstm
    """
    from charrnn.lm.task import train

    config = _train_config(ctx, resume, overwrite)
    summary = render.train_and_report(train, config, resume=resume is not None, overwrite=overwrite,
                                      json_output=json_output, command="train")
    if summary is None:
        return
    if sample_length > 0 and not json_output:
        _show_sample(summary.run_dir, config, sample_length)


def _train_config(ctx: typer.Context, resume: Path | None, overwrite: bool) -> LMTrainConfig:
    """The run's config: the options as given for a new run; for `--resume`, the saved one with the options
    the user gave (even at their default value) replacing what they name."""
    from charrnn.lm.task import resume_config

    options = config_options(ctx, LMTrainConfig)
    if resume is None:
        return LMTrainConfig(**options)
    user_given = given(ctx)
    if "corpus" in user_given:
        raise CharRNNError("give either a CORPUS or --resume RUN_DIR, not both: a run directory remembers its corpus")
    if overwrite:
        raise CharRNNError("--overwrite and --resume contradict each other; choose one")
    if "out" in user_given:
        raise CharRNNError("--out cannot change when resuming; the run continues in its own directory")
    return resume_config(resume, **{k: v for k, v in options.items() if k in user_given})


def _show_sample(run_dir: str, config: LMTrainConfig, length: int) -> None:
    """A sample of the best model, then a command for more that works with this run's vocabulary."""
    from charrnn.core.device import resolve_device
    from charrnn.lm.model import load_model
    from charrnn.lm.sample import SampleSettings, sample

    model, tokenizer, ckpt = load_model(run_dir, resolve_device(config.device))
    render.err.rule(f"sample (temperature {SAMPLE_TEMPERATURE}, {length} characters, from {run_dir}/best.pt)")
    print(sample(model, tokenizer, length=length, settings=SampleSettings(temperature=SAMPLE_TEMPERATURE),
                 seed=config.seed)[0])
    corpus = (ckpt.get("meta") or {}).get("corpus")
    prime = _hint_prime(tokenizer, corpus, config.encoding) if corpus else ""
    # `sample` reads backslash escapes in --prime: double the backslashes so the prime comes back as it is.
    escaped = prime.replace("\\", "\\\\")
    prime_option = f" --prime={shlex.quote(escaped)}" if prime else ""
    render.err.print(f"more: charrnn sample {shlex.quote(run_dir)}{prime_option} --length 1000",
                     markup=False, soft_wrap=True)


def _hint_prime(tokenizer, corpus: str, encoding: str) -> str:
    """The start of the corpus's first non-blank line (up to HINT_PRIME_CHARS characters) when the model can
    read all of it, else "" (no prime)."""
    from charrnn.core.text import iter_text

    try:
        head = next(iter_text(corpus, encoding=encoding, chunk_bytes=1 << 16), "")
        line = next((l for l in head.splitlines() if l.strip()), "")[:HINT_PRIME_CHARS].rstrip()
        tokenizer.encode(line)
    except (CharRNNError, OSError):  # the corpus moved or changed since training, or is not text
        return ""
    return line


def load_torch() -> None:
    """Import PyTorch with Ctrl-C held back until it is loaded, then raise it as KeyboardInterrupt (which the
    CLI turns into one line). Inside torch's import a Ctrl-C can be lost, and the command then runs to its end,
    or abort the process from C++ ("terminate called ..."): both seen with torch 2.x on Linux."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        importlib.import_module("torch")
        return
    pending = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        importlib.import_module("torch")
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


# ----- sample ---------------------------------------------------------------------------------------

@app.command("sample")
def sample_command(
    checkpoint: Annotated[Path | None, typer.Argument(
        metavar="[CHECKPOINT]", show_default=False,
        help="Run directory (uses best.pt), checkpoint file, or shipped. \\[default: the shipped tinyshakespeare "
             "model]")
    ] = None,
    prime: Annotated[str, typer.Option(
        "--prime", "-p", parser=unescape, show_default=False,
        help="Text to start from (\\n, \\t, \\\\ escapes are read). \\[default: the start of a document]")] = "",
    length: Annotated[int, typer.Option("--length", "-n", help="Characters to generate per sample.")] = 500,
    temperature: options.TemperatureOpt = SAMPLE_TEMPERATURE,
    top_k: Annotated[int | None, typer.Option(
        "--top-k", help="Sample only among the k most likely characters.")] = None,
    top_p: Annotated[float | None, typer.Option(
        "--top-p", help="Sample only among the most likely characters covering probability p (nucleus).")] = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="Same as --temperature 0.")] = False,
    seed: options.SampleSeedOpt = None,
    num_samples: options.NumSamplesOpt = 1,
    stop: Annotated[list[str], typer.Option(
        "--stop", parser=unescape,
        help="End a sample where this string appears (not included; \\n escapes are read); repeatable.")] = [],
    no_stop_at_eod: Annotated[bool, typer.Option(
        "--no-stop-at-eod",
        help="Keep going past an end-of-document token (it is printed as the document separator).")] = False,
    beam_size: options.BeamSizeOpt = 1,
    length_alpha: options.LengthAlphaOpt = 1.0,
    map_unknown: options.MapUnknownOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Generate text from a trained model (none given: the shipped one), streaming characters as they come.

    Without --seed every run differs. --json prints {"samples": [...], "prime": "..."}.

    Example: charrnn sample checkpoints/tinyshakespeare --prime "ROMEO:" --temperature 0.8 --seed 1
    """
    load_torch()
    from charrnn.core.device import resolve_device
    from charrnn.core.text import normalize_newlines
    from charrnn.lm.model import load_model
    from charrnn.lm.sample import (
        SampleSettings,
        beam_search,
        check_beam_options,
        check_sample_options,
        check_seed,
        iter_sample,
        make_generator,
    )
    from charrnn.lm.task import trained_newline

    # Every option is checked before the checkpoint is read and before anything is written, so that
    # `> out.txt` never keeps the start of a refused command's output.
    options.require_stdout()
    settings = SampleSettings(temperature=0.0 if greedy else temperature, top_k=top_k, top_p=top_p)
    check_seed(seed)
    if beam_size > 1:
        if num_samples != 1:
            raise CharRNNError("--beam-size gives one best text; drop --num-samples")
        check_beam_options(length, beam_size, length_alpha)
    else:
        check_sample_options(length, num_samples)
    checkpoint = options.model_path(checkpoint, "lm")  # left out, or `shipped`: the shipped model
    model, tokenizer, ckpt = load_model(checkpoint, resolve_device(device))
    prime = normalize_newlines(prime, trained_newline(ckpt))  # a CRLF typed for a model that never saw a \r
    if beam_size > 1:
        text, score = beam_search(model, tokenizer, prime=prime, length=length, beam_size=beam_size,
                                  length_alpha=length_alpha, stop_at_eod=not no_stop_at_eod, map_unknown=map_unknown)
        if json_output:
            render.print_json({"samples": [text], "prime": prime, "normalised_log_prob": score})
        else:
            print(prime + text)
        return
    generator = make_generator(model, seed)

    def batch(start: int) -> tuple[int, Iterator[list[str]]]:
        count = min(SAMPLE_BATCH, num_samples - start)
        return count, iter_sample(model, tokenizer, prime=prime, length=length, settings=settings, num_samples=count,
                                  stop=stop, stop_at_eod=not no_stop_at_eod, generator=generator,
                                  map_unknown=map_unknown)

    # iter_sample reads the prime at the call: an unknown character fails before the prime is printed.
    first = batch(0)
    rest = (batch(start) for start in range(SAMPLE_BATCH, num_samples, SAMPLE_BATCH))
    print_samples(itertools.chain([first], rest), prime, num_samples, json_output)


def print_samples(batches, prime: str, num_samples: int, json_output: bool) -> None:
    """One sample streams to stdout as it is generated. Several are generated a batch at a time (`batches`
    yields (samples, stream) per batch) and printed as each batch ends, one after another, each under a rule when
    stdout is a terminal (in a file or a pipe they follow one another; --json keeps them apart). --json
    collects them all and prints one object."""
    if num_samples == 1 and not json_output:
        sys.stdout.write(prime)
        for pieces in next(iter(batches))[1]:
            sys.stdout.write(pieces[0])
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    collected, done, rules = [], 0, sys.stdout.isatty()
    for count, stream in batches:
        texts = _join_pieces(stream, count)
        if json_output:
            collected += texts
            continue
        for text in texts:
            done += 1
            if rules:
                render.out.rule(f"sample {done}/{num_samples}")
            print(prime + text, flush=True)
    if json_output:
        render.print_json({"samples": collected, "prime": prime})


def _join_pieces(stream, count: int) -> list[str]:
    """The `count` whole texts of a batch of samples, from the pieces `iter_sample` yields step by step."""
    parts: list[list[str]] = [[] for _ in range(count)]
    for pieces in stream:
        for k, piece in enumerate(pieces):
            parts[k].append(piece)
    return ["".join(p) for p in parts]


# ----- eval -----------------------------------------------------------------------------------------

@app.command("eval")
def eval_command(
    checkpoint: options.CheckpointArg,
    text_file: Annotated[Path, typer.Argument(metavar="TEXT_FILE", help="Text to score.", show_default=False)],
    encoding: options.EncodingOpt = "utf-8",
    map_unknown: options.MapUnknownOpt = False,
    streams: Annotated[int, typer.Option(
        "--streams", min=1, help="Score the text as this many parallel contiguous pieces, each warmed up on the "
                                 "text before it; 1 = one exact pass.")] = 16,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Score a text with a model: nats per character, bits per character and perplexity.

    --json prints {"nats_per_char", "bits_per_char", "perplexity", "chars", "unknown_chars"}.

    Example: charrnn eval checkpoints/tinyshakespeare heldout.txt --json
    """
    load_torch()
    from charrnn.core.device import resolve_device
    from charrnn.lm.evaluate import evaluate_file
    from charrnn.lm.model import load_model
    from charrnn.lm.task import trained_newline

    model, tokenizer, ckpt = load_model(options.model_path(checkpoint, "lm"), resolve_device(device))
    with render.progress_bar("scoring") as on_progress:
        result = evaluate_file(model, tokenizer, text_file, encoding=encoding, map_unknown=map_unknown,
                               streams=streams, newline=trained_newline(ckpt), on_progress=on_progress)
    if json_output:
        render.print_json(result.to_dict())
    else:
        render.out.print(render.eval_table(str(text_file), result))
