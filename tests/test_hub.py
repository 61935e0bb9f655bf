"""torch.hub entry points, loaded from this checkout (source='local'), never from the network."""
from pathlib import Path

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


def test_readme_one_liner_runs_from_a_clone(fixtures_dir, tmp_path, monkeypatch):
    """The README leads with a form that runs in a clone as written (the published file is served
    here from a file:// URL) and says what the '<owner>' placeholder of the GitHub form stands for."""
    import re

    import sashimi.pretrained.factories

    readme = (Path(REPO) / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Generate speech in one line\n.*?```python\n(.*?)```", readme, re.S).group(1)
    load = next(line for line in block.splitlines() if line.startswith("model = "))
    assert "<owner>" not in block and "`<owner>` stands for the GitHub account" in readme
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(sashimi.pretrained.factories, "AR_SC09_URL", (fixtures_dir / "rf5_ar_small.ckpt.pt").resolve().as_uri())
    monkeypatch.chdir(REPO)
    scope = {"torch": torch}
    exec(load, scope)
    assert scope["model"].config.d_model == 16 and not scope["model"].training
