"""The line reader's settings: the model (`LineReaderConfig`) and a run (`CTCTrainConfig`, saved as `run.json`).
Free of torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charrnn.core.config import MAX_CHANNELS, Cell, LoopConfig, ModelConfig, check_at_most, check_fraction, int_tuple
from charrnn.core.errors import CharRNNError

DEFAULT_LINES = "checkpoints/tinyshakespeare-lines"  # where `ctc train` renders lines when given no data
# Shallow fusion's defaults: what `ctc tune-lm` chose for the shipped reader and LM (README, ctc results).
DEFAULT_LM_WEIGHT, DEFAULT_CHAR_BONUS = 0.25, 2.0
WIDTH_POOLS = 2  # the reader's first two blocks halve the width, the rest keep it: a frame per 4 pixel columns
# Upper bounds (see core/config.py for the shared ones).
MAX_HEIGHT = 1024  # lines are read at 32 to 128 pixels high
MAX_WIDTH = 65536  # 40 times the default 1600: a line 64 times as long as high even at --height 1024


@dataclass(frozen=True)
class LineReaderConfig(ModelConfig):
    """Everything needed to rebuild a LineReader (CRNN: CNN + bidirectional RNN + CTC); saved in checkpoints."""

    vocab_size: int  # the characters + the CTC blank (id 0)
    height: int = 32  # every line is resized to this height, keeping its aspect ratio
    channels: tuple[int, ...] = (16, 32, 64, 96)  # the CNN's blocks, each halving the height
    cell: Cell = "lstm"
    num_layers: int = 2
    hidden_size: int = 128  # per direction
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "channels", int_tuple(self.channels, "--channels", MAX_CHANNELS))
        self.check_recurrent()
        check_at_most(self, ("height",), MAX_HEIGHT)
        if len(self.channels) < WIDTH_POOLS:
            raise CharRNNError(f"--channels needs at least {WIDTH_POOLS} blocks, got {len(self.channels)}")
        if self.height < 2 ** len(self.channels):
            raise CharRNNError(f"--height {self.height} is too small for {len(self.channels)} --channels blocks, "
                               f"which halve it each; use at least {2 ** len(self.channels)} or fewer blocks")
        if self.vocab_size < 2:
            raise CharRNNError("the vocabulary needs at least one character besides the blank")


@dataclass(frozen=True)
class CTCTrainConfig(LoopConfig):
    """A line-reader run: the data, the model and the loop; saved as `run.json`."""

    data: str | None = None  # None: lines rendered from the bundled corpus into DEFAULT_LINES
    val_dir: str | None = None
    val_frac: float = 0.1
    skip_bad: bool = False
    iam_ok_only: bool = False  # IAM: drop the lines whose word segmentation IAM marked "err"
    height: int = LineReaderConfig.height
    max_width: int = 1600  # pixels at --height; a wider line is squeezed to this width
    channels: tuple[int, ...] = LineReaderConfig.channels
    cell: Cell = LineReaderConfig.cell
    num_layers: int = LineReaderConfig.num_layers
    hidden_size: int = LineReaderConfig.hidden_size
    dropout: float = LineReaderConfig.dropout
    batch_size: int = 32
    # 6e-3 leaves CTC's all-blank plateau sooner: in 2.5 minutes (with a slower reader then) it reached
    # CER 16.5% where 3e-3 reached 25.5%.
    lr: float = 6e-3
    eval_every: int = 200

    MOVABLE = LoopConfig.MOVABLE + ("data",)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "channels", int_tuple(self.channels, "--channels"))
        check_fraction(self.val_frac, "--val-frac")
        if self.max_width < 2 ** WIDTH_POOLS:
            raise CharRNNError(f"--max-width must be at least {2 ** WIDTH_POOLS} pixels, got {self.max_width}")
        check_at_most(self, ("max_width",), MAX_WIDTH)
        self.model_config(2)  # validates the model fields

    def model_config(self, vocab_size: int) -> LineReaderConfig:
        return LineReaderConfig.from_run(self, vocab_size)

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        data = Path(self.data or DEFAULT_LINES)
        return Path("checkpoints") / f"{data.stem if data.name not in ('', 'train') else data.parent.name}-ctc"
