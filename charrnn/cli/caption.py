"""`charrnn caption`: train a captioner, caption images, score a model, build the emoji set."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal

import typer

from charrnn.caption.config import (
    MAX_CAPTION_LEN,
    MAX_IMAGE_SIZE,
    CaptionTrainConfig,
    Encoder,
    Tokens,
)
from charrnn.cli import options, render
from charrnn.core.config import check_length_alpha, check_seed
from charrnn.core.errors import CharRNNError

app = typer.Typer(help="Describe images: a CNN encoder and a recurrent decoder (with soft attention).\n\n"
                       "Example: charrnn caption sample corpora/examples/monkey.png",
                  no_args_is_help=True)

# ----- options only captioning has, and the shared ones in captioning's words (the rest: options.py) -----

OutOpt = options.out_option("checkpoints/<data name>-caption")
ResumeOpt = options.resume_option("its DATA")
BatchSizeOpt = options.batch_size_option("Images per step, each with one of its captions.")
PatienceOpt = options.patience_option("the BLEU-4 of the validation captions")
EmbeddingDimOpt = options.embedding_dim_option("Token embedding size (characters or words, as --tokens says).")
ChannelsOpt = options.channels_option(
    "Channels of the CNN's blocks, for --encoder cnn (each conv+BN+ReLU+pool halves the grid).")
SkipBadOpt = options.skip_bad_option("missing or unreadable images, empty captions, rows without a TAB or not UTF-8")
NumSamplesOpt = options.num_samples_option(
    "Captions sampled for each image, one after another (needs --temperature above 0 and no --beam-size).")
EvalBeamSizeOpt = options.beam_size_option(
    "Beams of the beam-search row (deterministic); the greedy row is scored as well.")

DataArg = Annotated[str, typer.Argument(
    metavar="DATA", help="A caption dataset: a directory (or .zip of one) with images and captions.tsv, "
                         "Flickr8k/30k or COCO as downloaded. \\[default: the bundled emoji set]",
    show_default=False)]
SplitOpt = Annotated[str | None, typer.Option(
    "--split", help="A split the dataset names (the emoji set: random or grouped). \\[default: its first]")]
CaptionValFracOpt = Annotated[float, typer.Option(
    "--val-frac", help="Images held out for validation when the dataset has no split of its own (by image).")]
TokensOpt = Annotated[Tokens, typer.Option("--tokens", help="Decode characters (open vocabulary) or words.")]
ImageSizeOpt = Annotated[int, typer.Option(
    "--image-size", max=MAX_IMAGE_SIZE, help="Images are resized to this square side.")]
EncoderOpt = Annotated[Encoder, typer.Option(
    "--encoder", help="The project's CNN, or a torchvision ResNet (needs torchvision; random weights unless "
                      "--encoder-weights).")]
EncoderWeightsOpt = Annotated[str | None, typer.Option(
    "--encoder-weights", metavar="FILE", help="A local torchvision state dict for the ResNet (nothing is downloaded).")]
FreezeEncoderOpt = Annotated[bool, typer.Option(
    "--freeze-encoder", help="Train the decoder only; the encoder keeps its weights.", show_default=False)]
AttentionOpt = Annotated[bool, typer.Option(
    "--attention/--no-attention", help="Soft attention over the CNN's grid at every step (Show, Attend and Tell).")]
DoublyStochasticOpt = Annotated[float, typer.Option(
    "--doubly-stochastic", help="Weight of the penalty for grid cells the caption never attends to.")]
MaxCaptionLenOpt = Annotated[int, typer.Option(
    "--max-caption-len", min=1, max=MAX_CAPTION_LEN, help="Longest caption decoded, in tokens.")]


@app.command("train")
def train_command(
    ctx: typer.Context,
    data: DataArg = CaptionTrainConfig.data,
    out: OutOpt = CaptionTrainConfig.out,
    resume: ResumeOpt = None,
    overwrite: options.OverwriteOpt = False,
    split: SplitOpt = CaptionTrainConfig.split,
    val_dir: options.ValDirOpt = CaptionTrainConfig.val_dir,
    val_frac: CaptionValFracOpt = CaptionTrainConfig.val_frac,
    skip_bad: SkipBadOpt = CaptionTrainConfig.skip_bad,
    tokens: TokensOpt = CaptionTrainConfig.tokens,
    image_size: ImageSizeOpt = CaptionTrainConfig.image_size,
    encoder: EncoderOpt = CaptionTrainConfig.encoder,
    encoder_weights: EncoderWeightsOpt = CaptionTrainConfig.encoder_weights,
    freeze_encoder: FreezeEncoderOpt = CaptionTrainConfig.freeze_encoder,
    channels: ChannelsOpt = ",".join(map(str, CaptionTrainConfig.channels)),
    cell: options.CellOpt = CaptionTrainConfig.cell,
    num_layers: options.NumLayersOpt = CaptionTrainConfig.num_layers,
    hidden_size: options.HiddenSizeOpt = CaptionTrainConfig.hidden_size,
    embedding_dim: EmbeddingDimOpt = CaptionTrainConfig.embedding_dim,
    dropout: options.DropoutOpt = CaptionTrainConfig.dropout,
    attention: AttentionOpt = CaptionTrainConfig.attention,
    attention_dim: options.AttentionDimOpt = CaptionTrainConfig.attention_dim,
    doubly_stochastic: DoublyStochasticOpt = CaptionTrainConfig.doubly_stochastic,
    scheduled_sampling: options.ScheduledSamplingOpt = CaptionTrainConfig.scheduled_sampling,
    max_caption_len: MaxCaptionLenOpt = CaptionTrainConfig.max_caption_len,
    batch_size: BatchSizeOpt = CaptionTrainConfig.batch_size,
    optimizer: options.OptimizerOpt = CaptionTrainConfig.optimizer,
    lr: options.LrOpt = CaptionTrainConfig.lr,
    weight_decay: options.WeightDecayOpt = CaptionTrainConfig.weight_decay,
    momentum: options.MomentumOpt = CaptionTrainConfig.momentum,
    nesterov: options.NesterovOpt = CaptionTrainConfig.nesterov,
    schedule: options.ScheduleOpt = CaptionTrainConfig.schedule,
    warmup_steps: options.WarmupStepsOpt = CaptionTrainConfig.warmup_steps,
    min_lr_frac: options.MinLrFracOpt = CaptionTrainConfig.min_lr_frac,
    lr_decay: options.LrDecayOpt = CaptionTrainConfig.lr_decay,
    lr_decay_after: options.LrDecayAfterOpt = CaptionTrainConfig.lr_decay_after,
    grad_clip: options.GradClipOpt = CaptionTrainConfig.grad_clip,
    max_steps: options.MaxStepsOpt = CaptionTrainConfig.max_steps,
    epochs: options.EpochsOpt = CaptionTrainConfig.epochs,
    time_budget: options.TimeBudgetOpt = CaptionTrainConfig.time_budget,
    eval_every: options.EvalEveryOpt = CaptionTrainConfig.eval_every,
    patience: PatienceOpt = CaptionTrainConfig.patience,
    explode_factor: options.ExplodeFactorOpt = CaptionTrainConfig.explode_factor,
    seed: options.SeedOpt = CaptionTrainConfig.seed,
    device: options.DeviceOpt = CaptionTrainConfig.device,
    precision: options.PrecisionOpt = CaptionTrainConfig.precision,
    compile: options.CompileOpt = CaptionTrainConfig.compile,
    json_output: options.JsonOpt = False,
) -> None:
    """Train a captioner (no arguments: the bundled emoji set, with attention, for 5 minutes).

    Example: charrnn caption train corpora/emoji.zip --split grouped --out checkpoints/emoji-grouped --time-budget 10
    """
    from charrnn.caption.task import resume_config, train

    config = options.run_config(ctx, CaptionTrainConfig, resume, overwrite, resume_config)
    summary = render.train_and_report(train, config, resume=resume is not None, overwrite=overwrite,
                                      json_output=json_output, command="caption train")
    if summary is not None and not json_output:
        render.err.print(f"next: charrnn caption eval {shlex.quote(summary.run_dir)}", markup=False, soft_wrap=True)


@app.command("sample")
def sample_command(
    paths: Annotated[list[Path], typer.Argument(
        metavar="[CHECKPOINT] IMAGE...", show_default=False,
        help="A run directory or .pt file (left out: the shipped emoji captioner), then image files.")],
    beam_size: options.BeamSizeOpt = 1,
    length_alpha: options.LengthAlphaOpt = 0.0,
    temperature: options.TemperatureOpt = 0.0,
    num_samples: NumSamplesOpt = 1,
    seed: options.SampleSeedOpt = None,
    show_attention: options.show_attention_option(
        "Write a PNG: for each generated token, its attention over the image.") = None,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Describe images with a trained captioner (none given: the shipped emoji captioner).

    Example: charrnn caption sample checkpoints/emoji-caption corpora/examples/bear.png --show-attention att.png
    """
    from charrnn.caption.decode import describe_images, iter_descriptions
    from charrnn.core.files import check_output

    options.require_stdout()
    check_seed(seed)
    check_length_alpha(length_alpha)
    checkpoint, images = options.model_and_inputs(paths, "caption")
    if not images:
        raise CharRNNError("give the image files to describe after the run directory or checkpoint")
    if num_samples > 1 and (temperature == 0 or beam_size > 1):
        raise CharRNNError("--num-samples above 1 needs --temperature above 0 and no --beam-size: "
                           "greedy and beam search give one caption")
    if show_attention is not None:
        check_output(show_attention, option="--show-attention", inputs=[checkpoint, *images])
    settings = dict(beam_size=beam_size, length_alpha=length_alpha, temperature=temperature,
                    num_samples=num_samples, seed=seed, device=device, attention_png=show_attention)
    if json_output:
        render.print_json(describe_images(checkpoint, images, **settings))
        return
    for item in iter_descriptions(checkpoint, images, **settings):  # each caption printed as it comes
        print(f"{item['image']}\t{item['caption']}", flush=True)
    if show_attention is not None:
        render.err.print(f"wrote {show_attention}", markup=False)


@app.command("eval")
def eval_command(
    checkpoint: options.CheckpointArg,
    data: Annotated[str | None, typer.Argument(
        metavar="DATA", help="Dataset to score on. \\[default: the run's own data]", show_default=False)] = None,
    part: Annotated[Literal["val", "all"], typer.Option(
        "--part", help="val: the validation side of DATA as the run split it; all: every image of DATA.")] = "val",
    beam_size: EvalBeamSizeOpt = 3,
    length_alpha: options.LengthAlphaOpt = 0.0,
    skip_bad: SkipBadOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Corpus BLEU-1..4, CIDEr-D and exact match of greedy and beam-search captions, with all references.

    Example: charrnn caption eval checkpoints/emoji-caption --beam-size 5 --json
    """
    from charrnn.caption.evaluate import evaluate_captioner

    check_length_alpha(length_alpha)
    with render.progress_bar("captioning") as on_progress:
        result = evaluate_captioner(options.model_path(checkpoint, "caption"), data, part=part, beam_size=beam_size,
                                    length_alpha=length_alpha, skip_bad=skip_bad, device=device,
                                    on_progress=on_progress)
    if json_output:
        render.print_json(result)
        return
    table = render.Table(title=f"{result['images']:,} images, {result['references']:,} references ({part})")
    for name in ("decoding", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr-D", "exact match %"):
        table.add_column(name, justify="right")
    for decoding in ("greedy", "beam"):
        s = result[decoding]
        table.add_row(decoding if decoding == "greedy" else f"beam {beam_size}",
                      *(f"{s[k]:.2f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider", "exact_match")))
    render.out.print(table)


@app.command("make-emoji")
def make_emoji_command(
    out: Annotated[Path, typer.Argument(metavar="DIR", help="A new (or empty) directory for the dataset.")],
    size: Annotated[int, typer.Option(
        "--size", max=MAX_IMAGE_SIZE, help="Side of the square images, in pixels.")] = 64,
    font: Annotated[Path | None, typer.Option(
        "--font", help="The Noto Color Emoji font file. \\[default: the installed fonts-noto-color-emoji]",
        show_default=False)] = None,
    emoji_test: Annotated[Path | None, typer.Option(
        "--emoji-test", help="Unicode's emoji-test.txt (the CLDR names). \\[default: the installed unicode-data]",
        show_default=False)] = None,
    seed: options.SeedOpt = 0,
    zip_to: Annotated[Path | None, typer.Option("--zip", help="Also pack the dataset into this .zip file.")] = None,
    json_output: options.JsonOpt = False,
) -> None:
    """Remake the bundled emoji set: every emoji the Noto Color Emoji font draws, captioned with its CLDR
    name (other names as extra references), with a random and a grouped validation split (drawn by --seed).

    Example: charrnn caption make-emoji emoji --zip emoji.zip
    """
    from charrnn.caption.emoji import make_emoji_dataset, zip_dataset
    from charrnn.core.files import check_output

    if zip_to is not None:
        check_output(zip_to, option="--zip", inputs=[p for p in (font, emoji_test) if p is not None])
        if zip_to.resolve().is_relative_to(out.resolve()):
            raise CharRNNError(f"--zip {str(zip_to)!r} lies in the dataset directory {str(out)!r}, which it would "
                               "pack into itself; put it outside")
    with render.transient_progress() as progress:
        task = progress.add_task("rendering", total=None)
        summary = make_emoji_dataset(out, size=size, font=font, emoji_test=emoji_test, seed=seed,
                                     on_progress=lambda done, total: progress.update(task, completed=done,
                                                                                     total=total))
    if zip_to is not None:
        zip_dataset(out, zip_to)
        summary["zip"] = str(zip_to)
    summary.pop("skipped_emoji", None)
    if json_output:
        render.print_json(summary)
        return
    render.out.print(render.key_value_table(f"emoji caption set in {out}", summary))
