"""Model folders on the Hugging Face Hub: ``hf://owner/name`` and ``hf://owner/name@revision``.

    model = sashimi.load_model("hf://owner/name")              # the default branch
    model = sashimi.load_model("hf://owner/name@v2")           # a branch or tag
    model = sashimi.load_model("hf://owner/name@<40 hex>")     # one commit, exactly
    model = sashimi.load_model("hf://owner/name/path/to/file.pt")      # one checkpoint file in a repository
    model = sashimi.load_model("hf://owner/name@rev/path/to/file.pt")  # ... at a revision

A single file (a path after owner/name, as the SaShiMi authors' release is files, not a model folder)
is fetched from its ``https://huggingface.co/owner/name/resolve/<revision>/<path>`` address into this
library's download cache (:mod:`sashimi.persistence.download`: no huggingface_hub needed).

A repository holds a model folder (``config.json``, ``model.safetensors``, ``README.md``; see
:mod:`sashimi.persistence.folder`), as ``sashimi push`` uploads it. The files are downloaded by
``huggingface_hub`` (optional: ``pip install "sashimi-audio[hub]"``, imported only here and only
when needed) into its usual cache, shared with other libraries: ``$HF_HUB_CACHE``, by default
``$HF_HOME/hub`` = ``~/.cache/huggingface/hub``, as ``models--owner--name/{blobs,snapshots,refs}``.
With ``HF_HUB_OFFLINE=1`` they are taken from that cache without asking the Hub. ``config.json`` is
fetched and checked first, so a repository of another library is refused before any weights are
downloaded, and the weights are then fetched at the commit that ``config.json`` came from.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError, SashimiError
from .checkpoint import CheckpointError
from .download import DownloadError
from .folder import CONFIG_FILE, FOLDER_FILES, WEIGHTS_FILE, read_config

__all__ = ["HubDependencyError", "is_hf_uri", "parse_hf_uri", "hf_folder", "hf_file_url", "push_folder", "PREFIX"]

PREFIX = "hf://"
# owner/name as the Hub allows them (letters, digits, '-', '_', '.'), then an optional @revision
_URI = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<rev>[^@\s]+))?$")


_FILE_URI = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<rev>[^@/\s]+))?"
                       r"/(?P<path>[^@\s]+[^/@\s])$")


def hf_file_url(uri: str) -> str | None:
    """The download address of a single file, ``hf://owner/name[@revision]/path/to/file`` ->
    ``https://huggingface.co/owner/name/resolve/<revision or main>/path/to/file``; None for a model
    folder (``hf://owner/name[@revision]``) or anything else."""
    m = _FILE_URI.match(uri) if isinstance(uri, str) else None
    # a file has a name with an extension (file.pt): 'hf://me/tiny/extra' stays a malformed model address
    if m is None or ".." in m.group("path").split("/") or "." not in m.group("path").rsplit("/", 1)[-1]:
        return None
    return f"https://huggingface.co/{m.group('repo')}/resolve/{m.group('rev') or 'main'}/{m.group('path')}"


class HubDependencyError(SashimiError, ImportError):
    """``huggingface_hub`` is needed (for an ``hf://`` model or an upload) but not installed."""


def is_hf_uri(source) -> bool:
    """Whether ``source`` is a string that starts with ``hf://``."""
    return isinstance(source, str) and source.startswith(PREFIX)


def parse_hf_uri(uri: str) -> tuple[str, str | None]:
    """``"hf://owner/name@rev"`` -> ``("owner/name", "rev")`` (revision None when not given).

    Raises:
        InputError (a ValueError): not of that form.
    """
    m = _URI.match(uri)
    if m is None:
        raise InputError(f"{uri!r} is not a Hub model: expected hf://owner/name or hf://owner/name@revision (a model "
                         "folder), or hf://owner/name[@revision]/path/to/file.pt (one checkpoint file)")
    return m.group("repo"), m.group("rev")


def _hub():
    """``huggingface_hub``, imported on first use, or a message saying how to install it."""
    try:
        import huggingface_hub
    except ImportError as e:
        raise HubDependencyError('hf:// models need the huggingface_hub package: pip install "sashimi-audio[hub]" '
                                 '(or pip install huggingface_hub)') from e
    return huggingface_hub


def hf_folder(uri: str) -> Path:
    """The local folder of Hub model ``uri``, downloaded into the Hugging Face cache if needed.

    Args:
        uri: ``hf://owner/name`` or ``hf://owner/name@revision`` (a branch, tag or commit hash).

    Returns:
        the snapshot folder (``.../models--owner--name/snapshots/<commit>``) holding config.json
        and model.safetensors; load it with :func:`sashimi.load_model`.

    Raises:
        ValueError: ``uri`` is not of that form.
        HubDependencyError: huggingface_hub is not installed.
        CheckpointError: the repository has no config.json, or one that is not a sashimi model's.
        DownloadError: no such repository or revision, the Hub could not be reached, or
            ``HF_HUB_OFFLINE`` is set and the files are not in the cache (the message says which).
    """
    repo_id, revision = parse_hf_uri(uri)
    config = _download(uri, repo_id, CONFIG_FILE, revision)
    folder = Path(config).parent
    read_config(folder)  # not ours: refused before the weights are downloaded
    _download(uri, repo_id, WEIGHTS_FILE, folder.name)  # at config.json's commit, even if the branch moved since
    return folder


def _download(uri: str, repo_id: str, filename: str, revision: str | None) -> str:
    """``hf_hub_download`` of one file, its failures turned into one-line errors that say what to do."""
    hub = _hub()
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    from ..version import __version__

    try:
        return hub.hf_hub_download(repo_id, filename, revision=revision, library_name="sashimi",
                                   library_version=__version__)
    except LocalEntryNotFoundError as e:  # not cached, and the Hub was not (or could not be) asked
        cached = hub.try_to_load_from_cache(repo_id, filename, revision=revision)
        if cached is not None and not isinstance(cached, str):  # the cache's marker: the repo lacks the file
            raise CheckpointError(_lacks(uri, filename)) from e
        if constants.HF_HUB_OFFLINE:
            raise DownloadError(f"{uri}: {filename} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                                "and HF_HUB_OFFLINE is set, so the Hub was not asked: download it once online "
                                "(HF_HUB_OFFLINE unset), or load a copy of the model folder by its path") from e
        raise DownloadError(f"{uri}: could not reach the Hugging Face Hub, and {filename} is not in the local cache "
                            f"({constants.HF_HUB_CACHE}); check the connection, or load a copy of the model folder "
                            "by its path") from e
    except EntryNotFoundError as e:
        raise CheckpointError(_lacks(uri, filename)) from e
    except RevisionNotFoundError as e:
        raise DownloadError(f"{uri}: the repository {repo_id} has no revision {revision!r}") from e
    except RepositoryNotFoundError as e:
        raise DownloadError(f"{uri}: no repository {repo_id} on the Hub, or it is private or gated (log in with "
                            "`hf auth login` or set HF_TOKEN)") from e
    except (HfHubHTTPError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DownloadError(f"{uri}: downloading {filename} failed: {first}") from e


def _lacks(uri: str, filename: str) -> str:
    return (f"{uri}: the repository has no {filename}, so it holds no sashimi model (a sashimi model repository "
            f"holds {', '.join(FOLDER_FILES)}, as `sashimi push` uploads them)")


def push_folder(folder: str | os.PathLike, uri: str, *, private: bool = False, revision: str | None = None,
                message: str | None = None) -> str:
    """Upload a model folder to the Hub as one commit (the repository is created if needed).

    Needs network and a token with write access (``hf auth login`` or ``HF_TOKEN``). Only the
    folder's config.json, model.safetensors and README.md are uploaded.

    Args:
        folder: a model folder (check it first: :func:`sashimi.persistence.folder.load_folder`).
        uri: ``hf://owner/name`` or ``hf://owner/name@branch``.
        private: create the repository private (an existing repository keeps its visibility).
        revision: the branch to commit to (created from the default branch if missing); the
            same as ``@branch`` in ``uri``.
        message: the commit message.

    Returns:
        the commit's URL.
    """
    repo_id, at = parse_hf_uri(uri)
    if at and revision and at != revision:
        raise ValueError(f"{uri} names revision {at!r} but revision={revision!r} was given")
    revision = revision or at
    api = _hub().HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), revision=revision,
                             commit_message=message or f"Upload {Path(folder).name} with sashimi push",
                             allow_patterns=list(FOLDER_FILES))
    return str(getattr(info, "commit_url", info))
