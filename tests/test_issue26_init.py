"""Issue 26, item 5: init_checkpoint maps the label embedding by class name."""
import os

import pytest
import torch

import sashimi
from sashimi import ARConfig, SashimiAR
from sashimi.errors import ConfigError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = ["model_cfg.d_model=8", "model_cfg.n_layers=1", "model_cfg.l_max=4096", "model_cfg.pool=[4]", "seq_len=4096",
        "sample_rate=8000", "num_workers=0", "progress=false", "tensorboard=false", "stdout_interval=1000",
        "batch_size=2", "utterance_window=true", "validation_interval=0", "checkpoint_interval=1", "max_steps=1",
        "start_lr=1e-7", "labels=fsdd"]


def _source(tmp_path, names, condition="input"):
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=4096, pool=[4], sample_rate=8000, num_classes=len(names),
                               class_names=names, condition=condition))
    path = tmp_path / "source.pt"
    sashimi.save_model(model, path)
    return model, str(path)


def _csv(tmp_path, digits):
    files = sorted(f for f in os.listdir(os.path.join(FIXTURES, "fsdd")) if f.endswith(".wav") and f[0] in digits)
    path = tmp_path / "files.csv"
    path.write_text("path\n" + "".join(os.path.join(FIXTURES, "fsdd", f) + "\n" for f in files))
    return str(path)


def _train(tmp_path, source_path, digits, *extra):
    from sashimi.train import build_config, train

    return train(build_config([f"train_csv={_csv(tmp_path, digits)}", f"checkpoint_path={tmp_path / 'run'}",
                               f"init_checkpoint={source_path}", *TINY, *extra]))


def test_item5_init_checkpoint_maps_label_vectors_by_class_name(tmp_path):
    source, path = _source(tmp_path, ["0", "1", "2", "3"])
    out = _train(tmp_path, path, "13")
    model = out["model"]
    assert model.classes == ["1", "3"]
    want = source.label_embedder.weight[[1, 3, 4]]  # '1', '3' and the "no label" row
    torch.testing.assert_close(model.label_embedder.weight.detach().cpu(), want, atol=1e-4, rtol=0)


def test_item5_init_checkpoint_with_other_class_names_is_refused(tmp_path):
    _, path = _source(tmp_path, ["x", "y"])  # as many classes, other names: no silent inheritance
    with pytest.raises(ConfigError, match=r"class\(es\) \['1', '3'\] are not among them"):
        _train(tmp_path, path, "13")


def test_item5_fine_tuning_blocks_from_an_input_model_still_works(tmp_path, capsys):
    _, path = _source(tmp_path, ["0", "1", "2", "3"])
    out = _train(tmp_path, path, "13", "model_cfg.condition=blocks")
    assert out["step"] == 1 and "kept their initialisation: ['sashimi']" in capsys.readouterr().out
