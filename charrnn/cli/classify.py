"""`charrnn classify`: train a text classifier, label texts, score a classifier, trace a label as a text is read."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal

import typer

from charrnn.classify.config import DEFAULT_DATA, ClassifyTrainConfig, Format, Pool
from charrnn.cli import options, render
from charrnn.core.errors import CharRNNError

app = typer.Typer(help="Label whole texts (many-to-one): a character RNN read over the text, pooled, and a label "
                       "head: the language of a surname, the sentiment of a review.\n\n"
                       "Example: charrnn classify predict Nakamura \"O'Brien\"", no_args_is_help=True)

# ----- options only classify has, and the shared ones in classify's words (the rest: options.py) ---------

OutOpt = options.out_option("checkpoints/<data name>-classify")
ResumeOpt = options.resume_option("its DATA")
BatchSizeOpt = options.batch_size_option("Texts per step (of similar lengths, so little of a batch is padding).")
PatienceOpt = options.patience_option("the accuracy on the validation texts")
ExplodeFactorOpt = options.explode_factor_option("ln of the number of labels")
HiddenSizeOpt = options.hidden_size_option("Units per direction of each recurrent layer.")
EmbeddingDimOpt = options.embedding_dim_option("Character embedding size.")
SkipBadOpt = options.skip_bad_option("rows without a TAB or label, empty texts, bytes that are not UTF-8, labels "
                                     "with a single example")

DataArg = Annotated[str, typer.Argument(
    metavar="DATA", help="Labelled texts: a TSV file (label<TAB>text), a CSV file with a header, a fastText file "
                         "(__label__X text), or a directory with one file per label, one text a line. "
                         f"\\[default: the bundled surnames by language, {DEFAULT_DATA}]", show_default=False)]
FormatOpt = Annotated[Format, typer.Option(
    "--format", help="How DATA is laid out; auto: a directory is dir, a .csv file csv, a file starting with "
                     "__label__ fasttext, else tsv.")]
TextColumnOpt = Annotated[str, typer.Option("--text-column", help="CSV: the column that holds the text.")]
LabelColumnOpt = Annotated[str, typer.Option("--label-column", help="CSV: the column that holds the label.")]
ValFracOpt = Annotated[float, typer.Option(
    "--val-frac", help="Texts held out to choose best.pt (seeded, the same share of every label).")]
TestFracOpt = Annotated[float, typer.Option(
    "--test-frac", help="Texts held out from training and from choosing best.pt: what `classify eval RUN` scores.")]
MaxCharsOpt = options.max_chars_option("A longer text is cut to its first N characters.")
InitFromOpt = Annotated[str | None, typer.Option(
    "--init-from", metavar="LM_RUN", help="Start the embedding and recurrent layers from a charrnn language model of "
                                          "the same cell and sizes (the sentiment-neuron route).")]
FreezeOpt = Annotated[bool, typer.Option(
    "--freeze", help="With --init-from: train the pooling and the head only.", show_default=False)]
BidirectionalOpt = Annotated[bool, typer.Option(
    "--bidirectional/--unidirectional", help="Read each text both ways, or left to right only.")]
PoolOpt = Annotated[Pool, typer.Option(
    "--pool", help="How the states of a text become one vector: last (the final state), mean, max, attention.")]
TopKOpt = Annotated[int, typer.Option("--top-k", min=1, help="Show the K most likely labels of each text.")]


@app.command("train")
def train_command(
    ctx: typer.Context,
    data: DataArg = ClassifyTrainConfig.data,
    out: OutOpt = ClassifyTrainConfig.out,
    resume: ResumeOpt = None,
    overwrite: options.OverwriteOpt = False,
    format: FormatOpt = ClassifyTrainConfig.format,
    text_column: TextColumnOpt = ClassifyTrainConfig.text_column,
    label_column: LabelColumnOpt = ClassifyTrainConfig.label_column,
    val_dir: options.ValDirOpt = ClassifyTrainConfig.val_dir,
    val_frac: ValFracOpt = ClassifyTrainConfig.val_frac,
    test_frac: TestFracOpt = ClassifyTrainConfig.test_frac,
    skip_bad: SkipBadOpt = ClassifyTrainConfig.skip_bad,
    max_chars: MaxCharsOpt = ClassifyTrainConfig.max_chars,
    init_from: InitFromOpt = ClassifyTrainConfig.init_from,
    freeze: FreezeOpt = ClassifyTrainConfig.freeze,
    cell: options.CellOpt = ClassifyTrainConfig.cell,
    num_layers: options.NumLayersOpt = ClassifyTrainConfig.num_layers,
    hidden_size: HiddenSizeOpt = ClassifyTrainConfig.hidden_size,
    embedding_dim: EmbeddingDimOpt = ClassifyTrainConfig.embedding_dim,
    dropout: options.DropoutOpt = ClassifyTrainConfig.dropout,
    bidirectional: BidirectionalOpt = ClassifyTrainConfig.bidirectional,
    pool: PoolOpt = ClassifyTrainConfig.pool,
    batch_size: BatchSizeOpt = ClassifyTrainConfig.batch_size,
    optimizer: options.OptimizerOpt = ClassifyTrainConfig.optimizer,
    lr: options.LrOpt = ClassifyTrainConfig.lr,
    weight_decay: options.WeightDecayOpt = ClassifyTrainConfig.weight_decay,
    momentum: options.MomentumOpt = ClassifyTrainConfig.momentum,
    nesterov: options.NesterovOpt = ClassifyTrainConfig.nesterov,
    schedule: options.ScheduleOpt = ClassifyTrainConfig.schedule,
    warmup_steps: options.WarmupStepsOpt = ClassifyTrainConfig.warmup_steps,
    min_lr_frac: options.MinLrFracOpt = ClassifyTrainConfig.min_lr_frac,
    lr_decay: options.LrDecayOpt = ClassifyTrainConfig.lr_decay,
    lr_decay_after: options.LrDecayAfterOpt = ClassifyTrainConfig.lr_decay_after,
    grad_clip: options.GradClipOpt = ClassifyTrainConfig.grad_clip,
    max_steps: options.MaxStepsOpt = ClassifyTrainConfig.max_steps,
    epochs: options.EpochsOpt = ClassifyTrainConfig.epochs,
    time_budget: options.TimeBudgetOpt = ClassifyTrainConfig.time_budget,
    eval_every: options.EvalEveryOpt = ClassifyTrainConfig.eval_every,
    patience: PatienceOpt = ClassifyTrainConfig.patience,
    explode_factor: ExplodeFactorOpt = ClassifyTrainConfig.explode_factor,
    seed: options.SeedOpt = ClassifyTrainConfig.seed,
    device: options.DeviceOpt = ClassifyTrainConfig.device,
    precision: options.PrecisionOpt = ClassifyTrainConfig.precision,
    compile: options.CompileOpt = ClassifyTrainConfig.compile,
    json_output: options.JsonOpt = False,
) -> None:
    """Train a text classifier (no arguments: the bundled surnames by language, for 5 minutes).

    Example: charrnn classify train corpora/reviews.tsv --time-budget 5
    """
    from charrnn.classify.task import resume_config, train

    config = options.run_config(ctx, ClassifyTrainConfig, resume, overwrite, resume_config)
    summary = render.train_and_report(train, config, resume=resume is not None, overwrite=overwrite,
                                      json_output=json_output, command="classify train")
    if summary is not None and not json_output:
        render.err.print(f"next: charrnn classify eval {shlex.quote(summary.run_dir)}", markup=False, soft_wrap=True)


def _table(title: str, *headers: str):
    table = render.Table(title=title)
    for k, header in enumerate(headers):
        table.add_column(header, justify="left" if k == 0 else "right")
    return table


@app.command("predict")
def predict_command(
    args: Annotated[list[str] | None, typer.Argument(
        metavar="[CHECKPOINT] TEXT...", show_default=False,
        help="A run directory or .pt file (left out: the shipped surname classifier), then the texts. No texts and "
             "no --file: one text a line from standard input.")] = None,
    file: options.TextsFileOpt = None,
    top_k: TopKOpt = 1,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """The label of each text, with its probability (and the --top-k most likely labels).

    Example: charrnn classify predict Nakamura "O'Brien" --top-k 3
    """
    from charrnn.classify.decode import iter_predictions
    from charrnn.classify.model import load_classifier
    from charrnn.core.device import resolve_device

    options.require_stdout()
    checkpoint, rest = options.model_and_inputs([Path(a) for a in args or []], "classify")
    given_texts = (args or [])[len(args or []) - len(rest):]
    stream = options.texts_to_read(given_texts, file)
    model, tokenizer, ckpt = load_classifier(checkpoint, resolve_device(device))
    max_chars = (ckpt.get("meta") or {}).get("train_config", {}).get("max_chars", ClassifyTrainConfig.max_chars)
    predictions = iter_predictions(model, tokenizer, stream, top_k=top_k, max_chars=max_chars)
    if json_output:
        render.print_json({"predictions": list(predictions)})
        return
    for p in predictions:  # each answer printed as it comes (a stream on stdin answers line by line)
        shown = "\t".join(f"{t['label']}\t{t['probability']:.3f}" for t in p["top"])
        print(f"{p['text']}\t{shown}", flush=True)


@app.command("eval")
def eval_command(
    checkpoint: options.CheckpointArg,
    data: Annotated[str | None, typer.Argument(
        metavar="DATA", help="Labelled texts to score, every one of them. \\[default: the run's held-out test part]",
        show_default=False)] = None,
    part: Annotated[Literal["test", "val", "train"], typer.Option(
        "--part", help="Without DATA: which part of the run's own data, as the run split it.")] = "test",
    confusion: Annotated[Path | None, typer.Option(
        "--confusion", metavar="SVG", help="Write the confusion matrix as a picture (SVG).")] = None,
    skip_bad: SkipBadOpt = False,
    baseline: Annotated[bool, typer.Option(
        "--baseline", show_default=False,
        help="Also train and score a character n-gram linear classifier (fastText-style) on the run's training "
             "part: what the RNN is up against.")] = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Accuracy, macro-F1, per-label precision and recall, and the confusion matrix.

    Example: charrnn classify eval checkpoints/surnames-classify --confusion confusion.svg
    """
    from charrnn.classify.evaluate import confusion_svg, evaluate_classifier
    from charrnn.core.files import check_output, write_text_atomic

    if confusion is not None:
        check_output(confusion, option="--confusion", inputs=[checkpoint, *([data] if data else [])])
    with render.progress_bar("classifying") as on_progress:
        result = evaluate_classifier(checkpoint, data, part=part, skip_bad=skip_bad, baseline=baseline,
                                     device=device, on_progress=on_progress)
    if confusion is not None:
        write_text_atomic(confusion, confusion_svg(result["confusion"], result["labels"]))
    if json_output:
        render.print_json(result)
        return
    render.out.print(render.key_value_table(f"{result['examples']:,} texts: {result['data']}", {
        "accuracy": f"{result['accuracy']:.4f}", "macro-F1": f"{result['macro_f1']:.4f}",
        "majority class": f"{result['majority_baseline']:.4f}",
        **({"n-gram baseline": f"{result['ngram_baseline']:.4f}"} if baseline else {}),
        "loss (nats)": f"{result['loss']:.4f}"}))
    table = _table("per label", "label", "precision", "recall", "F1", "texts")
    for label, s in result["per_label"].items():
        table.add_row(label, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", f"{s['support']:,}")
    render.out.print(table)
    labels = result["labels"]
    matrix = _table("confusion matrix", "true \\ predicted", *labels)
    for label, row in zip(labels, result["confusion"]):
        matrix.add_row(label, *(str(v) for v in row))
    render.out.print(matrix)
    if confusion is not None:
        render.err.print(f"wrote {confusion}", markup=False)


@app.command("trace")
def trace_command(
    args: Annotated[list[str], typer.Argument(
        metavar="[CHECKPOINT] TEXT", show_default=False,
        help="A run directory or .pt file (left out: the shipped surname classifier), then the text.")],
    svg: Annotated[Path | None, typer.Option(
        "--svg", help="Write the picture: each label's probability against the characters read.")] = None,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """How each label's probability moves as the text is read, character by character.

    Example: charrnn classify trace "O'Brien" --svg trace.svg
    """
    from charrnn.classify.decode import trace_text
    from charrnn.core.files import check_output

    checkpoint, rest = options.model_and_inputs([Path(a) for a in args], "classify")
    texts = args[len(args) - len(rest):]
    if len(texts) != 1:
        raise CharRNNError(f"give one text to trace (got {len(texts)}); quote it if it has spaces")
    if svg is not None:
        check_output(svg, option="--svg", inputs=[checkpoint])
    result = trace_text(checkpoint, texts[0], device=device, svg_path=svg)
    if json_output:
        render.print_json(result)
        return
    labels, probs = result["labels"], result["probabilities"]
    shown = sorted(range(len(labels)), key=lambda k: -max(row[k] for row in probs))[:5]
    table = _table(f"label probabilities: {result['final']}", "read", *(labels[k] for k in shown))
    for t, row in enumerate(probs):
        table.add_row(texts[0][: t + 1], *(f"{row[k]:.3f}" for k in shown))
    render.out.print(table)
    if svg is not None:
        render.err.print(f"wrote {svg}", markup=False)


def print_label_units(checkpoint: Path, data: Path | None, *, top: int, device: str, json_output: bool) -> None:
    """`charrnn cells` on a classify run: the units that best track each label (the sentiment neuron)."""
    from charrnn.classify.units import rank_label_units

    result = rank_label_units(checkpoint, str(data) if data is not None else None, top=top, device=device)
    if json_output:
        render.print_json(result)
        return
    table = _table(f"single units that best tell each label ({result['examples']:,} texts: {result['data']}; "
                   f"{result['units']} units)", "label", "unit", "accuracy", "constant guess", "correlation")
    for label, units in result["labels"].items():
        for k, u in enumerate(units):
            table.add_row(label if k == 0 else "", str(u["unit"]), f"{u['accuracy']:.3f}", f"{u['base_rate']:.3f}",
                          f"{u['correlation']:+.3f}")
    render.out.print(table)
