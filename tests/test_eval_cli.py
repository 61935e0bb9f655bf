"""`sashimi eval` (run in-process through sashimi.__main__.main) on the fixture clips and a tiny model."""
import json

import numpy as np

import pytest
import torch

from sashimi import ARConfig, SashimiAR, save_model
from conftest import run_cli


@pytest.fixture
def clips(fixtures_dir):
    return str(fixtures_dir / "fsdd")


@pytest.fixture
def tiny_ar(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_model(SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[2], l_max=512, sample_rate=8000)).eval(), path)
    return str(path)


def test_eval_folder_against_itself(capsys, clips, tmp_path):
    code, out, err = run_cli(capsys, "eval", clips, "--reference", clips, "--json", "-q",
                             "--save-reference", str(tmp_path / "ref.npz"))
    assert code == 0, err
    r = json.loads(out)
    s, ref = r["samples"], r["reference"]
    assert s["n"] == ref["n"] == 30 and sum(s["histogram"]) == 30
    assert s["fid"] == pytest.approx(0.0, abs=1e-6) and ref["fid"] == 0.0
    assert s["is"] == pytest.approx(ref["is"]) and s["is"] > 7  # 3 clips of each digit, confidently classified
    assert s["am"] < 0.3 and s["mis"] > 50
    assert r["classifier"].startswith("fsdd:") and r["classes"][0] == "zero"
    # the cached reference gives the same numbers; the table names everything
    code, out, err = run_cli(capsys, "eval", clips, "--reference", str(tmp_path / "ref.npz"),
                             "--is-variant", "sashimi-repo", "-q")
    assert code == 0, err
    assert "sashimi-repo" in out and "(cached)" in out and "argmax" in out and "nine" in out
    code, out, _ = run_cli(capsys, "eval", clips, "--reference", str(tmp_path / "ref.npz"), "-q", "--json")
    assert json.loads(out)["samples"]["fid"] == pytest.approx(s["fid"], abs=1e-6)


def test_eval_generates_filters_and_saves(capsys, tiny_ar, clips, tmp_path):
    out_dir = tmp_path / "gen"
    args = ["eval", "--model", tiny_ar, "--n", "6", "--seconds", "0.05", "--batch-size", "3", "--engine", "eager",
            "--reference", clips, "--ar-filter", "--json", "-q", "--save-samples", str(out_dir)]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    r = json.loads(out)
    assert r["samples"]["n"] == 3 and "kept 3 between likelihood percentiles 40-95" in r["samples"]["source"]
    assert sorted(p.name for p in out_dir.iterdir()) == [f"sample_00{i}.wav" for i in range(6)]
    code, _, err = run_cli(capsys, *args)  # the samples exist now
    assert code == 2 and "exists" in err and "-f" in err
    # the saved samples, scored as a folder, with the model's likelihoods: the same subset
    code, out, err = run_cli(capsys, "eval", str(out_dir), "--model", tiny_ar, "--ar-filter", "--reference", clips,
                             "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["samples"]["histogram"] == r["samples"]["histogram"]


def test_eval_samples_with_the_given_nucleus_and_temperature(capsys, tiny_ar, clips, tmp_path):
    import soundfile as sf

    from sashimi import load_model

    code, _, err = run_cli(capsys, "eval", "--model", tiny_ar, "--n", "2", "--seconds", "0.02", "--engine", "eager",
                           "--seed", "5", "--nucleus-p", "0.8", "--temperature", "0.7", "--reference", clips, "-q",
                           "--save-samples", str(tmp_path / "s"))
    assert code == 0, err
    model = load_model(tiny_ar)
    length = round(0.02 * model.config.sample_rate)
    expected = model.unconditional_generate(2, nucleus_p=0.8, temperature=0.7, length=length, seed=5,
                                            engine="eager", progress=False)
    saved = np.stack([sf.read(tmp_path / "s" / f"sample_00{i}.wav", dtype="float32")[0] for i in range(2)])
    assert np.abs(saved - expected.numpy()).max() <= 1.5 / 32768


@pytest.mark.parametrize("argv, message", [
    (["--reference", "{clips}"], "give SAMPLES"),
    (["{clips}", "--reference", "{tmp}/nowhere"], "--reference: data source not found"),
    (["{tmp}/nowhere", "--reference", "{clips}"], "SAMPLES: data source not found"),
    (["{clips}", "--reference", "{clips}", "--ar-filter"], "--ar-filter needs --model"),
    (["{clips}", "--reference", "{clips}", "--model", "{tmp}/m.pt"], "only used by --ar-filter"),
    (["{clips}", "--reference", "{clips}", "--mis-pairs", "0"], "--mis-pairs must be in"),
    (["{clips}", "--reference", "{clips}", "--save-reference", "{tmp}/r.txt"], "--save-reference must name a .npz"),
    (["{clips}", "--reference", "{clips}", "--save-samples", "{tmp}/s"], "--save-samples applies when generating"),
    (["{clips}", "--reference", "{clips}", "--n", "64"], "--n applies when generating"),
    (["{clips}", "--reference", "{clips}", "--temperature", "0.9"], "--temperature applies when generating"),
    (["--model", "{tmp}/missing.pt", "--reference", "{clips}", "--nucleus-p", "0"], "--nucleus-p must be in (0"),
    (["--model", "{tmp}/missing.pt", "--reference", "{clips}", "--n", "1"], "--n must be in [2"),
    (["--model", "{tmp}/missing.pt", "--reference", "{clips}"], "--model: no such file"),
    (["{clips}", "--reference", "{clips}", "--classifier", "nope"], "--classifier: classifier 'nope'"),
    (["{clips}", "--reference", "{tmp}/ref.npz"], "--reference: no such file"),
])
def test_eval_errors_are_one_line_and_early(capsys, clips, tmp_path, argv, message):
    argv = [a.format(clips=clips, tmp=tmp_path) for a in argv]
    code, out, err = run_cli(capsys, "eval", *argv)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_eval_refuses_a_one_file_set(capsys, clips, tmp_path):
    (tmp_path / "one").mkdir()
    import shutil

    shutil.copy(next(iter(sorted(__import__("pathlib").Path(clips).glob("*.wav")))), tmp_path / "one" / "a.wav")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "one"), "--reference", clips)
    assert code == 2 and "FID needs at least 2" in err


def test_train_classifier_command_checks_first(capsys, tmp_path, clips):
    (tmp_path / "c.pt").write_bytes(b"mine")
    code, _, err = run_cli(capsys, "train-classifier", clips, "--out", str(tmp_path / "c.pt"))
    assert code == 2 and "exists; use -f" in err and (tmp_path / "c.pt").read_bytes() == b"mine"
    code, _, err = run_cli(capsys, "train-classifier", str(tmp_path / "none"), "--out", str(tmp_path / "d.pt"))
    assert code == 2 and "DATA: dataset directory not found" in err
    code, _, err = run_cli(capsys, "train-classifier", clips, "--out", str(tmp_path / "d.pt"), "--channels", "8,x")
    assert code == 2 and "--channels" in err
