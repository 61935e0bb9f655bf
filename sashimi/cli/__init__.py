"""Command-line commands; see sashimi/__main__.py.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and raises
:class:`CLIError` for user errors (printed as one line; exit status 2; nothing written). The
library's own errors (:class:`sashimi.SashimiError`) are printed the same way; any other exception
is a bug, shown with its traceback and a request to report it at :data:`ISSUE_TRACKER`.
"""

#: Where bugs are reported: the issues of the repository this copy of sashimi came from.
ISSUE_TRACKER = "the project's issue tracker (the Issues page of the sashimi repository on GitHub)"


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``timeout``, ``docker stop``, Slurm): raised in the main thread so that a
    command cleans up exactly as after Ctrl-C (its claims on output files are released and the
    folders it created removed); the command line then exits with status 143."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
