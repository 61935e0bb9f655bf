"""Issue 26, items 7, 8, 9 (hf:// URI), 11 and 14: formats, commands and messages."""
import os
import subprocess
import sys

import pytest
import torch

import sashimi
from conftest import run_cli
from sashimi import ARConfig, SashimiAR, load_model, save_pretrained
from sashimi.errors import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(names=None):
    torch.manual_seed(0)
    return SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=512, pool=[4], sample_rate=8000,
                              num_classes=len(names or []), class_names=names)).eval()


def test_item7_push_dry_run_of_a_classifier_folder(tmp_path, capsys):
    from sashimi.pretrained import bundled_classifier_folder

    code, out, err = run_cli(capsys, "push", str(bundled_classifier_folder("fsdd")), "hf://me/digits", "--dry-run")
    assert code == 0, err
    assert "model.safetensors" in out and "dry run: nothing was uploaded" in out


def test_item8_a_half_precision_folder_loads_like_the_pt(tmp_path):
    model = _tiny()
    half = _tiny().half()
    save_pretrained(half, tmp_path / "half")
    sashimi.save_model(half, tmp_path / "half.pt")
    a, b = load_model(tmp_path / "half"), load_model(tmp_path / "half.pt")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert x.dtype == y.dtype and torch.equal(x, y), k
    assert a.head.weight.dtype == model.head.weight.dtype  # both cast to the model's float32


def test_item8_nan_weights_are_refused_by_folders_as_by_pt(tmp_path):
    model = _tiny()
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    save_pretrained(model, tmp_path / "nan")
    sashimi.save_model(model, tmp_path / "nan.pt")
    for source in (tmp_path / "nan", tmp_path / "nan.pt"):
        with pytest.raises(CheckpointError, match=r"NaN or infinite values, e\.g\. \['head\.bias'\]"):
            load_model(source)


def test_item9_a_malformed_hf_uri_is_one_line(capsys, tmp_path):
    from sashimi.data.audio import write_wav

    write_wav(tmp_path / "x.wav", torch.zeros(800), 8000)
    for argv in (["generate", "--model", "hf://me/m/", "--out", str(tmp_path / "o"), "-q"],
                 ["nll", "--model", "hf://me/m/", str(tmp_path / "x.wav")]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "is not a Hub model" in err and "Traceback" not in err, err
    with pytest.raises(ValueError, match="is not a Hub model"):
        load_model("hf://me/m/")


def test_item11_doctor_says_why_the_kernel_cannot_be_built_and_counts_it(tmp_path):
    (tmp_path / "afile").write_text("")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "afile" / "builds")}  # a build folder that cannot be created
    proc = subprocess.run([sys.executable, "-m", "sashimi", "doctor"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert "cannot be built: None" not in proc.stdout, proc.stdout
    assert "the C++ kernel cannot be built: [Errno" in proc.stdout
    assert proc.returncode == 1 and "PROBLEMS:" in proc.stdout and "no problems found" not in proc.stdout


def test_item14_guidance_text_and_bounds(tmp_path, capsys):
    path = tmp_path / "c.pt"
    sashimi.save_model(_tiny(["a", "b"]), path)
    base = ["generate", "--model", str(path), "--label", "a", "--n", "1", "--seconds", "0.001", "-q"]
    code, _, err = run_cli(capsys, *base, "--guidance", "", "--out", str(tmp_path / "o1"))
    assert code == 2 and "--guidance must be a number, got ''" in err, err
    code, _, err = run_cli(capsys, *base, "--guidance", "inf", "--out", str(tmp_path / "o2"))
    assert code == 2 and "--guidance must be finite" in err, err
    code, _, err = run_cli(capsys, *base, "--guidance", "0", "--out", str(tmp_path / "o3"))
    assert code == 2 and "--guidance must be in (0, inf), got '0'" in err, err


def test_item14_export_takes_a_model_folder(tmp_path, capsys):
    save_pretrained(_tiny(), tmp_path / "folder", provenance={"source": "mine.pt", "credit": "me"})
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli(capsys, "export", str(tmp_path / "folder"), "--out-dir", str(out), "--name", "m")
    assert code == 0, err
    (pt,) = [p for p in os.listdir(out) if p.endswith(".pt")]
    model = load_model(out / pt)
    assert torch.equal(model.head.weight, _tiny().head.weight)
    assert torch.load(out / pt, weights_only=True)["source"] == "mine.pt"


# ---- the wider search: input that reached the "internal error" branch ----------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--device", "meta"], "--device must be cpu, cuda or cuda:N, got 'meta'"),
    (["--device", "mps"], "--device must be cpu, cuda or cuda:N, got 'mps'"),
    (["--stream", "s.wav", "--n", "70000"], "--n must be in [1, 65535]"),
    (["--name", "a\0b"], "contains a NUL character"),
])
def test_wider_search_generate_errors_are_one_line(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sashimi.save_model(_tiny(), tmp_path / "t.pt")
    code, _, err = run_cli(capsys, "generate", "--model", "t.pt", "--seconds", "0.001", "--out", "o", "-q", *extra)
    assert code == 2 and message in err and "internal error" not in err, err


def test_wider_search_an_unreadable_classifier_file_is_one_line(tmp_path, capsys):
    from sashimi.data.audio import write_wav

    for i in range(2):
        write_wav(tmp_path / f"{i}.wav", torch.zeros(800), 8000)
    (tmp_path / "c.pt").write_text("hello")
    code, _, err = run_cli(capsys, "eval", str(tmp_path), "--reference", str(tmp_path), "--classifier",
                           str(tmp_path / "c.pt"), "-q")
    assert code == 2 and "c.pt is not a readable checkpoint" in err and "internal error" not in err, err
