"""The SaShiMi authors' DiffWave+SaShiMi .pkl layout (albertfgu/diffwave-sashimi) loads through
sashimi.load_model and reproduces their network's output. The fixture was written by running their
code (tests/fixtures/authors/make_diffwave_sashimi_fixture.py): d_model 16, 2 blocks per tier, pool
[4, 4], L 2048, random weights with every parameter perturbed; and a 'tiny' one of other sizes."""
from pathlib import Path

import pytest
import torch

import sashimi
import sashimi.pretrained.factories as factories
from sashimi import SashimiDiffWave
from sashimi.backbone import PairedBlock, ScalarNorm
from sashimi.errors import CheckpointError
from sashimi.pretrained import registry
from sashimi.s4 import SSMKernel

DIR = Path(__file__).parent / "fixtures" / "authors"
PKL = DIR / "diffwave_sashimi_small.pkl"


@pytest.fixture(scope="module")
def loaded():
    return sashimi.load_model(str(PKL)), torch.load(DIR / "diffwave_sashimi_small.reference.pt", weights_only=True)


def test_layout_is_read_off_the_weights(loaded):
    model, _ = loaded
    c = model.config
    assert isinstance(model, SashimiDiffWave)
    assert (c.d_model, c.n_layers, c.pool, c.expand, c.ff, c.d_state, c.l_max) == (16, 2, [4, 4], 2, 2, 64, 2048)
    assert (c.paired, c.norm, c.final_norm, c.bidirectional, c.unet, c.tie_state, c.glu) == \
        (True, "scalar", "scalar", True, True, False, True)
    assert isinstance(model.sashimi.norm, ScalarNorm) and isinstance(model.sashimi.c_layers[0], PairedBlock)
    assert sorted({m.l_max for m in model.modules() if isinstance(m, SSMKernel)}) == [128, 512, 2048]


@pytest.mark.parametrize("name", ["small", "tiny"])
def test_reproduces_the_authors_network(name):
    """'tiny' is another size made the same way: d_model 8, 1 block per tier, pool [2, 3], expand 3,
    ff 1, L 600, a 32-wide step embedding; nothing in the loader is tied to one configuration."""
    model = sashimi.load_model(str(DIR / f"diffwave_sashimi_{name}.pkl"))
    ref = torch.load(DIR / f"diffwave_sashimi_{name}.reference.pt", weights_only=True)
    with torch.no_grad():
        eps = model(ref["audio"], ref["steps"])
    scale = ref["eps"].std()  # about 0.023
    assert (eps - ref["eps_exact_nodes"]).abs().max() <= 1e-4 * scale  # measured 1.4e-7 / 1.8e-7
    assert (eps - ref["eps"]).abs().max() <= 1e-3 * scale  # their float32 FFT nodes; measured 1.8e-6 / 7.5e-6


def test_generates(loaded):
    model, _ = loaded
    wav = model.unconditional_generate(1, progress=False, steps="fast", length=256, seed=0)
    assert wav.shape == (1, 256) and torch.isfinite(wav).all()


def test_conditional_vocoder_files_are_refused(tmp_path):
    ckpt = torch.load(PKL, map_location="cpu", weights_only=True)
    ckpt["model_state_dict"]["c_layers.0.mel_conv.conv.weight_g"] = torch.ones(16, 1, 1)
    torch.save(ckpt, tmp_path / "mel.pkl")
    with pytest.raises(CheckpointError, match=r"mel\.pkl.*mel-conditioned"):
        sashimi.load_model(str(tmp_path / "mel.pkl"))


def test_paper_variants_download_with_their_published_sha256(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(factories.AUTHORS_DIFFWAVE_URLS, "paper-small", PKL.resolve().as_uri())
    with pytest.raises(CheckpointError, match="SHA-256"):  # the listed digest is the real file's
        factories.sashimi_diffwave_sc09(variant="paper-small", device="cpu", progress=False)
    from sashimi.persistence.download import sha256_file
    monkeypatch.setitem(registry.AUTHORS_DIFFWAVE_SHA256, "paper-small", sha256_file(str(PKL)))
    model = factories.sashimi_diffwave_sc09(variant="paper-small", device="cpu", progress=False)
    assert model.config.paired and model.config.d_model == 16
    arch = factories.sashimi_diffwave_sc09(pretrained=False, variant="paper-small", device="cpu", n_layers=1)
    assert (arch.config.d_model, arch.config.paired, arch.config.final_norm) == (64, True, "scalar")
