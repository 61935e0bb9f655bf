"""Moved to :mod:`sashimi.train.log`; this name keeps older imports working (it is that module)."""
import sys

from .train import log as _module

sys.modules[__name__] = _module
