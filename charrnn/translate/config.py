"""Translation's settings: the model (`TranslatorConfig`) and a run (`TranslateTrainConfig`, saved as `run.json`).
Free of torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from charrnn.core.config import (
    MAX_ATTENTION_DIM,
    MAX_EMBEDDING_DIM,
    Cell,
    LoopConfig,
    ModelConfig,
    check_at_least,
    check_at_most,
    check_choice,
    check_fraction,
    check_split,
)
from charrnn.core.errors import CharRNNError
from charrnn.core.files import bundled

DEFAULT_DATA = "corpora/cmudict/cmudict.tsv"  # the CMU Pronouncing Dictionary: word<TAB>phones
Attention = Literal["additive", "dot"]
ATTENTIONS: tuple[str, ...] = get_args(Attention)
Tokens = Literal["chars", "words"]
TOKENS: tuple[str, ...] = get_args(Tokens)
TargetTokens = Literal["auto", "chars", "words"]
TARGET_TOKENS: tuple[str, ...] = get_args(TargetTokens)
MAX_TARGET_LEN = 10_000  # tokens: --max-target-len's bound (a decoder step per token, a batch padded to its longest)


@dataclass(frozen=True)
class TranslatorConfig(ModelConfig):
    """Everything needed to rebuild a Translator; saved in every checkpoint. `vocab_size` is the target
    vocabulary's (what the decoder writes), `source_vocab_size` the source's (what the encoder reads)."""

    vocab_size: int
    source_vocab_size: int = 2
    cell: Cell = "lstm"
    num_layers: int = 1  # of the encoder (each direction) and of the decoder
    hidden_size: int = 256  # the decoder's; each direction of the encoder has half, so the memory is this wide
    embedding_dim: int = 64  # of source and target symbols
    dropout: float = 0.0
    attention: Attention = "additive"
    attention_dim: int = 128  # additive attention's size
    input_feeding: bool = False  # the context enters the decoder's first layer (else its output: fused training)

    def __post_init__(self):
        self.check_recurrent()
        check_at_least(self, ("embedding_dim", "attention_dim"))
        check_at_most(self, ("embedding_dim",), MAX_EMBEDDING_DIM)
        check_at_most(self, ("attention_dim",), MAX_ATTENTION_DIM)
        check_choice(self.attention, ATTENTIONS, "--attention")
        if self.hidden_size % 2:
            raise CharRNNError(f"--hidden-size must be even (each direction of the encoder has half), got "
                               f"{self.hidden_size}")
        if self.vocab_size < 3 or self.source_vocab_size < 3:
            raise CharRNNError("the source and target vocabularies need at least one symbol each")


@dataclass(frozen=True)
class TranslateTrainConfig(LoopConfig):
    """A translation run: the data, the model and the loop; saved as `run.json`."""

    data: str | None = None  # a TSV file of pairs; None (and no source/target): the bundled pronouncing dictionary
    source: str | None = None  # two aligned files, one example a line, instead of `data`
    target: str | None = None
    source_column: int = 1  # 1-based TSV columns; the others are ignored
    target_column: int = 2
    source_tokens: Tokens = "chars"
    target_tokens: TargetTokens = "auto"  # auto: words (space-separated symbols) for the bundled dictionary, else chars
    val_dir: str | None = None  # validation pairs of their own: a TSV file, or a directory of aligned files
    val_frac: float = 0.05  # seeded, by source: a source is never on two sides
    test_frac: float = 0.05  # held out from training and choosing best.pt: what `translate eval RUN` scores
    skip_bad: bool = False
    max_target_len: int = 256  # tokens; a longer target is a bad row
    scheduled_sampling: float = 0.0  # probability of feeding the model's own previous token instead of the truth
    cell: Cell = TranslatorConfig.cell
    num_layers: int = TranslatorConfig.num_layers
    hidden_size: int = TranslatorConfig.hidden_size
    embedding_dim: int = TranslatorConfig.embedding_dim
    dropout: float = TranslatorConfig.dropout
    attention: Attention = TranslatorConfig.attention
    attention_dim: int = TranslatorConfig.attention_dim
    input_feeding: bool = TranslatorConfig.input_feeding
    batch_size: int = 64
    lr: float = 3e-3
    eval_every: int = 1000

    MOVABLE = LoopConfig.MOVABLE + ("data", "source", "target", "val_dir")

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.source_tokens, TOKENS, "--source-tokens")
        check_choice(self.target_tokens, TARGET_TOKENS, "--target-tokens")
        check_split(self.val_frac, self.test_frac)
        check_fraction(self.scheduled_sampling, "--scheduled-sampling")
        if (self.source is None) != (self.target is None):
            raise CharRNNError("--source and --target name two aligned files, one example a line: give both")
        if self.source is not None and self.data is not None:
            raise CharRNNError("give DATA (a TSV file of pairs) or --source FILE --target FILE, not both")
        if self.source_column < 1 or self.target_column < 1 or self.source_column == self.target_column:
            raise CharRNNError(f"--source-column {self.source_column} and --target-column {self.target_column} must "
                               "be two different columns, counted from 1")
        if not 1 <= self.max_target_len <= MAX_TARGET_LEN:
            raise CharRNNError(f"--max-target-len must be between 1 and {MAX_TARGET_LEN:,}, got {self.max_target_len}")
        if self.patience is not None and self.val_frac == 0 and self.val_dir is None:
            raise CharRNNError("--patience needs validation pairs to watch; give --val-frac above 0 or --val-dir")
        self.model_config(3, 3)  # validates the model fields

    @property
    def bundled(self) -> bool:
        """The run reads the bundled pronouncing dictionary (no DATA, no --source/--target)."""
        if self.source is not None:
            return False
        return self.data is None or Path(self.data).resolve() == bundled(DEFAULT_DATA).resolve()

    @property
    def target_kind(self) -> str:
        """chars or words: what the target is cut into (`--target-tokens auto` decided)."""
        if self.target_tokens != "auto":
            return self.target_tokens
        return "words" if self.bundled else "chars"

    def model_config(self, vocab_size: int, source_vocab_size: int) -> TranslatorConfig:
        return TranslatorConfig.from_run(self, vocab_size, source_vocab_size=source_vocab_size)

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        named = Path(self.source or self.data or DEFAULT_DATA)
        return Path("checkpoints") / f"{named.stem or named.name}-translate"
