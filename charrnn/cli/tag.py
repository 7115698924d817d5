"""`charrnn tag`: train a per-character tagger (truecasing, or any tags), tag texts, score a tagger."""

from __future__ import annotations

import shlex
from typing import Annotated, Literal

import typer

from charrnn.cli import options, render
from charrnn.tag.config import DEFAULT_DATA, Derive, TagTrainConfig

app = typer.Typer(help="Label every character (many-to-many): a bidirectional character RNN and a tag per "
                       "character. --derive case learns truecasing from any text: restoring the capital letters of "
                       "lower-cased text.\n\n"
                       "Example: charrnn tag predict checkpoints/warpeace_input-truecase \"where is natasha?\"",
                  no_args_is_help=True)

OutOpt = options.out_option("checkpoints/<data name>-truecase (or -tag)")
ResumeOpt = options.resume_option("its DATA")
BatchSizeOpt = options.batch_size_option("Texts per step (pieces of about --max-chars characters).")
PatienceOpt = options.patience_option("the validation F1 (of capitalised words, for truecasing)")
ExplodeFactorOpt = options.explode_factor_option("ln of the number of tags")
HiddenSizeOpt = options.hidden_size_option("Units per direction of each recurrent layer.")
EmbeddingDimOpt = options.embedding_dim_option("Character embedding size.")
SkipBadOpt = options.skip_bad_option("rows without a TAB, tags of another length than their text, empty texts, "
                                     "bytes that are not UTF-8")

DataArg = Annotated[str, typer.Argument(
    metavar="DATA", help="With --derive case: any text file (UTF-8, or --encoding). With --derive none: a TSV file "
                         "of text<TAB>tags, one tag character per text character. "
                         f"\\[default: the bundled War and Peace, {DEFAULT_DATA}]", show_default=False)]
DeriveOpt = Annotated[Derive, typer.Option(
    "--derive", help="case: learn to restore the capital letters of DATA read lower-cased; none: DATA holds the "
                     "tags.")]
ValFracOpt = Annotated[float, typer.Option(
    "--val-frac", help="Held out to choose best.pt: the part of the text after training's (case), or random rows.")]
TestFracOpt = Annotated[float, typer.Option(
    "--test-frac", help="Held out from training and choosing best.pt (case: the text's last part): what "
                        "`tag eval RUN` scores.")]
MaxCharsOpt = options.max_chars_option(
    "case: the text is cut into pieces of about this many characters; rows: longer ones are cut.")
BidirectionalOpt = Annotated[bool, typer.Option(
    "--bidirectional/--unidirectional", help="Read each text both ways, or left to right only.")]


@app.command("train")
def train_command(
    ctx: typer.Context,
    data: DataArg = TagTrainConfig.data,
    out: OutOpt = TagTrainConfig.out,
    resume: ResumeOpt = None,
    overwrite: options.OverwriteOpt = False,
    derive: DeriveOpt = TagTrainConfig.derive,
    encoding: options.EncodingOpt = TagTrainConfig.encoding,
    val_frac: ValFracOpt = TagTrainConfig.val_frac,
    test_frac: TestFracOpt = TagTrainConfig.test_frac,
    skip_bad: SkipBadOpt = TagTrainConfig.skip_bad,
    max_chars: MaxCharsOpt = TagTrainConfig.max_chars,
    cell: options.CellOpt = TagTrainConfig.cell,
    num_layers: options.NumLayersOpt = TagTrainConfig.num_layers,
    hidden_size: HiddenSizeOpt = TagTrainConfig.hidden_size,
    embedding_dim: EmbeddingDimOpt = TagTrainConfig.embedding_dim,
    dropout: options.DropoutOpt = TagTrainConfig.dropout,
    bidirectional: BidirectionalOpt = TagTrainConfig.bidirectional,
    batch_size: BatchSizeOpt = TagTrainConfig.batch_size,
    optimizer: options.OptimizerOpt = TagTrainConfig.optimizer,
    lr: options.LrOpt = TagTrainConfig.lr,
    weight_decay: options.WeightDecayOpt = TagTrainConfig.weight_decay,
    momentum: options.MomentumOpt = TagTrainConfig.momentum,
    nesterov: options.NesterovOpt = TagTrainConfig.nesterov,
    schedule: options.ScheduleOpt = TagTrainConfig.schedule,
    warmup_steps: options.WarmupStepsOpt = TagTrainConfig.warmup_steps,
    min_lr_frac: options.MinLrFracOpt = TagTrainConfig.min_lr_frac,
    lr_decay: options.LrDecayOpt = TagTrainConfig.lr_decay,
    lr_decay_after: options.LrDecayAfterOpt = TagTrainConfig.lr_decay_after,
    grad_clip: options.GradClipOpt = TagTrainConfig.grad_clip,
    max_steps: options.MaxStepsOpt = TagTrainConfig.max_steps,
    epochs: options.EpochsOpt = TagTrainConfig.epochs,
    time_budget: options.TimeBudgetOpt = TagTrainConfig.time_budget,
    eval_every: options.EvalEveryOpt = TagTrainConfig.eval_every,
    patience: PatienceOpt = TagTrainConfig.patience,
    explode_factor: ExplodeFactorOpt = TagTrainConfig.explode_factor,
    seed: options.SeedOpt = TagTrainConfig.seed,
    device: options.DeviceOpt = TagTrainConfig.device,
    precision: options.PrecisionOpt = TagTrainConfig.precision,
    compile: options.CompileOpt = TagTrainConfig.compile,
    json_output: options.JsonOpt = False,
) -> None:
    """Train a tagger (no arguments: a truecaser on the bundled War and Peace, for 5 minutes).

    Example: charrnn tag train corpora/tinyshakespeare.txt --time-budget 5
    """
    from charrnn.tag.task import resume_config, train

    config = options.run_config(ctx, TagTrainConfig, resume, overwrite, resume_config)
    summary = render.train_and_report(train, config, resume=resume is not None, overwrite=overwrite,
                                      json_output=json_output, command="tag train")
    if summary is not None and not json_output:
        render.err.print(f"next: charrnn tag eval {shlex.quote(summary.run_dir)}", markup=False, soft_wrap=True)


@app.command("predict")
def predict_command(
    checkpoint: options.CheckpointArg,
    texts: Annotated[list[str] | None, typer.Argument(
        metavar="TEXT...", show_default=False,
        help="The texts to tag. None and no --file: one text a line from standard input.")] = None,
    file: options.TextsFileOpt = None,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Tag each text; a truecaser prints each text with its capital letters restored.

    Example: charrnn tag predict checkpoints/warpeace_input-truecase "natasha and pierre met in moscow."
    """
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.device import resolve_device
    from charrnn.tag.decode import iter_tagged
    from charrnn.tag.model import load_tagger

    options.require_stdout()
    stream = options.texts_to_read(texts, file)
    model, tokenizer, ckpt = load_tagger(checkpoint, resolve_device(device))
    case = trained_with(ckpt, TagTrainConfig).derive == "case"
    results = iter_tagged(model, tokenizer, stream, case=case)
    if json_output:
        render.print_json({"texts": list(results)})
        return
    for r in results:  # printed as they come
        print(r["truecased"] if case else f"{r['text']}\t{r['tags']}", flush=True)


@app.command("eval")
def eval_command(
    checkpoint: options.CheckpointArg,
    data: Annotated[str | None, typer.Argument(
        metavar="DATA", help="Text to score (a text file for a truecaser, text<TAB>tags rows otherwise), all of it. "
                             "\\[default: the run's held-out test part]", show_default=False)] = None,
    part: Annotated[Literal["test", "val", "train"], typer.Option(
        "--part", help="Without DATA: which part of the run's own data, as the run split it.")] = "test",
    skip_bad: SkipBadOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Per-tag precision, recall and F1 over characters; for a truecaser, the F1 of the capitalised words.

    Example: charrnn tag eval checkpoints/warpeace_input-truecase --json
    """
    from charrnn.tag.evaluate import evaluate_tagger

    with render.progress_bar("tagging") as on_progress:
        result = evaluate_tagger(checkpoint, data, part=part, skip_bad=skip_bad, device=device,
                                 on_progress=on_progress)
    if json_output:
        render.print_json(result)
        return
    values = {"characters": f"{result['characters']:,}", "accuracy": f"{result['accuracy']:.4f}",
              "macro-F1": f"{result['macro_f1']:.4f}"}
    if "words" in result:
        w = result["words"]
        values.update({"capitalised words": f"{w['capitalised_words']:,}", "word precision": f"{w['precision']:.4f}",
                       "word recall": f"{w['recall']:.4f}", "word F1": f"{w['f1']:.4f}"})
    render.out.print(render.key_value_table(f"{result['texts']:,} texts: {result['data']}", values))
    table = render.Table(title="per tag")
    for k, header in enumerate(("tag", "precision", "recall", "F1", "characters")):
        table.add_column(header, justify="left" if k == 0 else "right")
    for tag, s in result["per_tag"].items():
        table.add_row(repr(tag), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", f"{s['support']:,}")
    render.out.print(table)
