"""sashimi.data.datasets and sashimi.data.split: file lists, crops, collation, resumable sampling, dataset splits."""
import csv
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.__main__ import main
from sashimi.data.audio import AudioError, write_wav
from sashimi.data.datasets import (ARCollate, CropDataset, ResumableSampler, ShardSampler, UtteranceDataset, WaveCollate,
                                decoded_bytes, list_audio_files, read_csv_paths)
from sashimi.mulaw import SILENCE_TOKEN, mulaw_encode
from sashimi.data.split import detect_layout, fsdd_split, speech_commands_split, write_split


def _wav(path, n, rate=8000, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = 0.5 * np.random.default_rng(seed).uniform(-1, 1, n)
    write_wav(path, x, rate)
    return str(path)


def _csv(path, rows, header="path"):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([header])
        for r in rows:
            w.writerow([r])
    return str(path)


# ---- file lists ---------------------------------------------------------------------------------
def test_directory_and_csv_sources(tmp_path):
    a = _wav(tmp_path / "d" / "b.wav", 100)
    b = _wav(tmp_path / "d" / "sub" / "a.wav", 100)
    (tmp_path / "d" / "readme.txt").write_text("x")
    assert list_audio_files(tmp_path / "d") == sorted([a, b])
    # relative paths in a CSV are found next to the CSV when not under the working directory
    csv_path = _csv(tmp_path / "list.csv", ["d/b.wav", b])
    assert list_audio_files(csv_path) == [str(tmp_path / "d" / "b.wav"), b]


def test_bad_sources_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        list_audio_files(tmp_path / "nowhere.csv")
    with pytest.raises(ValueError, match="empty.csv.*no files"):
        list_audio_files(_csv(tmp_path / "empty.csv", []))
    with pytest.raises(ValueError, match="cols.csv.*'path' column"):
        read_csv_paths(_csv(tmp_path / "cols.csv", ["x.wav"], header="file"))
    with pytest.raises(FileNotFoundError, match=r"missing.csv: 1 of 1 listed files do not exist.*gone\.wav"):
        list_audio_files(_csv(tmp_path / "missing.csv", [str(tmp_path / "gone.wav")]))
    os.makedirs(tmp_path / "nowav")
    with pytest.raises(ValueError, match="no audio files"):
        list_audio_files(tmp_path / "nowav")


def test_probe_refuses_bad_files_up_front(tmp_path):
    good = _wav(tmp_path / "good.wav", 100)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        CropDataset([good, str(bad)], 8000, 64)
    st = tmp_path / "st.wav"
    sf.write(str(st), np.zeros((50, 2), np.float32), 8000)
    with pytest.raises(AudioError, match="st.wav.*2 channels.*downmix"):
        CropDataset([good, str(st)], 8000, 64)
    ds = CropDataset([good, str(st)], 8000, 64, downmix=True)
    assert ds[1][0].shape == (64,)


# ---- crops and collation --------------------------------------------------------------------------
def test_crops_pad_resample_and_lead(tmp_path):
    short = _wav(tmp_path / "short.wav", 30, rate=8000, seed=1)
    long = _wav(tmp_path / "long.wav", 500, rate=16000, seed=2)
    ds = CropDataset([short, long], 16000, 101, lead=1, random_crop=True, seed=5)
    w, valid = ds[0]  # 30 samples at 8 kHz -> 60 at 16 kHz, plus the leading zero
    assert w.shape == (101,) and valid == 61 and w[0] == 0 and torch.all(w[61:] == 0)
    assert torch.equal(ds[1][0], ds[1][0])  # deterministic within an epoch
    fixed = CropDataset([long], 16000, 101, lead=1, random_crop=False)
    w, valid = fixed[0]
    assert valid == 101 and w[0] == 0
    x, y, lengths = ARCollate()([fixed[0], ds[0]])
    assert x.shape == y.shape == (2, 100) and x.dtype == torch.long
    assert torch.all(x[:, 0] == SILENCE_TOKEN)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert lengths.tolist() == [100, 60]
    assert torch.equal(y[1, :60], mulaw_encode(ds[0][0][1:61]))
    audio_batch, lens = WaveCollate()([fixed[0], ds[0]])
    assert audio_batch.shape == (2, 101) and lens.tolist() == [101, 61]


def test_random_crops_depend_on_seed_epoch_index(tmp_path):
    f = _wav(tmp_path / "long.wav", 4000, seed=3)
    ds = CropDataset([f, f], 8000, 64, seed=1)
    a0, b0 = ds[0][0], ds[1][0]
    assert torch.equal(a0, ds[0][0])
    ds.set_epoch(1)
    assert not (torch.equal(a0, ds[0][0]) and torch.equal(b0, ds[1][0]))


# ---- utterance windows and the in-memory cache ----------------------------------------------------
def test_utterance_windows_place_the_whole_word_in_silence(tmp_path):
    word = _wav(tmp_path / "w.wav", 300)
    ds = UtteranceDataset([word], 8000, 1000, lead=1, fade=0, seed=3)
    original = torch.from_numpy(sf.read(word, dtype="float32")[0])
    offsets = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        w, valid = ds[0]
        assert w.shape == (1001,) and valid == 1001  # the silence counts as data
        nz = torch.nonzero(w).flatten()
        start = int(nz[0])
        torch.testing.assert_close(w[start:start + 300], original)  # whole, unchanged
        assert not w[:start].any() and not w[start + 300:].any()
        offsets.add(start)
        assert torch.equal(ds[0][0], w)  # a pure function of (seed, epoch, index)
    assert len(offsets) > 1  # the word moves from epoch to epoch
    centred = UtteranceDataset([word], 8000, 1000, random_place=False)[0][0]
    assert int(torch.nonzero(centred)[0]) == 350


def test_utterance_max_start_bounds_the_leading_silence(tmp_path):
    word = _wav(tmp_path / "w.wav", 300)
    ds = UtteranceDataset([word], 8000, 1000, lead=1, max_start=40, seed=3)
    starts = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        starts.add(int(torch.nonzero(ds[0][0])[0]) - 1)
    assert max(starts) <= 40 and len(starts) > 3
    assert int(torch.nonzero(UtteranceDataset([word], 8000, 1000, max_start=40, random_place=False)[0][0])[0]) == 20
    with pytest.raises(ValueError, match="max_start"):
        UtteranceDataset([word], 8000, 1000, max_start=-1)


def test_utterance_fades_and_long_files(tmp_path):
    word = _wav(tmp_path / "w.wav", 300)
    w = UtteranceDataset([word], 8000, 300, fade=40, random_place=False)[0][0]
    raw = torch.from_numpy(sf.read(word, dtype="float32")[0])
    torch.testing.assert_close(w[40:-40], raw[40:-40])
    assert (w[:40].abs() < raw[:40].abs() + 1e-7).all() and w[0].abs() < 0.01 * raw.abs().max()
    long = _wav(tmp_path / "long.wav", 2000)
    ds = UtteranceDataset([long], 8000, 500, lead=1, seed=1)
    w, valid = ds[0]
    assert w.shape == (501,) and valid == 501 and w[0] == 0  # a random 500-sample crop after the lead


def test_cache_serves_the_same_items(tmp_path):
    files = [_wav(tmp_path / f"{i}.wav", 100 + 50 * i, seed=i) for i in range(3)]
    for cls, args in ((CropDataset, (16000, 120)), (UtteranceDataset, (16000, 600))):
        plain, cached = cls(files, *args, lead=1, seed=4), cls(files, *args, lead=1, seed=4, cache=True)
        assert cached.cached and not plain.cached
        for epoch in (0, 1):
            plain.set_epoch(epoch), cached.set_epoch(epoch)
            for i in range(3):
                a, b = plain[i], cached[i]
                assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert decoded_bytes(files, 16000) == 4 * sum(2 * (100 + 50 * i) for i in range(3))


def test_loader_workers_follow_the_cache(tmp_path):
    from sashimi.train.config import build_config
    from sashimi.train.loop import _loader
    from sashimi.train.runtime import Runtime
    from sashimi.train.tasks import get_task

    files = [_wav(tmp_path / f"{i}.wav", 100) for i in range(2)]
    cfg = build_config(["model_cfg.d_model=8", "model_cfg.n_layers=1", "seq_len=64", "batch_size=1"])
    task, rt = get_task("ar"), Runtime()
    sampler = ResumableSampler(2)
    assert _loader(CropDataset(files, 16000, 65, cache=True), sampler, cfg, task, rt, True).num_workers == 0
    uncached = _loader(CropDataset(files, 16000, 65), sampler, cfg, task, rt, True).num_workers
    assert uncached == min(8, len(os.sched_getaffinity(0)))


def test_resumable_sampler_skips_and_shards():
    s = ResumableSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    assert sorted(full) == list(range(10))
    s.set_epoch(2, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert list(s) != full
    shards = [ResumableSampler(10, 2, r, seed=3) for r in range(2)]
    for sh in shards:
        sh.set_epoch(0)
    assert set(shards[0]) | set(shards[1]) == set(range(10)) and not set(shards[0]) & set(shards[1])
    assert list(ShardSampler(5, 2, 1)) == [1, 3]


# ---- splits --------------------------------------------------------------------------------------
def _speech_commands(root):
    for word in ("zero", "one", "dog"):
        for i in range(3):
            _wav(root / word / f"s{i}_nohash_0.wav", 20)
    _wav(root / "_background_noise_" / "noise.wav", 20)
    (root / "validation_list.txt").write_text("zero/s1_nohash_0.wav\ndog/s1_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("zero/s2_nohash_0.wav\none/s2_nohash_0.wav\n")


def test_speech_commands_split(tmp_path):
    root = tmp_path / "sc"
    _speech_commands(root)
    assert detect_layout(str(root)) == "speechcommands"
    full = speech_commands_split(str(root))
    assert len(full["train"]) == 5 and len(full["valid"]) == 2 and len(full["test"]) == 2
    assert not any("_background_noise_" in p for v in full.values() for p in v)
    sc09 = speech_commands_split(str(root), sc09_only=True)
    assert len(sc09["train"]) == 3 and len(sc09["valid"]) == 1 and len(sc09["test"]) == 2
    assert all("/dog/" not in p for v in sc09.values() for p in v)
    out = tmp_path / "splits"
    assert main(["split", "--root_path", str(root), "--output_path", str(out), "--sc09_only"]) == 0
    assert read_csv_paths(out / "sc09-test.csv") == sc09["test"]
    # refuses to overwrite without -f
    assert main(["split", "--root_path", str(root), "--output_path", str(out), "--sc09_only"]) == 2
    assert main(["split", "--root_path", str(root), "--output_path", str(out), "--sc09_only", "-f"]) == 0
    # the seed's spelling, `--sc09_only True`, keeps working; False means the full split
    assert main(["split", "--root_path", str(root), "--output_path", str(out), "--sc09_only", "True", "-f"]) == 0
    assert read_csv_paths(out / "sc09-test.csv") == sc09["test"]
    assert main(["split", "--root_path", str(root), "--output_path", str(out), "--sc09_only", "False"]) == 0
    assert read_csv_paths(out / "speechcommands-train.csv") == full["train"]
    with pytest.raises(SystemExit):
        main(["split", "--root_path", str(root), "--output_path", str(out), "--sc09_only", "maybe"])


def test_fsdd_split(tmp_path, capsys):
    rec = tmp_path / "fsdd" / "recordings"
    for digit in (0, 7):
        for speaker in ("jackson", "theo"):
            for take in range(12):
                _wav(rec / f"{digit}_{speaker}_{take}.wav", 10)
    assert detect_layout(str(tmp_path / "fsdd")) == "fsdd"
    s = fsdd_split(str(tmp_path / "fsdd"), valid_takes=2)
    take = lambda p: int(os.path.basename(p)[:-4].split("_")[2])
    assert sorted({take(p) for p in s["test"]}) == [0, 1, 2, 3, 4] and len(s["test"]) == 20
    assert sorted({take(p) for p in s["valid"]}) == [5, 6] and len(s["train"]) == 20
    written = write_split(s, str(tmp_path / "out"), "fsdd", relative=True)
    assert len(written) == 3
    assert list_audio_files(tmp_path / "out" / "fsdd-train.csv")  # relative paths resolve
    with pytest.raises(FileExistsError):
        write_split(s, str(tmp_path / "out"), "fsdd")
    assert main(["split", "--root_path", str(tmp_path / "nothing"), "--output_path", str(tmp_path / "o2")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
