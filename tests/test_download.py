"""Downloads: one cache entry per URL, SHA-256 checks, clear network errors (file:// URLs only)."""
import os
import socket
import urllib.error

import pytest
import torch

from sashimi import ARConfig, CheckpointError, SashimiAR, load_model, save_model
from sashimi.persistence.download import DownloadError, cache_path, sha256_file


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """A private torch.hub cache for each test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _save(path, d_model: int) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_model(SashimiAR(ARConfig(d_model=d_model, n_layers=1, l_max=256)), path)
    return str(path)


def test_urls_with_the_same_file_name_do_not_share_a_cache_entry(tmp_path):
    a = _save(tmp_path / "A" / "model.pt", 8)
    b = _save(tmp_path / "B" / "model.pt", 16)
    url_a, url_b = f"file://{a}", f"file://{b}"
    assert load_model(url_a, progress=False).config.d_model == 8
    assert load_model(url_b, progress=False).config.d_model == 16  # not A's model from the cache
    assert cache_path(url_a) != cache_path(url_b)
    assert os.path.basename(cache_path(url_a)) == "model.pt"
    assert sha256_file(cache_path(url_b)) == sha256_file(b)
    assert load_model(url_a, progress=False).config.d_model == 8  # cached entries stay apart


def test_sha256_is_checked_after_download(tmp_path):
    path = _save(tmp_path / "model.pt", 8)
    url, digest = f"file://{path}", sha256_file(path)
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(CheckpointError, match=f"SHA-256 is {digest}, expected {wrong}"):
        load_model(url, progress=False, sha256=wrong)
    assert not os.path.exists(cache_path(url))  # a file that failed the check is not kept
    assert not os.listdir(os.path.dirname(cache_path(url)))
    assert load_model(url, progress=False, sha256=digest).config.d_model == 8
    # a cached entry is checked too when a digest is given (here one cached without a digest)
    other = _save(tmp_path / "other" / "model.pt", 8)
    load_model(f"file://{other}", progress=False)
    bad = "0" * 64 if not sha256_file(other).startswith("0") else "1" * 64
    with pytest.raises(CheckpointError, match="the cached file .* delete it"):
        load_model(f"file://{other}", progress=False, sha256=bad)
    assert os.path.isfile(cache_path(f"file://{other}"))  # reported, not deleted
    with pytest.raises(ValueError, match="sha256 must be a hex SHA-256 digest"):
        load_model(url, progress=False, sha256="xyz")


def test_check_hash_uses_the_prefix_in_the_file_name(tmp_path):
    """torch.hub's convention: name-<first hex digits of the SHA-256>.pt."""
    path = _save(tmp_path / "tmp.pt", 8)
    prefix = sha256_file(path)[:10]
    good = tmp_path / f"model-{prefix}.pt"
    os.rename(path, good)
    assert load_model(f"file://{good}", progress=False, check_hash=True).config.d_model == 8
    bad = tmp_path / "model-0123456789.pt"
    _save(bad, 8)
    with pytest.raises(CheckpointError, match="expected 0123456789"):
        load_model(f"file://{bad}", progress=False, check_hash=True)
    with pytest.raises(ValueError, match="carries no SHA-256 prefix"):
        load_model(f"file://{_save(tmp_path / 'plain.pt', 8)}", progress=False, check_hash=True)


def test_network_failure_says_what_happened_and_what_to_do_offline(monkeypatch):
    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    url = "https://example.invalid/releases/ckpt_01100000.pt"
    with pytest.raises(DownloadError) as info:
        load_model(url, progress=False)
    text = str(info.value)
    assert text.startswith(f"could not download {url} ([Errno -2] Name or service not known)")
    assert "checkpoint='path/to/ckpt_01100000.pt'" in text and "not a readable checkpoint" not in text
    def not_found(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    monkeypatch.setattr(torch.hub, "download_url_to_file", not_found)
    with pytest.raises(DownloadError, match=r"\(HTTP Error 404: Not Found\)"):
        load_model(url, progress=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    from sashimi.pretrained.factories import sashimi_ar_sc09

    with pytest.raises(DownloadError, match="could not download https://github.com/RF5/simple-sashimi"):
        sashimi_ar_sc09(progress=False, device="cpu")


def test_missing_file_url_is_a_download_error(tmp_path):
    with pytest.raises(DownloadError, match=f"could not download file://{tmp_path}/gone.pt"):
        load_model(f"file://{tmp_path}/gone.pt", progress=False)
