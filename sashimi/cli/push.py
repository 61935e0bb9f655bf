"""``sashimi push``: upload a model to the Hugging Face Hub as a model folder.

    sashimi push my_model/ hf://me/my-model --dry-run        # what would be uploaded: no network, no token
    sashimi push runs/fsdd/ckpt_00004000.pt hf://me/fsdd-ar  # a checkpoint: converted to a folder first
    sashimi push sashimi_ar_fsdd hf://me/sashimi-fsdd --private
    sashimi push my_model/ hf://me/my-model@v2               # to branch v2 (created if missing)

MODEL is anything ``sashimi.load_model`` accepts, or a classifier: a model folder (uploaded as it
is, once it has loaded without error), a bundled or published name, an ``hf://`` model, a
checkpoint file or URL (converted to a folder in a temporary directory first; a file's provenance
is kept, as by ``sashimi export --format folder``). The upload is one commit of config.json,
model.safetensors and a README.md model card written for the target repository (``--card FILE``
uploads yours instead). It needs ``huggingface_hub`` (``pip install "sashimi-audio[hub]"``), the
network and a token with write access (``hf auth login``, or ``HF_TOKEN``); ``--dry-run`` needs none
of them and prints the same plan.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from sashimi.cli import CLIError
from sashimi.cli.common import one_line_errors, plain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", metavar="MODEL", help="model folder, checkpoint, pretrained name, URL or hf://...")
    parser.add_argument("target", metavar="hf://OWNER/NAME[@BRANCH]", help="the Hub repository (and branch)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    parser.add_argument("--private", action="store_true", help="create the repository private (an existing one "
                                                               "keeps its visibility)")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing; default: main)")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--card", default=None, metavar="FILE", help="upload FILE as README.md instead of the "
                                                                      "generated model card")


def run(args) -> int:
    from sashimi.persistence.checkpoint import CheckpointError
    from sashimi.persistence.hf import HubDependencyError, parse_hf_uri, push_folder

    try:
        repo_id, at = parse_hf_uri(args.target)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if at and args.revision and at != args.revision:
        raise CLIError(f"{args.target} names branch {at!r} but --revision is {args.revision!r}")
    revision = args.revision or at
    if args.card is not None and not os.path.isfile(args.card):
        raise CLIError(f"--card {args.card}: no such file")
    with tempfile.TemporaryDirectory(prefix="sashimi-push-") as tmp:
        try:
            source = as_folder(args.model, tmp)
            staged = stage(source, Path(tmp) / "upload" / repo_id.split("/")[1], repo_id, args.card)
        except (CheckpointError, ValueError, OSError, HubDependencyError) as e:
            raise CLIError(f"{args.model}: {str(e).strip().splitlines()[0]}") from None
        files = [(f, os.path.getsize(staged / f)) for f in sorted(os.listdir(staged))]
        width = max(len(f) for f, _ in files)
        print(f"target: hf://{repo_id} (branch {revision or 'main'}; a missing repository is created "
              f"{'private' if args.private else 'public'})")
        for f, size in files:
            print(f"  {f:<{width}}  {size:>12,} bytes")
        origin = f"{args.model}, converted to a folder" if str(source).startswith(tmp) else str(source)
        print(f"  {len(files)} files, {sum(s for _, s in files):,} bytes, from {origin}")
        if args.dry_run:
            print("dry run: nothing was uploaded (no network, no token used)")
            return 0
        try:
            url = push_folder(staged, f"hf://{repo_id}", private=args.private, revision=revision, message=args.message)
        except HubDependencyError as e:
            raise CLIError(str(e)) from None
        except Exception as e:  # huggingface_hub's HTTP, token and network errors: one line, what it said
            raise CLIError(f"upload to hf://{repo_id} failed: {type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    print(f"uploaded: {url}")
    return 0


def as_folder(spec: str, tmp: str) -> Path:
    """The model folder to upload for ``spec``: an existing one, or one written under ``tmp``."""
    from sashimi.persistence.folder import is_model_folder, save_pretrained
    from sashimi.pretrained import (BUNDLED_CLASSIFIERS, BUNDLED_MODELS, bundled_classifier_folder, bundled_model_path,
                                    load_model)

    if spec.startswith("hf://"):
        from sashimi.persistence.hf import hf_folder

        return hf_folder(spec)
    if spec in BUNDLED_MODELS and not os.path.exists(spec):
        return bundled_model_path(spec)
    if spec in BUNDLED_CLASSIFIERS and not os.path.exists(spec):
        return bundled_classifier_folder(spec)
    if is_model_folder(spec):
        return Path(spec)
    if os.path.isfile(spec):  # a checkpoint or classifier file: converted with its provenance
        from sashimi.cli.export import export

        return Path(export([spec], tmp, "model", format="folder"))
    model = load_model(spec)  # a published name or a URL; load_model explains anything else
    return save_pretrained(model, Path(tmp) / "model", provenance={"source": spec})


def stage(folder: Path, out: Path, repo_id: str, card: str | None) -> Path:
    """Check that ``folder`` loads, then copy its config.json and weights to ``out`` with a card for ``repo_id``."""
    from sashimi.persistence.card import model_card
    from sashimi.persistence.folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_folder, read_config

    import torch.nn as nn

    if read_config(folder)["kind"] == "classifier":  # built above the persistence layer: its own loader
        from sashimi.eval import load_classifier

        obj = load_classifier(folder)
    else:
        obj = load_folder(folder)  # any model kind; malformed folders are refused here, not on the Hub
    module = obj if isinstance(obj, nn.Module) else obj.model  # a classifier wraps its network
    out.mkdir(parents=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(folder / name, out / name)
    if card is not None:
        shutil.copyfile(card, out / CARD_FILE)
    else:
        n_params = sum(p.numel() for p in module.parameters())
        text = model_card(read_config(folder), n_params=n_params, name=repo_id.split("/")[1], repo=repo_id)
        (out / CARD_FILE).write_text(text, encoding="utf-8")
    return out
