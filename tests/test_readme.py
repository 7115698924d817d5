"""The README's Python snippets run as written.

Every ```python block of README.md (indented ones too) is one test, run in an empty directory where
`corpora/` is the project's, as a reader who copies it would run it from the project root. Line numbers in
a traceback are README.md's. A block that needs something this machine lacks fails: nothing is skipped.
"""

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)


def readme_snippets() -> list:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    params = []
    for m in FENCE.finditer(text):
        first = text.count("\n", 0, m.start(2)) + 1  # README line of the block's first line of code
        params.append(pytest.param(first, textwrap.dedent(m[2]), id=f"README.md:{first}"))
    return params


SNIPPETS = readme_snippets()


def test_the_readme_has_its_snippets():
    # The API section shows train, sample, dump, caption and ctc; an edit of the fences must not hide them.
    code = "\n".join(p.values[1] for p in SNIPPETS)
    for call in ("train(", "sample(", "dump_activations(", "describe_images(", "decode_files(", "render_html("):
        assert call in code, call


@pytest.mark.parametrize(("first_line", "code"), SNIPPETS)
def test_snippet_runs(first_line, code, tmp_path, monkeypatch):
    (tmp_path / "corpora").symlink_to(ROOT / "corpora")
    monkeypatch.chdir(tmp_path)
    source = "\n" * (first_line - 1) + code  # so a traceback names the README's own line
    exec(compile(source, str(ROOT / "README.md"), "exec"), {"__name__": "__readme__"})  # noqa: S102 (our own README)
