"""Moved to :mod:`sashimi.train.tasks`; this name keeps older imports working (it is that module)."""
import sys

from .train import tasks as _module

sys.modules[__name__] = _module
