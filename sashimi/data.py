"""Moved to :mod:`sashimi.train.data`; this name keeps older imports working (it is that module)."""
import sys

from .train import data as _module

sys.modules[__name__] = _module
