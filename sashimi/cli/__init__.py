"""Command-line commands; see sashimi/__main__.py.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and raises
:class:`CLIError` for user errors (printed as one line; exit status 2; nothing written).
"""


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""
