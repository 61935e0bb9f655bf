"""Issue 26, items 4 and 10: one label parser for the API and the command line."""
import numpy as np
import pytest
import torch

from conftest import run_cli
from sashimi import ARConfig, SashimiAR


def _model(names, seed=0):
    torch.manual_seed(seed)
    cfg = ARConfig(d_model=16, n_layers=2, l_max=512, sample_rate=8000, num_classes=len(names), class_names=names)
    return SashimiAR(cfg).eval()


def test_item4_numeric_names_are_names_and_other_integers_are_refused():
    """With class names ['1','2','3'], '1' is class '1' (index 0) and '0' is no class (not index 0)."""
    model = _model(["1", "2", "3"])
    assert model.check_labels(["1", "3"], 2).tolist() == [0, 2]
    with pytest.raises(ValueError, match="class names are numbers"):
        model.check_labels(["0"], 1)
    from sashimi.cli.common import parse_labels

    assert parse_labels(model, "1,2") == [0, 1]
    with pytest.raises(ValueError, match="class names are numbers"):
        parse_labels(model, "0")


def test_item4_word_names_take_indices_from_api_and_cli_alike():
    model = _model(["yes", "no"])
    from sashimi.cli.common import parse_labels

    assert model.check_labels(["no", "0", 1], 3).tolist() == [1, 0, 1]
    assert parse_labels(model, "no, 0") == [1, 0]
    for text in ("maybe", "2", ""):
        with pytest.raises(ValueError, match="--label"):
            parse_labels(model, text)


def test_item4_cli_label_zero_with_numeric_names_is_one_line(tmp_path, capsys):
    model = _model(["1", "2", "3"])
    path = tmp_path / "m.pt"
    import sashimi

    sashimi.save_model(model, path)
    code, _, err = run_cli(capsys, "generate", "--model", str(path), "--label", "0", "--n", "1", "--seconds", "0.001",
                           "--out", str(tmp_path / "o"), "-q")
    assert code == 2 and "class names are numbers" in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_item10_conditional_generate_labels_and_guidance_types():
    model = _model(["a", "b", "c", "d"])
    kw = dict(length=4, progress=False, seed=0, engine="eager")
    with pytest.raises(TypeError, match=r"labels must be a LongTensor or a list .*write \[7\]"):
        model.conditional_generate(7, **kw)
    with pytest.raises(ValueError, match="labels is empty"):
        model.conditional_generate([], **kw)
    ref = model.conditional_generate([3], **kw)
    assert torch.equal(model.conditional_generate([np.int64(3)], **kw), ref)
    assert torch.equal(model.conditional_generate([torch.tensor(3)], **kw), ref)
    assert torch.equal(model.conditional_generate(np.array([3]), **kw), ref)
    guided = model.conditional_generate([3], guidance=2.0, **kw)
    assert torch.equal(model.conditional_generate([3], guidance=torch.tensor(2.), **kw), guided)
    assert torch.equal(model.conditional_generate([3], guidance=np.float32(2.), **kw), guided)
    with pytest.raises(ValueError, match="guidance must be a finite number"):
        model.conditional_generate([3], guidance=torch.tensor([2., 3.]), **kw)
    with pytest.raises(TypeError, match="labels must hold class names or integer indices"):
        model.conditional_generate([3.0], **kw)


def test_item10_parse_labels_is_generic():
    """The parser takes the class names and a count, for any conditional model (e.g. a DiffWave)."""
    from sashimi.labels import parse_labels

    assert parse_labels(["b", 0], ["a", "b"], batch=2).tolist() == [1, 0]
    assert parse_labels(torch.tensor(2), ["a", "b"]).tolist() == [2]  # the "no label" class
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        parse_labels([2], ["a", "b"], allow_none_class=False)
    with pytest.raises(ValueError, match="holds 1 entries, but the batch holds 2"):
        parse_labels(["a"], ["a", "b"], batch=2, name="labels")
