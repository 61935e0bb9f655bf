"""Persistence: how models become files and files become models.

- :mod:`sashimi.persistence.folder`: the folder format (``config.json`` + ``model.safetensors`` +
  a ``README.md`` model card), which holds no pickle: :func:`~sashimi.persistence.folder.save_pretrained`
  and :func:`~sashimi.persistence.folder.load_folder`.
- :mod:`sashimi.persistence.hf`: such folders on the Hugging Face Hub (``hf://owner/name[@revision]``).

The native ``.pt`` format and the published-format converters are in :mod:`sashimi.checkpoint`.
"""
