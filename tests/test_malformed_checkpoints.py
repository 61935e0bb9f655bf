"""Checkpoints that unpickle fine but are malformed: the library's CheckpointError naming file and key."""
import pytest
import torch
import yaml

from sashimi import ARConfig, CheckpointError, SashimiAR, load_model
from sashimi.__main__ import main
from sashimi.persistence.checkpoint import native_checkpoint


@pytest.fixture(scope="module")
def native():
    return native_checkpoint(SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=256)), "ar")


def _rf5(fixtures_dir) -> dict:
    return torch.load(fixtures_dir / "rf5_ar_small.ckpt.pt", weights_only=True)


def _cases(native, fixtures_dir):
    rf5 = _rf5(fixtures_dir)
    cfg = yaml.safe_load(rf5["cfg_yaml"])
    dw = torch.load(fixtures_dir / "rf5_diffwave_small.ckpt.pt", weights_only=True)
    first = next(iter(dw["model_state_dict"]))
    return [
        ({k: v for k, v in native.items() if k != "state_dict"}, r"key 'state_dict' must be a dict of tensors.*missing"),
        ({**native, "state_dict": [1, 2]}, r"key 'state_dict' must be a dict of tensors.*got list"),
        ({**native, "state_dict": {**native["state_dict"], "head.bias": "x"}}, r"key 'state_dict' must map names to tensors"),
        ({**native, "config": [8, 1]}, r"key 'config' must be a mapping"),
        ({**native, "kind": ["ar"]}, r"unknown model kind \['ar'\] under key 'kind'"),
        ({**rf5, "cfg_yaml": "- a\n- b\n"}, r"key 'cfg_yaml' must hold a YAML mapping.*list"),
        ({**rf5, "cfg_yaml": yaml.safe_dump({**cfg, "model_cfg": 5})}, r"cfg_yaml key 'model_cfg' must be a mapping.*int 5"),
        ({**rf5, "cfg_yaml": yaml.safe_dump({**cfg, "model_cfg": {**cfg["model_cfg"], "pool": 4}})}, r"model_cfg"),
        ({**rf5, "model_state_dict": {**rf5["model_state_dict"], "head.weight": [0.0]}},
         r"key 'model_state_dict' must map names to tensors"),
        ({**dw, "model_state_dict": {**dw["model_state_dict"], first: "x"}}, r"key 'model_state_dict' must map"),
    ]


def test_malformed_checkpoints_raise_checkpoint_error(native, fixtures_dir, tmp_path):
    for i, (ckpt, match) in enumerate(_cases(native, fixtures_dir)):
        path = tmp_path / f"bad{i}.pt"
        torch.save(ckpt, path)
        with pytest.raises(CheckpointError, match=rf"bad{i}\.pt: .*{match}"):
            load_model(path)


@pytest.mark.parametrize("command", ["generate", "nll"])
def test_cli_prints_one_line_for_a_malformed_checkpoint(native, tmp_path, capsys, command):
    bad = tmp_path / "bad.pt"
    torch.save({k: v for k, v in native.items() if k != "state_dict"}, bad)
    wav = tmp_path / "x.wav"
    from sashimi.data.audio import write_wav

    write_wav(wav, torch.zeros(100), 16000)
    args = ["--out", str(tmp_path / "out")] if command == "generate" else [str(wav)]
    assert main([command, "--model", str(bad), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pt" in err and "'state_dict'" in err, err


def test_malformed_training_checkpoint_is_refused_in_one_line(native, tmp_path, capsys):
    bad = tmp_path / "ckpt_00000003.pt"
    torch.save({**native, "step": "three", "epoch": 0, "batch_in_epoch": 0, "optimizer": {}, "rng": []}, bad)
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    from sashimi.data.audio import write_wav

    write_wav(wavs / "a.wav", 0.1 * torch.randn(400), 8000)
    write_wav(wavs / "b.wav", 0.1 * torch.randn(400), 8000)
    args = [f"train_csv={wavs}", f"checkpoint_path={tmp_path / 'run'}", f"resume_checkpoint={bad}", "num_workers=0",
            "model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=256", "seq_len=256", "batch_size=2"]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ckpt_00000003.pt: key 'step'" in err, err
