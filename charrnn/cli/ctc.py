"""`charrnn ctc`: train a line reader, read line images, score a reader, tune its language model, render lines."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Literal

import typer

from charrnn.cli import options, render
from charrnn.cli.options import config_options, given
from charrnn.core.errors import CharRNNError
from charrnn.ctc.config import (
    DEFAULT_CHAR_BONUS,
    DEFAULT_LINES,
    DEFAULT_LM_WEIGHT,
    MAX_HEIGHT,
    MAX_WIDTH,
    CTCTrainConfig,
)

app = typer.Typer(help="Read text lines: a CNN + bidirectional RNN trained with CTC, decoded greedily or by prefix "
                       "beam search fused with a charrnn language model.\n\n"
                       "Example: charrnn ctc decode corpora/examples/line-print.png --beam-size 8",
                  no_args_is_help=True)

# ----- options only ctc has, and the shared ones in ctc's words (the rest: options.py) ------------------

OutOpt = options.out_option("checkpoints/<data name>-ctc")
ResumeOpt = options.resume_option("its DATA")
BatchSizeOpt = options.batch_size_option("Lines per step (of similar widths, so little of a batch is padding).")
PatienceOpt = options.patience_option("the CER of the validation lines")
ExplodeFactorOpt = options.explode_factor_option(
    "ln of the number of characters + blank, times the training lines' frames per character")
HiddenSizeOpt = options.hidden_size_option("Units per direction of each bidirectional recurrent layer.")
ChannelsOpt = options.channels_option(
    "Channels of the CNN's blocks (each conv+BN+ReLU+pool halves the height; the first two also halve the width, "
    "so a frame is 4 pixel columns).")
SkipBadOpt = options.skip_bad_option("missing or unreadable images, empty transcripts, rows without exactly one TAB, "
                                     "lines too narrow for their text")
DecodeBeamSizeOpt = options.beam_size_option(
    "Prefix beam search with this many beams; 1 = greedy: the most likely class of each frame, repeats and blanks "
    "removed. With --lm, 1 becomes 8: the language model is fused into the beam search.")
EvalBeamSizeOpt = options.beam_size_option(
    "Beams of the prefix beam search, in the beam and beam + LM rows; the greedy row is scored as well.")
TuneBeamSizeOpt = options.beam_size_option(
    "Beams of the prefix beam search fused with the LM, for each (alpha, beta) of the grid.")

DataArg = Annotated[str | None, typer.Argument(
    metavar="DATA", help="Line images with their transcripts: a directory (or .zip) with labels.tsv "
                         "(filename<TAB>text), a `ctc make-lines` set, or the IAM database as downloaded "
                         f"(lines.txt + lines/). \\[default: lines rendered from the bundled tiny-shakespeare text "
                         f"into {DEFAULT_LINES}]",
    show_default=False)]
ValFracOpt = Annotated[float, typer.Option(
    "--val-frac", help="Lines held out for validation when DATA has no split of its own (seeded, by line).")]
IamOkOnlyOpt = Annotated[bool, typer.Option(
    "--iam-ok-only", help="IAM: drop the lines whose segmentation IAM marked 'err'.", show_default=False)]
HeightOpt = Annotated[int, typer.Option(
    "--height", max=MAX_HEIGHT, help="Lines are resized to this height, keeping their aspect.")]
MaxWidthOpt = Annotated[int, typer.Option(
    "--max-width", max=MAX_WIDTH, help="Widest line in pixels (at --height); a wider one is squeezed to it.")]
LmOpt = Annotated[str | None, typer.Option(
    "--lm", metavar="RUN", help="A charrnn language model fused into the beam search: a run directory, a checkpoint "
                                "file, or shipped (the one that ships with charrnn).")]
LmWeightOpt = Annotated[float, typer.Option(
    "--lm-weight", min=0.0, help="alpha: each character adds alpha x log p_LM(character | text so far).")]
CharBonusOpt = Annotated[float, typer.Option(
    "--char-bonus", help="beta: each character adds beta (balances the LM's preference for short readings).")]
LmUnknownOpt = Annotated[Literal["error", "floor"], typer.Option(
    "--lm-unknown", help="Reader characters the LM lacks: error (stop and say which) or floor (a low fixed "
                         "log-probability).")]
ShowAlignmentOpt = Annotated[Path | None, typer.Option(
    "--show-alignment", metavar="PNG", help="Write a PNG: each line with its per-frame best path underneath.")]


def _fusion(lm: str | None, lm_weight: float, char_bonus: float, lm_unknown: str):
    from charrnn.ctc.decode import Fusion

    if lm is None:
        return None
    return Fusion(str(options.model_path(lm, "lm")), lm_weight, char_bonus, lm_unknown)


@app.command("train")
def train_command(
    ctx: typer.Context,
    data: DataArg = CTCTrainConfig.data,
    out: OutOpt = CTCTrainConfig.out,
    resume: ResumeOpt = None,
    overwrite: options.OverwriteOpt = False,
    val_dir: options.ValDirOpt = CTCTrainConfig.val_dir,
    val_frac: ValFracOpt = CTCTrainConfig.val_frac,
    skip_bad: SkipBadOpt = CTCTrainConfig.skip_bad,
    iam_ok_only: IamOkOnlyOpt = CTCTrainConfig.iam_ok_only,
    height: HeightOpt = CTCTrainConfig.height,
    max_width: MaxWidthOpt = CTCTrainConfig.max_width,
    channels: ChannelsOpt = ",".join(map(str, CTCTrainConfig.channels)),
    cell: options.CellOpt = CTCTrainConfig.cell,
    num_layers: options.NumLayersOpt = CTCTrainConfig.num_layers,
    hidden_size: HiddenSizeOpt = CTCTrainConfig.hidden_size,
    dropout: options.DropoutOpt = CTCTrainConfig.dropout,
    batch_size: BatchSizeOpt = CTCTrainConfig.batch_size,
    optimizer: options.OptimizerOpt = CTCTrainConfig.optimizer,
    lr: options.LrOpt = CTCTrainConfig.lr,
    weight_decay: options.WeightDecayOpt = CTCTrainConfig.weight_decay,
    momentum: options.MomentumOpt = CTCTrainConfig.momentum,
    nesterov: options.NesterovOpt = CTCTrainConfig.nesterov,
    schedule: options.ScheduleOpt = CTCTrainConfig.schedule,
    warmup_steps: options.WarmupStepsOpt = CTCTrainConfig.warmup_steps,
    min_lr_frac: options.MinLrFracOpt = CTCTrainConfig.min_lr_frac,
    lr_decay: options.LrDecayOpt = CTCTrainConfig.lr_decay,
    lr_decay_after: options.LrDecayAfterOpt = CTCTrainConfig.lr_decay_after,
    grad_clip: options.GradClipOpt = CTCTrainConfig.grad_clip,
    max_steps: options.MaxStepsOpt = CTCTrainConfig.max_steps,
    epochs: options.EpochsOpt = CTCTrainConfig.epochs,
    time_budget: options.TimeBudgetOpt = CTCTrainConfig.time_budget,
    eval_every: options.EvalEveryOpt = CTCTrainConfig.eval_every,
    patience: PatienceOpt = CTCTrainConfig.patience,
    explode_factor: ExplodeFactorOpt = CTCTrainConfig.explode_factor,
    seed: options.SeedOpt = CTCTrainConfig.seed,
    device: options.DeviceOpt = CTCTrainConfig.device,
    precision: options.PrecisionOpt = CTCTrainConfig.precision,
    compile: options.CompileOpt = CTCTrainConfig.compile,
    json_output: options.JsonOpt = False,
) -> None:
    """Train a line reader (no arguments: lines rendered from the bundled tiny-shakespeare text, for 5 minutes).

    Example: charrnn ctc train --time-budget 10 --out checkpoints/lines-ctc-10min
    """
    from charrnn.ctc.task import resume_config, train

    values = config_options(ctx, CTCTrainConfig)
    if resume is None:
        if data is None:
            values["data"] = str(_render_default_lines())
        config = CTCTrainConfig(**values)
    else:
        user_given = given(ctx)
        if user_given & {"data", "out"} or overwrite:
            raise CharRNNError("--resume continues a run in its own directory on its own data: drop DATA, --out "
                               "and --overwrite")
        config = resume_config(resume, **{k: v for k, v in values.items() if k in user_given})
    summary = render.train_and_report(train, config, resume=resume is not None, overwrite=overwrite,
                                      json_output=json_output, command="ctc train")
    if summary is not None and not json_output:
        render.err.print(f"next: charrnn ctc eval {shlex.quote(summary.run_dir)}", markup=False, soft_wrap=True)


def _render_default_lines() -> Path:
    """The default line set, rendered with a progress bar the first time."""
    from charrnn.ctc.task import default_lines

    with render.transient_progress() as progress:
        task = progress.add_task(f"rendering lines into {DEFAULT_LINES}", total=None)
        return default_lines(lambda done, total: progress.update(task, completed=done, total=total))


@app.command("decode")
def decode_command(
    paths: Annotated[list[Path], typer.Argument(
        metavar="[CHECKPOINT] IMAGE...", show_default=False,
        help="A run directory or .pt file (left out: the shipped line reader), then line images.")],
    beam_size: DecodeBeamSizeOpt = 1,
    lm: LmOpt = None,
    lm_weight: LmWeightOpt = DEFAULT_LM_WEIGHT,
    char_bonus: CharBonusOpt = DEFAULT_CHAR_BONUS,
    lm_unknown: LmUnknownOpt = "error",
    show_alignment: ShowAlignmentOpt = None,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Read line images (no model given: the shipped reader): greedy, or prefix beam search (--beam-size),
    fused with a language model (--lm).

    Example: charrnn ctc decode checkpoints/tinyshakespeare-lines-ctc corpora/examples/line-print.png --lm shipped
    """
    from charrnn.core.files import check_output
    from charrnn.ctc.decode import decode_files

    options.require_stdout()
    checkpoint, images = options.model_and_inputs(paths, "ctc")
    if not images:
        raise CharRNNError("give the line images to read after the run directory or checkpoint")
    if show_alignment is not None:
        check_output(show_alignment, option="--show-alignment", inputs=[checkpoint, *images, *([lm] if lm else [])])
    if lm is not None and beam_size == 1:
        beam_size = 8  # fusion happens inside the beam search: a language model asks for a beam
    fusion = _fusion(lm, lm_weight, char_bonus, lm_unknown)
    result = decode_files(checkpoint, images, beam_size=beam_size, fusion=fusion,
                          device=device, alignment_png=show_alignment)
    if json_output:
        render.print_json(result)
        return
    for item in result["lines"]:
        print(f"{item['image']}\t{item['text']}")
    if show_alignment is not None:
        render.err.print(f"wrote {show_alignment}", markup=False)


@app.command("eval")
def eval_command(
    checkpoint: options.CheckpointArg,
    data: Annotated[str | None, typer.Argument(
        metavar="DATA", help="Lines to score (a make-lines set: its val/ part). \\[default: the run's validation "
                             "lines]", show_default=False)] = None,
    beam_size: EvalBeamSizeOpt = 8,
    lm: LmOpt = None,
    lm_weight: LmWeightOpt = DEFAULT_LM_WEIGHT,
    char_bonus: CharBonusOpt = DEFAULT_CHAR_BONUS,
    lm_unknown: LmUnknownOpt = "error",
    skip_bad: SkipBadOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Corpus CER, WER and line accuracy of greedy, beam and beam + LM readings side by side.

    Example: charrnn ctc eval checkpoints/tinyshakespeare-lines-ctc --lm checkpoints/tinyshakespeare
    """
    from charrnn.ctc.evaluate import evaluate_reader

    fusion = _fusion(lm, lm_weight, char_bonus, lm_unknown)
    with render.progress_bar("scoring lines") as on_progress:
        result = evaluate_reader(options.model_path(checkpoint, "ctc"), data, beam_size=beam_size,
                                 fusion=fusion, skip_bad=skip_bad, device=device, on_progress=on_progress)
    if json_output:
        render.print_json(result)
        return
    table = render.Table(title=f"{result['lines']:,} lines of {result['data']}")
    for name in ("decoding", "CER %", "WER %", "lines exact %", "lines/s"):
        table.add_column(name, justify="right")
    names = {"greedy": "greedy", "beam": f"beam {beam_size}",
             "beam_lm": f"beam {beam_size} + LM (alpha {lm_weight:g}, beta {char_bonus:g})"}
    for key in ("greedy", "beam", "beam_lm"):
        if key in result:
            s = result[key]
            table.add_row(names[key], f"{100 * s['cer']:.2f}", f"{100 * s['wer']:.2f}",
                          f"{100 * s['line_accuracy']:.1f}", f"{s['lines_per_s']:,.0f}")
    render.out.print(table)


@app.command("tune-lm")
def tune_lm_command(
    checkpoint: options.CheckpointArg,
    lm: LmOpt,
    data: Annotated[str | None, typer.Argument(
        metavar="DATA", help="Lines to tune on. \\[default: the run's validation lines]", show_default=False)] = None,
    beam_size: TuneBeamSizeOpt = 8,
    max_lines: Annotated[int, typer.Option("--max-lines", min=1, help="Tune on the first N lines.")] = 300,
    lm_unknown: LmUnknownOpt = "error",
    skip_bad: SkipBadOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Pick the LM weight (alpha) and character bonus (beta) by a small grid on validation lines.

    Example: charrnn ctc tune-lm checkpoints/tinyshakespeare-lines-ctc --lm checkpoints/tinyshakespeare
    """
    from charrnn.ctc.evaluate import tune_lm

    with render.progress_bar("decoding with each (alpha, beta)") as on_progress:
        result = tune_lm(options.model_path(checkpoint, "ctc"), str(options.model_path(lm, "lm")), data,
                         beam_size=beam_size, max_lines=max_lines, lm_unknown=lm_unknown, skip_bad=skip_bad,
                         device=device, on_progress=on_progress)
    if json_output:
        render.print_json(result)
        return
    table = render.Table(title=f"beam {beam_size} + LM on {result['lines']:,} lines (greedy CER "
                        f"{100 * result['greedy']['cer']:.2f}%)")
    for name in ("alpha (--lm-weight)", "beta (--char-bonus)", "CER %", "WER %"):
        table.add_column(name, justify="right")
    for row in result["grid"]:
        table.add_row(f"{row['lm_weight']:g}", f"{row['char_bonus']:g}", f"{100 * row['cer']:.2f}",
                      f"{100 * row['wer']:.2f}")
    render.out.print(table)
    best = result["best"]
    render.err.print(f"best: --lm-weight {best['lm_weight']:g} --char-bonus {best['char_bonus']:g}", markup=False)


@app.command("make-lines")
def make_lines_command(
    text_file: Annotated[Path, typer.Argument(metavar="TEXT_FILE", help="UTF-8 text to draw lines of.")],
    out: Annotated[Path, typer.Argument(metavar="DIR", help="A new (or empty, or earlier make-lines) directory.")],
    count: Annotated[int, typer.Option("--count", min=1, help="Training lines.")] = 10_000,
    val_count: Annotated[int | None, typer.Option(
        "--val-count", min=1, help="Lines in val/ and in val-heldout/. \\[default: a tenth of --count]",
        show_default=False)] = None,
    fonts: Annotated[list[str] | None, typer.Option(
        "--fonts", metavar="FONT", help="A training font (repeat the option for several): a .ttf/.otf file, "
                                        "default (Pillow's), or a shipped one: caladea, dkg-handwriting, "
                                        "dancing-script, comic-neue. \\[default: caladea, dkg-handwriting, "
                                        "dancing-script, default]", show_default=False)] = None,
    val_fonts: Annotated[list[str] | None, typer.Option(
        "--val-fonts", metavar="FONT", help="A held-out font for val-heldout/ (repeatable), never used for "
                                            "training. \\[default: comic-neue]", show_default=False)] = None,
    val_frac: Annotated[float, typer.Option(
        "--val-frac", help="Validation lines come from this last fraction of the text, training lines from the "
                           "rest: the split `charrnn train` uses, so its LM never read the validation text.")] = 0.1,
    min_chars: Annotated[int, typer.Option("--min-line-chars", min=1, help="Shortest line, in characters.")] = 10,
    max_chars: Annotated[int, typer.Option("--max-line-chars", min=1, help="Longest line, in characters.")] = 40,
    # The old names, still read: elsewhere --max-chars means "read the first N characters" (viz, cells).
    old_min_chars: Annotated[int | None, typer.Option("--min-chars", min=1, hidden=True)] = None,
    old_max_chars: Annotated[int | None, typer.Option("--max-chars", min=1, hidden=True)] = None,
    seed: options.SeedOpt = 0,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Processes drawing lines (the files are the same whatever their number). "
                                 "\\[default: one per CPU]", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Write into a non-empty directory that is not an earlier make-lines set (its "
                            "train/, val/ and val-heldout/ are replaced).")] = False,
    json_output: options.JsonOpt = False,
) -> None:
    """Render lines of real text in real fonts, with augmentation (size, slant, baseline jitter, blur, noise,
    ink), into DIR/train, DIR/val and DIR/val-heldout (a held-out font), each with labels.tsv.

    Example: charrnn ctc make-lines corpora/tinyshakespeare.txt lines --count 20000
    """
    from charrnn.core.files import check_output
    from charrnn.ctc.linegen import make_lines

    check_output(out, option="DIR", directory=True)  # a run directory, say: make-lines checks the rest
    min_chars, max_chars = old_min_chars or min_chars, old_max_chars or max_chars
    with render.transient_progress() as progress:
        bar = progress.add_task("rendering lines", total=None)
        summary = make_lines(text_file, out, count=count, val_count=val_count, fonts=fonts,
                             val_fonts=val_fonts, seed=seed, val_frac=val_frac,
                             min_chars=min_chars, max_chars=max_chars, overwrite=overwrite,
                             workers=workers or os.cpu_count() or 1,
                             on_progress=lambda done, total: progress.update(bar, completed=done, total=total))
    result = {"out_dir": summary.out_dir, **{f"{k} lines": v for k, v in summary.counts.items()},
              "fonts": ", ".join(summary.fonts), "held-out fonts": ", ".join(summary.val_fonts) or "none"}
    if json_output:
        render.print_json({"out_dir": summary.out_dir, "counts": summary.counts, "fonts": summary.fonts,
                           "val_fonts": summary.val_fonts})
        return
    render.out.print(render.key_value_table(f"text lines from {text_file}", result))
    render.err.print(f"next: charrnn ctc train {shlex.quote(str(out))}", markup=False, soft_wrap=True)
