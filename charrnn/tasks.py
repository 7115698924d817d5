"""The tasks charrnn trains, one row each: the one place a task is registered.

A row names the task as checkpoints record it, the package that implements it (`<package>.config` holds its
run config, `<package>.task` its `build` / `train` / `resume_config`), its command-line module
(`charrnn.cli.<name>`, whose `app` the `charrnn` command mounts under `group`), the commands that train it and
read its models, and the model shipped for it. Torch-free and import-free (classes are named, not imported), so
`charrnn --help` and the checkpoint format can read it without loading any task.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskRow:
    name: str  # as checkpoints record it ("task")
    package: str  # the package that implements it
    run_config: str  # the name of its run config class in `<package>.config`
    what: str  # what one of its models is, for messages: "a language model"
    train_command: str  # how a run of it is trained (and resumed, with --resume RUN)
    use_command: str  # the commands that read its models
    summary: str  # what it does, for `charrnn --help`
    group: str | None  # its command group (`charrnn caption ...`), or None for top-level commands
    shipped: str | None = None  # the file of its shipped model in charrnn/pretrained/
    cache_files: tuple[str, ...] = ()  # the files its runs keep in their run directory besides the loop's


TASKS: dict[str, TaskRow] = {row.name: row for row in (
    TaskRow("lm", "charrnn.lm", "LMTrainConfig", "a language model", "charrnn train", "charrnn sample / eval",
            "train on any text, sample, evaluate, inspect the cells", None, "lm-tinyshakespeare.pt",
            ("corpus.bin", "corpus.json")),
    TaskRow("caption", "charrnn.caption", "CaptionTrainConfig", "an image captioner", "charrnn caption train",
            "charrnn caption", "describe images (caption)", "caption", "caption-emoji.pt",
            ("train-images.u8", "train-images.json", "val-images.u8", "val-images.json")),
    TaskRow("ctc", "charrnn.ctc", "CTCTrainConfig", "a line reader", "charrnn ctc train", "charrnn ctc",
            "read text lines (ctc)", "ctc", "ctc-lines.pt",
            ("train-lines.npy", "train-lines.json", "val-lines.npy", "val-lines.json")),
    TaskRow("classify", "charrnn.classify", "ClassifyTrainConfig", "a text classifier", "charrnn classify train",
            "charrnn classify", "label whole texts (classify)", "classify", "classify-surnames.pt"),
    TaskRow("tag", "charrnn.tag", "TagTrainConfig", "a tagger", "charrnn tag train", "charrnn tag",
            "label every character, e.g. restore capitals (tag)", "tag"),
    TaskRow("translate", "charrnn.translate", "TranslateTrainConfig", "a translator", "charrnn translate train",
            "charrnn translate", "turn one text into another, e.g. spelling into sounds (translate)", "translate",
            "translate-cmudict.pt"),
)}


def task_of_config(config_type: type) -> TaskRow:
    """The row whose run config is `config_type` (a subclass of `LoopConfig`)."""
    for row in TASKS.values():
        if config_type.__module__ == f"{row.package}.config" and config_type.__name__ == row.run_config:
            return row
    raise KeyError(f"{config_type.__name__} is no task's run config; add its row to charrnn/tasks.py")


def run_config_class(name: str) -> type:
    """The run config class of task `name`."""
    row = TASKS[name]
    return getattr(importlib.import_module(f"{row.package}.config"), row.run_config)
