"""`charrnn bench`: training and sampling throughput against a plain PyTorch loop, and the hardware floor.

For each grid point (cell, layers, hidden size) it measures:
- charrnn's training throughput, by running the real `train()` on a synthetic corpus (the same loop,
  clipping, logging and checkpointing a user gets) and reading its per-step timings;
- the same for a minimal reference loop (nn.LSTM/GRU/RNN + nn.Linear, Adam, nothing else);
- sampling throughput at batch 1 and batch 64 through `iter_sample`;
- peak memory while training (resident set growth on the CPU, `max_memory_allocated` on CUDA);
- FLOPs per character and the machine's measured matrix-multiply rate, so each figure can be read as
  a fraction of what the hardware allows.
Nothing here is a test: no figure is asserted.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charrnn.common import CharRNNError
from charrnn.device import resolve_device
from charrnn.model import CharRNN, CharRNNConfig
from charrnn.plot import read_metrics
from charrnn.sample import SampleSettings, iter_sample, make_generator
from charrnn.tokenizer import CharTokenizer
from charrnn.device import resolve_precision
from charrnn.train import TrainConfig, train

SMALL_GRID = [("lstm", 1, 128), ("gru", 2, 256), ("lstm", 2, 512), ("gru", 2, 512), ("rnn", 2, 512)]
FULL_GRID = [(cell, layers, hidden) for cell in ("rnn", "lstm", "gru") for layers in (1, 2, 3)
             for hidden in (64, 128, 256, 512)]
VOCAB = 65  # tiny-shakespeare's


@dataclass
class BenchRow:
    cell: str
    num_layers: int
    hidden_size: int
    batch_size: int
    seq_len: int
    precision: str
    train_chars_per_s: float
    reference_train_chars_per_s: float
    train_ratio: float
    sample_chars_per_s_batch1: float
    sample_chars_per_s_batch64: float
    peak_memory_mb: float
    flops_per_char_train: float
    train_fraction_of_peak: float


def flops_per_char(cell: str, num_layers: int, hidden: int, input_size: int, vocab: int) -> float:
    """Multiply-adds x 2 per character for forward + backward (backward ~ 2x forward)."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    forward = 0
    for layer in range(num_layers):
        i = input_size if layer == 0 else hidden
        forward += 2 * gates * hidden * (i + hidden)
    forward += 2 * hidden * vocab
    return 3.0 * forward


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 1.0) -> float:
    """Measured FLOP/s of an n x n matrix product on `device`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    _sync(device)
    return 2 * n ** 3 * count / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak, or the growth of the resident set on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = 0.0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = self.top = self._rss()
        self.stop = threading.Event()

        def watch():
            while not self.stop.wait(0.01):
                self.top = max(self.top, self._rss())

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2 ** 20
        else:
            self.stop.set()
            self.thread.join()
            self.top = max(self.top, self._rss())
            self.peak_mb = (self.top - self.base) / 2 ** 20


def synthetic_corpus(path: Path, chars: int, seed: int = 0) -> None:
    """A text of `chars` characters drawn from tiny-shakespeare's 65-symbol alphabet (speed does not depend on content)."""
    alphabet = np.array(list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    rng = np.random.default_rng(seed)
    path.write_text("".join(alphabet[rng.integers(0, len(alphabet), chars)]), encoding="utf-8")


def bench_charrnn_train(cell: str, num_layers: int, hidden: int, batch_size: int, seq_len: int, steps: int,
                        device: str, precision: str, workdir: Path) -> tuple[float, float]:
    """Characters/s of the real trainer and its peak memory (MB), measured in a fresh process so that
    memory cached by earlier measurements does not hide this one's."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_charrnn_train_in_process, (cell, num_layers, hidden, batch_size, seq_len, steps, device,
                                                      precision, str(workdir), torch.get_num_threads()))


def _charrnn_train_in_process(cell: str, num_layers: int, hidden: int, batch_size: int, seq_len: int, steps: int,
                              device: str, precision: str, workdir: str, threads: int) -> tuple[float, float]:
    """Characters/s of the real trainer over its last `steps - warmup` steps, and its peak memory (MB)."""
    torch.set_num_threads(threads)
    workdir = Path(workdir)
    corpus = workdir / "corpus.txt"
    run = workdir / f"run-{cell}-{num_layers}-{hidden}"
    warmup = max(2, steps // 4)
    # The reference loop's optimizer (Adam, lr 2e-3, no weight decay), so the ratio measures the trainer
    # itself: its clipping, schedule, logging and checkpointing stay on.
    config = TrainConfig(corpus=str(corpus), out=str(run), cell=cell, num_layers=num_layers, hidden_size=hidden,
                         batch_size=batch_size, seq_len=seq_len, max_steps=steps, eval_every=10 ** 9, val_frac=0.01,
                         optimizer="adam", lr=2e-3, weight_decay=0.0, device=device, precision=precision, seed=0)
    with PeakMemory(resolve_device(device)) as mem:
        train(config, overwrite=True)
    records = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    span = records[-1]["elapsed_s"] - records[warmup - 1]["elapsed_s"]
    return (len(records) - warmup) * batch_size * seq_len / span, mem.peak_mb


class _Reference(nn.Module):
    def __init__(self, cell: str, num_layers: int, hidden: int, vocab: int, embedding: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](embedding, hidden, num_layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state):
        out, state = self.rnn(self.embedding(x), state)
        return self.head(out), state


def bench_reference_train(cell: str, num_layers: int, hidden: int, batch_size: int, seq_len: int, steps: int,
                          device: str, precision: str) -> float:
    """Characters/s of a minimal plain-PyTorch TBPTT loop at the same configuration."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = _Reference(cell, num_layers, hidden, VOCAB + 2, CharRNNConfig.embedding_dim).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = torch.randint(0, VOCAB, (batch_size, steps * seq_len + 1), device=dev)
    state = None
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    warmup = max(2, steps // 4)
    for i in range(steps):
        if i == warmup:
            _sync(dev)
            t0 = time.perf_counter()
        x, y = data[:, i * seq_len:(i + 1) * seq_len], data[:, i * seq_len + 1:(i + 1) * seq_len + 1]
        with autocast:
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        state = tuple(s.detach().float() for s in state) if isinstance(state, tuple) else state.detach().float()
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss.item()
    _sync(dev)
    return (steps - warmup) * batch_size * seq_len / (time.perf_counter() - t0)


def bench_sampling(cell: str, num_layers: int, hidden: int, batch: int, chars: int, device: str) -> float:
    """Characters/s (summed over the batch) of `iter_sample` from a fresh model of this shape, once the first
    character is out (reading the prime and preparing the stepper are a one-off cost, not a rate)."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    tokenizer = CharTokenizer.from_text("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    model = CharRNN(CharRNNConfig(tokenizer.vocab_size, cell, num_layers, hidden)).to(dev).eval()
    settings = SampleSettings(temperature=1.0)
    gen = make_generator(model, 0)
    for _ in iter_sample(model, tokenizer, "", 20, settings, batch, stop_at_eod=False, generator=gen):
        pass
    stream = iter_sample(model, tokenizer, "", chars + 1, settings, batch, stop_at_eod=False, generator=gen)
    next(stream)
    _sync(dev)
    t0 = time.perf_counter()
    n = 0
    for _ in stream:
        n += 1
    _sync(dev)
    return n * batch / (time.perf_counter() - t0)


def run_bench(grid: list[tuple[str, int, int]], batch_size: int = 64, seq_len: int = 128, steps: int = 8,
              sample_chars: int = 2000, device: str = "auto", precision: str = "fp32", repeats: int = 2,
              on_row: Callable[[BenchRow], None] | None = None) -> dict:
    """Measure every grid point; returns {"device", "matmul_flops", "rows": [...]} (JSON-ready)."""
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = matmul_rate(dev, dtype)
    rows = []
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        work = Path(tmp)
        synthetic_corpus(work / "corpus.txt", max(batch_size * seq_len * (max(steps, 64) + 2) + 1000, 100_000))
        for cell, layers, hidden in grid:
            # Small models take milliseconds a step: give them more steps so each figure spans seconds.
            n_steps = min(64, max(steps, int(steps * (512 / hidden) ** 2 / layers)))
            # Alternate the two loops and keep each one's best, so a burst of load from elsewhere on a
            # shared machine does not decide the ratio.
            ours, ref, mem = 0.0, 0.0, 0.0
            for _ in range(repeats):
                speed, used = bench_charrnn_train(cell, layers, hidden, batch_size, seq_len, n_steps, device,
                                                  precision, work)
                ours, mem = max(ours, speed), max(mem, used)
                ref = max(ref, bench_reference_train(cell, layers, hidden, batch_size, seq_len, n_steps, device,
                                                     precision))
            s1 = bench_sampling(cell, layers, hidden, 1, sample_chars, device)
            s64 = bench_sampling(cell, layers, hidden, 64, max(50, sample_chars // 4), device)
            fpc = flops_per_char(cell, layers, hidden, CharRNNConfig.embedding_dim, VOCAB + 2)
            row = BenchRow(cell, layers, hidden, batch_size, seq_len, precision, round(ours, 1), round(ref, 1),
                           round(ours / ref, 3), round(s1, 1), round(s64, 1), round(mem, 1), fpc,
                           round(ours * fpc / peak, 4))
            rows.append(row)
            if on_row:
                on_row(row)
    return {"device": str(dev), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "precision": precision, "matmul_flops": peak, "rows": [asdict(r) for r in rows]}


def check_grid_args(steps: int, batch_size: int, seq_len: int) -> None:
    if steps < 5:
        raise CharRNNError("--steps must be at least 5 (the first quarter, at least 2, are warm-up)")
    if batch_size < 1 or seq_len < 1:
        raise CharRNNError("--batch-size and --seq-len must be at least 1")


def bench_encoding(corpus_mb: float, source: Path | None = None) -> dict:
    """Encode a corpus of `corpus_mb` MB (the first MB of `source`, or the bundled tiny-shakespeare repeated)
    and report MB/s, peak memory growth, the encoded array's size, and how fast a second run reopens it."""
    from charrnn.data import encode_corpus
    from charrnn.train import default_corpus_path

    if not corpus_mb > 0:
        raise CharRNNError("--corpus-mb must be positive")
    size = int(corpus_mb * 2 ** 20)
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        path = Path(tmp) / "corpus.txt"
        seed = Path(source) if source else default_corpus_path()
        if not seed.is_file():
            raise CharRNNError(f"no such file: {str(seed)!r}")
        block = seed.read_bytes()[: 1 << 26]
        with open(path, "wb") as f:
            written = 0
            while written < size:
                piece = block[: size - written]
                if len(piece) < len(block):  # the last, partial copy: end on a whole UTF-8 character
                    piece = piece.decode("utf-8", "ignore").encode("utf-8")
                f.write(piece)
                written += len(piece) or size
        with PeakMemory(torch.device("cpu")) as mem:
            t0 = time.perf_counter()
            corpus = encode_corpus(path, Path(tmp) / "run")
            seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = encode_corpus(path, Path(tmp) / "run")
        reopen = time.perf_counter() - t0
        array_mb = corpus.ids.nbytes / 2 ** 20
        mb = path.stat().st_size / 2 ** 20
        return {"corpus_mb": round(mb, 1), "encode_s": round(seconds, 2), "encode_mb_per_s": round(mb / seconds, 1),
                "encoded_array_mb": round(array_mb, 1), "dtype": str(corpus.ids.dtype),
                "vocab_size": corpus.tokenizer.vocab_size, "peak_memory_growth_mb": round(mem.peak_mb, 1),
                "peak_over_array": round(mem.peak_mb / array_mb, 3) if array_mb else None,
                "reopen_cached_s": round(reopen, 4), "reused": again.reused}
