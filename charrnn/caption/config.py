"""Captioning's settings: the model (`CaptionerConfig`) and a run (`CaptionTrainConfig`, saved as `run.json`).
Free of torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from charrnn.core.config import (
    MAX_ATTENTION_DIM,
    MAX_CHANNELS,
    MAX_EMBEDDING_DIM,
    Cell,
    LoopConfig,
    ModelConfig,
    check_at_least,
    check_at_most,
    check_choice,
    check_fraction,
    int_tuple,
)
from charrnn.core.errors import CharRNNError

Tokens = Literal["char", "word"]
TOKENS: tuple[str, ...] = get_args(Tokens)
Encoder = Literal["cnn", "resnet18", "resnet34", "resnet50"]
ENCODERS: tuple[str, ...] = get_args(Encoder)
DEFAULT_CAPTION_DATA = "corpora/emoji.zip"
# Upper bounds (see core/config.py for the shared ones).
MAX_IMAGE_SIZE = 4096  # captioners are fed 224 to 1024 pixels; one 4096 image is 48 MB in the cache
# Captions, even paragraph-long ones, are a few hundred tokens; a model that never ends one (an untrained
# one) decodes this many steps for every validation image at each evaluation.
MAX_CAPTION_LEN = 4096


@dataclass(frozen=True)
class CaptionerConfig(ModelConfig):
    """Everything needed to rebuild a Captioner (CNN encoder + recurrent decoder); saved in every checkpoint."""

    vocab_size: int
    image_size: int = 48
    encoder: Encoder = "cnn"  # the project's CNN, or a torchvision ResNet (when torchvision is installed)
    channels: tuple[int, ...] = (32, 64, 128, 256)  # the CNN's blocks, each halving the grid
    cell: Cell = "lstm"
    num_layers: int = 1
    hidden_size: int = 256
    embedding_dim: int = 64
    dropout: float = 0.0
    attention: bool = True  # soft attention over the grid (Show, Attend and Tell); else the image only starts it
    attention_dim: int = 128

    def __post_init__(self):
        object.__setattr__(self, "channels", int_tuple(self.channels, "--channels", MAX_CHANNELS))
        self.check_recurrent()
        check_choice(self.encoder, ENCODERS, "--encoder")
        check_at_most(self, ("image_size",), MAX_IMAGE_SIZE)
        smallest = 2 ** len(self.channels) if self.encoder == "cnn" else 32
        if self.image_size < smallest:
            raise CharRNNError(f"--image-size {self.image_size} is too small for the {self.encoder} encoder, which "
                               f"shrinks it {smallest}-fold; use at least {smallest}"
                               + (" or fewer --channels" if self.encoder == "cnn" else ""))
        check_at_least(self, ("embedding_dim", "attention_dim"))
        check_at_most(self, ("embedding_dim",), MAX_EMBEDDING_DIM)
        check_at_most(self, ("attention_dim",), MAX_ATTENTION_DIM)
        if self.vocab_size < 2:
            raise CharRNNError("the vocabulary needs at least 2 symbols")


@dataclass(frozen=True)
class CaptionTrainConfig(LoopConfig):
    """A captioning run: the data, the model and the loop; saved as `run.json`."""

    data: str = DEFAULT_CAPTION_DATA
    split: str | None = None  # a split named by the dataset (the emoji set has "random" and "grouped")
    val_dir: str | None = None
    val_frac: float = 0.1
    skip_bad: bool = False
    tokens: Tokens = "char"
    image_size: int = CaptionerConfig.image_size
    encoder: Encoder = CaptionerConfig.encoder
    encoder_weights: str | None = None  # a local torchvision state dict for a ResNet encoder
    freeze_encoder: bool = False  # train the decoder only (with --encoder-weights)
    channels: tuple[int, ...] = CaptionerConfig.channels
    cell: Cell = CaptionerConfig.cell
    num_layers: int = CaptionerConfig.num_layers
    hidden_size: int = CaptionerConfig.hidden_size
    embedding_dim: int = CaptionerConfig.embedding_dim
    dropout: float = CaptionerConfig.dropout
    attention: bool = CaptionerConfig.attention
    attention_dim: int = CaptionerConfig.attention_dim
    doubly_stochastic: float = 1.0  # weight of Show-Attend-Tell's penalty for image regions never attended to
    scheduled_sampling: float = 0.0  # probability of feeding the model's own previous token instead of the truth
    max_caption_len: int = 80  # tokens, when decoding
    batch_size: int = 64
    lr: float = 3e-3
    eval_every: int = 200

    MOVABLE = LoopConfig.MOVABLE + ("data",)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "channels", int_tuple(self.channels, "--channels"))
        check_choice(self.tokens, TOKENS, "--tokens")
        check_fraction(self.val_frac, "--val-frac")
        if not 0.0 <= self.scheduled_sampling <= 1.0 or self.doubly_stochastic < 0:
            raise CharRNNError("--scheduled-sampling must be in [0, 1] and --doubly-stochastic at least 0")
        check_at_least(self, ("max_caption_len",))
        check_at_most(self, ("max_caption_len",), MAX_CAPTION_LEN)
        if self.encoder_weights is not None and self.encoder == "cnn":
            raise CharRNNError("--encoder-weights is for a ResNet encoder: add --encoder resnet18 (or 34, 50)")
        self.model_config(2)  # validates the model fields

    def model_config(self, vocab_size: int) -> CaptionerConfig:
        return CaptionerConfig.from_run(self, vocab_size)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("checkpoints") / f"{Path(self.data).stem}-caption"
