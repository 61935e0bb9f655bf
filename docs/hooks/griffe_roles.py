"""griffe extension: Sphinx roles in the docstrings (``:class:`~sashimi.ar.SashimiAR```) as code.

The library's docstrings use Sphinx roles; Markdown would show them raw. They become inline code
(``SashimiAR`` for ``~``-prefixed targets, the full target otherwise), and ``#:`` comments above a
module attribute become its docstring, as Sphinx reads them.
"""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")


def _code(m: re.Match) -> str:
    tilde, target = m.group(1), m.group(2)
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is None and obj.is_attribute and obj.lineno and obj.parent is not None:
            try:
                lines = obj.lines_collection[obj.filepath]
            except (KeyError, TypeError):
                lines = None
            comments = []
            i = obj.lineno - 2
            while lines and i >= 0 and lines[i].lstrip().startswith("#:"):
                comments.insert(0, lines[i].lstrip()[2:].strip())
                i -= 1
            if comments:
                obj.docstring = griffe.Docstring("\n".join(comments), parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
