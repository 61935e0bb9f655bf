"""Moved to :mod:`sashimi.train.checkpoint`; this name keeps older imports working (it is that module)."""
import sys

from .train import checkpoint as _module

sys.modules[__name__] = _module
