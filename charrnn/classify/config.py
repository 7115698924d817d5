"""Classification's settings: the model (`ClassifierConfig`) and a run (`ClassifyTrainConfig`, saved as
`run.json`). Free of torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from charrnn.core.config import Cell, LoopConfig, ModelConfig, check_at_least, check_choice, check_split
from charrnn.core.errors import CharRNNError

Pool = Literal["last", "mean", "max", "attention"]
POOLS: tuple[str, ...] = get_args(Pool)
Format = Literal["auto", "tsv", "csv", "fasttext", "dir"]
FORMATS: tuple[str, ...] = get_args(Format)
DEFAULT_DATA = "corpora/surnames"
MAX_CHARS = 100_000  # the longest text a run may keep (--max-chars): a batch is padded to its longest text


@dataclass(frozen=True)
class ClassifierConfig(ModelConfig):
    """Everything needed to rebuild a Classifier; saved in every checkpoint, with the label names."""

    vocab_size: int
    labels: tuple[str, ...] = ()
    cell: Cell = "gru"
    num_layers: int = 1
    hidden_size: int = 256
    embedding_dim: int = 64
    dropout: float = 0.0
    bidirectional: bool = True
    pool: Pool = "max"

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(self.labels))
        self.check_recurrent()
        check_at_least(self, ("embedding_dim",))
        check_choice(self.pool, POOLS, "--pool")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise CharRNNError(f"a classifier needs at least 2 distinct labels, got {list(self.labels)[:5]}")
        if self.vocab_size < 2:
            raise CharRNNError("the vocabulary needs at least 2 symbols")


@dataclass(frozen=True)
class ClassifyTrainConfig(LoopConfig):
    """A classification run: the data, the model and the loop; saved as `run.json`."""

    data: str = DEFAULT_DATA
    format: Format = "auto"  # tsv: label<TAB>text; csv: with a header; fasttext: __label__X text; dir: a file per label
    text_column: str = "text"  # csv
    label_column: str = "label"  # csv
    val_dir: str | None = None  # validation examples in a file or directory of their own
    val_frac: float = 0.1  # seeded, stratified by label
    test_frac: float = 0.1  # held out from training and from choosing best.pt: what `classify eval RUN` scores
    skip_bad: bool = False
    max_chars: int = 1000  # a longer text is cut to its first max_chars characters
    init_from: str | None = None  # a language-model run or checkpoint whose embedding and recurrent layers start this
    freeze: bool = False  # with init_from: train the pooling and the head only
    cell: Cell = ClassifierConfig.cell
    num_layers: int = ClassifierConfig.num_layers
    hidden_size: int = ClassifierConfig.hidden_size
    embedding_dim: int = ClassifierConfig.embedding_dim
    dropout: float = ClassifierConfig.dropout
    bidirectional: bool = ClassifierConfig.bidirectional
    pool: Pool = ClassifierConfig.pool
    batch_size: int = 64
    lr: float = 3e-3
    eval_every: int = 200

    MOVABLE = LoopConfig.MOVABLE + ("data", "val_dir", "init_from")

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.format, FORMATS, "--format")
        check_split(self.val_frac, self.test_frac)
        if not 1 <= self.max_chars <= MAX_CHARS:
            raise CharRNNError(f"--max-chars must be between 1 and {MAX_CHARS:,}, got {self.max_chars}")
        if self.freeze and self.init_from is None:
            raise CharRNNError("--freeze keeps the layers --init-from loaded; add --init-from LM_RUN or drop --freeze")
        if self.patience is not None and self.val_frac == 0 and self.val_dir is None:
            raise CharRNNError("--patience needs validation examples to watch; give --val-frac above 0 or --val-dir")
        self.model_config(2, ("a", "b"))  # validates the model fields

    def model_config(self, vocab_size: int, labels: tuple[str, ...]) -> ClassifierConfig:
        return ClassifierConfig.from_run(self, vocab_size, labels=labels)

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        data = Path(self.data)
        return Path("checkpoints") / f"{data.stem or data.name}-classify"
