"""Every command's --help speaks of its own task. The options shared by the language model, the captioner and the
line reader are declared once (charrnn/cli/options.py) but worded for each task; these tests walk every command's
help and fail where one task's words reach another's (streams of a corpus on a captioner, BLEU on the language
model), where a shown default contradicts the text, or where the closing example would not parse."""

import re
import shlex

import pytest
import typer
from typer.testing import CliRunner

from charrnn.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # wide enough that Rich wraps few help texts; `flat` mends the ones it still wraps
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOX = re.compile(r"[\u2500-\u257f]")  # Rich's panel borders

# Words that belong to one task. A help may not use another task's: each list names what its task has and the
# others do not (a corpus read as parallel streams, scored in nats; images; captions scored by BLEU; line images
# read frame by frame and scored by CER).
LM_WORDS = [r"\bstreams?\b", r"\bcontiguous\b", r"\bcorpus\b", r"\bone-hot\b", r"\bvalidation loss\b", r"\bnats\b",
            r"\bperplexity\b", r"\bbits per character\b", r"--seq-len\b", r"--prime\b"]
IMAGE_WORDS = [r"\bimages?\b", r"\bpixels?\b", r"\bCNN\b"]
CAPTION_WORDS = [r"\bBLEU", r"\bCIDEr", r"\bcaption"]
CTC_WORDS = [r"\bCER\b", r"\bWER\b", r"\btranscripts?\b", r"\bline images?\b", r"\bblank\b(?! lines?)",
             r"\bframes?\b"]
SAMPLING_WORDS = [r"--temperature\b", r"\bsampl(e|es|ed|ing)\b"]  # ctc reads lines; it never samples
FOREIGN = {
    "lm": IMAGE_WORDS + CAPTION_WORDS + CTC_WORDS,
    "caption": LM_WORDS + CTC_WORDS,
    "ctc": LM_WORDS + CAPTION_WORDS + SAMPLING_WORDS,
    # translate scores texts by CER, WER and (sentences) BLEU as well, but reads no images, corpus streams or frames
    "translate": LM_WORDS + IMAGE_WORDS + [r"\bCIDEr", r"\bcaption", r"\btranscripts?\b", r"\bline images?\b",
                                           r"\bframes?\b"],
}
# "Corpus BLEU" and "Corpus CER" are scores pooled over a whole dataset (corpus-level), not the LM's corpus.
ALLOWED = ["Corpus BLEU", "Corpus CER"]


def walk(command=None, path=()):
    """(arguments before --help, command) for the root, each group and each command under them."""
    command = command or typer.main.get_command(app)
    yield list(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name))


COMMANDS = list(walk())
PATHS = [path for path, _ in COMMANDS]
LEAVES = [(path, command) for path, command in COMMANDS if not hasattr(command, "commands")]


def name(path: list[str]) -> str:
    return " ".join(["charrnn", *path])


def task(path: list[str]) -> str | None:
    """The task whose words a command's help is written in; None for the root, info and bench, which serve all."""
    if not path or path[0] in ("info", "bench"):
        return None
    return path[0] if path[0] in ("caption", "ctc", "translate") else "lm"


def rendered(path: list[str]) -> str:
    result = runner.invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return ANSI.sub("", result.stdout)


def flat(text: str) -> str:
    """The help on one line, without panel borders: a phrase that Rich wrapped reads whole again."""
    return " ".join(BOX.sub(" ", text).split())


def foreign_words(path: list[str]) -> list[str]:
    text = flat(rendered(path))
    for phrase in ALLOWED:
        text = text.replace(phrase, "")
    return [f"{m.group(0)!r} in ...{text[max(m.start() - 60, 0):m.end() + 60]}..."
            for pattern in FOREIGN.get(task(path), []) for m in re.finditer(pattern, text, re.IGNORECASE)]


def test_every_command_is_walked():
    names = {name(path) for path in PATHS}
    assert {"charrnn", "charrnn train", "charrnn bench", "charrnn caption", "charrnn caption train",
            "charrnn ctc decode", "charrnn ctc make-lines", "charrnn cells"} <= names
    assert {task(path) for path in PATHS} == {None, "lm", "caption", "ctc", "translate"}


@pytest.mark.parametrize("path", PATHS, ids=name)
def test_help_speaks_only_of_its_own_task(path):
    found = foreign_words(path)
    assert not found, f"{name(path)} --help uses another task's words:\n" + "\n".join(found)


@pytest.mark.parametrize("path, words, foreign_to", [
    (["train"], ["streams", "corpus", "one-hot", "validation loss"], ["caption", "ctc"]),
    (["eval"], ["nats", "perplexity"], ["caption", "ctc"]),
    (["caption", "train"], ["images", "CNN"], ["lm"]),
    (["caption", "eval"], ["BLEU", "captions"], ["lm", "ctc"]),
    (["ctc", "train"], ["CER", "transcripts", "frame"], ["lm", "caption"]),
    (["ctc", "decode"], ["line images", "blank"], ["lm", "caption"]),
    (["sample"], ["--temperature", "sampling"], ["ctc"]),
])
def test_the_word_lists_catch_what_they_are_for(path, words, foreign_to):
    """A task's own help has the words the others' may not use, and the lists for those others catch them."""
    text = flat(rendered(path))
    for word in words:
        assert word in text, f"{name(path)} --help lacks {word!r}"
        for other in foreign_to:
            assert any(re.search(p, word, re.IGNORECASE) for p in FOREIGN[other]), f"{word!r} passes on {other}"


@pytest.mark.parametrize("path, command", LEAVES, ids=[name(path) for path, _ in LEAVES])
def test_help_names_only_flags_its_command_has(path, command):
    """A shared option's help may not point at a flag of another command (`ctc decode --beam-size` once spoke of
    --temperature, which only the sampling commands have)."""
    own = {flag for param in command.params for flag in [*getattr(param, "opts", []),
                                                        *getattr(param, "secondary_opts", [])]}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", flat(rendered(path))))
    assert named <= own | {"--help"}, f"{name(path)} --help names {sorted(named - own - {'--help'})}"


@pytest.mark.parametrize("path", PATHS, ids=name)
def test_a_help_shows_one_default_per_option(path):
    """An option that writes its own [default: ...] hides Typer's, which would contradict it."""
    text = flat(rendered(path))
    assert not re.search(r"\[default: [^\]]*\]\s*\[default:", text), f"{name(path)} --help shows two defaults"


def test_seed_help_says_what_no_seed_does():
    """Training and the dataset builders have a fixed seed and show it; sampling draws a fresh one each run."""
    seen = set()
    for path, command in COMMANDS:
        for param in command.params:
            if "--seed" not in getattr(param, "opts", []):
                continue
            seen.add(name(path))
            text = re.search(r" --seed <int> (.*?)(?= --[a-z]|$)", flat(rendered(path))).group(1)  # its row
            if param.default is None:
                assert "[default: none, so each run differs]" in text, f"{name(path)}: {text}"
            else:
                assert "each run differs" not in text and f"[default: {param.default}]" in text, f"{name(path)}: {text}"
    assert {"charrnn train", "charrnn sample", "charrnn caption sample", "charrnn caption make-emoji",
            "charrnn ctc make-lines"} <= seen


def test_out_default_names_the_run_directory_the_config_picks():
    from charrnn.caption.config import CaptionTrainConfig
    from charrnn.ctc.config import CTCTrainConfig
    from charrnn.lm.config import LMTrainConfig

    runs = {"train": LMTrainConfig(corpus="texts/war.txt"), "caption train": CaptionTrainConfig(data="sets/emoji.zip"),
            "ctc train": CTCTrainConfig(data="sets/iam")}
    for command, config in runs.items():
        text = flat(rendered(command.split()))
        shown = re.search(r"--out -o DIR .*?\[default: ([^\]]+)\]", text).group(1)
        name_of_data = config.corpus if command == "train" else config.data
        stem = name_of_data.rsplit("/", 1)[1].split(".")[0]
        assert re.sub(r"<(corpus|data) name>", stem, shown) == str(config.run_dir), (command, shown)


@pytest.mark.parametrize("path", PATHS, ids=name)
def test_help_ends_with_an_example_that_parses(path):
    """tests/test_cli.py checks that each docstring ends with "Example: <its command> ..."; here the rendered
    description ends with it too, and its arguments are ones the command reads."""
    description = rendered(path).split("\u256d", 1)[0].strip()  # before the first panel
    example = description.splitlines()[-1].strip()
    assert example.startswith("Example: charrnn "), f"{name(path)} --help ends with {example!r}"
    args = shlex.split(example.removeprefix("Example: charrnn "))
    command = typer.main.get_command(app)
    while hasattr(command, "commands"):
        assert args and args[0] in command.commands, f"{example!r} names no command"
        command, args = command.commands[args[0]], args[1:]
    command.make_context("charrnn", args)  # raises on an unknown option, a bad value or a missing argument


def test_decode_help_says_what_lm_does_to_the_beam():
    """`ctc decode --lm` without --beam-size searches with 8 beams (the LM is fused into the beam search): the help
    of --beam-size says so (tests/test_cli.py checks that it does)."""
    assert "With --lm, 1 becomes 8" in flat(rendered(["ctc", "decode"]))
