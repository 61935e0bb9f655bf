"""Command line: `sashimi generate` and `sashimi nll` (run in-process through sashimi.__main__.main)."""
import json
import copy
import math

import pytest
import torch

import sashimi.pretrained.factories
from sashimi import mulaw_decode
from conftest import run_cli
from sashimi.__main__ import main
from sashimi.data.audio import read_audio, write_wav

sf = pytest.importorskip("soundfile")





def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    return lines[0]


def test_generate_writes_16bit_wavs_reproducibly(tmp_path, capsys, ckpt):
    args = ["generate", "--model", ckpt, "--n", "3", "--seconds", "0.02", "--seed", "7", "--top-k", "20",
            "--batch-size", "2", "-q"]
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["sample_000.wav", "sample_001.wav", "sample_002.wav"]
    info = sf.info(str(tmp_path / "a" / "sample_000.wav"))
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 320, 1, "PCM_16")
    assert run_cli(capsys, *args, "--out", str(tmp_path / "b"))[0] == 0
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_generate_refuses_to_overwrite_without_force(tmp_path, capsys, ckpt):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sample_000.wav").write_bytes(b"keep me")
    args = ["generate", "--model", ckpt, "--n", "2", "--seconds", "0.01", "--out", str(out), "-q"]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "-f" in one_line(err)
    assert (out / "sample_000.wav").read_bytes() == b"keep me"
    assert sorted(p.name for p in out.iterdir()) == ["sample_000.wav"]  # nothing written
    code, _, err = run_cli(capsys, *args, "-f")
    assert code == 0, err
    assert sf.info(str(out / "sample_000.wav")).frames == 160
    assert (out / "sample_001.wav").is_file()


@pytest.mark.parametrize("bad", [
    ["--n", "0"], ["--n", "three"], ["--seconds", "-1"], ["--seconds", "nan"], ["--temperature", "0"],
    ["--nucleus-p", "1.5"], ["--top-k", "-1"], ["--bogus"], ["--model", "missing.pt"], ["--engine", "warp"],
    ["--device", "quantum"], ["--prefix", "missing.wav"], ["--steps", "fast"], ["--batch-size", "0"],
    ["--name", "a/b"],
], ids=lambda a: " ".join(a))
def test_bad_arguments_one_line_error_nothing_written(tmp_path, capsys, ckpt, bad):
    args = ["generate", "--model", ckpt, "--n", "1", "--seconds", "0.01", "--out", str(tmp_path / "out"), "-q"]
    code, _, err = run_cli(capsys, *args, *bad)
    assert code == 2
    assert "error" in one_line(err)
    assert not (tmp_path / "out").exists()


def test_hub_names_and_diffwave(tmp_path, capsys, monkeypatch, ckpt, tiny_diffwave):
    from sashimi import load_model

    ar = load_model(ckpt)
    monkeypatch.setattr(sashimi.pretrained.factories, "sashimi_ar_sc09", lambda device=None, **kw: ar.to(device))
    code, _, err = run_cli(capsys, "generate", "--model", "sashimi_ar_sc09", "--n", "1", "--seconds", "0.01",
                           "--out", str(tmp_path / "ar"), "-q")
    assert code == 0, err
    assert (tmp_path / "ar" / "sample_000.wav").is_file()
    base = ["generate", "--model", "sashimi_diffwave_sc09", "--n", "2", "--seconds", "0.004", "-q"]
    code, _, err = run_cli(capsys, *base, "--top-k", "5", "--out", str(tmp_path / "x"))
    assert code == 2 and "autoregressive" in one_line(err) and not (tmp_path / "x").exists()
    code, _, err = run_cli(capsys, *base, "--seconds", "0.001", "--out", str(tmp_path / "x"))  # 16 samples: ok
    assert code == 0, err
    code, _, err = run_cli(capsys, *base, "--seconds", "0.0011", "-f", "--out", str(tmp_path / "y"))  # 18: no
    assert code == 2 and "multiple" in one_line(err) and not (tmp_path / "y").exists()
    code, _, err = run_cli(capsys, *base, "--steps", "2", "--seed", "1", "--out", str(tmp_path / "dw"))
    assert code == 0, err
    assert sf.info(str(tmp_path / "dw" / "sample_001.wav")).frames == 64


def test_generate_continues_a_prefix(tmp_path, capsys, ckpt):
    prompt = 0.3 * torch.sin(torch.arange(80) / 5.0)
    write_wav(tmp_path / "prompt.wav", prompt, 8000)  # resampled to 16 kHz: 160 samples
    code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--n", "1", "--seconds", "0.02", "--prefix",
                           str(tmp_path / "prompt.wav"), "--out", str(tmp_path / "o"), "-q")
    assert code == 0, err
    out, rate = read_audio(tmp_path / "o" / "sample_000.wav")
    expected, _ = read_audio(tmp_path / "prompt.wav", 16000)
    from sashimi import mulaw_encode

    assert rate == 16000 and out.numel() == 320
    assert (out[:160] - mulaw_decode(mulaw_encode(expected))).abs().max() < 1e-3  # the quantised prompt


@pytest.fixture
def speech_files(tmp_path, ar_reference):
    wav = mulaw_decode(ar_reference["input_mu"][0, 1:4001].long())
    write_wav(tmp_path / "speech.wav", wav, 16000)
    write_wav(tmp_path / "speech8k.wav", wav[::2], 8000)
    return tmp_path


def test_nll_prints_bits_per_sample(capsys, ckpt, speech_files, ar_small):
    path = speech_files / "speech.wav"
    code, out, err = run_cli(capsys, "nll", str(path), "--model", ckpt)
    assert code == 0, err
    bits, name = out.strip().split("\t")
    wav, _ = read_audio(path)
    assert name == str(path)
    assert abs(float(bits) - float(ar_small.nll(wav)[0]) / math.log(2)) < 1e-3
    code, out, err = run_cli(capsys, "nll", str(speech_files), "--model", ckpt)  # a directory, with resampling
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and lines[-1].endswith("mean over 2 files")


def test_nll_long_files_use_the_recurrence(speech_files, ar_small):
    from sashimi.eval.likelihood import nats_per_sample

    wav, _ = read_audio(speech_files / "speech.wav")
    short = copy.deepcopy(ar_small)
    short.config.l_max = 1000  # forces the recurrent path for this 4000-sample file
    assert abs(nats_per_sample(short, wav) - nats_per_sample(ar_small, wav)) < 1e-4


def test_nll_errors(tmp_path, capsys, ckpt, tiny_diffwave, speech_files):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    for argv, match in [(["nll", str(tmp_path / "empty"), "--model", ckpt], "no audio files"),
                        (["nll", str(tmp_path / "junk.wav"), "--model", ckpt], "junk.wav"),
                        (["nll", str(tmp_path / "nope.wav"), "--model", ckpt], "no such file"),
                        (["nll", str(speech_files / "speech.wav"), "--model", "sashimi_diffwave_sc09"],
                         "autoregressive")]:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and match in one_line(err)


def test_bench_generate_side_by_side(tmp_path, capsys, ckpt):
    """`sashimi bench generate --baseline DIR`: both versions in fresh processes, alternating; the
    table shows both, the ratio, the reference loop and the thread layout; JSON has every run."""
    import json

    from sashimi.cli.baseline import this_side

    out = tmp_path / "bench.json"
    rc = main(["bench", "generate", "--model", ckpt, "--batch-sizes", "1,2", "--steps", "64", "--eager-steps", "16",
               "--baseline", this_side().root, "--rounds", "1", "--threads", "2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "faster" in text and "reference loop" in text and "samples/s" in text
    rows = json.loads(out.read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 2]
    for row in rows:
        current, baseline = (side["runs"][0] for side in row["sides"])
        assert current["status"] == baseline["status"] == "ok" and current["samples_per_s"] > 0
        assert current["threads"] == 2 and sum(l["steps"] for l in current["layouts"]) >= 64
        assert row["speedup"] > 0 and row["eager_samples_per_s"] > 0


def test_bench_generate_profile(capsys):
    """`--profile` breaks the C++ step down in this process (it imports the worker's model builder,
    whose helper module sits beside it), here on a small model in the authors' configuration."""
    from sashimi.fastgen import cpu

    if cpu.load_library(profile=True) is None:
        pytest.skip(f"no C++ build: {cpu.build_error}")
    cfg = ["d_model=16", "n_layers=1", "pool=[2]", "d_state=8", "l_max=64", "glu=False", "norm=scalar", "hurwitz=False"]
    rc = main(["bench", "generate", "--device", "cpu", *[a for c in cfg for a in ("--model-cfg", c)],
               "--batch-sizes", "1", "--steps", "64", "--eager-steps", "0", "--profile"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "profile, batch 1" in text and "linear" in text and "norm" in text


def test_bench_train_side_by_side(tmp_path, capsys):
    """`sashimi bench train --baseline DIR`: both versions run in fresh processes, the table shows the
    ratio and the first-step loss difference (0 here: the baseline is this very checkout)."""
    from sashimi.cli.baseline import this_side

    out = tmp_path / "bench.json"
    rc = main(["bench", "train", "--preset", "fsdd", "--model-cfg", "d_model=8", "--model-cfg", "n_layers=1",
               "--model-cfg", "l_max=256", "--seq-len", "256", "--batch-sizes", "1", "--steps", "1", "--warmup", "0",
               "--baseline", this_side().root, "--rounds", "1", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "faster" in text and "first-step loss diff 0.0e+00" in text
    row = json.loads(out.read_text())["rows"][0]
    assert [len(side["runs"]) for side in row["sides"]] == [1, 1]
    assert row["first_loss_diff"] == 0.0


@pytest.mark.slow  # two fresh processes: ~20 s on 2 busy cores
def test_bench_train_bf16(tmp_path, capsys):
    """`--precision bf16` reaches the worker: the same first step as fp32 within bf16 rounding, not equal."""
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.json"
        rc = main(["bench", "train", "--preset", "fsdd", "--model-cfg", "d_model=8", "--model-cfg", "n_layers=1",
                   "--model-cfg", "l_max=256", "--seq-len", "256", "--batch-sizes", "1", "--steps", "1", "--warmup", "0",
                   "--precision", precision, "--json", str(out)])
        assert rc == 0
        run = json.loads(out.read_text())["rows"][0]["sides"][0]["runs"][0]
        assert run["precision"] == precision
        losses[precision] = run["losses"][0]
    capsys.readouterr()
    assert losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=1e-3)  # see test_mixed_precision.py's LOSS_RTOL


def test_bench_train_bad_baseline(tmp_path, capsys):
    assert main(["bench", "train", "--baseline", str(tmp_path)]) == 2  # a directory without a sashimi package
    assert "holds no sashimi package" in capsys.readouterr().err
    assert main(["bench", "train", "--model-cfg", "d_modle=8"]) == 2
    assert "ARConfig field" in capsys.readouterr().err
