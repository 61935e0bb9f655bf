"""Streaming generation: SashimiAR.stream, fastgen.stream_tokens, `sashimi generate --stream`."""
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from sashimi import mulaw_encode
from sashimi.cli.stream import MAX_DATA, WavStreamWriter, wav_header

sf = pytest.importorskip("soundfile")
ROOT = Path(__file__).resolve().parent.parent


def tokens(wav, model):
    return mulaw_encode(wav, model.config.mu_levels)


@pytest.mark.parametrize("engine", ["fast", "eager"])
def test_stream_equals_generate_for_any_chunk(ar_small, engine):
    """The chunks put together are the samples of unconditional_generate with the same seed (the
    same tokens; the fast engine draws uniforms in fixed blocks whatever the chunk size)."""
    kw = dict(seed=3, top_k=20, engine=engine)
    full = tokens(ar_small.unconditional_generate(2, length=600, progress=False, **kw), ar_small)
    for chunk in (1, 97, 256, 600, 1000):
        parts = list(ar_small.stream(2, 600, chunk, **kw))
        assert [p.shape[1] for p in parts] == [chunk] * (600 // chunk) + ([600 % chunk] if 600 % chunk else []) \
            if chunk < 600 else [600]
        assert torch.equal(tokens(torch.cat(parts, 1), ar_small), full), chunk


@pytest.mark.parametrize("engine", ["fast", "eager"])
def test_stream_continues_a_prefix_and_runs_without_end(ar_small, engine):
    prefix = ar_small.unconditional_generate(1, length=150, progress=False, seed=1, engine=engine)[0]
    expected = ar_small.generate(prefix, 400, progress=False, seed=2, engine=engine)
    got = torch.cat(list(ar_small.stream(1, 400, 64, prefix_wav=prefix, seed=2, engine=engine)), 1)
    assert torch.equal(tokens(got, ar_small), tokens(expected, ar_small))
    assert torch.equal(tokens(got[:, :150], ar_small), tokens(prefix[None], ar_small))  # the prefix comes first
    endless = ar_small.stream(1, None, 128, seed=0, engine=engine)
    head = torch.cat([next(endless) for _ in range(4)], 1)
    assert torch.equal(tokens(head, ar_small),
                       tokens(ar_small.unconditional_generate(1, length=512, progress=False, seed=0, engine=engine),
                              ar_small))
    only = list(ar_small.stream(1, 150, 64, prefix_wav=prefix, seed=2, engine=engine))  # nothing to generate
    assert [p.shape[1] for p in only] == [64, 64, 22]
    assert torch.equal(tokens(torch.cat(only, 1), ar_small), tokens(prefix[None], ar_small))


def test_stream_validates_before_the_first_chunk(ar_small):
    with pytest.raises(ValueError, match="chunk"):
        ar_small.stream(1, 100, 0)
    with pytest.raises(ValueError, match="N must be"):
        ar_small.stream(0, 100)
    with pytest.raises(ValueError, match="holds 2 waveforms"):
        ar_small.stream(3, 100, prefix_wav=torch.zeros(2, 10))
    with pytest.raises(ValueError, match="length must be None or an integer >= the prefix length 10"):
        ar_small.stream(1, 5, prefix_wav=torch.zeros(10))
    with pytest.raises(ValueError, match="temperature"):
        ar_small.stream(1, 100, temperature=0.0)


# ---- the WAV writer --------------------------------------------------------------------------
def test_wav_stream_writer_matches_write_wav(tmp_path):
    """Exact header, interleaved channels, the PCM conversion of write_wav (clipping, NaN -> 0);
    written in pieces to a non-seekable stream."""
    from sashimi.data.audio import write_wav

    audio = torch.rand(2, 1000) * 2.4 - 1.2
    audio[0, 5] = float("nan")
    buf = io.BytesIO()
    writer = WavStreamWriter(buf, 16000, 2, 1000)
    for a in range(0, 1000, 300):
        writer.write(audio[:, a:a + 300])
    with pytest.raises(ValueError, match="more than the 1000 frames"):
        writer.write(audio[:, :1])
    (tmp_path / "s.wav").write_bytes(buf.getvalue())
    data, rate = sf.read(str(tmp_path / "s.wav"), dtype="int16")
    assert rate == 16000 and data.shape == (1000, 2)
    for ch in range(2):
        write_wav(tmp_path / "ref.wav", audio[ch], 16000)
        assert np.array_equal(data[:, ch], sf.read(str(tmp_path / "ref.wav"), dtype="int16")[0])


def test_wav_header_of_unknown_length():
    head = wav_header(8000, 1, None)
    assert len(head) == 44 and struct.unpack("<I", head[40:44])[0] == MAX_DATA
    assert struct.unpack("<I", head[4:8])[0] == 0xFFFFFFFF
    with pytest.raises(ValueError, match="do not fit"):
        wav_header(8000, 2, 2**31)


# ---- the command line ----------------------------------------------------------------------------
def test_generate_stream_to_file_equals_out(tmp_path, capsys, ckpt):
    base = ["generate", "--model", ckpt, "--seconds", "0.05", "--seed", "7", "--top-k", "30"]
    code, _, err = run_cli(capsys, *base, "--stream", str(tmp_path / "s.wav"))
    assert code == 0, err
    assert "x real time" in err and "streamed 1 x 0.05 s" in err
    assert run_cli(capsys, *base, "--n", "1", "--out", str(tmp_path / "d"), "-q")[0] == 0
    streamed, rate = sf.read(str(tmp_path / "s.wav"), dtype="int16")
    assert rate == 16000 and np.array_equal(streamed, sf.read(str(tmp_path / "d" / "sample_000.wav"), dtype="int16")[0])
    assert not (tmp_path / "s.wav.part").exists() and not os.path.exists("samples")
    code, _, err = run_cli(capsys, *base, "--n", "3", "--stream", str(tmp_path / "s.wav"))
    assert code == 2 and "exists; use -f" in err
    code, _, err = run_cli(capsys, *base, "--n", "3", "--stream", str(tmp_path / "s.wav"), "-f", "-q")
    assert code == 0 and sf.info(str(tmp_path / "s.wav")).channels == 3


def test_generate_stream_refusals(tmp_path, capsys, ckpt, tiny_diffwave):
    for argv, match in [(["--stream", str(tmp_path / "no" / "x.wav")], "does not exist"),
                        (["--stream", str(tmp_path)], "is a directory"),
                        (["--stream", "-", "--n", "4", "--batch-size", "2"], "all --n samples at once"),
                        (["--stream", "-", "--steps", "fast"], "diffusion models only")]:
        code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--seconds", "0.01", *argv)
        assert code == 2 and match in err, (argv, err)
    code, _, err = run_cli(capsys, "generate", "--model", "sashimi_diffwave_sc09", "--stream", "-")
    assert code == 2 and "autoregressive" in err




def test_generate_stream_to_stdout_is_progressive(ckpt):
    """`--stream -` in a real pipe: the header and the first audio arrive while the process is
    still generating (a player would already be playing), and the header states the exact size."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "sashimi", "generate", "--model", ckpt, "--seconds", "600",
                             "--seed", "0", "--stream", "-", "-q"], stdout=subprocess.PIPE, env=env)
    try:
        head = proc.stdout.read(44 + 2 * 3200)  # the header and the first 0.2 s
        assert proc.poll() is None  # still generating: 600 s of audio takes far longer
    finally:
        proc.kill()
        proc.wait()
    assert head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", head[40:44])[0] == 600 * 16000 * 2  # exact size, known up front
    assert len(head) == 44 + 2 * 3200


def test_generate_fast_engine_options(tmp_path, capsys, ckpt, monkeypatch):
    """--weights and --threads reach the fast engine (it says which it runs); the settings are
    the CLI process's, reset here for the tests that follow."""
    from sashimi import fastgen

    monkeypatch.setattr(fastgen, "_said", set())
    try:
        code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--seconds", "0.01", "--n", "1", "--weights",
                               "float16", "--threads", "3", "--out", str(tmp_path / "o"))
        assert code == 0, err
        assert "up to 3 threads; float16 weights" in err
        assert (fastgen.get_weight_storage(), fastgen.get_num_threads()) == ("float16", 3)
        code, _, err = run_cli(capsys, "generate", "--model", ckpt, "--threads", "0", "--out", str(tmp_path / "p"))
        assert code == 2 and "--threads" in err
    finally:
        fastgen.set_weight_storage("float32")
        fastgen.set_num_threads(None)
