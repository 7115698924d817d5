"""Every option that more than one command has, and every option of a training run, declared once.

An alias carries the flags, the type (a `Literal` from `charrnn.core.config` makes Typer check the choices) and
the help; a command gives the default, taken from its config dataclass, so that help, config and checkpoint
agree: `lr: options.LrOpt = LMTrainConfig.lr`. A run's parameters are named like the config fields they fill, so
`config_options(ctx, LMTrainConfig)` collects them without a list written out by hand.

Where a flag means the same in every task but its help does not (`--batch-size` counts streams of text, images
or lines; `--patience` watches the loss, BLEU-4 or CER), a function here declares the flag, its type and bounds
once and takes the task's words, and each task's module names its variant:
`OutOpt = options.out_option("checkpoints/<data name>-ctc")` in `cli/ctc.py`. The language model's variants are
named here, in its section, because `lm`, `inspect` and `tools` all use them. tests/test_cli_help.py fails when
one task's words reach another's help.

Torch-free on purpose: `charrnn --help` loads this module and nothing heavy.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from charrnn.core.config import (
    DEFAULT_TIME_BUDGET,
    MAX_ATTENTION_DIM,
    MAX_BATCH_SIZE,
    MAX_EMBEDDING_DIM,
    MAX_HIDDEN_SIZE,
    MAX_NUM_LAYERS,
    Cell,
    Newline,
    Optimizer,
    Precision,
    Schedule,
)
from charrnn.core.errors import CharRNNError
from charrnn.lm.config import MAX_EVAL_STREAMS, MAX_SEQ_LEN

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


def run_config(ctx: typer.Context, config_class: type, resume: Path | None, overwrite: bool, resume_config):
    """The run config a task's train command was given (a task whose DATA is its `data` field): a new run's
    from its options, or with --resume the run's own, with the options the user gave (`resume_config`, the
    task's, refuses those that cannot change)."""
    values = config_options(ctx, config_class)
    if resume is None:
        return config_class(**values)
    user_given = given(ctx)
    if user_given & {"data", "source", "target", "out"} or overwrite:
        aligned = ", --source, --target" if "source" in values else ""
        raise CharRNNError(f"--resume continues a run in its own directory on its own data: drop DATA{aligned}, "
                           "--out and --overwrite")
    return resume_config(resume, **{k: v for k, v in values.items() if k in user_given})


# ----- shared by several commands -----------------------------------------------------------------

def require_stdout() -> None:
    """Refuse, before any work, a command whose result goes to stdout when stdout is closed (`>&-`)."""
    if sys.stdout is None:
        raise CharRNNError("standard output is closed (>&-), so the result would be lost; send it to a file "
                           "(> out.txt) or to /dev/null")


TextsFileOpt = Annotated[Path | None, typer.Option(
    "--file", help="Read the texts from this UTF-8 file, one a line.", exists=True, dir_okay=False)]


def texts_to_read(texts: list[str] | None, file: Path | None):
    """The texts a command labels: those on its command line, or the lines of `--file` (UTF-8), or else one a
    line from standard input, read as they come (a stream answers line by line); blank lines are skipped."""
    if file is not None and texts:
        raise CharRNNError("give the texts on the command line or with --file, not both")
    if file is not None:
        try:
            return [line.rstrip("\r") for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise CharRNNError(f"--file {str(file)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return texts if texts else (line.rstrip("\r\n") for line in sys.stdin if line.strip())


def model_and_inputs(paths: list[Path], task: str) -> tuple[Path, list[Path]]:
    """The model a command was given and its inputs. The first path is the model when it is a run directory,
    a .pt file or a shipped model's name (`shipped`); otherwise the model shipped for `task` (see
    charrnn.core.pretrained) reads every path."""
    from charrnn.core.pretrained import is_checkpoint, pretrained, resolve_model

    if paths and is_checkpoint(paths[0]):
        return resolve_model(paths[0], task), list(paths[1:])
    return pretrained(task), list(paths)


def model_path(path: str | Path | None, task: str | None) -> Path:
    """A command's model as given: a run directory or checkpoint file, or a shipped model's name (`shipped`: the
    one of `task`, or `shipped:TASK`); None (left out): the model shipped for `task`."""
    from charrnn.core.pretrained import pretrained, resolve_model

    return pretrained(task) if path is None else resolve_model(path, task)


CheckpointArg = Annotated[Path, typer.Argument(
    metavar="CHECKPOINT", show_default=False,
    help="Run directory (uses best.pt), checkpoint file, or shipped (the model that ships with charrnn).")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision",
    help="auto (bf16 autocast where the GPU or CPU computes bfloat16 natively, else fp32), fp32 or bf16.")]
SeedOpt = Annotated[int | None, typer.Option(  # a command with a fixed seed by default: training, datasets
    "--seed", help="Random seed: the same seed gives the same result.")]
SampleSeedOpt = Annotated[int | None, typer.Option(  # a command that draws a fresh seed when none is given
    "--seed", show_default=False,
    help="Random seed: the same seed gives the same result. \\[default: none, so each run differs]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of text and tables.")]
TextOpt = Annotated[str | None, typer.Option(  # dump, gradients: a text typed on the command line
    "--text", parser=unescape, help="Read this text instead of a file (\\n escapes are read).")]
EncodingOpt = Annotated[str, typer.Option(
    "--encoding", help="Text encoding of the text file (any Python codec; byte-level models read bytes).")]
MapUnknownOpt = Annotated[bool, typer.Option(
    "--map-unknown",
    help="Read characters the model never saw as <unk> (eval leaves them unscored) instead of failing.")]
TopOpt = Annotated[int, typer.Option("--top", min=1, help="Top cells listed per probe.")]


def plot_option(text: str):
    """--plot SVG; `text` says what the command plots."""
    return Annotated[Path | None, typer.Option("--plot", metavar="SVG", help=text)]


def max_chars_option(text: str):
    return Annotated[int, typer.Option("--max-chars", min=2, help=text)]


MaxCharsOpt = max_chars_option("Read only the first N characters of the text (or of the activations file).")
SaliencyOpt = Annotated[bool, typer.Option(
    "--saliency", help="Also record which earlier characters each prediction used: gradient x input of the last "
                       "--saliency-window characters, the --saliency-top largest kept per character (float16). "
                       "Slow: a forward and backward pass over the window per character.")]
SaliencyWindowOpt = Annotated[int, typer.Option(
    "--saliency-window", min=1, max=65536, help="Characters back that --saliency looks at.")]
SaliencyTopOpt = Annotated[int, typer.Option(
    "--saliency-top", min=1, help="Largest influences --saliency keeps per character.")]
TemperatureOpt = Annotated[float, typer.Option(
    "--temperature", "-t", min=0.0,
    help="Sampling temperature: below 1 safer, above 1 more varied; 0 = the most likely token each step.")]


def beam_size_option(text: str):
    """--beam-size with the command's help: what 1 means differs between sampling, scoring and reading lines."""
    return Annotated[int, typer.Option("--beam-size", min=1, help=text)]


def num_samples_option(text: str):
    return Annotated[int, typer.Option("--num-samples", min=1, help=text)]


BeamSizeOpt = beam_size_option(  # the commands that can also sample: sample, caption sample
    "Beam search with this many beams (deterministic); 1 = no beam search: the most likely token each step, or "
    "sampling where --temperature is above 0.")
def show_attention_option(text: str):
    """--show-attention PNG: where an attending decoder looked, drawn in the task's own terms."""
    return Annotated[Path | None, typer.Option("--show-attention", metavar="PNG", help=text)]


LengthAlphaOpt = Annotated[float, typer.Option(
    "--length-alpha",
    help="Beam search ranks hypotheses by log-probability / length**alpha (0 to 10; 0 = raw log-probability).")]


# ----- the attending decoder (caption, translate) ------------------------------------------------------

AttentionDimOpt = Annotated[int, typer.Option(
    "--attention-dim", min=1, max=MAX_ATTENTION_DIM, help="Size of additive attention's hidden layer.")]
ScheduledSamplingOpt = Annotated[float, typer.Option(
    "--scheduled-sampling", help="Probability of feeding the decoder its own previous token while training.")]


# ----- the image tasks (caption, ctc) ------------------------------------------------------------------

ValDirOpt = Annotated[str | None, typer.Option(
    "--val-dir", help="Validate on this dataset instead of a part of DATA.")]


def skip_bad_option(bad_rows: str):
    return Annotated[bool, typer.Option(
        "--skip-bad", help=f"Skip bad rows ({bad_rows}), counted, instead of stopping at them.")]


def channels_option(text: str):
    """--channels: "32,64,128" as typed; the config reads it into a tuple of ints."""
    return Annotated[str, typer.Option("--channels", help=text)]


# ----- the training loop (LoopConfig): every training command --------------------------------------

def out_option(default_dir: str):
    """--out; left out, the task's run config names the directory (its `run_dir`), as `default_dir` says."""
    return Annotated[str, typer.Option(
        "--out", "-o", metavar="DIR", show_default=False,
        help=f"Run directory for checkpoints, metrics and the loss curve. \\[default: {default_dir}]")]


def resume_option(inputs: str):
    """--resume; `inputs` names what the run trains on (its corpus, its DATA)."""
    return Annotated[Path | None, typer.Option(
        "--resume", metavar="RUN_DIR",
        help=f"Continue the run in this directory exactly where it stopped; it remembers {inputs} and settings. "
             "--max-steps, --epochs or --time-budget given with it extend the run.")]


def batch_size_option(text: str):
    return Annotated[int, typer.Option("--batch-size", min=1, max=MAX_BATCH_SIZE, help=text)]


def patience_option(metric: str):
    """--patience; `metric` is the task's selection metric, the one that picks best.pt."""
    return Annotated[int | None, typer.Option(
        "--patience", help=f"Stop when {metric}, which picks best.pt, has not improved for this many evaluations.")]


def explode_factor_option(guessing: str):
    """--explode-factor; `guessing` says what the task's loss of guessing is (`Task.loss_at_chance`)."""
    return Annotated[float, typer.Option(
        "--explode-factor", help=f"Stop when the training loss exceeds this x the loss of guessing ({guessing}), "
                                 "keeping the last good checkpoint; 0 = only on NaN/inf.")]


OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the checkpoints of an earlier run in the run directory.")]
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
MaxStepsOpt = Annotated[int | None, typer.Option(
    "--max-steps", help="Stop after this many steps (counted from the run's start).")]
EpochsOpt = Annotated[float | None, typer.Option(
    "--epochs", help="Stop after this many passes over the training data.")]
TimeBudgetOpt = Annotated[float | None, typer.Option(
    "--time-budget", metavar="MINUTES",
    help="Minutes for the whole run: training, its evaluations and the final evaluation (training stops "
         "early enough to leave the final one as long as the last evaluation took). "
         f"\\[default: {DEFAULT_TIME_BUDGET:g} when no other stop is given]")]
EvalEveryOpt = Annotated[int, typer.Option(
    "--eval-every", help="Evaluate on the whole validation split and checkpoint every N steps.")]
ExplodeFactorOpt = explode_factor_option("ln of the vocabulary size")  # a softmax over the vocabulary: lm, caption
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the model for training.", show_default=False)]


# ----- the recurrent model: every training command ------------------------------------------------------

def hidden_size_option(text: str):
    return Annotated[int, typer.Option("--hidden-size", min=1, max=MAX_HIDDEN_SIZE, help=text)]


def embedding_dim_option(text: str):
    """--embedding-dim; no lower bound here: 0 is one-hot input to the language model, too small for a captioner
    (each config says so)."""
    return Annotated[int, typer.Option("--embedding-dim", max=MAX_EMBEDDING_DIM, help=text)]


CellOpt = Annotated[Cell, typer.Option("--cell", help="Recurrent cell: rnn (tanh), lstm or gru.")]
NumLayersOpt = Annotated[int, typer.Option(
    "--num-layers", min=1, max=MAX_NUM_LAYERS, help="Stacked recurrent layers.")]
HiddenSizeOpt = hidden_size_option("Units per recurrent layer.")  # lm, caption (ctc's are per direction)
DropoutOpt = Annotated[float, typer.Option("--dropout", help="Dropout between layers and before the output.")]


# ----- the language model (LMTrainConfig's own fields) --------------------------------------------------

CorpusArg = Annotated[str, typer.Argument(metavar="CORPUS", help="Text file to train on.")]
OutOpt = out_option("checkpoints/<corpus name>")
ResumeOpt = resume_option("its corpus")
BatchSizeOpt = batch_size_option("Parallel contiguous streams per step.")  # also bench's
PatienceOpt = patience_option("the validation loss")
NumSamplesOpt = num_samples_option("Independent samples, generated as one batch.")
ByteLevelOpt = Annotated[bool, typer.Option(
    "--byte-level", help="Tokens are bytes, not Unicode characters (for binary-ish corpora).", show_default=False)]
DocumentSeparatorOpt = Annotated[str | None, typer.Option(
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
EmbeddingDimOpt = embedding_dim_option("Character embedding size; 0 = one-hot input.")
SeqLenOpt = Annotated[int, typer.Option(
    "--seq-len", min=1, max=MAX_SEQ_LEN,
    help="Characters per step: gradients are truncated every seq_len steps, the state is carried.")]
UseCachedCorpusOpt = Annotated[bool, typer.Option(
    "--use-cached-corpus", show_default=False,
    help="With --resume: go on training on the text the run started with (its encoded copy in the run directory) "
         "even if the corpus file has changed or is gone.")]
EvalStreamsOpt = Annotated[int, typer.Option(
    "--eval-streams", min=1, max=MAX_EVAL_STREAMS,
    help="Validation text is read as this many parallel contiguous pieces (state carried in each).")]
