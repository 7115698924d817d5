"""Reading line images: the reader run over many lines, greedy and beam-search readings, shallow fusion of a
charrnn language model (the one place ctc uses the LM), and `charrnn ctc decode`.

Shapes: T frames, B lines, V reader labels (blank included).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charrnn.core.checkpoint import load_checkpoint, trained_with
from charrnn.core.errors import CharRNNError, check_stop
from charrnn.core.tokenizer import CharTokenizer
from charrnn.ctc.config import DEFAULT_CHAR_BONUS, DEFAULT_LM_WEIGHT, WIDTH_POOLS, CTCTrainConfig
from charrnn.ctc.data import LineImages
from charrnn.ctc.model import LineReader, ctc_loss, labels, load_reader, targets, text_of
from charrnn.ctc.search import BLANK, Prefix, greedy_decode
from charrnn.lm.model import CharRNN, check_checkpoint, model_from_checkpoint
from charrnn.lm.sample import primed

EVAL_BATCH = 64


UNKNOWN_POLICIES = ("error", "floor")


class CharLM:
    """A charrnn language model as a shallow-fusion scorer for the reader's labels.

    `log_probs(prefixes)` gives, for each prefix (a tuple of reader label ids), log p_lm(label | prefix) for
    every reader label. The model reads a prefix from the `<eod>` state, the state it learned for the start
    of a document (as every sample starts, see `charrnn.lm.sample.primed`), so a line is scored as if it began
    a text. Each prefix's state and next-label log-probabilities are cached: the beam extends a prefix by
    one character per frame at most, so scoring it costs one step from its parent's cached state, and the
    prefixes new in a frame are stepped together, in one batched `Stepper.step_rows`.

    A reader label the LM's vocabulary lacks is refused (`unknown="error"`) or gets the log-probability
    `floor` whatever the context (`unknown="floor"`); the model does not read it, so the state after it is
    the state before it.

    States live in one (N, S) table, a row per cached prefix laid out as [h_0 .. h_{L-1} | c_0 .. c_{L-1}]
    (S = L*H, or 2*L*H for an LSTM), beside an (N, V) table of its next-label log-probabilities, so gathering
    the parents of a frame's prefixes and storing their children are one indexing operation each. The beam
    search keeps its prefixes' rows itself (`extend`, `label_log_probs`); `log_probs` looks tuples up in a
    dict. `steps` counts the batched step calls and `rows` the prefixes stepped, so tests and benchmarks can
    see the cache at work.
    """

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, labels: Sequence[str], *,
                 unknown: str = "error", floor: float = -10.0):
        if not isinstance(tokenizer, CharTokenizer):
            raise CharRNNError("the language model for fusion must be a character model (charrnn train)")
        if unknown not in UNKNOWN_POLICIES:
            raise CharRNNError(f"unknown --lm-unknown {unknown!r}: choose one of {', '.join(UNKNOWN_POLICIES)}")
        if not (math.isfinite(floor) and floor <= 0):
            raise CharRNNError(f"--lm-floor must be a finite log-probability (0 or below), got {floor}")
        labels = list(labels)
        if not labels or labels[0] != "":
            raise ValueError("labels[0] must be the CTC blank, \"\"")
        self.model, self.tokenizer, self.labels = model, tokenizer, labels
        self.unknown, self.floor = unknown, floor
        # Reader label -> LM id; None for the blank and for characters the LM cannot read as one symbol.
        self.lm_ids: list[int | None] = [None] + [_lm_id(tokenizer, s) for s in labels[1:]]
        missing = [s for i, s in enumerate(labels) if i and self.lm_ids[i] is None]
        if missing and unknown == "error":
            more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
            shown = ", ".join(repr(s) for s in missing[:12]) + more
            raise CharRNNError(f"the language model's vocabulary lacks {len(missing)} of the reader's characters: "
                               f"{shown}; use --lm-unknown floor to give them a fixed log-probability, or an LM "
                               "trained on text containing them")
        self._gather = np.array([i if i is not None else 0 for i in self.lm_ids])  # (V,) LM id per label
        self._unknown = np.array([i is None for i in self.lm_ids])  # (V,)
        self._unknown[BLANK] = False  # the blank is never scored: 0 there keeps the row finite
        self._floored = bool(self._unknown.any())
        self.readable = np.array([i is not None for i in self.lm_ids])  # (V,) labels the LM reads (not the blank)
        with torch.inference_mode():
            logits, self._stepper = primed(model, tokenizer, "", 1)  # (1, V_lm); `<unk>` banned (-inf)
            root = torch.cat([t.reshape(1, -1) for t in self._stepper.state()], 1)  # (1, S)
        self._states = root.repeat(64, 1)  # (capacity, S); row 0 is the `<eod>` state
        self._log_probs = np.zeros((64, len(labels)))  # (capacity, V) log p_lm(label | the row's prefix)
        self._log_probs[0] = self._label_log_probs(logits)[0]
        self.cache: dict[Prefix, int] = {}  # prefix -> its row of the tables
        self.clear()

    def clear(self) -> None:
        """Forget every prefix but the empty one (the `<eod>` state, row 0), to bound memory between lines, and
        zero the counters."""
        self.cache = {(): 0}
        self._used = 1
        self.steps = 0
        self.rows = 0

    def log_probs(self, prefixes: Sequence[Prefix]) -> np.ndarray:
        """log p_lm(label | prefix) for every prefix and reader label: (N, V) float64, 0 at the blank."""
        missing: dict[Prefix, None] = {}  # insertion-ordered set, ancestors included
        for p in prefixes:
            while p not in self.cache and p not in missing:
                missing[p] = None
                p = p[:-1]
        while missing:  # every prefix whose parent is ready, whatever its length, in one batched step
            ready = [p for p in missing if p[:-1] in self.cache]
            rows = self.extend(np.array([self.cache[p[:-1]] for p in ready]), np.array([p[-1] for p in ready]))
            for p, row in zip(ready, rows.tolist()):
                self.cache[p] = row
                del missing[p]
        return self._log_probs[[self.cache[p] for p in prefixes]]

    def label_log_probs(self, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """log p_lm(labels | the prefix of `rows`) (rows of `extend`; broadcast together), float64."""
        return self._log_probs[rows, labels]

    def extend(self, parents: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The rows of the prefixes made by appending labels[i] (reader ids, not the blank) to the prefix of
        row parents[i] (0: the empty prefix): one batched step for those the LM reads, each a new row; a label
        it does not read (floored) keeps its parent's row, as the state stays. (n,) int64."""
        rows = np.array(parents, dtype=np.int64)
        read = np.flatnonzero(self.readable[labels])
        if read.size:
            rows[read] = self._step(rows[read], labels[read])
        return rows

    @torch.inference_mode()
    def _step(self, parents: np.ndarray, labels: np.ndarray) -> np.ndarray:
        n, first = len(parents), self._used
        self._grow(first + n)
        device = self._states.device
        rows = self._states[first:first + n]  # (n, S): the parents' states, then the children's
        torch.index_select(self._states[:first], 0, torch.from_numpy(parents).to(device), out=rows)
        logits = self._stepper.step_rows(rows, torch.from_numpy(self._gather[labels]).to(device))  # (n, V_lm)
        self._label_log_probs(logits, out=self._log_probs[first:first + n])
        self._used += n
        self.steps += 1
        self.rows += n
        return np.arange(first, first + n)

    def _grow(self, size: int) -> None:
        """Room for `size` rows: doubling, so a group of lines grows the tables a few times, then reuses them."""
        if size <= len(self._log_probs):
            return
        capacity, used = max(size, 2 * len(self._log_probs)), self._used
        states = self._states.new_empty(capacity, self._states.size(1))
        states[:used] = self._states[:used]
        log_probs = np.empty((capacity, self._log_probs.shape[1]))
        log_probs[:used] = self._log_probs[:used]
        self._states, self._log_probs = states, log_probs

    def _label_log_probs(self, logits: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
        """LM logits (n, V_lm) -> log-probabilities (n, V) float64 over the reader's labels (into `out`)."""
        lp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()[:, self._gather]  # float32
        out = np.empty(lp.shape) if out is None else out
        out[...] = lp  # float64, exactly
        if self._floored:
            out[:, self._unknown] = self.floor
        out[:, BLANK] = 0.0
        return np.minimum(out, 0.0, out=out)  # it is: the search's bound (`search._Lockstep`) relies on it


def _lm_id(tokenizer: CharTokenizer, label: str) -> int | None:
    """The LM id of one reader label, or None when the LM reads it as anything but one known symbol
    (not in its vocabulary, or several bytes in a byte-level model)."""
    if len(label) != 1:
        raise ValueError(f"every label but the blank must be one character, got {label!r}")
    if tokenizer.unknown_symbols(label):
        return None
    ids = tokenizer.encode_compact(label)
    return int(ids[0]) if len(ids) == 1 else None


def load_char_lm(path: str | os.PathLike, labels: Sequence[str], *, unknown: str = "error", floor: float = -10.0,
                 device: torch.device | str = "cpu") -> CharLM:
    """A `CharLM` from a language-model checkpoint file or run directory (`charrnn train`).

    What `checkpoint.load_model` does, with a refusal of other tasks' checkpoints (a reader, a captioner)
    that says what --lm wants: its own message would point at the command that reads them.
    """

    def check(ckpt: dict) -> None:
        if ckpt.get("task") != "lm":
            raise CharRNNError(f"--lm {str(path)!r} holds a {ckpt.get('task')!r} model, not a language model; "
                               "give --lm a checkpoint or run directory of `charrnn train`")
        check_checkpoint(ckpt)

    ckpt = load_checkpoint(path, check=check)
    model, tokenizer = model_from_checkpoint(ckpt, device)
    return CharLM(model, tokenizer, labels, unknown=unknown, floor=floor)


@dataclass
class Outputs:
    """The reader's output on a set of lines: per line (original order) the log-probabilities of its valid
    frames (T_i, V), and the mean CTC loss per transcript character."""

    log_probs: list[torch.Tensor]
    loss: float


@torch.no_grad()
def run_reader(model: LineReader, tokenizer: CharTokenizer, images: LineImages, *,
               should_stop: Callable[[], bool] | None = None) -> Outputs:
    """Run the reader over every line of `images`, in batches of similar widths; `should_stop()` is asked
    before each batch (`StopRequested` when it says so)."""
    device = model.head.weight.device
    order = np.argsort(images.widths(), kind="stable")
    per_line: list[torch.Tensor | None] = [None] * len(images)
    total, chars = 0.0, 0
    for start in range(0, len(order), EVAL_BATCH):
        check_stop(should_stop)
        rows = order[start:start + EVAL_BATCH]
        pixels, widths = images.batch(rows)
        log_probs, lengths = model(torch.from_numpy(pixels).to(device), torch.from_numpy(widths).to(device))
        log_probs, lengths = log_probs.cpu(), lengths.cpu()
        want = [targets(tokenizer, images.split.texts[r]) for r in rows]
        total += float(ctc_loss(log_probs, lengths, want, reduction="sum"))
        chars += sum(map(len, want))
        for k, r in enumerate(rows):
            per_line[r] = log_probs[: lengths[k], k].clone()  # (T_i, V)
    return Outputs(per_line, total / max(chars, 1))  # type: ignore[arg-type]


def greedy_texts(tokenizer: CharTokenizer, log_probs: list[torch.Tensor]) -> list[str]:
    """Best-path reading of each line's valid frames."""
    return [text_of(tokenizer, greedy_decode(lp[:, None], torch.tensor([len(lp)]))[0]) for lp in log_probs]


def read_images(model: LineReader, tokenizer: CharTokenizer, images: LineImages, *,
                should_stop: Callable[[], bool] | None = None) -> tuple[list[str], float]:
    """The greedy reading of every line of `images` and the mean CTC loss per character (`should_stop` as in
    `run_reader`)."""
    out = run_reader(model, tokenizer, images, should_stop=should_stop)
    return greedy_texts(tokenizer, out.log_probs), out.loss


@dataclass(frozen=True)
class Fusion:
    """Shallow fusion of a charrnn language model into prefix beam search: each extension by character c
    adds lm_weight * log p_LM(c | prefix) + char_bonus (the bonus offsets the LM's pull toward short texts)."""

    lm: str  # a charrnn run directory or checkpoint (task lm)
    lm_weight: float = DEFAULT_LM_WEIGHT
    char_bonus: float = DEFAULT_CHAR_BONUS
    lm_unknown: str = "error"  # reader characters the LM lacks: "error", or "floor" (a fixed low log-prob)

    def __post_init__(self):
        if self.lm_unknown not in ("error", "floor"):
            raise CharRNNError(f"--lm-unknown must be error or floor, got {self.lm_unknown!r}")
        if not (math.isfinite(self.lm_weight) and math.isfinite(self.char_bonus)) or self.lm_weight < 0:
            raise CharRNNError("--lm-weight must be a number at least 0 and --char-bonus a finite number")


def beam_texts(tokenizer: CharTokenizer, log_probs: list[torch.Tensor], *, beam_size: int, lm=None,
               lm_weight: float = 0.0, char_bonus: float = 0.0) -> list[str]:
    """Prefix beam search over each line's valid frames, fused with `lm` (a CharLM) when given."""
    from charrnn.ctc.search import best_labellings

    found = best_labellings(log_probs, beam_size=beam_size, lm=lm, lm_weight=lm_weight, char_bonus=char_bonus)
    return [text_of(tokenizer, list(labels)) for labels in found]


def char_lm(fusion: Fusion | None, tokenizer: CharTokenizer, device):
    if fusion is None:
        return None
    from charrnn.ctc.decode import load_char_lm

    return load_char_lm(fusion.lm, labels(tokenizer), unknown=fusion.lm_unknown, device=device)


def lines_from_files(paths: list[Path], height: int, max_width: int) -> LineImages:
    """Image files as a LineImages, each decoded exactly as the training cache decodes it. A line narrower
    than the reader's narrowest (4 pixels at `height`: 1 to 3 from a tiny or a very tall image) is padded on
    the right with blank paper, which reads as nothing, rather than refused."""
    from charrnn.ctc.data import LineSplit, load_line_image
    from charrnn.vision.image import read_image_file

    narrowest = 2 ** WIDTH_POOLS  # the first blocks' pooling leaves no frame of anything narrower
    lines = []
    for path in paths:  # missing, not an image, truncated, too many pixels: one line naming it
        line = read_image_file(path, lambda f: load_line_image(f, height, max_width))
        lines.append(np.pad(line, ((0, 0), (0, max(narrowest - line.shape[1], 0)))))  # ink high: 0 is paper
    offsets = np.cumsum([0] + [line.shape[1] for line in lines]).astype(np.int64)
    split = LineSplit(Path("."), [str(p) for p in paths], [""] * len(paths), [(str(p), None) for p in paths])
    return LineImages(np.concatenate(lines, axis=1), offsets, split, list(range(len(paths))), [], False)


def decode_files(checkpoint: str | os.PathLike, paths: list[Path], *, beam_size: int = 1,
                 fusion: Fusion | None = None, device: str = "auto", alignment_png: Path | None = None) -> dict:
    """The text of each line image: {"lines": [{"image", "text"}]}; greedy with beam_size 1 and no LM,
    else prefix beam search (fused with `fusion`'s LM). Optionally a picture of each line's best path."""
    from charrnn.core.device import resolve_device

    model_device = resolve_device(device)
    model, tokenizer, ckpt = load_reader(checkpoint, model_device)
    images = lines_from_files(paths, model.config.height, trained_with(ckpt, CTCTrainConfig).max_width)
    out = run_reader(model, tokenizer, images)
    if beam_size == 1 and fusion is None:
        texts = greedy_texts(tokenizer, out.log_probs)
    elif fusion is None:
        texts = beam_texts(tokenizer, out.log_probs, beam_size=beam_size)
    else:
        texts = beam_texts(tokenizer, out.log_probs, beam_size=beam_size, lm=char_lm(fusion, tokenizer, model_device),
                           lm_weight=fusion.lm_weight, char_bonus=fusion.char_bonus)
    if alignment_png is not None:
        from charrnn.ctc.alignment_png import alignment_picture

        pixels = [np.asarray(images.pixels[:, images.offsets[k]:images.offsets[k + 1]]) for k in range(len(images))]
        best = [lp.argmax(-1).tolist() for lp in out.log_probs]  # the best class of every frame
        alignment_picture(list(zip(pixels, best)), labels(tokenizer), alignment_png)
    return {"lines": [{"image": str(p), "text": t} for p, t in zip(paths, texts)]}
