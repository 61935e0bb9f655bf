"""The documentation covers the public API and the command line (issue 28), without mkdocs installed.

Every name in ``sashimi.__all__`` needs a docstring of its own and an entry (``::: dotted.path``)
on a page of docs/reference/ that resolves to that very object; the CLI reference hook documents
every command; the README's test command is the one CI runs.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

import sashimi

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"


def resolve(path: str):
    """The object a mkdocstrings identifier names: the longest importable module, then attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def reference_entries() -> dict[str, str]:
    """``{identifier: page}`` for every ``::: identifier`` line of the reference pages."""
    entries = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for ident in re.findall(r"^:::\s*([\w.]+)\s*$", page.read_text(encoding="utf-8"), re.M):
            entries[ident] = page.name
    return entries


def attribute_docstring(module, name: str) -> str | None:
    """A module attribute's docstring, as mkdocstrings reads it: a string right after the
    assignment, or ``#:`` comment lines right above it (docs/hooks/griffe_roles.py)."""
    source = inspect.getsource(module)
    tree = ast.parse(source)
    lines = source.splitlines()
    for i, node in enumerate(tree.body):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
            continue
        after = tree.body[i + 1] if i + 1 < len(tree.body) else None
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            return after.value.value
        comments, j = [], node.lineno - 2
        while j >= 0 and lines[j].lstrip().startswith("#:"):
            comments.insert(0, lines[j].lstrip()[2:].strip())
            j -= 1
        return "\n".join(comments) or None
    return None


def own_docstring(name: str, obj, module) -> str | None:
    """The docstring written for ``obj`` itself: not inherited, not a dataclass's generated signature."""
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if doc and inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
            return None  # dataclasses write "Name(field: type = default, ...)" when there is none
        return doc.strip() if doc else None
    return attribute_docstring(module, name)


def missing(names, entries) -> list[str]:
    """The problems: names without a docstring, or without a reference entry that resolves to them."""
    resolved = {ident: resolve(ident) for ident in entries}
    problems = []
    for name in names:
        obj = getattr(sashimi, name)
        idents = [i for i in resolved if i.rsplit(".", 1)[-1] == name and resolved[i] is obj]
        if not idents:
            problems.append(f"{name}: no '::: sashimi.<module>.{name}' entry in docs/reference/*.md")
            continue
        module = importlib.import_module(idents[0].rsplit(".", 1)[0])
        if not own_docstring(name, obj, module):
            problems.append(f"{name}: no docstring")
    return problems


def test_every_public_name_has_a_docstring_and_a_reference_entry():
    assert missing(sashimi.__all__, reference_entries()) == []


def test_every_reference_entry_resolves():
    """A misspelt entry would fail the mkdocs build; this catches it without mkdocs."""
    for ident, page in reference_entries().items():
        resolve(ident)  # raises ImportError or AttributeError, naming it


def test_the_check_finds_an_undocumented_or_unlisted_name(monkeypatch):
    """The checks above can fail: a name without a docstring, and one without an entry."""
    entries = reference_entries()
    entries.pop("sashimi.mulaw.mulaw_encode")
    assert missing(["mulaw_encode"], entries) == [
        "mulaw_encode: no '::: sashimi.<module>.mulaw_encode' entry in docs/reference/*.md"]

    def undocumented(x):
        return x

    monkeypatch.setattr(importlib.import_module("sashimi.mulaw"), "mulaw_decode", undocumented)
    monkeypatch.setattr(sashimi, "mulaw_decode", undocumented, raising=False)
    assert missing(["mulaw_decode"], reference_entries()) == ["mulaw_decode: no docstring"]


def test_cli_reference_documents_every_command():
    """docs/hooks/cli_reference.py writes each command's --help from the parser the command uses."""
    from sashimi.__main__ import COMMANDS

    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = hook.on_page_markdown("# Command line\n\n" + hook.MARKER + "\n", page=None)
    assert hook.MARKER not in page
    for name in COMMANDS:
        assert f"\n## sashimi {name}\n" in page and f"usage: sashimi {name}" in page, name
    assert "### sashimi bench train" in page and "--preset" in page
    assert "--label" in page and "--guidance" in page  # flags of sashimi generate


@pytest.mark.parametrize("doc", ["README.md", "docs/index.md"])
def test_the_quick_start_runs_the_test_command_ci_runs(doc):
    """.ci/run runs the README's test command; the README and the site's home page give the same quick start."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(pip install torch.*?)```", (ROOT / doc).read_text(encoding="utf-8"), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands[-1] == "python -m pytest -q"
    assert "\npython -m pytest -q\n" in ci
    assert commands[:2] == ["pip install torch==2.13.0", 'pip install -e ".[test]"']


def test_the_training_curve_is_drawn_from_the_committed_log():
    """docs/images/training_curve.png comes from training_log.txt, a real run's stdout: the parser of
    benchmarks/docs_figures.py reads every summary and validation line of it."""
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "benchmarks" / "docs_figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    text = (ROOT / "docs" / "images" / "training_log.txt").read_text(encoding="utf-8")
    train, valid = figures.parse_log(text)
    assert len(train) == text.count("\nstep ") and len(valid) == text.count("\nvalidation at step ")
    assert train[0][0] == 1 and train[-1][0] == 300 and valid[-1] == (300, 1.8221)
    assert valid[-1][1] < valid[0][1]  # it learned
