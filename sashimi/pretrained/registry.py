"""Every file behind a pretrained name, with its hash: one registry.

- Bundled models (:data:`BUNDLED_MODELS`): trained by this project, shipped inside the package, so
  they load offline. Each is a model folder (config.json + model.safetensors + README.md, no
  pickle; see :mod:`sashimi.persistence.folder`) written by ``sashimi export --format folder``. The
  SHA-256 of each file that loading reads is listed here and checked at every load (a changed or
  truncated file is refused, never used). Their provenance names the data they were trained on
  and its license.
- Bundled classifiers (:data:`BUNDLED_CLASSIFIERS`): the sample-quality classifiers of
  :mod:`sashimi.eval`, the same way.
- Published checkpoints (:data:`AR_SC09_URL`, :data:`DIFFWAVE_SC09_URLS`, and the SaShiMi authors'
  own release :data:`AUTHORS_AR_URLS`): downloaded once, into a cache folder per URL.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BundledModel", "BUNDLED_MODELS", "BUNDLED_CLASSIFIERS", "bundled_model_path", "bundled_classifier_folder",
           "FSDD_CREDIT", "AR_SC09_URL", "DIFFWAVE_SC09_URLS", "WEIGHTS_DIR", "CLASSIFIER_WEIGHTS_DIR",
           "DOWNLOADED_CLASSIFIERS",
           "AUTHORS_RELEASE", "AUTHORS_AR_URLS", "AUTHORS_AR_SHA256", "AUTHORS_DIFFWAVE_URLS",
           "AUTHORS_DIFFWAVE_SHA256", "published_downloads"]

WEIGHTS_DIR = Path(__file__).resolve().parent
CLASSIFIER_WEIGHTS_DIR = WEIGHTS_DIR.parent / "eval" / "weights"

#: The published autoregressive SC09 checkpoint (RF5/simple-sashimi v1.0, 1.1M steps, 4.8M params).
AR_SC09_URL = "https://github.com/RF5/simple-sashimi/releases/download/v1.0/ckpt_01100000.pt"
#: The published DiffWave+SaShiMi SC09 checkpoints (RF5/DiffWave-unconditional v0.2, 23.5M params),
#: by training steps.
DIFFWAVE_SC09_URLS = {
    "800k": "https://github.com/RF5/DiffWave-unconditional/releases/download/v0.2/sashimi_sc09_800k_steps.pt",
    "500k": "https://github.com/RF5/DiffWave-unconditional/releases/download/v0.2/sashimi_sc09_500k_steps.pt",
}

#: The SaShiMi authors' release on the Hugging Face Hub (Goel, Gu, Donahue, Re; files for state-spaces/s4).
AUTHORS_RELEASE = "krandiash/sashimi-release"
_HUB_FILE = "https://huggingface.co/" + AUTHORS_RELEASE + "/resolve/main/checkpoints/{}"
#: Their autoregressive checkpoints, by (dataset, layout): the Feb-2022 release behind the paper's tables
#: (sashimi.persistence.authors: 'feb2022') and the same models converted for their V4 code ('v4').
AUTHORS_AR_URLS = {
    ("youtubemix", "feb2022"): _HUB_FILE.format("sashimi_youtubemix.pt"),
    ("youtubemix", "v4"): _HUB_FILE.format("sashimi_youtubemix_v4.pt"),
    ("sc09", "feb2022"): _HUB_FILE.format("sashimi_sc09.pt"),
}
#: Their SHA-256 where known. The Hub shows each LFS file's SHA-256 on its page, but this project's
#: machines cannot reach the Hub and no copy of the digests was found (searched: public code, pages and
#: issues): None, so these files are not hash-checked yet. Fill them in (64 hex digits) from the files'
#: Hub pages; a cached file is then checked at every load.
AUTHORS_AR_SHA256: dict = {key: None for key in AUTHORS_AR_URLS}

_DIFFWAVE_FILE = "https://github.com/albertfgu/diffwave-sashimi/raw/master/exp/{}/checkpoint/{}.pkl"
#: The authors' DiffWave+SaShiMi SC09 checkpoints (albertfgu/diffwave-sashimi, Git LFS), by variant of
#: ``sashimi_diffwave_sc09``: d_model 128 at 800k and 500k steps, and the small d_model 64 model.
AUTHORS_DIFFWAVE_URLS = {
    "paper-800k": _DIFFWAVE_FILE.format("unet_d128_n6_pool_2_expand2_ff2_T200_betaT0.02_uncond", 800000),
    "paper-500k": _DIFFWAVE_FILE.format("unet_d128_n6_pool_2_expand2_ff2_T200_betaT0.02_uncond", 500000),
    "paper-small": _DIFFWAVE_FILE.format("unet_d64_n6_pool_2_expand2_ff2_T200_betaT0.02_uncond", 500000),
}
#: Their SHA-256, as published in the repository's Git LFS pointers (commit d35c153).
AUTHORS_DIFFWAVE_SHA256 = {
    "paper-800k": "53f80d98662d5bb0fe3c3984a6df94680bb7de4378a43bd0a4c0600e2fd42fcd",
    "paper-500k": "21fea30b3bbfdbb88f9c517d2ff3dccdffaecc5fac86151cf1ff550221ca1726",
    "paper-small": "f00d7a56fa7b81fd3bf8c7d5d1f91bed49679afbdb31d26b5069decc40191f6a",
}

FSDD_CREDIT = ("Trained on the Free Spoken Digit Dataset (FSDD; Zohar Jackson et al., "
               "https://github.com/Jakobovski/free-spoken-digit-dataset), licensed CC BY-SA 4.0 "
               "(https://creativecommons.org/licenses/by-sa/4.0/).")


@dataclass(frozen=True)
class BundledModel:
    """A model folder shipped in this package.

    Attributes:
        name: the name ``load_model`` and torch.hub know it by.
        folder: its model folder's name here.
        files: the SHA-256 (hex) of each file of the folder that loading reads.
        summary: one line: what it is and how it was trained.
    """

    name: str
    folder: str
    files: dict
    summary: str


BUNDLED_MODELS: dict[str, BundledModel] = {m.name: m for m in (
    BundledModel(
        name="sashimi_ar_fsdd",
        # version 4: the digit in every block, words that start at once: recipes/fsdd_ar_v4.yaml (version 3
        # fine-tuned in stages), the last stage's steps 1,800-2,000 averaged by sashimi export --format folder
        # --credit fsdd --sampling temperature=1.0,nucleus_p=1.0,top_k=0
        folder="sashimi_ar_fsdd",
        files={"config.json": "b3398b7a94e6e01d802c01dab333b20b2ae853032dc25a191ecb2f6da3bcd1fd",
               "model.safetensors": "88d554799c2934430f645c407beb2c5df1791d9ea14ec4c606df173bf9b39be5"},
        summary="class-conditional autoregressive SaShiMi (d_model 32, 4 layers per tier, 745k parameters, the "
                "digit in every block) on 8 kHz FSDD digits: recipes/fsdd_ar_v4.yaml; 64.8% of digits heard as "
                "asked (see README.md here)",
    ),
)}

#: bundled classifiers: name -> (model folder in sashimi/eval/weights/, {file: its SHA-256})
BUNDLED_CLASSIFIERS: dict[str, tuple[str, dict[str, str]]] = {
    # DigitCNN (24, 48, 96), 163k parameters, trained on FSDD (CC BY-SA 4.0) takes 10-49, selected on takes 5-9;
    # test (takes 0-4) accuracy 100% clean and with random gain and shift (see sashimi/eval/weights/README.md).
    # sashimi export fsdd_digits-ca56bedc.pt --format folder --credit fsdd (the .pt file this replaces, sha256
    # ca56bedc55100938af0152b2d8b06540c03def869141fa769722f05506582425: the same tensors, bit for bit)
    "fsdd": ("fsdd_digits", {
        "config.json": "dd08b2d613387bf59091ea6b50bb73412cb86b055606fd51d876bb3b7d9afe9f",
        "model.safetensors": "9447d8b09689c6c9af45ed68ab30ecb5270f754e88e577f8e851f8965b6ab195",
    }),
}


#: published classifiers, downloaded once: name -> (URL, SHA-256 or None where it is not known here).
#: sc09_resnext: the SaShiMi authors' SC09 evaluation classifier (ResNeXt-29 8x64d, 34.4M parameters, 138 MB,
#: a pickled DataParallel module; read by sashimi.eval.sc09_resnext without running pickled code), at the
#: release's Feb-2022 commit 86a6adc (the file was added in ed94453, "Add SC09 ResNeXt classifier.", Feb 21,
#: 2022), so that the URL always gives the file behind the paper. Its SHA-256 is not listed: the Hub shows it
#: on the file's page, but it could not be looked up when this entry was written (no network); until it is
#: filled in, the pinned commit is what fixes the file.
DOWNLOADED_CLASSIFIERS: dict[str, tuple[str, str | None]] = {
    "sc09_resnext": ("https://huggingface.co/krandiash/sashimi-release/resolve/86a6adc0daa2692a37cc829e2bfa8fb8a4122bd9/"
                     "sc09_classifier/resnext.pth", None),
}


def _verified_folder(folder: Path, files: dict, what: str) -> Path:
    from ..persistence.download import verified_file

    for file_name, digest in files.items():
        verified_file(folder / file_name, digest, what)
    return folder


def bundled_model_path(name: str) -> Path:
    """The verified model folder of bundled model ``name`` (each listed file's SHA-256 checked).

    Raises:
        ValueError: unknown name (the known ones are listed), or a file whose SHA-256 differs
            from the listed one (changed or damaged: never used).
        FileNotFoundError: a file is missing (a broken installation).
    """
    if name not in BUNDLED_MODELS:
        raise ValueError(f"no bundled model {name!r}; bundled: {sorted(BUNDLED_MODELS)}")
    entry = BUNDLED_MODELS[name]
    return _verified_folder(WEIGHTS_DIR / entry.folder, entry.files, f"bundled model {name!r}")


def bundled_classifier_folder(name: str) -> Path:
    """The verified model folder of bundled classifier ``name`` (errors as :func:`bundled_model_path`)."""
    if name not in BUNDLED_CLASSIFIERS:
        raise ValueError(f"no bundled classifier {name!r}; bundled: {sorted(BUNDLED_CLASSIFIERS)}")
    folder, files = BUNDLED_CLASSIFIERS[name]
    return _verified_folder(CLASSIFIER_WEIGHTS_DIR / folder, files, f"bundled classifier {name!r}")


def published_downloads() -> list[tuple[str, str]]:
    """(pretrained name and variant, URL) of every downloaded (not bundled) file, for ``sashimi doctor``."""
    rows = [("sashimi_ar_sc09", AR_SC09_URL)]
    rows += [(f"sashimi_diffwave_sc09 ({k})", u) for k, u in DIFFWAVE_SC09_URLS.items()]
    names = {"youtubemix": "sashimi_ar_youtubemix", "sc09": "sashimi_ar_sc09"}
    rows += [(f"{names[data]} ({'paper' if data == 'sc09' else layout})", url)
             for (data, layout), url in AUTHORS_AR_URLS.items()]
    rows += [(f"sashimi_diffwave_sc09 ({k})", u) for k, u in AUTHORS_DIFFWAVE_URLS.items()]
    return rows
