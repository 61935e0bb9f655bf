"""Every pretrained name: bundled and published models, the bundled classifiers' weights.

- :mod:`~sashimi.pretrained.registry`: one table of files and hashes (bundled models and
  classifiers, the published checkpoints' URLs);
- :mod:`~sashimi.pretrained.factories`: ``sashimi_ar_fsdd``, ``sashimi_ar_sc09``,
  ``sashimi_ar_youtubemix``, ``sashimi_diffwave_sc09`` (what ``hubconf.py`` re-exports) and :func:`load_model`, which sends a
  name here and anything else to :mod:`sashimi.persistence`;
- :mod:`~sashimi.pretrained.export`: training checkpoints -> small hash-named files to ship.
"""
from .factories import (PRETRAINED_NAMES, load_bundled_model, load_model, load_pretrained, sashimi_ar_fsdd,
                        sashimi_ar_sc09, sashimi_ar_youtubemix, sashimi_diffwave_sc09)
from .registry import (AR_SC09_URL, AUTHORS_AR_URLS, BUNDLED_CLASSIFIERS, BUNDLED_MODELS, DIFFWAVE_SC09_URLS, FSDD_CREDIT, BundledModel,
                       bundled_classifier_folder, bundled_model_path)

__all__ = ["AR_SC09_URL", "AUTHORS_AR_URLS", "BUNDLED_CLASSIFIERS", "BUNDLED_MODELS", "BundledModel", "DIFFWAVE_SC09_URLS", "FSDD_CREDIT",
           "PRETRAINED_NAMES", "bundled_classifier_folder", "bundled_model_path", "load_bundled_model", "load_model",
           "load_pretrained", "sashimi_ar_fsdd", "sashimi_ar_sc09", "sashimi_ar_youtubemix",
           "sashimi_diffwave_sc09"]
