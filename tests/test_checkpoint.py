"""Checkpoint formats: the published AR layout (every manifest key), native round trip, bad files."""
import dataclasses
import json

import pytest
import torch
import yaml

from sashimi import ARConfig, CheckpointError, SashimiAR, load_model, save_model


@pytest.fixture(scope="module")
def manifest(fixtures_dir):
    return json.loads((fixtures_dir / "rf5_ar_sc09.manifest.json").read_text())


def _published_like(manifest) -> dict:
    """A random checkpoint with exactly the published file's keys and shapes."""
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(*shape, generator=g) * 0.05 for k, shape in manifest["state_dict_shapes"].items()}
    cfg = {"model_cfg": manifest["config"], "sample_rate": 16000, "seq_len": 16000}
    return {"model_state_dict": sd, "cfg_yaml": yaml.safe_dump(cfg), "steps": 1100000, "epoch": 0,
            "optim_state_dict": None, "scheduler_state_dict": None, "scaler_state_dict": None}


def test_sc09_architecture_parameter_count():
    assert sum(p.numel() for p in SashimiAR(ARConfig()).parameters()) == 4_765_312


def test_every_manifest_key_is_accepted(manifest):
    ckpt = _published_like(manifest)
    model = load_model(ckpt)
    assert sum(p.numel() for p in model.parameters()) == manifest["params"] == 4_765_312
    native = model.state_dict()
    sd = ckpt["model_state_dict"]
    # every tensor is used (except the FFT-node caches, dropped on purpose), values unchanged
    used = [k for k in sd if not k.endswith((".omega", ".z"))]
    assert len(used) == len(native)
    torch.testing.assert_close(native["sashimi.d_layers.0.linear.weight_g"], sd["sashimi.d_layers.0.linear.weight_g"])
    torch.testing.assert_close(native["sashimi.c_layers.0.layer.kernel.C"], sd["sashimi.c_layers.0.layer.kernel.kernel.C"])
    torch.testing.assert_close(native["sashimi.c_layers.1.layer.fc1.bias"], sd["sashimi.c_layers.1.layer.ff.0.0.bias"][:, 0])
    assert not model.training


def test_native_round_trip(tmp_path, ar_small, ar_reference):
    path = tmp_path / "model.pt"
    save_model(ar_small, path)
    again = load_model(path)
    assert again.config == ar_small.config
    x = ar_reference["input_mu"][:, :128]
    with torch.no_grad():
        torch.testing.assert_close(again(x), ar_small(x), rtol=0, atol=0)
    # plain dicts and tensors only: loadable with weights_only
    assert torch.load(path, weights_only=True)["kind"] == "ar"


def test_native_version_1_is_converted(ar_small, ar_reference):
    """Version-1 native files corrected every tier's C for the full l_max; they load converted."""
    from sashimi.s4 import SSMKernel

    l_max = ar_small.config.l_max
    sd = dict(ar_small.state_dict())
    converted = 0
    with torch.no_grad():
        for name, kernel in ar_small.named_modules():
            if isinstance(kernel, SSMKernel) and kernel.l_max != l_max:
                sd[f"{name}.C"] = torch.view_as_real(kernel._converted_c(kernel.l_max, l_max, exact=True))
                converted += 1
    assert converted > 0  # the fixture has lower tiers with shorter kernels
    ckpt = {"format": "sashimi", "version": 1, "kind": "ar", "config": dataclasses.asdict(ar_small.config),
            "state_dict": sd}
    old = load_model(ckpt)
    x = ar_reference["input_mu"][:, :128]
    with torch.no_grad():
        torch.testing.assert_close(old(x), ar_small(x), rtol=0, atol=1e-4)
    ckpt["version"] = 3
    with pytest.raises(CheckpointError, match="version 3 is not supported"):
        load_model(ckpt)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model("nope.pt")


def test_truncated_file(tmp_path, fixtures_dir):
    data = (fixtures_dir / "rf5_ar_small.ckpt.pt").read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_model(bad)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        load_model(other)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": Evil(), "cfg_yaml": "model_cfg: {}"}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(path)


def test_shapes_that_do_not_fit_the_config(manifest):
    ckpt = _published_like(manifest)
    cfg = yaml.safe_load(ckpt["cfg_yaml"])
    cfg["model_cfg"]["d_model"] = 32  # the weights are for d_model 64
    ckpt["cfg_yaml"] = yaml.safe_dump(cfg)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(ckpt)


def test_missing_and_unknown_keys(manifest):
    ckpt = _published_like(manifest)
    ckpt["model_state_dict"].pop("head.bias")
    with pytest.raises(CheckpointError, match="missing"):
        load_model(ckpt)
    ckpt = _published_like(manifest)
    ckpt["model_state_dict"]["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(ckpt)


def test_unknown_config_key(manifest):
    ckpt = _published_like(manifest)
    cfg = yaml.safe_load(ckpt["cfg_yaml"])
    cfg["model_cfg"]["d_modle"] = 64
    ckpt["cfg_yaml"] = yaml.safe_dump(cfg)
    with pytest.raises(CheckpointError, match="d_modle"):
        load_model(ckpt)
