"""Moved to :mod:`sashimi.train.split`; this name keeps older imports working (it is that module)."""
import sys

from .train import split as _module

sys.modules[__name__] = _module
