"""Every option that more than one command has, and every option of a training run, declared once.

An alias carries the flags, the type (a `Literal` from `charrnn.core.config` makes Typer check the choices) and
the help; a command gives the default, taken from its config dataclass, so that help, config and checkpoint
agree: `lr: options.LrOpt = TrainConfig.lr`. A run's parameters are named like the config fields they fill, so
`config_options(ctx, TrainConfig)` collects them without a list written out by hand.

Torch-free on purpose: `charrnn --help` loads this module and nothing heavy.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.core.config import DEFAULT_TIME_BUDGET, Cell, Newline, Optimizer, Precision, Schedule

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "0": "\0"}


def unescape(text: str) -> str:
    """Read backslash escapes \\n, \\t, \\r, \\0 and \\\\ as typed on a shell line; other text is kept."""
    if "\\" not in text:
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


def given(ctx: typer.Context) -> set[str]:
    """The parameters the user gave, even at their default value (the rest were left at their defaults)."""
    return {name for name in ctx.params if ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")}


def config_options(ctx: typer.Context, config_class: type) -> dict:
    """The command's parameters that are fields of `config_class` (a dataclass), by name."""
    names = {f.name for f in fields(config_class)}
    return {k: v for k, v in ctx.params.items() if k in names}


# ----- shared by several commands -----------------------------------------------------------------

def model_and_inputs(paths: list[Path], task: str) -> tuple[Path, list[Path]]:
    """The model a command was given and its inputs. The first path is the model when it is a run directory
    or a .pt file; otherwise the model shipped for `task` (see charrnn.core.pretrained) reads every path."""
    if paths and (paths[0].is_dir() or paths[0].suffix == ".pt"):
        return paths[0], list(paths[1:])
    from charrnn.core.pretrained import pretrained

    return pretrained(task), list(paths)


CheckpointArg = Annotated[Path, typer.Argument(
    metavar="CHECKPOINT", help="Run directory (uses best.pt) or checkpoint file.", show_default=False)]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision",
    help="auto (bf16 autocast where the GPU or CPU computes bfloat16 natively, else fp32), fp32 or bf16.")]
SeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", help="Random seed: the same seed gives the same result (no default shown: each run differs).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of text and tables.")]
EncodingOpt = Annotated[str, typer.Option(
    "--encoding", help="Text encoding of the text file (any Python codec; byte-level models read bytes).")]
MapUnknownOpt = Annotated[bool, typer.Option(
    "--map-unknown",
    help="Read characters the model never saw as <unk> (eval leaves them unscored) instead of failing.")]
TopOpt = Annotated[int, typer.Option("--top", min=1, help="Top cells listed per probe.")]
MaxCharsOpt = Annotated[int, typer.Option(
    "--max-chars", min=2, help="Read only the first N characters of the text (or of the activations file).")]
TemperatureOpt = Annotated[float, typer.Option(
    "--temperature", "-t", min=0.0,
    help="Sampling temperature: below 1 safer, above 1 more varied; 0 = the most likely token each step.")]
BeamSizeOpt = Annotated[int, typer.Option(
    "--beam-size", min=1, help="Beam search with this many beams (deterministic); 1 = no beam search: the most "
                               "likely token each step, or sampling where --temperature is above 0.")]
NumSamplesOpt = Annotated[int, typer.Option(
    "--num-samples", min=1, help="Independent samples (for each image, when captioning), generated as one batch.")]
LengthAlphaOpt = Annotated[float, typer.Option(
    "--length-alpha",
    help="Beam search ranks hypotheses by log-probability / length**alpha (0 to 10; 0 = raw log-probability).")]


# ----- the image tasks (caption, ctc) ------------------------------------------------------------------

ValDirOpt = Annotated[Optional[str], typer.Option(
    "--val-dir", help="Validate on this dataset instead of a part of DATA.")]
SkipBadOpt = Annotated[bool, typer.Option(
    "--skip-bad", help="Skip bad rows (missing or unreadable images, empty captions or transcripts, lines too "
                       "narrow for their text), counted, instead of stopping at them.")]
ChannelsOpt = Annotated[str, typer.Option(
    "--channels", help="Channels of the CNN's blocks (each conv+BN+ReLU+pool halves the grid).")]


# ----- the training loop (LoopConfig): every training command --------------------------------------

OutOpt = Annotated[str, typer.Option(
    "--out", "-o", metavar="DIR", show_default=False,
    help="Run directory for checkpoints, metrics and the loss curve. \\[default: checkpoints/<corpus name>]")]
ResumeOpt = Annotated[Optional[Path], typer.Option(
    "--resume", metavar="RUN_DIR",
    help="Continue the run in this directory exactly where it stopped; it remembers its corpus and settings. "
         "--max-steps, --epochs or --time-budget given with it extend the run.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the checkpoints of an earlier run in the run directory.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Parallel contiguous streams per step.")]
OptimizerOpt = Annotated[Optimizer, typer.Option("--optimizer", help="The optimizer.")]
LrOpt = Annotated[float, typer.Option("--lr", "--learning-rate", help="Peak learning rate.")]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", help="Weight decay.")]
MomentumOpt = Annotated[float, typer.Option("--momentum", help="Momentum for sgd and rmsprop.")]
NesterovOpt = Annotated[bool, typer.Option("--nesterov", help="Nesterov momentum for sgd.", show_default=False)]
ScheduleOpt = Annotated[Schedule, typer.Option(
    "--schedule", help="Learning-rate schedule: constant, cosine (with warmup, spread over the steps, epochs or time "
                       "budget) or exponential (per epoch).")]
WarmupStepsOpt = Annotated[int, typer.Option("--warmup-steps", help="Linear warmup steps for cosine.")]
MinLrFracOpt = Annotated[float, typer.Option("--min-lr-frac", help="Cosine ends at lr x this.")]
LrDecayOpt = Annotated[float, typer.Option("--lr-decay", help="Exponential: factor per epoch.")]
LrDecayAfterOpt = Annotated[int, typer.Option(
    "--lr-decay-after", help="Exponential: start decaying after this many epochs.")]
GradClipOpt = Annotated[float, typer.Option(
    "--grad-clip", help="Clip the global gradient L2 norm to this; 0 = off.")]
MaxStepsOpt = Annotated[Optional[int], typer.Option(
    "--max-steps", help="Stop after this many steps (counted from the run's start).")]
EpochsOpt = Annotated[Optional[float], typer.Option(
    "--epochs", help="Stop after this many passes over the training data.")]
TimeBudgetOpt = Annotated[Optional[float], typer.Option(
    "--time-budget", metavar="MINUTES",
    help="Stop after this many minutes (training and periodic evaluation). "
         f"\\[default: {DEFAULT_TIME_BUDGET:g} when no other stop is given]")]
EvalEveryOpt = Annotated[int, typer.Option(
    "--eval-every", help="Evaluate on the whole validation split and checkpoint every N steps.")]
PatienceOpt = Annotated[Optional[int], typer.Option(
    "--patience", help="Stop when the validation loss has not improved for this many evaluations.")]
ExplodeFactorOpt = Annotated[float, typer.Option(
    "--explode-factor", help="Stop when the training loss exceeds this x the loss of guessing (ln of the vocabulary "
                             "size), keeping the last good checkpoint; 0 = only on NaN/inf.")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the model for training.", show_default=False)]


# ----- the language model (TrainConfig's own fields) --------------------------------------------------

CorpusArg = Annotated[str, typer.Argument(metavar="CORPUS", help="Text file to train on.")]
ByteLevelOpt = Annotated[bool, typer.Option(
    "--byte-level", help="Tokens are bytes, not Unicode characters (for binary-ish corpora).", show_default=False)]
DocumentSeparatorOpt = Annotated[Optional[str], typer.Option(
    "--document-separator", parser=unescape,
    help="String that separates documents in the corpus, e.g. '\\n\\n' for a blank line (\\n, \\t, \\\\ escapes "
         "are read); it becomes an end-of-document token that samples stop at.")]
NewlineOpt = Annotated[Newline, typer.Option(
    "--newline", help="Line ends: lf reads CRLF (Windows) and lone CR as \\n, so samples have no \\r; keep leaves "
                      "them as they are. eval, dump and sample read their text the way the model's corpus was read.")]
ValFracOpt = Annotated[float, typer.Option(
    "--val-frac", help="Fraction at the end of the corpus held out for validation.")]
TestFracOpt = Annotated[float, typer.Option(
    "--test-frac", help="Fraction at the very end held out for a test split (never used in training).")]
CellOpt = Annotated[Cell, typer.Option("--cell", help="Recurrent cell: rnn (tanh), lstm or gru.")]
NumLayersOpt = Annotated[int, typer.Option("--num-layers", help="Stacked recurrent layers.")]
HiddenSizeOpt = Annotated[int, typer.Option("--hidden-size", help="Units per recurrent layer.")]
EmbeddingDimOpt = Annotated[int, typer.Option(
    "--embedding-dim", help="Character embedding size; 0 = one-hot input.")]
DropoutOpt = Annotated[float, typer.Option("--dropout", help="Dropout between layers and before the output.")]
SeqLenOpt = Annotated[int, typer.Option(
    "--seq-len", help="Characters per step: gradients are truncated every seq_len steps, the state is carried.")]
UseCachedCorpusOpt = Annotated[bool, typer.Option(
    "--use-cached-corpus", show_default=False,
    help="With --resume: go on training on the text the run started with (its encoded copy in the run directory) "
         "even if the corpus file has changed or is gone.")]
EvalStreamsOpt = Annotated[int, typer.Option(
    "--eval-streams",
    help="Validation text is read as this many parallel contiguous pieces (state carried in each).")]
