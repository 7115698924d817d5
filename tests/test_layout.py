"""The layout holds: imports run one way between charrnn's packages, and the task table is complete.

Every import statement of every module is read (top-level, inside functions, under TYPE_CHECKING alike), so
a sideways import fails here with its file and line, whatever path would have imported it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from charrnn.tasks import TASKS, run_config_class, task_of_config

PACKAGE = Path(__file__).resolve().parents[1] / "charrnn"

# What each package may import besides itself (and charrnn.tasks, the torch-free table everyone may read).
ALLOWED = {
    "core": set(),
    "vision": {"core"},
    "lm": {"core"},
    "caption": {"core", "vision"},
    "ctc": {"core", "vision"},
    "classify": {"core"},
    "tag": {"core"},
    "translate": {"core"},
    "inspect": {"core", "lm"},
}
# The one sanctioned edge between tasks: the line reader's decoder fuses the language model.
EXCEPTIONS = {("ctc/decode.py", "lm")}
# The command line loads these at start-up (`charrnn --help` must not load torch); anything else lazily.
CLI_TOP_LEVEL = ("charrnn.cli", "charrnn.core.errors", "charrnn.core.config", "charrnn.tasks")


def charrnn_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) for each import of a charrnn module in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("charrnn"):
            names = [node.module] if node.module != "charrnn" else [f"charrnn.{a.name}" for a in node.names]
            found += [(node.lineno, name, id(node) in top) for name in names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "." * node.level + (node.module or ""), id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, id(node) in top) for a in node.names if a.name.startswith("charrnn")]
    return found


def layout_violations(root: Path = PACKAGE) -> list[str]:
    """One line per import that breaks the rules: "file:line: import X — why"."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        package = rel.split("/")[0] if "/" in rel else None
        for line, module, top_level in charrnn_imports(path):
            where = f"charrnn/{rel}:{line}: import {module}"
            if module.startswith("."):
                out.append(f"{where} — write imports absolute (charrnn.<package>....)")
                continue
            target = module.split(".")[1] if module.count(".") else ""
            if module == "charrnn.tasks":
                if rel == "tasks.py":
                    out.append(f"{where} — the task table imports no charrnn module")
                continue
            if rel == "tasks.py":
                out.append(f"{where} — the task table imports no charrnn module")
            elif package == "cli":
                if top_level and not module.startswith(CLI_TOP_LEVEL) and not module.endswith(".config"):
                    out.append(f"{where} — the command line imports this lazily, inside the command")
            elif package in ALLOWED and target != package and target not in ALLOWED[package] \
                    and (rel, target) not in EXCEPTIONS:
                allowed = ", ".join(sorted(ALLOWED[package])) or "no other charrnn package"
                out.append(f"{where} — {package} may import {allowed}; move what both need down into core "
                           "(or vision)")
    return out


def test_every_package_has_its_rules():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages - {"cli"} == set(ALLOWED), "give a new package its import rules in ALLOWED"


def test_imports_run_one_way():
    violations = layout_violations()
    assert not violations, "\n".join(violations)


def test_no_module_imports_a_private_name_of_another():
    """What two modules share is public: a `_name` stays inside the module that defines it."""
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charrnn"):
                private += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert not private, "\n".join(private)


def test_the_rule_catches_a_sideways_import(tmp_path):
    """The check itself: a caption module importing ctc, a core module importing lm, and a cli module
    importing a task at start-up are each reported with their file and line."""
    for rel, text in {"caption/x.py": "import os\nfrom charrnn.ctc.data import read_lines\n",
                      "core/y.py": "def f():\n    from charrnn.lm.model import CharRNN\n",
                      "cli/z.py": "from charrnn.lm.task import train\n",
                      "ctc/decode.py": "from charrnn.lm.model import load_model\n",
                      "ctc/task.py": "from charrnn.lm.model import load_model\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert [v.split(" — ")[0] for v in layout_violations(tmp_path)] == [
        "charrnn/caption/x.py:2: import charrnn.ctc.data",
        "charrnn/cli/z.py:1: import charrnn.lm.task",
        "charrnn/core/y.py:2: import charrnn.lm.model",
        "charrnn/ctc/task.py:1: import charrnn.lm.model",
    ]


def test_every_package_is_installed():
    """setuptools finds charrnn's packages (corpora/ and checkpoints/ beside it are left out): every directory
    of Python modules is a package, so none is left out of an install."""
    find_packages = pytest.importorskip("setuptools").find_packages  # a venv of Python 3.12+ may lack it

    found = set(find_packages(str(PACKAGE.parent), include=["charrnn", "charrnn.*"]))
    with_modules = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("*.py")}
    assert with_modules <= found, f"add an __init__.py to {sorted(with_modules - found)}"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_row_names_what_exists(name):
    row = TASKS[name]
    config = run_config_class(name)
    assert task_of_config(config) is row
    task = importlib.import_module(f"{row.package}.task")
    for function in ("build", "train", "resume_config"):
        assert callable(getattr(task, function)), f"{row.package}.task has no {function}"
    cli = importlib.import_module(f"charrnn.cli.{name}")
    assert cli.app.registered_commands, f"charrnn/cli/{name}.py has no commands"
    if row.shipped is not None:
        assert (PACKAGE / "pretrained" / row.shipped).is_file()
