"""Every command's help example works when copied, in the state the README leaves a user in.

Each `--help` ends with "Example: charrnn ...". A user meets them after following the README: the quick start
(`charrnn train`), the guided tour (heldout.txt, the War and Peace run, dialogue.txt) and each task's section
(`charrnn caption train`, `charrnn ctc train`). This test replays that in an empty directory beside `corpora/` (as
tests/test_readme.py runs the README's Python), then runs every example in the order `STEPS` gives: an example
that names a run, a file or a cell the user does not have at that point fails here.

Scaled down so that it runs in about 15 s on 2 cores (so it stays in the default run). The scaling (`scaled`)
changes sizes and durations, never an argument, path or name an example gives:
- a training run stops after 2 steps (`--time-budget N` becomes `--max-steps 2`) with small layers where the
  command names none (`SMALL`): the language model keeps 128 units, since the examples name cells up to 110;
- `ctc train` with no data renders 40 lines instead of 20,000 (`DEFAULT_LINE_COUNT`), `make-lines --count N`
  renders 20, `tune-lm` tunes on 2 lines, `bench` measures 5 steps of a small batch once, `translate bench` 3 steps
  of a tiny model on 200 pairs once, `gradients` averages over 16 positions;
- heldout.txt and dialogue.txt are 2,000 characters instead of 20,000 and 10,000.
`caption make-emoji` needs system packages (README: fonts-noto-color-emoji, unicode-data, the emoji extra); where
they are missing, it must say which in one line.
"""

import re
import shlex
from pathlib import Path

import typer
from typer.testing import CliRunner

from charrnn.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

TRAINING = ("train", "caption train", "ctc train", "classify train", "tag train", "translate train")
SMALL = {  # the small model each task's training gets where the command does not say
    "train": ["--hidden-size", "128"],
    "caption train": ["--hidden-size", "16", "--image-size", "16", "--channels", "8,16", "--attention-dim", "8",
                      "--embedding-dim", "8", "--max-caption-len", "20"],
    "ctc train": ["--hidden-size", "16"],
    "classify train": ["--hidden-size", "16"],
    "tag train": ["--hidden-size", "16", "--num-layers", "1"],
    "translate train": ["--hidden-size", "16", "--embedding-dim", "8", "--attention-dim", "8", "--val-frac", "0.005",
                        "--test-frac", "0.005"],
}
SCALE = {  # options added to (or replacing those of) other commands
    "ctc make-lines": ["--count", "20"],
    "ctc tune-lm": ["--max-lines", "2"],
    "bench": ["--steps", "5", "--repeats", "1", "--sample-chars", "20", "--batch-size", "2", "--seq-len", "8"],
    "gradients": ["--positions", "16"],
    "translate bench": ["--steps", "3", "--repeats", "1", "--batch-size", "4", "--hidden-size", "16", "--max-pairs",
                        "200"],
}
# The README's commands whose runs and files the examples name, in the README's order ("write FILE" steps are its
# shell lines that cut a text), then every example, each after the steps that make what it reads.
README = "README"
STEPS = [
    (README, "charrnn train"),
    (README, "write heldout.txt"),
    (README, "charrnn train corpora/warpeace_input.txt --cell lstm --num-layers 1 --hidden-size 128 --time-budget 3 "
             "--out checkpoints/wp"),
    (README, "write dialogue.txt"),
    (README, "charrnn caption train"),
    (README, "charrnn ctc train"),
    "charrnn sample --prime 'ROMEO:' --seed 1",
    "charrnn train corpora/tinyshakespeare.txt --cell lstm --time-budget 10 --out checkpoints/shakespeare-lstm",
    "charrnn sample checkpoints/tinyshakespeare --prime \"ROMEO:\" --temperature 0.8 --seed 1",
    "charrnn eval checkpoints/tinyshakespeare heldout.txt --json",
    "charrnn info checkpoints/tinyshakespeare --json",
    "charrnn bench --cell lstm --num-layers 2 --hidden-size 256 --device cpu",
    "charrnn dump checkpoints/tinyshakespeare heldout.txt --out acts.npz",
    "charrnn viz acts.npz --cell layer0/h/110 --kinds all --out cells.html",
    "charrnn cells checkpoints/wp dialogue.txt --html cells.html --cell layer0/c/63",
    "charrnn gradients checkpoints/wp dialogue.txt --untrained --plot memory.svg",
    "charrnn caption sample corpora/examples/monkey.png",
    "charrnn caption train corpora/emoji.zip --split grouped --out checkpoints/emoji-grouped --time-budget 10",
    "charrnn caption sample checkpoints/emoji-caption corpora/examples/bear.png --show-attention att.png",
    "charrnn caption eval checkpoints/emoji-caption --beam-size 5 --json",
    "charrnn caption make-emoji emoji --zip emoji.zip",
    "charrnn ctc decode corpora/examples/line-print.png --beam-size 8",
    "charrnn ctc train --time-budget 10 --out checkpoints/lines-ctc-10min",
    "charrnn ctc decode checkpoints/tinyshakespeare-lines-ctc corpora/examples/line-print.png --lm shipped",
    "charrnn ctc eval checkpoints/tinyshakespeare-lines-ctc --lm checkpoints/tinyshakespeare",
    "charrnn ctc tune-lm checkpoints/tinyshakespeare-lines-ctc --lm checkpoints/tinyshakespeare",
    "charrnn ctc make-lines corpora/tinyshakespeare.txt lines --count 20000",
    "charrnn classify predict Nakamura \"O'Brien\"",
    (README, "charrnn classify train"),
    "charrnn classify predict Nakamura \"O'Brien\" --top-k 3",
    "charrnn classify trace \"O'Brien\" --svg trace.svg",
    "charrnn classify eval checkpoints/surnames-classify --confusion confusion.svg",
    "charrnn classify train corpora/reviews.tsv --time-budget 5",
    (README, "charrnn tag train"),
    "charrnn tag predict checkpoints/warpeace_input-truecase \"where is natasha?\"",
    "charrnn tag predict checkpoints/warpeace_input-truecase \"natasha and pierre met in moscow.\"",
    "charrnn tag eval checkpoints/warpeace_input-truecase --json",
    "charrnn tag train corpora/tinyshakespeare.txt --time-budget 5",
    "charrnn translate run Nakamura charrnn",
    (README, "charrnn translate train"),
    "charrnn translate run checkpoints/cmudict-translate Nakamura charrnn --beam-size 5 --n-best 3",
    "charrnn translate eval checkpoints/cmudict-translate --json",
    "charrnn translate train corpora/cmudict/cmudict.tsv --attention dot --out checkpoints/cmudict-dot",
    "charrnn translate bench --attention dot --repeats 3 --device cpu",
]
TEXTS = {  # the README's `tail -c 20000 corpora/tinyshakespeare.txt > heldout.txt` and its dialogue cut, shortened
    "heldout.txt": lambda: (ROOT / "corpora/tinyshakespeare.txt").read_bytes()[-2000:],
    "dialogue.txt": lambda: (ROOT / "corpora/warpeace_input.txt").read_bytes()[2993459:2993459 + 2000],
}
NEEDS_SYSTEM_PACKAGES = {"charrnn caption make-emoji emoji --zip emoji.zip"}


def help_examples() -> list[str]:
    """The closing "Example: charrnn ..." of the root's, every group's and every command's help."""
    found = []

    def walk(command):
        lines = [line.strip() for line in (command.help or "").strip().splitlines()]
        if lines and lines[-1].startswith("Example: charrnn "):
            found.append(lines[-1].removeprefix("Example: "))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found


def command_of(args: list[str]) -> str:
    """"train", "caption train", ... : the command words of `args` (after `charrnn`)."""
    return " ".join(args[:2]) if args[0] in ("caption", "ctc", "classify", "tag", "translate") else args[0]


def scaled(args: list[str]) -> list[str]:
    """`args` with the expensive options made small (see the module's docstring)."""
    command = command_of(args)
    if command in TRAINING:
        args = _without(args, "--time-budget") + ["--max-steps", "2"]
        given = set(args)
        for k in range(0, len(SMALL[command]), 2):
            if SMALL[command][k] not in given:
                args += SMALL[command][k:k + 2]
    extra = SCALE.get(command, [])
    for k in range(0, len(extra), 2):
        args = _without(args, extra[k]) + extra[k:k + 2]
    return args


def _without(args: list[str], option: str) -> list[str]:
    if option not in args:
        return args
    k = args.index(option)
    return args[:k] + args[k + 2:]


def test_every_help_example_is_in_the_steps():
    examples = help_examples()
    steps = [step for step in STEPS if isinstance(step, str)]
    assert len(examples) == len(set(examples)), "two commands' help give the same example"
    missing = sorted(set(examples) - set(steps))
    stale = sorted(set(steps) - set(examples))
    assert not missing, f"help examples this test does not run (add them to STEPS where a user meets them): {missing}"
    assert not stale, f"STEPS has examples no help gives any more: {stale}"


def test_every_help_example_works_in_the_state_the_readme_leaves(tmp_path, monkeypatch):
    import charrnn.ctc.task

    (tmp_path / "corpora").symlink_to(ROOT / "corpora")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(charrnn.ctc.task, "DEFAULT_LINE_COUNT", 40)
    for step in STEPS:
        line = step[1] if isinstance(step, tuple) else step
        if line.startswith("write "):
            name = line.removeprefix("write ")
            (tmp_path / name).write_bytes(TEXTS[name]())
            continue
        args = scaled(shlex.split(line)[1:])
        result = runner.invoke(app, args)
        said = f"`{line}` (run as charrnn {shlex.join(args)}) ended with {result.exit_code}:\n{result.output}"
        assert "Traceback" not in result.output, said
        if line in NEEDS_SYSTEM_PACKAGES and result.exit_code == 2:
            assert re.search(r"not installed|pip install", result.stderr) and len(result.stderr.splitlines()) == 1, said
            continue
        assert result.exit_code == 0, said
