"""The library's error types: what a caller (and the command line) can tell apart from a bug.

Every error the library raises on purpose, because an input, a file or a setting is unusable,
derives from :class:`SashimiError`. The command line prints those as one line (exit status 2) and
shows anything else as the bug it is, with its traceback. Each also derives from the built-in type
the public API documented before these classes existed (``ValueError``), so code that catches
that keeps working.

A leaf module: it imports nothing from the package, so any module may use it.
"""
from __future__ import annotations

__all__ = ["SashimiError", "InputError", "CheckpointError", "AudioError", "ConfigError", "OutputError"]


class SashimiError(Exception):
    """Base of the errors the library raises on purpose (never a bug in the library)."""


class InputError(SashimiError, ValueError):
    """An argument, or data passed in, that the library cannot use (the message says why)."""


class CheckpointError(SashimiError, ValueError):
    """A file that is not a usable checkpoint, or one that does not fit its model."""


class AudioError(SashimiError, ValueError):
    """A file that cannot be used as audio: unreadable, empty, multi-channel or at the wrong rate."""


class ConfigError(SashimiError, ValueError):
    """An unknown key, a value of the wrong type, or an invalid combination of settings."""


class OutputError(SashimiError, OSError):
    """An output location that cannot be claimed: the file exists, another run is writing it, or it
    cannot be written (see :mod:`sashimi.persistence.outputs`)."""
