"""The ``README.md`` model card of a model folder, written from its ``config.json``.

The card starts with the YAML block the Hugging Face Hub reads (library, license, tags), then says
what the model is, how to load it, what the files are, its config, the data credit and where the
weights came from. It is derived data: :func:`model_card` rebuilds it from config.json at any time
(``sashimi push`` does, to name the target repository).
"""
from __future__ import annotations

import json

__all__ = ["model_card", "DISTRIBUTION"]

#: the name this library is installed by (its import name and command are ``sashimi``)
DISTRIBUTION = "sashimi-audio"

_WHAT = {
    "ar": "An autoregressive SaShiMi (S4) model of 8-bit mu-law audio",
    "diffwave": "DiffWave with a SaShiMi (S4) backbone: a diffusion model of raw audio",
    "classifier": "An audio classifier (for sample-quality metrics: FID, IS, mIS, AM)",
}
_TAGS = {"ar": ["audio", "audio-generation", "sashimi", "s4"], "diffwave": ["audio", "audio-generation", "diffusion",
         "sashimi", "s4"], "classifier": ["audio", "audio-classification", "sashimi"]}
# provenance entries shown elsewhere on the card (or as a block below the table)
_NOT_IN_TABLE = {"credit", "license", "cfg_yaml"}


def model_card(blob: dict, *, n_params: int, name: str, repo: str | None = None) -> str:
    """A model card (Markdown) for a folder's config.json.

    Args:
        blob: the config.json contents (see :mod:`sashimi.persistence.folder`).
        n_params: the model's parameter count.
        name: the title (the folder's or repository's name).
        repo: ``owner/name`` on the Hub, for the loading example (None: the folder's path).

    Returns:
        the card's text.
    """
    kind, config, prov = blob["kind"], blob["config"], blob.get("provenance", {})
    front = ["---", "library_name: sashimi"]
    if prov.get("license"):
        front.append(f"license: {prov['license']}")
    front += ["tags:"] + [f"- {t}" for t in _TAGS.get(kind, ["audio", "sashimi"])] + ["---", ""]
    rate = config.get("sample_rate") or config.get("data_rate")
    what = _WHAT.get(kind, f"A sashimi model of kind {kind!r}")
    lines = front + [f"# {name}", "", f"{what}: {n_params:,} parameters" + (f", {rate:,} Hz audio." if rate else "."),
                     f"Saved by {prov.get('saved_by', 'sashimi')} on {prov.get('created', 'an unknown date')}.", ""]
    lines += ["## Use", "", "```bash", f'pip install "{DISTRIBUTION}[hub]"', "```", "", "```python"]
    source = f'"hf://{repo}"' if repo else '"path/to/this/folder"'
    if kind == "classifier":
        lines += ["from sashimi.eval import load_classifier", "",
                  f"clf = load_classifier({source})",
                  f"probs, features = clf.predict(wavs, {rate or 16000})   # wavs (N, L) float -> (N, C), (N, D)"]
    else:
        lines += ["import sashimi", "", f"model = sashimi.load_model({source})"]
        if kind in ("ar", "diffwave"):
            lines.append("wav = model.unconditional_generate(4)   # (4, L) float in [-1, 1]")
        names = blob.get("class_names")
        if kind in ("ar", "diffwave") and names:
            lines.append(f"wav = model.conditional_generate([{names[-1]!r}] * 4)   # four of class {names[-1]!r}")
    lines += ["```", ""]
    if not repo:
        loader = "sashimi.eval.load_classifier" if kind == "classifier" else "sashimi.load_model"
        lines += ['Once uploaded (`sashimi push path/to/this/folder hf://owner/name`), '
                  f'load it with `{loader}("hf://owner/name")`.', ""]
    digest = blob["sha256"]["model.safetensors"]
    lines += ["## Files", "", "| file | contents |", "|---|---|",
              "| `config.json` | the model kind, its config, class names and provenance (JSON) |",
              f"| `model.safetensors` | the weights (safetensors, no pickle), SHA-256 `{digest}` |",
              "| `README.md` | this card |", ""]
    lines += ["## Config", "", f"kind `{kind}`", "", "| key | value |", "|---|---|"]
    lines += [f"| `{k}` | `{json.dumps(v)}` |" for k, v in config.items()]
    if blob.get("class_names"):
        lines += ["", "Classes: " + ", ".join(f"`{c}`" for c in blob["class_names"]) + "."]
    lines.append("")
    if prov.get("credit") or prov.get("license"):
        lines += ["## Data and license", ""]
        if prov.get("credit"):
            lines += [str(prov["credit"]), ""]
        if prov.get("license"):
            lines += [f"License of these weights: `{prov['license']}`.", ""]
    rows = [(k, v) for k, v in prov.items() if k not in _NOT_IN_TABLE]
    if rows:
        lines += ["## Provenance", "", "| key | value |", "|---|---|"]
        lines += [f"| `{k}` | {_cell(v)} |" for k, v in rows]
        lines.append("")
    if prov.get("cfg_yaml"):
        lines += ["Training config:", "", "```yaml", str(prov["cfg_yaml"]).rstrip(), "```", ""]
    return "\n".join(lines)


def _cell(value) -> str:
    """A table cell: short values as code, lists of records one per line."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "<br>".join(", ".join(f"{k} {v}" for k, v in item.items()) for item in value)
    text = (value if isinstance(value, str) else json.dumps(value)).replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if len(text) < 80 else text
