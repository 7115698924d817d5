"""How fast the line reader's decoders read real lines: greedy, prefix beam search, and beam search fused with
the shipped language model, at chosen torch thread counts, on a quiet machine or one kept busy on purpose,
and (where it is installed; it is not a dependency) pyctcdecode's beam search at the same pruning.

The lines are rendered by `make_lines` from the validation part of the bundled corpus with a fixed seed and
read by the shipped reader once; only the decoders are timed (the network's pass is excluded, as in
`ctc eval`). Rounds are interleaved (every decoder at every thread count, then again), and the best round
of each is kept: on a shared machine the best is the least disturbed. Nothing here is a test: no figure is
asserted. `python -m charrnn.ctc.decode_bench --help` runs it and prints JSON.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from charrnn.core.tokenizer import CharTokenizer
from charrnn.ctc.config import DEFAULT_CHAR_BONUS, DEFAULT_LM_WEIGHT
from charrnn.ctc.search import PRUNE

Decoder = Callable[[], list[str]]  # reads every line, returns their texts


def reader_outputs(count: int = 64, seed: int = 0) -> tuple[CharTokenizer, list[torch.Tensor]]:
    """The shipped reader's log-probabilities (T_i, V) of `count` validation lines of the bundled corpus,
    rendered by `make_lines` (training fonts) with `seed`, and the reader's tokenizer."""
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.files import bundled
    from charrnn.core.pretrained import pretrained
    from charrnn.ctc.config import CTCTrainConfig
    from charrnn.ctc.decode import lines_from_files, run_reader
    from charrnn.ctc.linegen import make_lines
    from charrnn.ctc.model import load_reader

    model, tokenizer, ckpt = load_reader(pretrained("ctc"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lines"
        make_lines(bundled("corpora/tinyshakespeare.txt"), out, count=1, val_count=count, val_fonts=[], seed=seed)
        images = lines_from_files(sorted((out / "val").glob("*.png")), model.config.height,
                                  trained_with(ckpt, CTCTrainConfig).max_width)
        return tokenizer, run_reader(model, tokenizer, images).log_probs


def decoders(tokenizer: CharTokenizer, log_probs: list[torch.Tensor], *, beam_size: int = 8,
             lm_weight: float = DEFAULT_LM_WEIGHT, char_bonus: float = DEFAULT_CHAR_BONUS,
             pyctcdecode: bool = True) -> dict[str, Decoder]:
    """The decoders to time: "greedy", "beam", "beam_lm" (the shipped LM) and, when it can be imported,
    "pyctcdecode" (no LM: its token_min_logp is our PRUNE, which it also applies after keeping each frame's
    best character, and its beam-level pruning is switched off, as ours has none)."""
    from charrnn.core.pretrained import pretrained
    from charrnn.ctc.decode import beam_texts, greedy_texts, load_char_lm
    from charrnn.ctc.model import labels

    lm = load_char_lm(pretrained("lm"), labels(tokenizer))
    runs: dict[str, Decoder] = {
        "greedy": lambda: greedy_texts(tokenizer, log_probs),
        "beam": lambda: beam_texts(tokenizer, log_probs, beam_size=beam_size),
        "beam_lm": lambda: beam_texts(tokenizer, log_probs, beam_size=beam_size, lm=lm, lm_weight=lm_weight,
                                      char_bonus=char_bonus),
    }
    if pyctcdecode:
        try:
            from pyctcdecode import build_ctcdecoder
        except ImportError:
            return runs
        decoder = build_ctcdecoder(labels(tokenizer))
        frames = [lp.double().numpy() for lp in log_probs]
        runs["pyctcdecode"] = lambda: [decoder.decode(lp, beam_width=beam_size, beam_prune_logp=-math.inf,
                                                      token_min_logp=PRUNE) for lp in frames]
    return runs


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to n, as a user's process would have it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def busy_cores(n: int) -> Iterator[None]:
    """Keep n other processes spinning (`while True: pass`) for the block: a loaded machine, on purpose."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0.0)  # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def time_decoders(runs: dict[str, Decoder], *, threads: Sequence[int] = (1, 2), rounds: int = 2,
                  lines: int) -> dict[str, dict]:
    """Lines/s of every decoder at every thread count, rounds interleaved: {"beam_lm@2t": {"lines_per_s"
    (the best round), "rounds": [...], "texts": the texts of the last round}}."""
    out: dict[str, dict] = {}
    for _ in range(rounds):
        for n in threads:
            with torch_threads(n):
                for name, run in runs.items():
                    start = time.perf_counter()
                    texts = run()
                    seconds = time.perf_counter() - start
                    row = out.setdefault(f"{name}@{n}t", {"rounds": []})
                    row["rounds"].append(lines / seconds)
                    row["lines_per_s"], row["texts"] = max(row["rounds"]), texts
    return out


def run_decode_bench(*, count: int = 64, seed: int = 0, beam_size: int = 8, threads: Sequence[int] = (1, 2),
                     rounds: int = 2, load: int = 0, pyctcdecode: bool = True) -> dict:
    """Render and read `count` lines, then time every decoder (`decoders`) at each of `threads`, with `load`
    busy processes beside it. Returns {"lines", "chars", "frames", "beam_size", "load", "threads": torch's
    default here, "speeds": {"DECODER@Nt": lines/s}, "same_texts": whether every thread count read the same
    texts, per decoder, "agreement": the share of lines where pyctcdecode's text equals ours (when run)}."""
    tokenizer, log_probs = reader_outputs(count, seed)
    runs = decoders(tokenizer, log_probs, beam_size=beam_size, pyctcdecode=pyctcdecode)
    with busy_cores(load):
        timed = time_decoders(runs, threads=threads, rounds=rounds, lines=len(log_probs))
    texts = {key: row["texts"] for key, row in timed.items()}
    result = {"lines": len(log_probs), "frames": sum(len(lp) for lp in log_probs), "beam_size": beam_size,
              "load": load, "threads": torch.get_num_threads(),
              "speeds": {key: round(row["lines_per_s"], 1) for key, row in timed.items()},
              "same_texts": {name: len({tuple(texts[f"{name}@{n}t"]) for n in threads}) == 1 for name in runs}}
    if "pyctcdecode" in runs:
        theirs, ours = texts[f"pyctcdecode@{threads[0]}t"], texts[f"beam@{threads[0]}t"]
        norm = lambda s: " ".join(s.split())  # noqa: E731 -- pyctcdecode joins words by single spaces
        result["agreement"] = sum(norm(a) == norm(b) for a, b in zip(theirs, ours)) / len(ours)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=64, help="lines to render and decode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beam-size", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time at")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load", type=int, default=0, help="busy processes to run beside it (a loaded machine)")
    parser.add_argument("--no-pyctcdecode", action="store_true", help="skip pyctcdecode even if installed")
    args = parser.parse_args(argv)
    result = run_decode_bench(count=args.count, seed=args.seed, beam_size=args.beam_size, threads=args.threads,
                              rounds=args.rounds, load=args.load, pyctcdecode=not args.no_pyctcdecode)
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
