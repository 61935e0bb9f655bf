"""Persistence: how models become files and files become models. Above the models, below every name.

- :mod:`~sashimi.persistence.download`: URLs into a cache keyed by the whole URL, SHA-256 checks;
- :mod:`~sashimi.persistence.checkpoint`: safe reading (``weights_only``), atomic writing, strict
  loading, the native ``.pt`` format and its static table of model kinds;
- :mod:`~sashimi.persistence.published`: the published SC09 formats (simple-sashimi, DiffWave-unconditional);
- :mod:`~sashimi.persistence.pickled_modules`: pickled whole modules (``torch.save(model)``) read without
  running their code: only admitted classes, tensors rebuilt from the archive;
- :mod:`~sashimi.persistence.folder`: the folder format (``config.json`` + ``model.safetensors`` + a
  ``README.md`` model card, :mod:`~sashimi.persistence.card`), which holds no pickle;
- :mod:`~sashimi.persistence.hf`: such folders on the Hugging Face Hub (``hf://owner/name[@revision]``);
- :mod:`~sashimi.persistence.loader`: :func:`load_model_file`, one entry for every format.
"""
from .checkpoint import CheckpointError, save_model
from .folder import save_pretrained
from .loader import load_model_file

__all__ = ["CheckpointError", "load_model_file", "save_model", "save_pretrained"]
