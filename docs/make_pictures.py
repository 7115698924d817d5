"""Regenerate every picture under docs/ that the README shows, from runs and the shipped models.

    python docs/make_pictures.py [--run DIR] [--cells-run DIR] [--cells-text FILE] [--caption-run DIR]
                                 [--memory-runs DIR ...] [--saliency-run DIR] [--out DIR] [--only NAME ...]

Pictures (written to --out, default docs/):

- `loss.svg`: the loss curve of a language-model run, drawn by `charrnn.core.svg.loss_curve_svg` from the run's
  `metrics.jsonl`. `--run` defaults to `checkpoints/tinyshakespeare` (what `charrnn train` writes) if it
  exists, else /tmp/lm-ts. The committed picture comes from `charrnn train --hidden-size 256 --out
  /tmp/lm-ts`: a GRU 2x256 trained 5 minutes on tinyshakespeare (the run the shipped language model was
  exported from).
- `cells.png`: the cell viewer (`charrnn cells RUN TEXT --html`) in headless Chromium at 1200x800, opened
  where the viewer opens: on the cell that beats its probe's base rate by the most, for this dialogue the top
  inside-quotes cell. It needs a model of text with double quotes, `--cells-run`: default checkpoints/wp if
  it exists, else /tmp/wp, which drew the committed picture (`charrnn train corpora/warpeace_input.txt
  --cell lstm --num-layers 1 --hidden-size 128 --time-budget 3 --out /tmp/wp`: 340 steps on a busy 2-core
  CPU, val loss 1.92; its quote cell layer0/c/38 has threshold accuracy 0.730 against a base rate of 0.552);
  and `--cells-text`, text it never trained on: default the 10,000 bytes of dialogue at byte 2,993,460 of
  corpora/warpeace_input.txt, inside its validation part (the README's `tail -c +2993460 ... | head -c
  10000`). Chromium is the system one (`chromium` on the PATH or $CHARRNN_CHROMIUM), driven by
  Playwright's Python package (`pip install playwright`, never `playwright install`); nothing is
  downloaded. Without either, only saturation.svg is made, with a message saying what is missing.
- `saturation.svg`: the gate-saturation scatter of the same trace (`charrnn cells ... --plot`).
- `attention.png`: `charrnn caption sample MODEL IMAGE... --show-attention` (greedy) on two images of
  corpora/emoji.zip; MODEL is `--caption-run`, else the shipped captioner, else
  `checkpoints/emoji-caption` (what `charrnn caption train` writes), else it is skipped with a message.
  The committed picture comes from checkpoints/emoji-caption, the README's 5-minute `charrnn caption
  train` with the defaults (attention, LSTM 1x256; BLEU-4 57.9 greedy on the random validation split).
- `alignment.png`: `charrnn ctc decode IMAGE... --show-alignment` with the shipped line reader on three lines
  rendered by `charrnn.ctc.linegen.make_lines` from tinyshakespeare's validation part: two in the training
  fonts, one in the held-out font (Comic Neue).
- `translation.png`: `charrnn translate run WORD... --show-attention` with the shipped spelling-to-phones model
  on three words of its held-out test part (x turns into two phones, ng and ph into one, gh into none).
- `memory.svg`: `charrnn gradients RUN... DIALOGUE --untrained --plot` on the dialogue above; the runs are
  `--memory-runs` (default checkpoints/rnn, checkpoints/lstm, checkpoints/gru). The committed picture comes from
  the README's three runs: `charrnn train corpora/warpeace_input.txt --cell CELL --max-steps 700 --out
  checkpoints/CELL` for rnn, lstm and gru (2x512, the defaults otherwise).
- `saliency.png`: the viewer of `--saliency-run` (default: the lstm of `--memory-runs`) on the first 1,500
  characters of the dialogue, traced with `--saliency`, hovering the closing quote of its first quotation that
  has the opening one within 100 characters: the characters its prediction used are outlined.

Every picture is made by the project's own commands (run as `python -m charrnn`) or library functions; this
script only picks the inputs. `--only loss cells` remakes some of them. It takes about 30 s on a
2-core CPU given the runs. A picture whose run, tool or command is missing or fails is skipped with a
message, and the others are still made; the exit status is 1 if a command failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402 - after the sys.path line above

from charrnn.core.rundir import read_metrics  # noqa: E402
from charrnn.core.svg import loss_curve_svg  # noqa: E402

DIALOGUE_AT = 2_993_459  # a byte offset in corpora/warpeace_input.txt (`tail -c +2993460`)
# cells also makes saturation.svg
PICTURES = ("loss", "cells", "attention", "alignment", "translation", "memory", "saliency")
# The emoji pictured, by caption: ones the 5-minute captioner names right, so the picture shows where a
# working model looks.
TRANSLATED_WORDS = ("exploding", "frighten", "shepherd")  # words of the shipped model's held-out test part
EMOJI = ("man firefighter", "woman pilot: medium-dark skin tone")


def charrnn(*args: str | Path) -> None:
    """Run one charrnn command from the project root; its output goes to our stderr."""
    subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], cwd=ROOT, check=True,
                   stdout=sys.stderr)


def small(png: Path) -> None:
    """Store a PNG with a palette of 256 colours: a quarter of the size, and no visible change for these
    pictures (flat colours and text, or 48 px emoji)."""
    Image.open(png).convert("RGB").quantize(colors=256).save(png, optimize=True)


def run_title(run: Path) -> str:
    """"GRU 2x256 on tinyshakespeare.txt", from the run's run.json; the directory's name without one."""
    try:
        c = json.loads((run / "run.json").read_text(encoding="utf-8"))
        return f"{c['cell'].upper()} {c['num_layers']}x{c['hidden_size']} on {Path(c['corpus']).name}"
    except (OSError, ValueError, KeyError):
        return run.name


def loss_curve(run: Path, out: Path) -> str:
    records = read_metrics(run / "metrics.jsonl")
    if not records:
        return f"skipped: no metrics.jsonl in {run}"
    out.write_text(loss_curve_svg(records, title=run_title(run)), encoding="utf-8")
    return f"from {run}"


def dialogue(tmp: Path) -> Path:
    """10,000 bytes of War and Peace dialogue from its validation part (the last 10%), never trained on."""
    with open(ROOT / "corpora" / "warpeace_input.txt", "rb") as f:
        f.seek(DIALOGUE_AT)
        (tmp / "dialogue.txt").write_bytes(f.read(10_000))
    return tmp / "dialogue.txt"


def cell_viewer(run: Path, text: Path | None, out_dir: Path, tmp: Path) -> str:
    text = text or dialogue(tmp)
    if not (run / "best.pt").exists() or not text.exists():
        return f"skipped: needs {run}/best.pt and {text} (see this script's docstring)"
    page = tmp / "cells.html"
    charrnn("cells", run, text, "--html", page, "--plot", out_dir / "saturation.svg")
    chromium = os.environ.get("CHARRNN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "saturation.svg only: no Chromium for the screenshot (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return ("saturation.svg only: no Playwright for the screenshot (pip install playwright; it drives the "
                "system Chromium, so never run `playwright install`)")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        view = browser.new_page(viewport={"width": 1200, "height": 800})
        view.goto(page.as_uri())
        view.wait_for_selector("#text span")
        shot = view.screenshot()
        browser.close()
    (out_dir / "cells.png").write_bytes(shot)
    small(out_dir / "cells.png")
    return f"{run} on {text}"


def memory(runs: list[Path], out: Path, tmp: Path) -> str:
    missing = [r for r in runs if not (r / "best.pt").exists()]
    if missing:
        return f"skipped: needs {', '.join(f'{r}/best.pt' for r in missing)} (see this script's docstring)"
    charrnn("gradients", *runs, dialogue(tmp), "--untrained", "--plot", out)
    return f"{', '.join(map(str, runs))} on the dialogue"


def saliency(run: Path, out: Path, tmp: Path) -> str:
    if not (run / "best.pt").exists():
        return f"skipped: needs {run}/best.pt (see this script's docstring)"
    chromium = os.environ.get("CHARRNN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        return "skipped: needs Chromium and Playwright for the screenshot (see cells above)"
    text = dialogue(tmp).read_text(encoding="utf-8")[:1500]
    (tmp / "start.txt").write_text(text, encoding="utf-8")
    page = tmp / "saliency.html"
    charrnn("viz", run, tmp / "start.txt", "--saliency", "--max-chars", 1500, "--out", page)
    quotes = [i for i, ch in enumerate(text) if ch == '"']
    closing = next(close for open_, close in zip(quotes[::2], quotes[1::2]) if close - open_ < 100)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        view = browser.new_page(viewport={"width": 1200, "height": 800})
        view.goto(page.as_uri())
        view.wait_for_selector("html[data-ready=true]")
        view.click(f'[data-i="{closing}"]')  # a click holds the view
        shot = view.screenshot()
        browser.close()
    out.write_bytes(shot)
    small(out)
    return f"{run} on the dialogue's first 1,500 characters, the closing quote at {closing}"


def emoji_images(tmp: Path) -> list[Path]:
    """A few images of the bundled emoji set, chosen by caption, written out as PNG files."""
    with zipfile.ZipFile(ROOT / "corpora" / "emoji.zip") as z:
        tsv = next(n for n in z.namelist() if n.endswith("captions.tsv"))
        by_caption = {}
        for row in z.read(tsv).decode("utf-8").splitlines():
            name, _, caption = row.partition("\t")
            by_caption.setdefault(caption, name)
        paths = []
        for caption in EMOJI:
            name = by_caption[caption]
            member = next(n for n in z.namelist() if n.endswith("/" + name) or n == name)
            path = tmp / Path(name).name
            path.write_bytes(z.read(member))
            paths.append(path)
    return paths


def attention(caption_run: Path | None, out: Path, tmp: Path) -> str:
    from charrnn.core.pretrained import HERE, SHIPPED

    shipped, trained = HERE / SHIPPED["caption"], ROOT / "checkpoints" / "emoji-caption"
    candidates = [caption_run] if caption_run else [shipped, trained]
    model = next((m for m in candidates if m.is_file() or (m / "best.pt").exists()), None)
    if model is None:
        return f"skipped: no captioner (none of {', '.join(map(str, candidates))}; give --caption-run)"
    charrnn("caption", "sample", model, *emoji_images(tmp), "--show-attention", out)
    small(out)
    return f"{model}"


def alignment(out: Path, tmp: Path) -> str:
    from charrnn.ctc.linegen import make_lines

    lines = tmp / "lines"
    make_lines(ROOT / "corpora" / "tinyshakespeare.txt", lines, count=1, val_count=2, seed=3)
    images = sorted((lines / "val").glob("*.png"))[:2] + sorted((lines / "val-heldout").glob("*.png"))[:1]
    charrnn("ctc", "decode", *images, "--show-alignment", out)
    return "the shipped reader on 2 + 1 held-out-font lines"


def translation(out: Path) -> str:
    charrnn("translate", "run", *TRANSLATED_WORDS, "--show-attention", out)
    small(out)
    return f"the shipped spelling-to-phones model on {', '.join(TRANSLATED_WORDS)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_run = ROOT / "checkpoints" / "tinyshakespeare"
    parser.add_argument("--run", type=Path, default=default_run if default_run.exists() else Path("/tmp/lm-ts"))
    default_wp = ROOT / "checkpoints" / "wp"
    parser.add_argument("--cells-run", type=Path, default=default_wp if default_wp.exists() else Path("/tmp/wp"))
    parser.add_argument("--cells-text", type=Path, default=None)
    parser.add_argument("--caption-run", type=Path, default=None)
    parser.add_argument("--memory-runs", type=Path, nargs="+",
                        default=[ROOT / "checkpoints" / cell for cell in ("rnn", "lstm", "gru")])
    parser.add_argument("--saliency-run", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--only", nargs="+", choices=PICTURES, default=list(PICTURES))
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        makers = {"loss": lambda: loss_curve(args.run, args.out / "loss.svg"),
                  "cells": lambda: cell_viewer(args.cells_run, args.cells_text, args.out, tmp),
                  "attention": lambda: attention(args.caption_run, args.out / "attention.png", tmp),
                  "alignment": lambda: alignment(args.out / "alignment.png", tmp),
                  "translation": lambda: translation(args.out / "translation.png"),
                  "memory": lambda: memory(args.memory_runs, args.out / "memory.svg", tmp),
                  "saliency": lambda: saliency(args.saliency_run or next(
                      (r for r in args.memory_runs if r.name == "lstm"), args.memory_runs[0]),
                      args.out / "saliency.png", tmp)}
        failed = False
        for name in args.only:
            try:
                print(f"{name}: {makers[name]()}")
            except subprocess.CalledProcessError as e:  # its error is above, on stderr; the others are still made
                print(f"{name}: failed: {' '.join(map(str, e.cmd[1:]))} exited with status {e.returncode}")
                failed = True
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
