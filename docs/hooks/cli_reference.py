"""mkdocs hook: the command-line reference, made at build time from the parsers the commands use.

``docs/cli.md`` holds the marker ``<!-- cli-reference -->``; this hook replaces it with the ``--help``
of ``sashimi`` and of every command (and sub-command, e.g. ``sashimi bench train``), so the page
cannot drift from the code: a new flag or command appears at the next build.
"""
from __future__ import annotations

import argparse
import os
import sys

MARKER = "<!-- cli-reference -->"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # argparse keeps its sub-commands in an action; there is no public accessor
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    return parser.format_help().rstrip()


def cli_reference() -> str:
    """Markdown: one section per command, its help text in a code block."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # document this checkout, not another installed copy
    from sashimi.__main__ import COMMANDS, command_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"  # argparse wraps at the terminal's width: make the page stable
    try:
        out = []
        for name, (_, summary) in COMMANDS.items():
            parser = command_parser(name)
            out += [f"## sashimi {name}", "", summary[0].upper() + summary[1:] + ".", "",
                    "```text", _help(parser), "```", ""]
            for sub, sub_parser in _subparsers(parser).items():
                out += [f"### sashimi {name} {sub}", "", "```text", _help(sub_parser), "```", ""]
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(out)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
