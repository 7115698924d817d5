"""The character language model as a task of the shared training loop: truncated back-propagation
through time over contiguous streams.

The training text is cut into B contiguous streams (see `data.StreamBatches`); each step feeds the next
T characters of every stream, carries the hidden state into the next step and detaches it there, so
gradients are cut every T characters while the state itself spans the whole epoch. The state is reset
at each epoch boundary. Under torchrun each process owns B/N of the streams.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from charrnn.core import distributed
from charrnn.core.checkpoint import check_weights
from charrnn.core.config import Newline
from charrnn.core.distributed import World
from charrnn.core.errors import CharRNNError
from charrnn.core.files import bundled
from charrnn.core.rnn import State, detach_state
from charrnn.core.rundir import resume_config as _resume_config
from charrnn.core.tokenizer import CharTokenizer
from charrnn.core.trainer import Event, TrainSummary, run_training
from charrnn.lm.config import DEFAULT_CORPUS, LMTrainConfig
from charrnn.lm.data import (
    CACHE_FILES,
    EncodedCorpus,
    StreamBatches,
    cached_corpus,
    encode_corpus,
    file_signature,
    ids_sha256,
)
from charrnn.lm.evaluate import evaluate
from charrnn.lm.model import CharRNN, check_checkpoint


def default_corpus_path() -> Path:
    """The bundled tiny-shakespeare."""
    return bundled(DEFAULT_CORPUS)


class LanguageModelTask:
    """Next-character prediction with the hidden state carried across truncated-BPTT chunks."""

    name, unit, selection, lower_is_better = "lm", "chars", "val_loss", True

    def __init__(self, config: LMTrainConfig, corpus: EncodedCorpus, world: World, device: torch.device):
        self.config, self.corpus, self.world, self.device = config, corpus, world, device
        self.tokenizer: CharTokenizer = corpus.tokenizer
        train_ids, self.val_ids, _ = corpus.split(config.val_frac, config.test_frac)
        if config.val_frac > 0 and len(self.val_ids) < 2:
            raise CharRNNError(f"the validation split of {corpus.source} is under 2 characters; raise --val-frac "
                               "or use a longer file")
        self.local_batch = config.batch_size // world.size
        self.rows = slice(world.rank * self.local_batch, (world.rank + 1) * self.local_batch)  # this rank's streams
        self.batches = StreamBatches(train_ids, config.batch_size, config.seq_len, self.rows)
        self.train_chars = len(train_ids) - 1
        self.model = CharRNN(config.model_config(self.tokenizer.vocab_size)).to(device)
        self.state: State = self.model.init_state(self.local_batch, device)
        self.steps_per_epoch = len(self.batches)
        self.items_per_step = config.batch_size * config.seq_len  # over all ranks
        self.loss_at_chance = math.log(self.tokenizer.vocab_size)

    @property
    def has_validation(self) -> bool:
        return len(self.val_ids) >= 2

    def describe(self) -> tuple[str, list[str]]:
        c = self.config
        line = (f"{c.cell} {c.num_layers}x{c.hidden_size} | vocab {self.tokenizer.vocab_size} | "
                f"train {self.train_chars:,} chars, val {max(len(self.val_ids) - 1, 0):,}")
        return line, ["reusing the encoded corpus in the run directory"] if self.corpus.reused else []

    def start_epoch(self, epoch: int) -> None:
        self.state = self.model.init_state(self.local_batch, self.device)  # the streams restart, so does the state

    def loss(self, forward: Callable, epoch: int, i: int) -> torch.Tensor:
        x, y = self.batches.batch(i)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        logits, new_state = forward(x, self.state)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        # The next chunk starts from this state, without back-propagating into this one (truncated BPTT);
        # kept in float32 even when the step ran under bf16 autocast.
        self.state = tuple(s.float() for s in detach_state(new_state))
        return loss

    def evaluate(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        result = evaluate(self.model, self.val_ids, self.config.eval_streams, should_stop=should_stop)
        return {"val_loss": result.nats_per_char, "val_bpc": result.bits_per_char, "val_ppl": result.perplexity}

    def train_state(self) -> dict:
        return {"hidden_state": list(distributed.gather_rows(self.world, self.state))}

    def load_train_state(self, state: dict) -> None:
        hidden = state["hidden_state"]
        shape = (self.config.num_layers, self.config.batch_size, self.config.hidden_size)  # (L, B, H), all streams
        if not (isinstance(hidden, list) and len(hidden) == self.model.num_state_tensors
                and all(isinstance(s, torch.Tensor) and tuple(s.shape) == shape for s in hidden)):
            raise ValueError(f"its hidden state is not {self.model.num_state_tensors} tensor(s) of shape {shape}")
        self.state = tuple(s[:, self.rows].to(self.device) for s in hidden)

    def meta(self) -> dict:
        return {"corpus": str(self.corpus.source), "corpus_sha256": self.corpus.sha256}


def build(config: LMTrainConfig, *, checkpoint: dict | None, world: World, device: torch.device) -> LanguageModelTask:
    """The language-model task of a new run, or of a resumed one (`checkpoint` = its last.pt)."""
    corpus_path = Path(config.corpus)
    if checkpoint is None and config.corpus == DEFAULT_CORPUS:
        corpus_path = default_corpus_path()
    if checkpoint is not None:  # a run from before --newline goes on reading its corpus as it did
        config = replace(config, newline=trained_newline(checkpoint))
        # The weights against the model this run's settings build, before the corpus is read.
        vocab_size = check_checkpoint(checkpoint).vocab_size
        check_weights(checkpoint["model_state"], lambda: CharRNN(config.model_config(vocab_size)),
                      checkpoint.get("source", config.run_dir))
    if world.is_main:
        corpus = _corpus(config, corpus_path, checkpoint)
    distributed.barrier(world)  # rank 0 has encoded the corpus: the others find it cached
    if not world.is_main:
        corpus = _corpus(config, corpus_path, checkpoint)
    if checkpoint is None:
        config = replace(config, corpus=str(corpus_path.resolve()), out=str(config.run_dir))
    task = LanguageModelTask(config, corpus, world, device)
    if checkpoint is not None:
        task.model.load_state_dict(checkpoint["model_state"])
    return task


def _corpus(config: LMTrainConfig, path: Path, checkpoint: dict | None) -> EncodedCorpus:
    """The encoded corpus of a new run; for a resumed run, the same text it started on, or an error."""
    settings = dict(encoding=config.encoding, byte_level=config.byte_level,
                    document_separator=config.document_separator, newline=config.newline)
    if checkpoint is None:
        return encode_corpus(path, config.run_dir, **settings)
    tokenizer = CharTokenizer.from_dict(checkpoint["tokenizer"])
    cached = cached_corpus(config.run_dir, **settings, tokenizer=tokenizer)
    if config.use_cached_corpus or not path.exists():
        if cached is None:
            raise CharRNNError(f"the corpus {str(path)!r} is gone and the run's encoded copy (corpus.bin) is missing "
                               "or damaged; put the corpus back to resume")
        return cached
    if cached is not None and cached.signature == file_signature(path):
        return cached
    # The file was touched, copied or edited since it was encoded: resume only if its text is the same.
    started_on = (checkpoint.get("meta") or {}).get("corpus_sha256") or (cached.sha256 if cached else None)
    if started_on is not None and ids_sha256(path, tokenizer, config.encoding, config.newline) != started_on:
        raise CharRNNError(f"the corpus {str(path)!r} has changed since this run started, so resuming would train and "
                           "validate on another text; put the original back, or continue on the text the run "
                           "started with (its encoded copy in the run directory) with --use-cached-corpus")
    return encode_corpus(path, config.run_dir, **settings, tokenizer=tokenizer)


def trained_newline(checkpoint: dict) -> Newline:
    """How a language model's line ends were read (`--newline`), so that text it scores, traces or continues is
    read the same way. Runs from before the option kept every line end as it was."""
    return ((checkpoint.get("meta") or {}).get("train_config") or {}).get("newline", "keep")


def train(config: LMTrainConfig, on_event: Event | None = None, *, resume: bool = False, overwrite: bool = False,
          stop: threading.Event | None = None) -> TrainSummary:
    """Train a character language model as `config` says, writing checkpoints, `metrics.jsonl` and `loss.svg`
    to its run directory; with `resume`, continue the run there exactly where it stopped."""
    return run_training(config, build, task_files=CACHE_FILES, inputs=(config.corpus,), on_event=on_event,
                        resume=resume, overwrite=overwrite, stop=stop)


def resume_config(run_dir: str | os.PathLike, **overrides) -> LMTrainConfig:
    """The saved config of a language-model run, with the options the user gave on resume replaced."""
    return _resume_config(run_dir, LMTrainConfig, overrides)
