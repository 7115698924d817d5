"""Tagging's settings: the model (`TaggerConfig`) and a run (`TagTrainConfig`, saved as `run.json`). Free of
torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from charrnn.core.config import Cell, LoopConfig, ModelConfig, check_at_least, check_choice, check_split
from charrnn.core.errors import CharRNNError

Derive = Literal["none", "case"]
DERIVES: tuple[str, ...] = get_args(Derive)
DEFAULT_DATA = "corpora/warpeace_input.txt"
MAX_CHARS = 100_000  # the longest text a run may keep (--max-chars): a batch is padded to its longest text


@dataclass(frozen=True)
class TaggerConfig(ModelConfig):
    """Everything needed to rebuild a Tagger; saved in every checkpoint, with the tags (one character each)."""

    vocab_size: int
    tags: tuple[str, ...] = ()
    cell: Cell = "gru"
    num_layers: int = 2
    hidden_size: int = 256
    embedding_dim: int = 64
    dropout: float = 0.0
    bidirectional: bool = True

    def __post_init__(self):
        object.__setattr__(self, "tags", tuple(self.tags))
        self.check_recurrent()
        check_at_least(self, ("embedding_dim",))
        if len(self.tags) < 2 or len(set(self.tags)) != len(self.tags) or any(len(t) != 1 for t in self.tags):
            raise CharRNNError(f"a tagger needs at least 2 distinct one-character tags, got {list(self.tags)[:5]}")
        if self.vocab_size < 2:
            raise CharRNNError("the vocabulary needs at least 2 symbols")


@dataclass(frozen=True)
class TagTrainConfig(LoopConfig):
    """A tagging run: the data, the model and the loop; saved as `run.json`."""

    data: str = DEFAULT_DATA
    # case: any text file; each character is tagged U if the text has it in upper case, and the model reads the
    # text lower-cased (truecasing). none: a TSV file, text<TAB>tags, one tag character per text character.
    derive: Derive = "case"
    encoding: str = "utf-8"  # derive case: the text file's encoding
    val_frac: float = 0.1  # case: the part of the text after training's; tsv: seeded rows
    test_frac: float = 0.1  # case: the text's last part; held out from training and choosing best.pt
    skip_bad: bool = False
    max_chars: int = 256  # case: the text is cut into pieces of about this many characters; tsv: longer rows are cut
    cell: Cell = TaggerConfig.cell
    num_layers: int = TaggerConfig.num_layers
    hidden_size: int = TaggerConfig.hidden_size
    embedding_dim: int = TaggerConfig.embedding_dim
    dropout: float = TaggerConfig.dropout
    bidirectional: bool = TaggerConfig.bidirectional
    batch_size: int = 32
    lr: float = 3e-3
    eval_every: int = 200

    MOVABLE = LoopConfig.MOVABLE + ("data",)

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.derive, DERIVES, "--derive")
        check_split(self.val_frac, self.test_frac)
        if not 8 <= self.max_chars <= MAX_CHARS:
            raise CharRNNError(f"--max-chars must be between 8 and {MAX_CHARS:,}, got {self.max_chars}")
        self.model_config(2, ("-", "U"))  # validates the model fields

    def model_config(self, vocab_size: int, tags: tuple[str, ...]) -> TaggerConfig:
        return TaggerConfig.from_run(self, vocab_size, tags=tags)

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        data = Path(self.data)
        return Path("checkpoints") / f"{data.stem or data.name}-{'truecase' if self.derive == 'case' else 'tag'}"
