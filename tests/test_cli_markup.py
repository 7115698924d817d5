"""Names that look like Rich markup are shown as they are.

A run directory or a file called `[/]x` once crashed `charrnn train` with a MarkupError traceback (Rich read the
path in the summary table as a closing tag), and `[bold]x` would have restyled the output silently. The CLI's
consoles interpret no markup (charrnn/cli/render.py), so every path, name and library message is printed as it
is. This walks the commands with such names and with a plain one: the same exit code, no traceback, and the name
printed literally wherever the plain one is printed; on a terminal (colours, progress bars) too.
"""

import re
import shutil
from pathlib import Path

import pytest
from conftest import TEXT
from typer.testing import CliRunner

from charrnn.cli import app, render

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "release-0.1.0"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
runner = CliRunner()

PLAIN = "zq0"  # a name no output holds by itself
NAMES = ["[/]", "[bold]x", "[exp1]", ":cat:"]  # a closing tag, a style, a tag-like run name, an emoji code
LM = ["--hidden-size", "8", "--num-layers", "1", "--seq-len", "8", "--batch-size", "2", "--device", "cpu"]
CAPTION = ["--hidden-size", "8", "--image-size", "16", "--channels", "8,16", "--attention-dim", "8",
           "--embedding-dim", "8", "--max-caption-len", "10", "--batch-size", "4", "--device", "cpu"]


def lm_commands(n: str) -> list[list[str]]:
    """The language model's commands, each naming `n` (a run, its text, what they write), in an order that works."""
    return [
        ["train", f"{n}c.txt", "--out", f"{n}run", "--max-steps", "2", *LM, "--sample-length", "5"],
        ["train", "--resume", f"{n}run", "--max-steps", "3", "--sample-length", "0"],
        ["train", "--resume", f"{n}run"],  # already finished: a one-line error naming the run
        ["info", f"{n}run"],
        ["eval", f"{n}run", f"{n}c.txt"],
        ["eval", f"{n}run", f"{n}missing.txt"],  # no such file: a one-line error naming it
        ["sample", f"{n}run", "--length", "5", "--seed", "1"],
        ["dump", f"{n}run", f"{n}c.txt", "--out", f"{n}acts.npz"],
        ["viz", f"{n}acts.npz", "--out", f"{n}cells.html"],
        ["cells", f"{n}run", f"{n}c.txt", "--top", "1", "--html", f"{n}page.html", "--plot", f"{n}sat.svg"],
    ]


def image_commands(n: str) -> list[list[str]]:
    return [
        ["caption", "train", f"{n}captions", "--out", f"{n}caption", "--max-steps", "2", *CAPTION],
        ["caption", "sample", f"{n}caption", f"{n}img.png", "--show-attention", f"{n}att.png"],
        ["ctc", "train", f"{n}lines", "--out", f"{n}ctc", "--max-steps", "2", "--hidden-size", "8", "--batch-size",
         "2", "--device", "cpu"],
        ["ctc", "decode", f"{n}ctc", f"{n}line.png"],
    ]


def make_inputs(n: str) -> None:
    """`n`c.txt, `n`captions/, `n`lines/, `n`img.png and `n`line.png in the current directory."""
    Path(f"{n}c.txt").parent.mkdir(parents=True, exist_ok=True)  # "[/]c.txt" is "]c.txt" in a folder "["
    Path(f"{n}c.txt").write_text(TEXT, encoding="utf-8")
    shutil.copytree(FIXTURES / "captions", f"{n}captions")
    shutil.copytree(FIXTURES / "lines", f"{n}lines")
    shutil.copy(FIXTURES / "images" / "1f431.png", f"{n}img.png")
    shutil.copy(FIXTURES / "lines" / "000000.png", f"{n}line.png")


def walk(commands, n: str) -> list[tuple[int, str]]:
    """(exit code, output without colour codes) of each command."""
    make_inputs(n)
    results = []
    for args in commands(n):
        r = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.output, r.exception)
        results.append((r.exit_code, ANSI.sub("", r.output)))
    return results


def check_same(commands, name: str, plain: list, named: list, exact: bool) -> None:
    for args, (code, text), (plain_code, plain_text) in zip(commands(name), named, plain):
        said = f"charrnn {' '.join(args)} -> {code}:\n{text}"
        assert "Traceback" not in text and "MarkupError" not in text, said
        assert code == plain_code, f"{said}\nwith {PLAIN!r} instead it ended with {plain_code}:\n{plain_text}"
        if exact:
            assert text.count(name) == plain_text.count(PLAIN), f"{said}\nwith {PLAIN!r}:\n{plain_text}"
        else:  # on a terminal a live bar is redrawn as often as time allows: the name is there, how often varies
            assert (text.count(name) > 0) == (plain_text.count(PLAIN) > 0), f"{said}\nwith {PLAIN!r}:\n{plain_text}"


@pytest.mark.parametrize("commands", [lm_commands, image_commands], ids=["lm", "images"])
def test_names_that_look_like_markup_are_printed_as_they_are(commands, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = walk(commands, PLAIN)
    assert [code for code, _ in plain].count(2) == (2 if commands is lm_commands else 0)  # the two error cases
    assert all(code in (0, 2) for code, _ in plain), plain
    for name in NAMES:
        check_same(commands, name, plain, walk(commands, name), exact=True)


def test_on_a_terminal_too(tmp_path, monkeypatch):
    """Colours, the error line's red "error:", live progress bars: the paths in them stay literal."""
    monkeypatch.chdir(tmp_path)
    for console in (render.err, render.out):
        monkeypatch.setattr(console, "_force_terminal", True)
    plain = walk(lm_commands, PLAIN)
    check_same(lm_commands, "[/]", plain, walk(lm_commands, "[/]"), exact=False)


def test_tables_are_not_cut_when_piped(monkeypatch):
    """Off a terminal (CliRunner's stdout is none) a table is as wide as it needs: `charrnn bench | cat` once
    printed "23,7…" in an 80-column table."""
    import charrnn.lm.bench

    row = {"cell": "lstm", "num_layers": 2, "hidden_size": 512, "train_chars_per_s": 23_745_678.0,
           "reference_train_chars_per_s": 21_234_567.0, "train_ratio": 1.12, "train_fraction_of_peak": 0.123,
           "sample_chars_per_s_batch1": 12_345_678.0, "sample_chars_per_s_batch64": 987_654_321.0,
           "peak_memory_mb": 12_345.0}
    monkeypatch.setattr(charrnn.lm.bench, "run_bench", lambda **kw: {
        "rows": [row], "device": "cpu", "threads": 2, "precision": "fp32", "matmul_flops": 5e10})
    r = runner.invoke(app, ["bench", "--cell", "lstm"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout
    for shown in ("23,745,678", "21,234,567", "12,345,678", "987,654,321", "12,345", "1.12", "12.3"):
        assert shown in r.stdout, r.stdout
    assert max(map(len, r.stdout.splitlines())) > 80
