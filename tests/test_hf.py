"""hf://owner/name models and `sashimi push`, against a real huggingface_hub and a cache laid out as it lays
one out (this machine, like CI, has no network: nothing here reaches the Hub, and no upload is made)."""
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sashimi
from sashimi import CheckpointError, load_model, save_pretrained
from sashimi.persistence.download import DownloadError
from sashimi.persistence.hf import HubDependencyError, hf_folder

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def add_snapshot(cache: Path, repo_id: str, commit: str, files: dict, refs=(), absent=()) -> Path:
    """Put ``files`` (name -> bytes) in the cache as huggingface_hub does after downloading them at ``commit``:
    ``blobs/<etag>`` (the SHA-256 for LFS files such as weights, git's blob SHA-1 for small text files),
    ``snapshots/<commit>/<name>`` -> ``../../blobs/<etag>`` (relative symlinks), ``refs/<branch>`` holding the
    commit, and ``.no_exist/<commit>/<name>`` for each file the Hub said the repository does not have."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for sub in (repo / "blobs", snapshot, repo / "refs"):
        sub.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        lfs = name.endswith(".safetensors")
        etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / etag).write_bytes(data)
        os.symlink(f"../../blobs/{etag}", snapshot / name)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    for name in absent:
        (repo / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
        (repo / ".no_exist" / commit / name).touch()
    return snapshot


def folder_files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def no_network(*args, **kwargs):
    raise AssertionError("this test must not reach the network")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path, offline (HF_HUB_OFFLINE=1); any connection fails the test."""
    pytest.importorskip("huggingface_hub")  # in the test extra; the tests without this fixture run without it
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read the environment when it was imported (test_hf_uri_in_a_fresh_process sets only
    # the environment); its functions read these module attributes at each call
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_TOKEN", raising=False)  # and no token of the machine's user is ever read
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache


@pytest.fixture
def two_models(ar_small, tmp_path):
    """Two model folders of one architecture with different weights: (model A, folder A, model B, folder B)."""
    b = sashimi.load_model(save_pretrained(ar_small, tmp_path / "a"))
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return ar_small, tmp_path / "a", b, save_pretrained(b, tmp_path / "b")


def same_logits(x, y) -> bool:
    tokens = torch.randint(0, 256, (1, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(x(tokens), y(tokens))


# ---- loading ----------------------------------------------------------------------------------------
def test_the_cache_is_laid_out_as_huggingface_hub_reads_it(hf_cache, ar_small, tmp_path):
    from huggingface_hub import scan_cache_dir

    folder = save_pretrained(ar_small, tmp_path / "m")
    add_snapshot(hf_cache, "me/tiny", COMMIT_A, folder_files(folder), refs=("main",))
    info = scan_cache_dir(hf_cache)
    assert not info.warnings
    (repo,) = info.repos
    (rev,) = repo.revisions
    assert repo.repo_id == "me/tiny" and repo.repo_type == "model" and rev.commit_hash == COMMIT_A
    assert set(rev.refs) == {"main"} and {f.file_name for f in rev.files} == {"config.json", "model.safetensors",
                                                                              "README.md"}


def test_load_from_the_cache_offline(hf_cache, two_models):
    a, folder_a, _, _ = two_models
    snapshot = add_snapshot(hf_cache, "me/tiny", COMMIT_A, folder_files(folder_a), refs=("main",))
    model = load_model("hf://me/tiny")
    assert same_logits(model, a)
    assert model.config == a.config and hf_folder("hf://me/tiny") == snapshot


def test_revisions_select_branches_and_commits(hf_cache, two_models):
    a, folder_a, b, folder_b = two_models
    add_snapshot(hf_cache, "me/tiny", COMMIT_A, folder_files(folder_a), refs=("main",))
    add_snapshot(hf_cache, "me/tiny", COMMIT_B, folder_files(folder_b), refs=("v2",))
    assert not same_logits(a, b)
    assert same_logits(load_model("hf://me/tiny"), a)
    assert same_logits(load_model("hf://me/tiny@main"), a)
    assert same_logits(load_model("hf://me/tiny@v2"), b)  # a branch
    assert same_logits(load_model(f"hf://me/tiny@{COMMIT_A}"), a)  # a commit
    assert same_logits(load_model(f"hf://me/tiny@{COMMIT_B}"), b)


def test_a_repo_without_our_config_is_refused(hf_cache, ar_small, tmp_path):
    files = folder_files(save_pretrained(ar_small, tmp_path / "m"))
    # the Hub said it has no config.json (huggingface_hub recorded it under .no_exist)
    add_snapshot(hf_cache, "me/weights-only", COMMIT_A, {"model.safetensors": files["model.safetensors"]},
                 refs=("main",), absent=("config.json",))
    with pytest.raises(CheckpointError, match=r"hf://me/weights-only: the repository has no config\.json, so it holds "
                                              r"no sashimi model"):
        load_model("hf://me/weights-only")
    # a repository of another library: refused on its config.json, before its weights are fetched (they are not
    # in the cache: fetching them would have failed with "not in the local Hugging Face cache" instead)
    bert = {"config.json": json.dumps({"model_type": "bert", "architectures": ["BertModel"]}).encode()}
    add_snapshot(hf_cache, "them/bert", COMMIT_A, bert, refs=("main",))
    with pytest.raises(CheckpointError, match=r"models--them--bert/snapshots/a{40}/config\.json: not a sashimi model "
                                              r"config: key 'format'"):
        load_model("hf://them/bert")


def test_not_in_the_cache_while_offline_says_so(hf_cache, two_models):
    add_snapshot(hf_cache, "me/tiny", COMMIT_A, folder_files(two_models[1]), refs=("main",))
    for uri in ("hf://me/elsewhere", "hf://me/tiny@v9", f"hf://me/tiny@{COMMIT_B}"):
        with pytest.raises(DownloadError, match=rf"{uri}: config\.json is not in the local Hugging Face cache "
                                                rf"\({hf_cache}\) and HF_HUB_OFFLINE is set"):
            load_model(uri)


def test_hf_uri_in_a_fresh_process(hf_cache, two_models, tmp_path):
    """Only the environment (HF_HOME, HF_HUB_OFFLINE=1) set, before anything is imported: the user's path."""
    a, folder_a, _, _ = two_models
    add_snapshot(hf_cache, "me/tiny", COMMIT_A, folder_files(folder_a), refs=("main",))
    script = ("import socket, sys, torch, sashimi\n"
              "def refuse(*a, **k): raise AssertionError('network')\n"
              "socket.socket.connect = refuse\n"
              "x, y = sashimi.load_model('hf://me/tiny'), sashimi.load_model(sys.argv[1])\n"
              "t = torch.randint(0, 256, (1, 200))\n"
              "with torch.no_grad(): assert torch.equal(x(t), y(t))\n"
              "print('same logits')\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", script, str(folder_a)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "same logits" in proc.stdout, proc.stderr[-2000:]


def test_hub_entry_point_cli_and_classifier_take_hf_uris(hf_cache, two_models, tmp_path, capsys):
    a, folder_a, _, _ = two_models
    add_snapshot(hf_cache, "me/tiny", COMMIT_A, folder_files(folder_a), refs=("main",))
    model = torch.hub.load(str(ROOT), "sashimi_ar_sc09", source="local", checkpoint="hf://me/tiny", device="cpu")
    assert same_logits(model, a)
    code, _, err = run_cli(capsys, "generate", "--model", "hf://me/tiny", "--n", "1", "--seconds", "0.01", "--quiet",
                           "--out", str(tmp_path / "wavs"))
    assert code == 0, err
    assert os.listdir(tmp_path / "wavs") == ["sample_000.wav"]
    code, _, err = run_cli(capsys, "generate", "--model", "hf://me/elsewhere", "--out", str(tmp_path / "more"))
    assert code == 2 and "HF_HUB_OFFLINE" in err and len(err.strip().splitlines()) == 1
    from sashimi.eval import load_classifier

    add_snapshot(hf_cache, "me/digits", COMMIT_A, folder_files(sashimi.eval.classifier.bundled_classifier_folder("fsdd")),
                 refs=("main",))
    clf = load_classifier("hf://me/digits")
    wavs = 0.1 * torch.randn(2, 8000)
    assert clf.name == "hf://me/digits"
    assert torch.equal(clf.predict(wavs, 8000)[0], load_classifier("fsdd").predict(wavs, 8000)[0])


def test_eval_takes_an_hf_classifier_and_reports_a_missing_one_in_one_line(hf_cache, capsys, fixtures_dir):
    clips = str(fixtures_dir / "fsdd")
    code, _, err = run_cli(capsys, "eval", clips, "--reference", clips, "--classifier", "hf://me/nothing", "--quiet")
    assert code == 2 and "--classifier: hf://me/nothing: config.json is not in the local" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_huggingface_hub_gives_an_install_hint(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub now fails
    with pytest.raises(HubDependencyError, match=r'pip install "sashimi-audio\[hub\]"'):
        load_model("hf://me/tiny")
    code, _, err = run_cli(capsys, "generate", "--model", "hf://me/tiny", "--out", str(tmp_path / "wavs"))
    assert code == 2 and 'pip install "sashimi-audio[hub]"' in err and len(err.strip().splitlines()) == 1


def test_malformed_uris_are_refused():
    for uri in ("hf://tiny", "hf://me/tiny/extra", "hf://me/tiny@", "hf:///tiny"):
        with pytest.raises(ValueError, match="expected hf://owner/name or hf://owner/name@revision"):
            load_model(uri)


# ---- sashimi push ----------------------------------------------------------------------------------
def test_push_dry_run_needs_no_network_token_or_huggingface_hub(monkeypatch, capsys, ar_small, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    folder = save_pretrained(ar_small, tmp_path / "m")
    code, out, err = run_cli(capsys, "push", str(folder), "hf://me/tiny", "--dry-run")
    assert code == 0, err
    assert "target: hf://me/tiny (branch main; a missing repository is created public)" in out
    for name in ("config.json", "model.safetensors"):
        assert f"{os.path.getsize(folder / name):,} bytes" in out
    assert "3 files" in out and "nothing was uploaded" in out
    # a checkpoint file is converted; @branch and --private are shown; --card replaces the generated card
    sashimi.save_model(ar_small, tmp_path / "ckpt.pt", step=3)
    (tmp_path / "card.md").write_text("# my card\n")
    code, out, err = run_cli(capsys, "push", str(tmp_path / "ckpt.pt"), "hf://me/tiny@v2", "--private", "--dry-run",
                             "--card", str(tmp_path / "card.md"))
    assert code == 0, err
    assert "(branch v2; a missing repository is created private)" in out and "ckpt.pt, converted to a folder" in out
    assert re.search(r"README\.md +10 bytes", out)


def test_push_refuses_bad_targets_and_models_in_one_line(capsys, tmp_path):
    for args, message in ((["sashimi_ar_fsdd", "me/tiny"], "expected hf://owner/name"),
                          ([str(tmp_path), "hf://me/tiny"], "no config.json"),
                          (["sashimi_ar_fsdd", "hf://me/tiny@v2", "--revision", "v3"], "names branch 'v2'")):
        code, _, err = run_cli(capsys, "push", *args, "--dry-run")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_push_offline_reaches_huggingface_hub_and_reports_its_refusal(hf_cache, capsys):
    """Without --dry-run the real HfApi is called; offline it refuses before any request (no upload happens)."""
    code, out, err = run_cli(capsys, "push", "sashimi_ar_fsdd", "hf://me/fsdd")
    assert code == 2 and "upload to hf://me/fsdd failed: OfflineModeIsEnabled" in err, err
    assert "target: hf://me/fsdd" in out
