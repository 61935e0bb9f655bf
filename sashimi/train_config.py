"""Moved to :mod:`sashimi.train.config`; this name keeps older imports working (it is that module)."""
import sys

from .train import config as _module

sys.modules[__name__] = _module
