"""`charrnn translate`: train a character-level encoder-decoder with attention, translate texts, score a
translator."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal

import typer

from charrnn.cli import options, render
from charrnn.translate.config import DEFAULT_DATA, Attention, TargetTokens, Tokens, TranslateTrainConfig

app = typer.Typer(help="Turn one text into another (many-to-many, of different lengths): a bidirectional "
                       "character encoder and a decoder that attends over it, e.g. spelling into sounds with the "
                       "bundled CMU Pronouncing Dictionary.\n\n"
                       "Example: charrnn translate run Nakamura charrnn", no_args_is_help=True)

# ----- options only translate has, and the shared ones in translate's words (the rest: options.py) ---------

OutOpt = options.out_option("checkpoints/<data name>-translate")
ResumeOpt = options.resume_option("its DATA")
BatchSizeOpt = options.batch_size_option("Pairs per step (of similar source lengths, so little is padding).")
PatienceOpt = options.patience_option("the validation token error rate (greedy)")
ExplodeFactorOpt = options.explode_factor_option("ln of the target vocabulary size")
HiddenSizeOpt = options.hidden_size_option("Units of each decoder layer; each direction of the encoder has half.")
EmbeddingDimOpt = options.embedding_dim_option("Embedding size of source and target symbols.")
SkipBadOpt = options.skip_bad_option("too few columns, empty sources or targets, bytes that are not UTF-8, targets "
                                     "longer than --max-target-len")
EvalSkipBadOpt = options.skip_bad_option("too few columns, empty sources or targets, bytes that are not UTF-8, "
                                         "targets longer than the run's longest")

DataArg = Annotated[str | None, typer.Argument(
    metavar="DATA", help="Pairs, one a line: a TSV file of source<TAB>target (further columns ignored, so Tatoeba "
                         "and Anki exports read as they are), or leave it out and give --source and --target. "
                         f"\\[default: the bundled CMU Pronouncing Dictionary, {DEFAULT_DATA}]", show_default=False)]
SourceOpt = Annotated[str | None, typer.Option(
    "--source", metavar="FILE", help="Instead of DATA: the sources, one a line, aligned with --target (the raw "
                                     "text OpenNMT and fairseq read).")]
TargetOpt = Annotated[str | None, typer.Option(
    "--target", metavar="FILE", help="Instead of DATA: the targets, line k the translation of --source's line k.")]
SourceColumnOpt = Annotated[int, typer.Option("--source-column", min=1, help="TSV: the column of the sources.")]
TargetColumnOpt = Annotated[int, typer.Option("--target-column", min=1, help="TSV: the column of the targets.")]
SourceTokensOpt = Annotated[Tokens, typer.Option(
    "--source-tokens", help="chars: read the source character by character; words: split it on spaces.")]
TargetTokensOpt = Annotated[TargetTokens, typer.Option(
    "--target-tokens", help="chars: write the target character by character; words: a symbol per space-separated "
                            "word (phones, morphemes, words); auto: words for the bundled dictionary, else chars.")]
ValFracOpt = Annotated[float, typer.Option(
    "--val-frac", help="Sources held out to choose best.pt (seeded; every pair of one source on the same side).")]
TestFracOpt = Annotated[float, typer.Option(
    "--test-frac", help="Sources held out from training and choosing best.pt: what `translate eval RUN` scores.")]
MaxTargetLenOpt = Annotated[int, typer.Option(
    "--max-target-len", min=1, help="Targets longer than this many tokens are bad rows (and outputs stop there).")]
AttentionOpt = Annotated[Attention, typer.Option(
    "--attention", help="additive (Bahdanau: a small network scores each source position) or dot (Luong's general "
                        "score: a bilinear product).")]
InputFeedingOpt = Annotated[bool, typer.Option(
    "--input-feeding/--no-input-feeding",
    help="Feed each step's attention context into the decoder's first layer (Bahdanau; a step at a time while "
         "training), or attend after the recurrent layers (Luong; the whole target in one fused kernel, faster).")]
BeamOpt = options.beam_size_option("Beam search with this many beams; 1 = greedy (the most likely token each step).")
NBestOpt = Annotated[int, typer.Option(
    "--n-best", min=1, help="Show the N best outputs of the beam, with their scores (at most --beam-size).")]


@app.command("train")
def train_command(
    ctx: typer.Context,
    data: DataArg = TranslateTrainConfig.data,
    out: OutOpt = TranslateTrainConfig.out,
    resume: ResumeOpt = None,
    overwrite: options.OverwriteOpt = False,
    source: SourceOpt = TranslateTrainConfig.source,
    target: TargetOpt = TranslateTrainConfig.target,
    source_column: SourceColumnOpt = TranslateTrainConfig.source_column,
    target_column: TargetColumnOpt = TranslateTrainConfig.target_column,
    source_tokens: SourceTokensOpt = TranslateTrainConfig.source_tokens,
    target_tokens: TargetTokensOpt = TranslateTrainConfig.target_tokens,
    val_dir: options.ValDirOpt = TranslateTrainConfig.val_dir,
    val_frac: ValFracOpt = TranslateTrainConfig.val_frac,
    test_frac: TestFracOpt = TranslateTrainConfig.test_frac,
    skip_bad: SkipBadOpt = TranslateTrainConfig.skip_bad,
    max_target_len: MaxTargetLenOpt = TranslateTrainConfig.max_target_len,
    scheduled_sampling: options.ScheduledSamplingOpt = TranslateTrainConfig.scheduled_sampling,
    cell: options.CellOpt = TranslateTrainConfig.cell,
    num_layers: options.NumLayersOpt = TranslateTrainConfig.num_layers,
    hidden_size: HiddenSizeOpt = TranslateTrainConfig.hidden_size,
    embedding_dim: EmbeddingDimOpt = TranslateTrainConfig.embedding_dim,
    dropout: options.DropoutOpt = TranslateTrainConfig.dropout,
    attention: AttentionOpt = TranslateTrainConfig.attention,
    attention_dim: options.AttentionDimOpt = TranslateTrainConfig.attention_dim,
    input_feeding: InputFeedingOpt = TranslateTrainConfig.input_feeding,
    batch_size: BatchSizeOpt = TranslateTrainConfig.batch_size,
    optimizer: options.OptimizerOpt = TranslateTrainConfig.optimizer,
    lr: options.LrOpt = TranslateTrainConfig.lr,
    weight_decay: options.WeightDecayOpt = TranslateTrainConfig.weight_decay,
    momentum: options.MomentumOpt = TranslateTrainConfig.momentum,
    nesterov: options.NesterovOpt = TranslateTrainConfig.nesterov,
    schedule: options.ScheduleOpt = TranslateTrainConfig.schedule,
    warmup_steps: options.WarmupStepsOpt = TranslateTrainConfig.warmup_steps,
    min_lr_frac: options.MinLrFracOpt = TranslateTrainConfig.min_lr_frac,
    lr_decay: options.LrDecayOpt = TranslateTrainConfig.lr_decay,
    lr_decay_after: options.LrDecayAfterOpt = TranslateTrainConfig.lr_decay_after,
    grad_clip: options.GradClipOpt = TranslateTrainConfig.grad_clip,
    max_steps: options.MaxStepsOpt = TranslateTrainConfig.max_steps,
    epochs: options.EpochsOpt = TranslateTrainConfig.epochs,
    time_budget: options.TimeBudgetOpt = TranslateTrainConfig.time_budget,
    eval_every: options.EvalEveryOpt = TranslateTrainConfig.eval_every,
    patience: PatienceOpt = TranslateTrainConfig.patience,
    explode_factor: ExplodeFactorOpt = TranslateTrainConfig.explode_factor,
    seed: options.SeedOpt = TranslateTrainConfig.seed,
    device: options.DeviceOpt = TranslateTrainConfig.device,
    precision: options.PrecisionOpt = TranslateTrainConfig.precision,
    compile: options.CompileOpt = TranslateTrainConfig.compile,
    json_output: options.JsonOpt = False,
) -> None:
    """Train a translator (no arguments: spelling to phones on the bundled CMU Pronouncing Dictionary, for 5
    minutes).

    Example: charrnn translate train corpora/cmudict/cmudict.tsv --attention dot --out checkpoints/cmudict-dot
    """
    from charrnn.translate.task import resume_config, train

    config = options.run_config(ctx, TranslateTrainConfig, resume, overwrite, resume_config)
    summary = render.train_and_report(train, config, resume=resume is not None, overwrite=overwrite,
                                      json_output=json_output, command="translate train")
    if summary is not None and not json_output:
        render.err.print(f"next: charrnn translate eval {shlex.quote(summary.run_dir)}", markup=False,
                         soft_wrap=True)


@app.command("run")
def run_command(
    args: Annotated[list[str] | None, typer.Argument(
        metavar="[RUN] TEXT...", show_default=False,
        help="A run directory or .pt file (left out: the shipped spelling-to-phones model), then the texts. No texts "
             "and no --file: one text a line from standard input.")] = None,
    file: options.TextsFileOpt = None,
    beam_size: BeamOpt = 1,
    n_best: NBestOpt = 1,
    length_alpha: options.LengthAlphaOpt = 1.0,
    show_attention: options.show_attention_option(
        "Write a picture of the attention: for each text, one row per output token over the source.") = None,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Translate each text: the best output (and with --n-best, the N best of the beam, with their scores).

    Example: charrnn translate run checkpoints/cmudict-translate Nakamura charrnn --beam-size 5 --n-best 3
    """
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.config import check_length_alpha
    from charrnn.core.device import resolve_device
    from charrnn.core.files import check_output
    from charrnn.translate.decode import iter_translations
    from charrnn.translate.model import load_translator

    options.require_stdout()
    check_length_alpha(length_alpha)
    if n_best > beam_size:
        raise options.CharRNNError(f"--n-best {n_best} needs a beam at least as wide: add --beam-size {n_best}")
    checkpoint, rest = options.model_and_inputs([Path(a) for a in args or []], "translate")
    given_texts = (args or [])[len(args or []) - len(rest):]
    if show_attention is not None:
        check_output(show_attention, option="--show-attention", inputs=[checkpoint, *([file] if file else [])])
    stream = options.texts_to_read(given_texts, file)
    model, tokenizer, ckpt = load_translator(checkpoint, resolve_device(device))
    max_target_len = trained_with(ckpt, TranslateTrainConfig).max_target_len
    results = iter_translations(model, tokenizer, stream, beam_size=beam_size, n_best=n_best,
                                length_alpha=length_alpha, max_target_len=max_target_len)
    pictures, shown = [], []
    for r in results:  # each answer printed as it comes (a stream on stdin answers line by line)
        if show_attention is not None:
            pictures.append((r["source_tokens"], r["output_tokens"], r["attention"]))
        if json_output:
            shown.append({k: r[k] for k in ("source", "output", "score", "n_best")})
        elif n_best > 1:
            print("\t".join([r["source"]] + [f"{o['output']}\t{o['score']:.3f}" for o in r["n_best"]]), flush=True)
        else:
            print(f"{r['source']}\t{r['output']}", flush=True)
    if show_attention is not None:
        from charrnn.translate.attention_png import attention_pngs

        attention_pngs(show_attention, pictures)
    if json_output:
        render.print_json({"translations": shown, **({"attention_png": str(show_attention)} if show_attention
                                                     else {})})
    elif show_attention is not None:
        render.err.print(f"attention: {show_attention}", markup=False, soft_wrap=True)


@app.command("eval")
def eval_command(
    checkpoint: options.CheckpointArg,
    data: Annotated[str | None, typer.Argument(
        metavar="DATA", help="Pairs to score (a TSV file, read with the run's columns), every one of them. "
                             "\\[default: the run's held-out test part]", show_default=False)] = None,
    part: Annotated[Literal["test", "val", "train"], typer.Option(
        "--part", help="Without DATA: which part of the run's own data, as the run split it.")] = "test",
    beam_size: Annotated[int, typer.Option(
        "--beam-size", min=1, help="Score greedy decoding and, beside it, a beam this wide (1: greedy only).")] = 5,
    length_alpha: options.LengthAlphaOpt = 1.0,
    skip_bad: EvalSkipBadOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Exact match, token error rate (phones for a dictionary), CER and WER, greedy and under a beam side by side;
    BLEU and chrF as well when sacrebleu is installed and the targets are sentences.

    Example: charrnn translate eval checkpoints/cmudict-translate --json
    """
    from charrnn.core.config import check_length_alpha
    from charrnn.translate.evaluate import evaluate_translator

    check_length_alpha(length_alpha)
    with render.progress_bar("translating") as on_progress:
        result = evaluate_translator(options.model_path(checkpoint, "translate"), data, part=part,
                                     beam_size=beam_size, length_alpha=length_alpha, skip_bad=skip_bad, device=device,
                                     on_progress=on_progress)
    if json_output:
        render.print_json(result)
        return
    decodings = result["decodings"]
    table = render.Table(title=f"{result['sources']:,} sources ({result['pairs']:,} pairs): {result['data']}")
    table.add_column("")
    for name in decodings:
        table.add_column(name, justify="right")
    rows = [("exact match", "exact_match"), ("error rate (1 - exact)", "error_rate"),
            ("token error rate", "token_error_rate"), ("CER", "cer"), ("WER", "wer"), ("BLEU", "bleu"),
            ("chrF", "chrf")]
    for label, key in rows:
        if any(key in d for d in decodings.values()):
            table.add_row(label, *(f"{d[key]:.4f}" if key in d else "-" for d in decodings.values()))
    render.out.print(table)
    render.out.print(f"loss {result['loss']:.4f} nats per target token (teacher-forced)", markup=False)


@app.command("bench")
def bench_command(
    steps: Annotated[int, typer.Option(
        "--steps", help="Training steps per measurement (the first quarter, at least 1, are warm-up).")] = 60,
    repeats: Annotated[int, typer.Option(
        "--repeats", help="Measure the four loops in turn this many times; report each one's median.")] = 3,
    batch_size: BatchSizeOpt = TranslateTrainConfig.batch_size,
    hidden_size: HiddenSizeOpt = TranslateTrainConfig.hidden_size,
    cell: options.CellOpt = TranslateTrainConfig.cell,
    attention: AttentionOpt = TranslateTrainConfig.attention,
    max_pairs: Annotated[int | None, typer.Option(
        "--max-pairs", min=1, help="Train on this many pairs drawn (seeded) from the bundled dictionary instead of "
                                   "all of it: a quicker start, the same lengths.")] = None,
    device: options.DeviceOpt = "auto",
    precision: options.PrecisionOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Measure training speed (pairs/s) on the bundled dictionary against plain PyTorch loops of the same size.

    charrnn's real training (Luong attention after a fused decoder, and with input feeding a step at a time)
    and a plain PyTorch loop of each kind (an nn.LSTM decoder with attention after it; the PyTorch tutorial's
    nn.LSTMCell fed the context a step at a time) train on the same batches at the same sizes and precision.

    Example: charrnn translate bench --attention dot --repeats 3 --device cpu
    """
    from charrnn.translate.bench import run_bench

    result = run_bench(steps=steps, repeats=repeats, batch_size=batch_size, hidden_size=hidden_size, cell=cell,
                       attention=attention, max_pairs=max_pairs, device=device, precision=precision,
                       on_run=None if json_output else _say_measured)
    if json_output:
        render.print_json(result)
        return
    table = render.Table(title=f"charrnn translate bench: training (pairs/s, forward+backward+step), median of "
                               f"{result['repeats']}",
                         caption="ratio: a charrnn loop's pairs/s over those of the plain loop of its kind (below it)")
    for name in ("loop", "decoder", "pairs/s", "each repeat", "ratio"):
        table.add_column(name, justify="left" if name in ("loop", "decoder") else "right")
    for r in result["rows"]:
        table.add_row(r["loop"], r["decoder"], f"{r['pairs_per_s']:,.0f}", ", ".join(f"{x:,.0f}" for x in r["runs"]),
                      "" if r["ratio"] is None else f"{r['ratio']:.2f}")
    render.out.print(table)
    render.out.print(f"{result['cell']} {result['hidden_size']} hidden, embedding {result['embedding_dim']}, "
                     f"{result['attention']} attention {result['attention_dim']}, batch {result['batch_size']}, "
                     f"{result['steps']} steps ({result['warmup_steps']} warm-up) on {result['train_pairs']:,} pairs | "
                     f"device {result['device']}, {result['threads']} threads, {result['precision']}, torch "
                     f"{result['torch']}", markup=False)
    if result["load_average_before"] is not None:
        render.out.print(f"load average before: {result['load_average_before']:.2f} (other work running here slows "
                         "the loops unevenly: compare ratios measured on a quiet machine)", markup=False)


def _say_measured(loop: str, repeat: int, pairs_per_s: float) -> None:
    render.err.print(f"measured {loop} (repeat {repeat + 1}): {pairs_per_s:,.0f} pairs/s", markup=False)
