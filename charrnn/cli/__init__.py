"""The `charrnn` command line: parse, call one library function, render with Rich.

One module per task, named after it and mounted as the task table says (`charrnn/tasks.py`): `lm` (train,
sample, eval), `caption` (`charrnn caption ...`), `ctc` (`charrnn ctc ...`); and `inspect` (dump, viz,
cells, gradients) and `tools` (info, bench). The options they share are declared once in `options`, and the Rich views
live in `render`.
Commands import the library inside their bodies, so `charrnn --help` never loads PyTorch.

A training run's progress and summary, and diagnostics, go to stderr; a command's result (generated text,
a table, or `--json`) goes to stdout, so `charrnn sample ... > out.txt` and `charrnn eval ... --json | jq`
work. A user error prints one line and exits with status 2.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import warnings
from collections.abc import Iterator
from inspect import cleandoc
from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

from charrnn.cli import inspect, render, tools
from charrnn.cli.render import fail
from charrnn.core.errors import CharRNNError, CharRNNWarning
from charrnn.tasks import TASKS


class OneLineErrors(TyperGroup):
    """Every usage error and `CharRNNError` becomes one line on stderr and exit status 2; no traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):
        try:
            with _warnings_as_lines(), _ieee_floats_after():
                result = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                      standalone_mode=False, **extra)
        except CharRNNError as e:
            fail(str(e), 2)
        except OSError as e:  # an --out that cannot be written, a full disk: the user's to fix, not a bug
            reason = e.strerror or str(e)
            fail(f"{reason[0].lower()}{reason[1:]}" + (f": {e.filename!r}" if e.filename else ""), 2)
        except typer.TyperException as e:  # Typer's usage errors: bad option, missing argument, ...
            code = getattr(e, "exit_code", 2)
            if not e.format_message():  # `charrnn` alone: the help is the message, and it was shown
                sys.exit(code)
            fail(f"{e.format_message()} (see --help)", code)
        except (typer.Abort, KeyboardInterrupt):
            fail("aborted", 130)
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
            if not _out_of_memory(e):
                raise
            fail(_memory_advice(self, sys.argv[1:] if args is None else list(args), e), 2)
        sys.exit(result if isinstance(result, int) else 0)

    # Typer turns a Ctrl-C while it parses (it may be importing pydantic then) or runs a command into a
    # silent exit 130; raised as Abort instead, it reaches `main` and its one line.
    def make_context(self, *args: Any, **kwargs: Any) -> typer.Context:
        with _ctrl_c_as_abort():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: typer.Context) -> Any:
        with _ctrl_c_as_abort():
            return super().invoke(ctx)


# The settings that size what a command allocates, most effective first; an allocation failure names the first
# four its command has. The configs bound each (core/config.py), but not their product.
MEMORY_SETTINGS = ("batch_size", "num_samples", "beam_size", "image_size", "max_width", "height", "seq_len",
                   "hidden_size", "eval_streams", "num_layers", "embedding_dim", "attention_dim", "channels",
                   "max_caption_len", "max_chars")
# How allocators say they failed: PyTorch's CPU allocator ("can't allocate memory: you tried to allocate N
# bytes", "not enough memory"), CUDA and MPS ("out of memory"), and the system's ENOMEM text.
_OUT_OF_MEMORY = ("out of memory", "can't allocate", "not enough memory", "cannot allocate memory")


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(s in str(e).lower() for s in _OUT_OF_MEMORY)


def _memory_advice(group: TyperGroup, args: list[str], e: BaseException) -> str:
    """One line for an allocation failure: how much was asked for, when the allocator said, and the flags of
    the command that ran (found by walking `args` down the command tree) that would make it smaller."""
    command = group
    for word in args:
        sub = getattr(command, "commands", {}).get(word)
        if sub is not None:
            command = sub
        elif not word.startswith("-"):
            break
    names = {p.name for p in getattr(command, "params", [])}
    flags = [f"--{n.replace('_', '-')}" for n in MEMORY_SETTINGS if n in names][:4]
    asked = re.search(r"allocate (\d+) bytes", str(e))
    asked_text = re.search(r"allocate ([\d.]+ [KMGT]i?B)", str(e))
    detail = (f" (asked for {int(asked.group(1)) / 1e9:.1f} GB)" if asked else
              f" (asked for {asked_text.group(1)})" if asked_text else "")
    fix = (f"lower {', '.join(flags[:-1])} or {flags[-1]}" if len(flags) > 1 else f"lower {flags[0]}" if flags
           else "use a smaller model or input")
    return f"out of memory{detail}: {fix}"


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """The library's warnings (`CharRNNWarning`: a damaged best.pt read from last.pt instead) as one line each on
    stderr, every time; other warnings as Python shows them."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, CharRNNWarning):
            return default(message, category, filename, lineno, file, line)
        text = " ".join(str(message).split())
        if render.err.is_terminal:
            render.err.print(Text.assemble(("warning: ", "bold yellow"), text), soft_wrap=True)
        else:
            print(f"warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", CharRNNWarning)
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _ieee_floats_after() -> Iterator[None]:
    """Commands that take gradients through time (`gradients`, `--saliency`) flush denormal floats to zero for
    the whole process, so that torch's worker threads start with it; afterwards the calling thread gets IEEE
    floats back, for a program that runs commands in-process (tests with CliRunner)."""
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_flush_denormal(False)


@contextlib.contextmanager
def _ctrl_c_as_abort() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise typer.Abort() from None


app = typer.Typer(cls=OneLineErrors, no_args_is_help=True,
                  help="Character-level RNN / LSTM / GRU models: " + "; ".join(t.summary for t in TASKS.values())
                       + ". Shell completion: charrnn --install-completion, then open a new shell.\n\n"
                       "Example: charrnn sample --prime 'ROMEO:' --seed 1",
                  context_settings={"help_option_names": ["-h", "--help"]})


def _print_version(value: bool) -> None:
    if value:
        from charrnn import __version__

        print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print charrnn's version and exit.")] = False,
) -> None:
    """The options of `charrnn` itself (each command has its own)."""


def _reflow(doc: str | None) -> str | None:
    """A docstring as Rich help shows it best: each paragraph one line, which Rich wraps to the terminal (it keeps
    a docstring's own line breaks, so a paragraph wrapped at 120 columns broke mid-sentence in a narrower one)."""
    if not doc:
        return doc
    paragraphs = re.split(r"\n\s*\n", cleandoc(doc))
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


# Each task's commands from its own module, as the task table mounts them: top-level ones (the language
# model's train, sample, eval) first, then the tools, then one group per other task.
_task_apps = {name: importlib.import_module(f"charrnn.cli.{name}").app for name in TASKS}
for _row in TASKS.values():
    if _row.group is None:
        app.add_typer(_task_apps[_row.name])
app.add_typer(inspect.app)
app.add_typer(tools.app)
for _row in TASKS.values():
    if _row.group is not None:
        app.add_typer(_task_apps[_row.name], name=_row.group)


for _app in (*_task_apps.values(), inspect.app, tools.app):
    for _command in _app.registered_commands:
        _command.callback.__doc__ = _reflow(_command.callback.__doc__)


def main() -> None:
    """Run the app. The console script is `charrnn.__main__:main`, which also turns a Ctrl-C while this
    package is still importing into one line; this stays for scripts installed before it."""
    app()
