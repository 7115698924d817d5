"""The language model's settings: the model (`CharRNNConfig`) and a run (`LMTrainConfig`, saved as `run.json`).
Free of torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charrnn.core.config import (
    MAX_EMBEDDING_DIM,
    NEWLINES,
    Cell,
    LoopConfig,
    ModelConfig,
    Newline,
    check_at_least,
    check_at_most,
    check_choice,
)
from charrnn.core.errors import CharRNNError

DEFAULT_CORPUS = "corpora/tinyshakespeare.txt"
# Upper bounds (see core/config.py for the shared ones): a step's activations grow with both.
MAX_SEQ_LEN = 65536  # 512 times the default; at --batch-size 32 and --hidden-size 512 ~25 GB of activations
MAX_EVAL_STREAMS = 65536  # the validation text is cut into this many pieces, one state each: as --batch-size


@dataclass(frozen=True)
class CharRNNConfig(ModelConfig):
    """Everything needed to rebuild a CharRNN; saved with `to_dict` in every checkpoint."""

    vocab_size: int
    cell: Cell = "gru"
    num_layers: int = 2
    hidden_size: int = 512
    embedding_dim: int = 64  # 0 = one-hot input, as in the original char-rnn
    dropout: float = 0.0  # between recurrent layers and before the head

    def __post_init__(self):
        self.check_recurrent()
        if self.embedding_dim < 0:
            raise CharRNNError(f"--embedding-dim must be 0 (one-hot) or more, got {self.embedding_dim}")
        check_at_most(self, ("embedding_dim",), MAX_EMBEDDING_DIM)
        if self.vocab_size < 2:
            raise CharRNNError("the vocabulary needs at least 2 symbols")


@dataclass(frozen=True)
class LMTrainConfig(LoopConfig):
    """A character language-model run: the corpus, the model and the loop; saved as `run.json`."""

    corpus: str = DEFAULT_CORPUS
    encoding: str = "utf-8"
    byte_level: bool = False
    document_separator: str | None = None
    # "lf" reads CRLF and lone CR line ends as LF; "keep" reads the file as it is. "lf" by default, measured on
    # War and Peace (CRLF; GRU 2x256, 300 steps, two seeds): with "keep" samples held a "\r" every 50-70
    # characters, and the "\n" after each "\r" (1 character in 53) costs 0.003 nats, so the validation loss read
    # 1.9% lower than the same model's loss per character of the text; that loss itself differed between the
    # two settings by less than between the two seeds (README, Training).
    newline: Newline = "lf"
    val_frac: float = 0.1
    test_frac: float = 0.0
    cell: Cell = CharRNNConfig.cell
    num_layers: int = CharRNNConfig.num_layers
    hidden_size: int = CharRNNConfig.hidden_size
    embedding_dim: int = CharRNNConfig.embedding_dim
    dropout: float = CharRNNConfig.dropout
    seq_len: int = 128
    eval_streams: int = 16
    use_cached_corpus: bool = False  # on resume: train on the run's encoded copy even if the file has changed

    RESUMABLE = LoopConfig.RESUMABLE + ("use_cached_corpus",)

    MOVABLE = LoopConfig.MOVABLE + ("corpus",)

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, ("seq_len", "eval_streams"))
        check_at_most(self, ("seq_len",), MAX_SEQ_LEN)
        check_at_most(self, ("eval_streams",), MAX_EVAL_STREAMS)
        if not (0.0 <= self.val_frac < 1.0 and 0.0 <= self.test_frac < 1.0 and self.val_frac + self.test_frac < 1.0):
            raise CharRNNError(f"--val-frac {self.val_frac} and --test-frac {self.test_frac} must each be in [0, 1) "
                               "and leave some text to train on (their sum below 1)")
        if self.patience is not None and self.val_frac == 0:
            raise CharRNNError("--patience needs a validation split to watch; give --val-frac above 0 "
                               "or drop --patience")
        if self.document_separator == "":
            raise CharRNNError("--document-separator cannot be empty; give the string that separates documents, "
                               "e.g. $'\\n\\n'")
        check_choice(self.newline, NEWLINES, "--newline")
        self.model_config(2)  # validates the model fields

    def model_config(self, vocab_size: int) -> CharRNNConfig:
        return CharRNNConfig.from_run(self, vocab_size)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("checkpoints") / Path(self.corpus).stem
