"""torch.hub entry points, loaded from this checkout (source='local'), never from the network."""
from pathlib import Path

import pytest
import torch

REPO = str(Path(__file__).resolve().parents[1])


def test_ar_pretrained_false_builds_sc09():
    model = torch.hub.load(REPO, "sashimi_ar_sc09", source="local", pretrained=False, device="cpu")
    assert sum(p.numel() for p in model.parameters()) == 4_765_312
    assert not model.training


def test_ar_local_checkpoint(fixtures_dir):
    model = torch.hub.load(REPO, "sashimi_ar_sc09", source="local", device="cpu",
                           checkpoint=str(fixtures_dir / "rf5_ar_small.ckpt.pt"))
    assert model.config.d_model == 16 and next(model.parameters()).device.type == "cpu"


def test_ar_checkpoint_url_file_scheme(fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = (fixtures_dir / "rf5_ar_small.ckpt.pt").resolve().as_uri()
    model = torch.hub.load(REPO, "sashimi_ar_sc09", source="local", device="cpu", checkpoint=url, progress=False)
    assert model.config.d_model == 16
    assert list((tmp_path / "hub" / "checkpoints").iterdir())  # cached like any download
