from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


def run_cli(capsys, *argv):
    """Run ``sashimi *argv`` in this process: (exit code, stdout, stderr)."""
    from sashimi.__main__ import main

    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def dense_logits(model, tokens):
    """The reference logits (B, T, 256): the eager 'dense' step, fed tokens (B, T)."""
    model.setup_rnn("dense")
    state = model.default_state(tokens.size(0))
    out = []
    with torch.no_grad():
        for t in range(tokens.size(1)):
            logits, state = model.step(tokens[:, t], state)
            out.append(logits)
    return torch.stack(out, 1)


def write_sawtooth_wavs(folder, lengths, rate: int = 8000) -> str:
    """Short noisy-sawtooth WAV files ``0.wav``, ``1.wav``, ... of the given lengths: training data
    for tiny models. Returns the folder."""
    from sashimi.data.audio import write_wav

    rng = np.random.default_rng(0)
    for i, n in enumerate(lengths):
        t = np.arange(n) + rng.integers(16)
        write_wav(Path(folder) / f"{i}.wav", 0.6 * ((t % 16) / 8.0 - 1) + 0.05 * rng.standard_normal(n), rate)
    return str(folder)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def ckpt(fixtures_dir) -> str:
    """Path of the small published-format AR checkpoint."""
    return str(fixtures_dir / "rf5_ar_small.ckpt.pt")


@pytest.fixture
def tiny_diffwave(monkeypatch):
    """A tiny DiffWave model served as the pretrained 'sashimi_diffwave_sc09' (no download)."""
    import sashimi.pretrained.factories
    from sashimi import DiffWaveConfig, SashimiDiffWave

    torch.manual_seed(0)
    model = SashimiDiffWave(DiffWaveConfig(d_model=8, n_layers=1, l_max=256, d_step_hidden=16, d_step_embed=8)).eval()
    monkeypatch.setattr(sashimi.pretrained.factories, "sashimi_diffwave_sc09", lambda device=None, **kw: model.to(device))
    return model


@pytest.fixture(scope="session")
def ar_small():
    """The small published-format AR checkpoint, loaded (eval mode, CPU)."""
    from sashimi import load_model

    return load_model(FIXTURES / "rf5_ar_small.ckpt.pt")


@pytest.fixture(scope="session")
def ar_reference():
    return torch.load(FIXTURES / "rf5_ar_small.reference.pt", weights_only=True)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The tests use small tensors: one intra-op thread is faster, and on a busy machine far
    faster (thread hand-offs then cost more than the work)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _scratch_cwd(tmp_path_factory, monkeypatch):
    """Each test runs in an empty directory of its own (issue 19, item 1): no test depends on the
    directory pytest was started from, or writes into it (a default output such as ``samples/``
    lands here, and a test may check that it did not)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
