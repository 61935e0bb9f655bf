"""Downloading checkpoints: a cache keyed by the whole URL, SHA-256 checks, clear network errors.

``torch.hub.load_state_dict_from_url`` caches a download under its file name alone, so two URLs
ending in the same name (``.../A/model.pt`` and ``.../B/model.pt``, or a user's
``ckpt_01100000.pt`` and the published one) would share one cache entry and the second load would
silently return the first file. Here each URL has its own folder,
``$TORCH_HOME/hub/checkpoints/sashimi/<first 16 hex digits of SHA-256(URL)>/<file name>``.

A download is written to a temporary file and moved into place only once it is complete and
its SHA-256 matches the expected digest (when one is given), so the cache never holds a partial
file; with a digest, a cached file is checked again each time it is used.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse

import torch

from ..errors import InputError, SashimiError

__all__ = ["DownloadError", "HashMismatchError", "cached_download", "cache_path", "sha256_file", "is_url"]

_URL = re.compile(r"^(https?|file)://")
# torch.hub's convention: 'name-<hex prefix of the file's SHA-256>.ext'
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


class DownloadError(SashimiError, OSError):
    """A URL could not be downloaded (network, server or file system)."""


class HashMismatchError(SashimiError, ValueError):
    """A downloaded file whose SHA-256 is not the expected one."""


def is_url(source: str) -> bool:
    """Whether ``source`` is an http(s):// or file:// URL."""
    return bool(_URL.match(source))


def cache_path(url: str) -> str:
    """Where :func:`cached_download` keeps ``url``: a folder per URL, the URL's file name inside.

    Args:
        url: an http(s):// or file:// URL.

    Returns:
        the local path (which may not exist yet).
    """
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return os.path.join(torch.hub.get_dir(), "checkpoints", "sashimi", key, name)


def sha256_file(path: str) -> str:
    """The hex SHA-256 digest of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_file(path: str | os.PathLike, sha256: str, what: str) -> str:
    """``path`` after checking that it exists and its SHA-256 is ``sha256`` (files shipped in the package).

    Args:
        path: the file.
        sha256: its expected hex digest.
        what: how to name it in errors, e.g. ``"bundled model 'sashimi_ar_fsdd'"``.

    Raises:
        FileNotFoundError: no such file (a broken installation).
        ValueError: the file's digest differs (changed or damaged).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: {path} is missing (a broken installation? reinstall sashimi)")
    stat = os.stat(path)
    key = (path, sha256, stat.st_size, stat.st_mtime_ns)
    if key not in _verified:  # hashed once per process while unchanged: loading again stays cheap
        actual = sha256_file(path)
        if actual != sha256:
            raise HashMismatchError(f"{what}: {path} has SHA-256 {actual}, expected {sha256} "
                             "(the file was changed or damaged; reinstall sashimi)")
        _verified.add(key)
    return path


_verified: set[tuple] = set()


def cached_download(url: str, *, sha256: str | None = None, check_hash: bool = False, progress: bool = True) -> str:
    """Download ``url`` once into the cache (see :func:`cache_path`) and return the local path.

    Args:
        url: an http(s):// or file:// URL.
        sha256: the expected SHA-256 of the file (64 hex digits, or a prefix of at least 8), checked
            after download and each time the cached file is used.
        check_hash: check the SHA-256 prefix in the URL's file name (``name-<prefix>.pt``, as
            ``torch.hub.load_state_dict_from_url(check_hash=True)``).
        progress: show a progress bar while downloading.

    Returns:
        the path of the cached file.

    Raises:
        ValueError: ``sha256`` is not hex, or ``check_hash`` but the file name carries no hash.
        DownloadError: the download failed; the message says why and how to work offline.
        HashMismatchError: the downloaded file is not the expected one (it is not kept).
    """
    expected = _expected_digest(url, sha256, check_hash)
    path = cache_path(url)
    if os.path.isfile(path):
        # an entry cached without a digest (or altered since) is checked too, but never deleted here
        if expected is not None and not (got := sha256_file(path)).startswith(expected):
            raise HashMismatchError(f"{url}: the cached file {path} has SHA-256 {got}, expected {expected}...; "
                                    "delete it to download the file again")
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.download"
    try:
        try:
            torch.hub.download_url_to_file(url, tmp, progress=progress)
        except Exception as e:
            raise DownloadError(_download_failed(url, e)) from e
        if expected is not None:
            got = sha256_file(tmp)
            if not got.startswith(expected):
                raise HashMismatchError(f"{url}: the downloaded file's SHA-256 is {got}, expected {expected}...; "
                                        "it was not kept (the server's file differs from the one this library "
                                        "expects, or the download was corrupted)")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _expected_digest(url: str, sha256: str | None, check_hash: bool) -> str | None:
    if sha256 is not None:
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256):
            raise InputError(f"sha256 must be a hex SHA-256 digest (or a prefix of at least 8 digits), got {sha256!r}")
        return sha256.lower()
    if check_hash:
        name = os.path.basename(urllib.parse.urlparse(url).path)
        m = _HASH_IN_NAME.search(name)
        if m is None or len(m.group(1)) < 8:
            raise InputError(f"check_hash=True: the file name {name!r} carries no SHA-256 prefix "
                             "('name-<at least 8 hex digits>.pt'); pass sha256= instead")
        return m.group(1)
    return None


def _download_failed(url: str, e: Exception) -> str:
    # URLError wraps the cause (e.g. the DNS error) in .reason; HTTPError's str has the status code
    reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(e).__name__
    name = os.path.basename(urllib.parse.urlparse(url).path) or "the file"
    return (f"could not download {url} ({text}) into the cache folder {os.path.dirname(cache_path(url))}. "
            f"Offline, copy {name} there or onto this machine and load the local "
            f"file instead: load_model('path/to/{name}'), checkpoint='path/to/{name}' for the torch.hub "
            f"entry points, or --model path/to/{name} on the command line")
