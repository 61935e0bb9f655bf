"""``sashimi export``: a training checkpoint as a small inference file named by its hash, or a model folder.

    sashimi export runs/fsdd_ar/ckpt_00004000.pt --out-dir . --name my_model --credit "my data, CC0"
    sashimi export runs/fsdd_ar/ckpt_0000{3000,3250,3500}.pt --out-dir . --name my_model   # averaged
    sashimi export runs/fsdd_ar/ckpt_00004000.pt --format folder --out-dir . --name my_model   # ./my_model/

Keeps the model's config and float32 weights and drops the optimiser and data-loader state (a
training checkpoint of the FSDD model is 4x larger). Several checkpoints of one run are averaged
(their floating-point weights: Polyak averaging, which smooths out the step-to-step noise of a
high learning rate). Records where the weights came from: the training step, the validation
metric, the training config (as YAML), each averaged file, and ``--credit``. The file is written
as ``<name>-<first 8 hex digits of its SHA-256>.pt`` (torch.hub's convention) and its full digest
printed, for a table of known digests. An existing file is never overwritten.

``--format folder`` writes the folder ``<out-dir>/<name>/`` instead: config.json (kind, config,
provenance), model.safetensors (no pickle) and a README.md model card, and prints each file's
SHA-256 (the bundled models are listed by these). It is what ``sashimi push`` uploads, and
``sashimi.load_model`` loads it. A classifier file (``sashimi train-classifier``) converts too.
"""
from __future__ import annotations

import argparse
import os

from sashimi.cli import CLIError
from sashimi.cli.common import one_line_errors, plain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="a training checkpoint or model folder (any format load_model reads); several are "
                             "averaged")
    parser.add_argument("--out-dir", required=True, help="folder to write the exported file into")
    parser.add_argument("--name", required=True, help="file name stem, or the folder's name (letters, digits, '_', '-')")
    parser.add_argument("--format", choices=("pt", "folder"), default="pt",
                        help="pt: one .pt file named by its hash (default); folder: config.json + model.safetensors + "
                             "README.md")
    parser.add_argument("--credit", default="",
                        help="data credit and license, stored in the file ('fsdd': the Free Spoken Digit Dataset's)")
    parser.add_argument("--sampling", default=None, metavar="KEY=VALUE[,...]",
                        help="autoregressive models: store default sampling settings chosen for this model, e.g. "
                             "temperature=0.9,top_k=100 (keys: temperature, top_k, nucleus_p); generation uses them "
                             "unless told otherwise")
    parser.add_argument("--license", default="",
                        help="license of the weights, e.g. cc-by-sa-4.0 (shown on a folder's model card; "
                             "--credit fsdd implies cc-by-sa-4.0)")


def run(args) -> int:
    from sashimi.persistence.download import sha256_file
    from sashimi.pretrained import FSDD_CREDIT

    from sashimi.persistence.folder import is_model_folder

    for path in args.checkpoints:
        if not os.path.isfile(path) and not is_model_folder(path):
            raise CLIError(f"{path}: no such file or model folder")
    if not os.path.isdir(args.out_dir):
        raise CLIError(f"--out-dir {args.out_dir}: no such directory")
    credit, license = (FSDD_CREDIT, args.license or FSDD_LICENSE) if args.credit == "fsdd" else (args.credit, args.license)
    sampling = None if args.sampling is None else parse_sampling(args.sampling)
    try:
        path = export(args.checkpoints, args.out_dir, args.name, credit, license, args.format, sampling)
    except (ValueError, FileExistsError) as e:
        raise CLIError(str(e).strip().splitlines()[0]) from None
    if args.format == "pt":
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
        print(f"sha256 {sha256_file(path)}")
        return 0
    files = sorted(os.listdir(path))
    print(f"wrote {path}/ ({', '.join(files)}; {sum(os.path.getsize(os.path.join(path, f)) for f in files):,} bytes)")
    for f in files:
        print(f"sha256 {sha256_file(os.path.join(path, f))}  {f}")
    return 0


#: the license identifier of weights trained on FSDD (CC BY-SA 4.0 data; see FSDD_CREDIT)
FSDD_LICENSE = "cc-by-sa-4.0"


def parse_sampling(text: str) -> dict:
    """``--sampling temperature=0.9,top_k=100`` as ``{"temperature": 0.9, "top_k": 100}`` (checked
    by the model's own check when exported)."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("temperature", "top_k", "nucleus_p"):
            raise CLIError(f"--sampling: expected KEY=VALUE items with keys temperature, top_k, nucleus_p; got {item!r}")
        try:
            out[key.strip()] = int(value) if key.strip() == "top_k" else float(value)
        except ValueError:
            raise CLIError(f"--sampling: {key.strip()} must be a number, got {value!r}") from None
    if not out:
        raise CLIError("--sampling: expected at least one KEY=VALUE item")
    return out


def export(checkpoints: list[str], out_dir: str, name: str, credit: str = "", license: str = "",
           format: str = "folder", sampling: dict | None = None) -> str:
    """Export ``checkpoints`` (see :func:`sashimi.pretrained.export.export_model`); a single classifier
    file (``sashimi train-classifier``) becomes a classifier folder.

    Returns:
        the path written.

    Raises:
        ValueError: unreadable or unlike checkpoints, or several classifier files.
        FileExistsError: the target exists (never overwritten).
    """
    from sashimi.pretrained.export import NAME_PATTERN, export_model

    if not NAME_PATTERN.match(name):
        raise ValueError(f"name {name!r}: expected letters, digits, '_', '.', '-'")
    if format == "folder" and any(_is_classifier_file(p) for p in checkpoints):
        if len(checkpoints) != 1:
            raise ValueError("classifier files are converted one at a time (they are not averaged)")
        return _export_classifier(checkpoints[0], out_dir, name, credit, license)
    return os.fspath(export_model(checkpoints, out_dir, name, credit=credit, format=format, license=license,
                                  sampling=sampling)[0])


def _is_classifier_file(path: str) -> bool:
    import torch

    from sashimi.eval.classifier import FORMAT_NAME

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not readable: export_model says so in its own words
        return False
    return isinstance(blob, dict) and blob.get("format") == FORMAT_NAME


def _export_classifier(path: str, out_dir: str, name: str, credit: str, license: str) -> str:
    from sashimi.eval import load_classifier
    from sashimi.persistence.folder import save_pretrained

    folder = os.path.join(out_dir, name)
    if os.path.exists(folder):
        raise FileExistsError(f"{folder} exists; not overwritten")
    classifier = load_classifier(path)
    provenance = {"source": os.path.basename(path)}
    if credit:
        provenance["credit"] = credit
    if license:
        provenance["license"] = license
    return os.fspath(save_pretrained(classifier, folder, provenance=provenance))
