"""The SaShiMi authors' published AR files as pretrained names (sashimi_ar_youtubemix,
sashimi_ar_sc09:paper), served from file:// URLs: tests never touch the network."""
import os
from pathlib import Path

import pytest
import torch

import sashimi
import sashimi.pretrained.factories as factories
from sashimi.errors import CheckpointError
from sashimi.persistence.download import cache_path
from sashimi.pretrained import registry

from conftest import run_cli

AUTHORS = Path(__file__).parent / "fixtures" / "authors"
REPO = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def serve(monkeypatch, tmp_path):
    """Point the authors' release at local files; TORCH_HOME (the download cache) in tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))

    def at(key, path):
        monkeypatch.setitem(factories.AUTHORS_AR_URLS, key, Path(path).resolve().as_uri())
        return factories.AUTHORS_AR_URLS[key]
    return at


def test_youtubemix_name_downloads_once_into_the_cache(serve, tmp_path):
    url = serve(("youtubemix", "feb2022"), AUTHORS / "feb2022_youtubemix_small.pt")
    model = sashimi.load_model("sashimi_ar_youtubemix")
    assert (model.config.l_max, model.config.glu, model.config.hurwitz) == (131072, False, False)
    assert os.path.isfile(cache_path(url))
    again = factories.sashimi_ar_youtubemix(device="cpu", progress=False)
    assert torch.equal(again.head.weight, model.head.weight)


def test_paper_sc09_variant(serve):
    serve(("sc09", "feb2022"), AUTHORS / "feb2022_sc09_small.pt")
    for model in (sashimi.load_model("sashimi_ar_sc09:paper"),
                  factories.sashimi_ar_sc09(variant="paper", device="cpu", progress=False)):
        assert (model.config.l_max, model.config.glu, model.config.norm) == (16000, True, "scalar")
    with pytest.raises(ValueError, match="variant must be one of"):
        factories.sashimi_ar_sc09(variant="papr", device="cpu")


def test_listed_sha256_is_checked(serve, monkeypatch):
    serve(("youtubemix", "v4"), AUTHORS / "v4_youtubemix_small.pt")
    monkeypatch.setitem(registry.AUTHORS_AR_SHA256, ("youtubemix", "v4"), "0" * 64)
    with pytest.raises(CheckpointError, match="SHA-256"):
        factories.sashimi_ar_youtubemix(variant="v4", device="cpu", progress=False)


def test_offline_generate_is_one_clear_line(serve, capsys, tmp_path):
    url = serve(("youtubemix", "feb2022"), tmp_path / "nowhere" / "sashimi_youtubemix.pt")
    code, out, err = run_cli(capsys, "generate", "--model", "sashimi_ar_youtubemix", "--seconds", "16",
                             "--out", str(tmp_path / "piano"))
    assert code == 2
    line = err.strip()
    assert "\n" not in line and url in line and os.path.dirname(cache_path(url)) in line, line
    assert not (tmp_path / "piano").exists() or not os.listdir(tmp_path / "piano")


def test_generate_with_the_youtubemix_name(serve, capsys, tmp_path):
    serve(("youtubemix", "feb2022"), AUTHORS / "feb2022_youtubemix_small.pt")
    code, out, err = run_cli(capsys, "generate", "--model", "sashimi_ar_youtubemix", "--n", "1", "--seconds", "0.005",
                             "--quiet", "--out", str(tmp_path / "piano"))
    assert code == 0, err
    assert os.listdir(tmp_path / "piano") == ["sample_000.wav"]
    import soundfile
    info = soundfile.info(str(tmp_path / "piano" / "sample_000.wav"))
    assert (info.samplerate, info.frames) == (16000, 80)


def test_hf_single_file_address(monkeypatch, tmp_path):
    from sashimi.persistence import checkpoint

    seen = []

    def fake_download(url, **kwargs):
        seen.append(url)
        return str(AUTHORS / "v3_sc09_small.pt")
    monkeypatch.setattr(checkpoint, "cached_download", fake_download)
    model = sashimi.load_model("hf://krandiash/sashimi-release@abc123/checkpoints/sashimi_sc09_v3.pt")
    assert seen == ["https://huggingface.co/krandiash/sashimi-release/resolve/abc123/checkpoints/sashimi_sc09_v3.pt"]
    assert model.config.norm == "scalar"


def test_hub_entry_point(serve):
    serve(("youtubemix", "feb2022"), AUTHORS / "feb2022_youtubemix_small.pt")
    model = torch.hub.load(REPO, "sashimi_ar_youtubemix", source="local", device="cpu", progress=False)
    assert model.config.l_max == 131072 and not model.training


def test_doctor_lists_the_downloads():
    names = [name for name, _ in registry.published_downloads()]
    assert "sashimi_ar_youtubemix (feb2022)" in names and "sashimi_ar_sc09 (paper)" in names
    assert "sashimi_ar_sc09" in names  # the seed's file is still listed


def test_bad_variants_are_one_line_errors(capsys, tmp_path):
    for spec, expected in (("sashimi_ar_fsdd:x", "has no variants"), ("sashimi_ar_sc09:papr", "variant must be one of"),
                           ("sashimi_diffwave_sc09:x", "variant must be one of")):
        code, _, err = run_cli(capsys, "generate", "--model", spec, "--out", str(tmp_path / "x"))
        assert code == 2 and expected in err and "Traceback" not in err, err
