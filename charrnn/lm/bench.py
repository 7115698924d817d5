"""`charrnn bench`: training and sampling throughput against a plain PyTorch loop, and the hardware floor.

For each grid point (cell, layers, hidden size) it measures:
- charrnn's training throughput, by running the real `train()` on a synthetic corpus (the same loop,
  clipping, logging and checkpointing a user gets) and reading its per-step timings;
- the same for a minimal reference loop (nn.LSTM/GRU/RNN + nn.Linear, Adam, nothing else);
- sampling throughput at batch 1 and batch 64 through `iter_sample`;
- peak memory while training (growth of the peak resident set on the CPU, `max_memory_allocated` on CUDA),
  measured in a fresh process;
- FLOPs per character and the machine's measured matrix-multiply rate (at the run's precision), so each
  training figure can be read as a fraction of what the hardware allows; and for batch-1 sampling, which
  reads every weight once per character, the bytes of weights read per character against the machine's
  measured memory bandwidth (a large copy), the limit of a batch-1 loop once the weights outgrow the caches.
Nothing here is a test: no figure is asserted.
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charrnn.core.config import CELLS
from charrnn.core.device import resolve_device, resolve_precision
from charrnn.core.errors import CharRNNError
from charrnn.core.rundir import read_metrics
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.config import CharRNNConfig, LMTrainConfig
from charrnn.lm.data import encode_corpus
from charrnn.lm.model import CharRNN
from charrnn.lm.sample import SampleSettings, iter_sample, make_generator
from charrnn.lm.task import default_corpus_path, train

try:
    import resource  # POSIX only
except ImportError:  # Windows: no peak-memory figure on the CPU
    resource = None

SMALL_GRID = [("lstm", 1, 128), ("gru", 2, 256), ("lstm", 2, 512), ("gru", 2, 512), ("rnn", 2, 512)]
FULL_GRID = [(cell, layers, hidden) for cell in ("rnn", "lstm", "gru") for layers in (1, 2, 3)
             for hidden in (64, 128, 256, 512)]
VOCAB = 65  # tiny-shakespeare's


@dataclass(kw_only=True)
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
    peak_memory_mb: float | None  # None where the platform gives no reading
    flops_per_char_train: float
    train_fraction_of_peak: float
    sample_bytes_per_char: float = 0.0  # weights read per character at batch 1 (the recurrent layers and the head)
    sample_fraction_of_bandwidth: float = 0.0  # batch-1 chars/s x bytes per char / measured memory bandwidth


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


def memory_bandwidth(device: torch.device, megabytes: int = 256, seconds: float = 0.5) -> float:
    """Measured bytes/s of copying a `megabytes` buffer into another (read + write counted), far larger than
    the caches, on `device`."""
    n = megabytes * 2 ** 20 // 4
    src, dst = torch.ones(n, device=device), torch.empty(n, device=device)
    dst.copy_(src)
    _sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        dst.copy_(src)
        count += 1
    _sync(device)
    return 2 * n * 4 * count / (time.perf_counter() - t0)


def sample_bytes_per_char(cell: str, num_layers: int, hidden: int, vocab: int, bytes_per_weight: int = 4) -> float:
    """Bytes of weights a batch-1 step reads: every recurrent layer's matrices (layer 0's input projection is a
    table row: `Stepper` precomputes it) and the output layer."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    weights = gates * hidden * hidden + (num_layers - 1) * gates * hidden * 2 * hidden + hidden * vocab
    return float(weights * bytes_per_weight)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a block in MB: CUDA's allocator peak, or on the CPU how far the block raised the process's
    peak resident set (`getrusage`, portable across Linux and macOS).

    That peak never comes down, so on the CPU the block must run in a fresh process (`in_fresh_process`),
    where the peak so far is about the size of the interpreter and its imports (the few MB that importing
    took and gave back go uncounted). `peak_mb` is None where the platform has no reading (Windows).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = max_rss_bytes()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2 ** 20
        elif self.base is not None:
            self.peak_mb = (max_rss_bytes() - self.base) / 2 ** 20


def max_rss_bytes() -> int | None:
    """The largest resident set this process has had, in bytes; None without the `resource` module."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB


def in_fresh_process(fn: Callable, *args):
    """`fn(*args)` in a new process, so that memory cached or peaked by earlier work does not hide its own.

    The process is forked from multiprocessing's small fork server, not started from this one: Linux carries
    a process's peak resident set into the children it starts (across fork and exec), which would hide any
    peak smaller than this process's.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(1) as pool:
        return pool.apply(fn, args)


def synthetic_corpus(path: Path, chars: int, seed: int = 0) -> None:
    """A text of `chars` characters drawn from tiny-shakespeare's 65-symbol alphabet (speed does not depend on
    the content)."""
    alphabet = np.array(list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    rng = np.random.default_rng(seed)
    path.write_text("".join(alphabet[rng.integers(0, len(alphabet), chars)]), encoding="utf-8")


def bench_charrnn_train(cell: str, num_layers: int, hidden: int, batch_size: int, seq_len: int, steps: int,
                        device: str, precision: str, workdir: Path) -> tuple[float, float | None]:
    """Characters/s of the real trainer and its peak memory (MB), measured in a fresh process."""
    return in_fresh_process(_charrnn_train_in_process, cell, num_layers, hidden, batch_size, seq_len, steps, device,
                            precision, str(workdir), torch.get_num_threads())


def _charrnn_train_in_process(cell: str, num_layers: int, hidden: int, batch_size: int, seq_len: int, steps: int,
                              device: str, precision: str, workdir: str, threads: int) -> tuple[float, float | None]:
    """Characters/s of the real trainer over its last `steps - warmup` steps, and its peak memory (MB)."""
    torch.set_num_threads(threads)
    workdir = Path(workdir)
    corpus = workdir / "corpus.txt"
    run = workdir / f"run-{cell}-{num_layers}-{hidden}"
    warmup = max(2, steps // 4)
    # The reference loop's optimizer (Adam, lr 2e-3, no weight decay), so the ratio measures the trainer
    # itself: its clipping, schedule, logging and checkpointing stay on.
    config = LMTrainConfig(corpus=str(corpus), out=str(run), cell=cell, num_layers=num_layers, hidden_size=hidden,
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
        rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(embedding, hidden, num_layers, batch_first=True)
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
    for _ in iter_sample(model, tokenizer, length=20, settings=settings, num_samples=batch, stop_at_eod=False,
                         generator=gen):
        pass  # warm-up
    stream = iter_sample(model, tokenizer, length=chars + 1, settings=settings, num_samples=batch, stop_at_eod=False,
                         generator=gen)
    next(stream)
    _sync(dev)
    t0 = time.perf_counter()
    n = 0
    for _ in stream:
        n += 1
    _sync(dev)
    return n * batch / (time.perf_counter() - t0)


def make_grid(*, full: bool = False, cells: Sequence[str] = (), num_layers: Sequence[int] = (),
              hidden_sizes: Sequence[int] = ()) -> list[tuple[str, int, int]]:
    """The (cell, layers, hidden size) points to measure: the small grid, torch-rnn's full one, or the product
    of the given values, where a dimension not given is all cells, 2 layers or 512 units."""
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise CharRNNError(f"unknown --cell {', '.join(unknown)}: choose among {', '.join(CELLS)}")
    if cells or num_layers or hidden_sizes:
        return [(c, n, h) for c in (cells or CELLS) for n in (num_layers or [2]) for h in (hidden_sizes or [512])]
    return FULL_GRID if full else SMALL_GRID


def check_grid_args(*, steps: int, batch_size: int, seq_len: int, repeats: int = 1, sample_chars: int = 1) -> None:
    if steps < 5:
        raise CharRNNError("--steps must be at least 5 (the first quarter, at least 2, are warm-up)")
    if batch_size < 1 or seq_len < 1:
        raise CharRNNError("--batch-size and --seq-len must be at least 1")
    if repeats < 1 or sample_chars < 1:
        raise CharRNNError("--repeats and --sample-chars must be at least 1")


def run_bench(*, grid: list[tuple[str, int, int]], batch_size: int = 64, seq_len: int = 128, steps: int = 8,
              sample_chars: int = 2000, device: str = "auto", precision: str = "fp32", repeats: int = 2,
              on_row: Callable[[BenchRow], None] | None = None) -> dict:
    """Measure every grid point; returns {"device", "matmul_flops", "rows": [...]} (JSON-ready)."""
    check_grid_args(steps=steps, batch_size=batch_size, seq_len=seq_len, repeats=repeats, sample_chars=sample_chars)
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = matmul_rate(dev, dtype)
    bandwidth = memory_bandwidth(dev)
    rows = []
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        work = Path(tmp)
        synthetic_corpus(work / "corpus.txt", max(batch_size * seq_len * (max(steps, 64) + 2) + 1000, 100_000))
        for cell, layers, hidden in grid:
            row = _bench_point(cell, layers, hidden, batch_size=batch_size, seq_len=seq_len, steps=steps,
                               sample_chars=sample_chars, device=device, precision=precision, repeats=repeats,
                               matmul_flops=peak, bandwidth=bandwidth, workdir=work)
            rows.append(row)
            if on_row:
                on_row(row)
    return {"device": str(dev), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "precision": precision, "matmul_flops": peak, "memory_bandwidth": bandwidth,
            "rows": [asdict(r) for r in rows]}


def _bench_point(cell: str, layers: int, hidden: int, *, batch_size: int, seq_len: int, steps: int,
                 sample_chars: int, device: str, precision: str, repeats: int, matmul_flops: float,
                 bandwidth: float, workdir: Path) -> BenchRow:
    # Small models take milliseconds a step: give them more steps so each figure spans seconds.
    n_steps = min(64, max(steps, int(steps * (512 / hidden) ** 2 / layers)))
    # Alternate the two loops and keep each one's best, so a burst of load from elsewhere on a shared
    # machine does not decide the ratio.
    ours, ref, mem = 0.0, 0.0, None
    for _ in range(repeats):
        speed, used = bench_charrnn_train(cell, layers, hidden, batch_size, seq_len, n_steps, device, precision,
                                          workdir)
        ours = max(ours, speed)
        mem = used if mem is None or used is None else max(mem, used)
        ref = max(ref, bench_reference_train(cell, layers, hidden, batch_size, seq_len, n_steps, device, precision))
    fpc = flops_per_char(cell, layers, hidden, CharRNNConfig.embedding_dim, VOCAB + 2)
    sample1 = bench_sampling(cell, layers, hidden, 1, sample_chars, device)
    bpc = sample_bytes_per_char(cell, layers, hidden, VOCAB + 2)
    return BenchRow(
        cell=cell, num_layers=layers, hidden_size=hidden, batch_size=batch_size, seq_len=seq_len, precision=precision,
        train_chars_per_s=round(ours, 1), reference_train_chars_per_s=round(ref, 1), train_ratio=round(ours / ref, 3),
        sample_chars_per_s_batch1=round(sample1, 1),
        sample_chars_per_s_batch64=round(bench_sampling(cell, layers, hidden, 64, max(50, sample_chars // 4),
                                                        device), 1),
        peak_memory_mb=round(mem, 1) if mem is not None else None, flops_per_char_train=fpc,
        train_fraction_of_peak=round(ours * fpc / matmul_flops, 4), sample_bytes_per_char=bpc,
        sample_fraction_of_bandwidth=round(sample1 * bpc / bandwidth, 4))


def bench_encoding(corpus_mb: float, source: Path | None = None) -> dict:
    """Encode a corpus of `corpus_mb` MB (the first MB of `source`, or the bundled tiny-shakespeare repeated)
    and report MB/s, peak memory growth, the encoded array's size, and how fast a second run reopens it."""
    if not corpus_mb > 0:
        raise CharRNNError("--corpus-mb must be positive")
    seed = Path(source) if source else default_corpus_path()
    if not seed.is_file():
        raise CharRNNError(f"no such file: {str(seed)!r}")
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        path, run = Path(tmp) / "corpus.txt", Path(tmp) / "run"
        _repeat_to_size(seed, path, int(corpus_mb * 2 ** 20))
        first = in_fresh_process(_encode_in_process, str(path), str(run))
        t0 = time.perf_counter()
        again = encode_corpus(path, run)
        reopen = time.perf_counter() - t0
    mb, seconds, array_mb, peak_mb = first["file_mb"], first["seconds"], first["array_mb"], first["peak_mb"]
    return {"corpus_mb": round(mb, 1), "encode_s": round(seconds, 2), "encode_mb_per_s": round(mb / seconds, 1),
            "encoded_array_mb": round(array_mb, 1), "dtype": first["dtype"], "vocab_size": first["vocab_size"],
            "peak_memory_growth_mb": round(peak_mb, 1) if peak_mb is not None else None,
            "peak_over_array": round(peak_mb / array_mb, 3) if array_mb and peak_mb is not None else None,
            "reopen_cached_s": round(reopen, 4), "reused": again.reused}


def _repeat_to_size(seed: Path, path: Path, size: int) -> None:
    """Write `size` bytes of `seed` repeated to `path`, ending on a whole UTF-8 character."""
    block = seed.read_bytes()[: 1 << 26]
    with open(path, "wb") as f:
        written = 0
        while written < size:
            piece = block[: size - written]
            if len(piece) < len(block):  # the last, partial copy
                piece = piece.decode("utf-8", "ignore").encode("utf-8")
            f.write(piece)
            written += len(piece) or size


def _encode_in_process(path: str, run: str) -> dict:
    """The first encoding of `path`: its time, peak memory growth and the array it made."""
    with PeakMemory(torch.device("cpu")) as mem:
        t0 = time.perf_counter()
        corpus = encode_corpus(path, run)
        seconds = time.perf_counter() - t0
    return {"file_mb": Path(path).stat().st_size / 2 ** 20, "seconds": seconds, "peak_mb": mem.peak_mb,
            "array_mb": corpus.ids.nbytes / 2 ** 20, "dtype": str(corpus.ids.dtype),
            "vocab_size": corpus.tokenizer.vocab_size}
