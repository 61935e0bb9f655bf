"""The SaShiMi authors' own AR checkpoint layouts (Feb-2022 release, V3, V4) load through
sashimi.load_model and reproduce the authors' outputs (fixtures made by running their code; see
tests/fixtures/authors/ and ../shared/fixtures/authors/README.md).

Reference logits are kept for every 8th vocabulary entry (tests/fixtures/authors/*.reference.pt)."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import sashimi
import sashimi.s4 as s4_module
from sashimi import ARConfig, SashimiAR
from sashimi.errors import CheckpointError
from sashimi.fastgen import resolve_engine, unsupported_reason

from authors_writer import write_authors

DIR = Path(__file__).parent / "fixtures" / "authors"
FIXTURES = {  # name: (dataset length, hurwitz, glu)
    "feb2022_sc09_small": (16000, False, True),
    "v3_sc09_small": (16000, True, True),
    "v4_sc09_small": (16000, True, True),
    "feb2022_youtubemix_small": (131072, False, False),
    "v3_youtubemix_small": (131072, True, True),
    "v4_youtubemix_small": (131072, True, True),
}
TOL = 1e-4  # measured 1.0e-6 to 3.1e-6 for every fixture (conv and step)


def _load(name):
    return sashimi.load_model(str(DIR / f"{name}.pt")), torch.load(DIR / f"{name}.reference.pt", weights_only=True)


def _step_logits(model, tokens, steps, mode="dense"):
    model.sashimi.setup_rnn(mode)
    state = model.sashimi.default_state(tokens.size(0))
    out = []
    with torch.no_grad():
        for t in range(steps):
            y, state = model.sashimi.step(model.mu_embedder(tokens[:, t]), state)
            out.append(model.head(y))
    return torch.stack(out, 1)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_loads_and_reproduces_conv_and_step(name):
    length, hurwitz, glu = FIXTURES[name]
    model, ref = _load(name)
    cols = ref["vocab_columns"]
    c = model.config
    assert (c.d_model, c.n_layers, c.pool, c.expand, c.ff, c.d_state) == (16, 2, [4, 4], 2, 2, 64)
    assert (c.l_max, c.hurwitz, c.glu, c.norm) == (length, hurwitz, glu, "scalar")
    # Each tier keeps its own kernel length (16000 / 4000 / 1000 for SC09).
    lengths = sorted({m.l_max for m in model.modules() if isinstance(m, s4_module.SSMKernel)})
    assert lengths == [length // 16, length // 4, length]
    x = ref["input_tokens"][:, :1024].long()
    with torch.no_grad():
        conv = model(x)[:, :300, cols]
    # Exact FFT nodes: the authors' convolution mode with exact nodes.
    assert (conv - ref["conv_logits_exact_nodes"]).abs().max() <= TOL
    step = _step_logits(model, x, 300)[..., cols]
    assert (step - ref["step_logits"]).abs().max() <= TOL
    assert (step - conv).abs().max() <= TOL  # our step vs our convolution


def test_dplr_and_diagonal_steps_take_the_free_q():
    model, ref = _load("feb2022_sc09_small")
    x = ref["input_tokens"][:, :64].long()
    with torch.no_grad():
        conv = model(x)
    for mode in ("dplr", "diagonal"):  # 'diagonal' may fall back to 'dplr' with a warning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = _step_logits(model, x, 64, mode)
        assert (got - conv).abs().max() <= TOL, mode


def _authors_float32_nodes(length, dtype, device):
    """The FFT nodes as the authors' code computes them (a complex64 root raised to integer powers)."""
    omega = torch.tensor(np.exp(-2j * np.pi / length), dtype=torch.complex64) ** torch.arange(length // 2 + 1)
    return (2 * (1 - omega) / (1 + omega)).to(device, dtype), (2 / (1 + omega)).to(device, dtype)


@pytest.mark.parametrize("name", ["feb2022_sc09_small", "v3_sc09_small", "v4_sc09_small"])
def test_authors_conv_logits_with_their_float32_nodes(name, monkeypatch):
    """Our default exact nodes differ from the authors' float32 ones by up to 3.5e-3 in the logits
    (the authors' own conv-vs-step gap); with their nodes the same math gives their conv logits."""
    model, ref = _load(name)
    cols = ref["vocab_columns"]
    x = ref["input_tokens"].long()
    with torch.no_grad():
        exact = model(x)
    monkeypatch.setattr(s4_module, "fft_nodes", _authors_float32_nodes)
    model = sashimi.load_model(str(DIR / f"{name}.pt"))  # no cached kernels
    with torch.no_grad():
        theirs = model(x)
    assert (theirs[:, :300, cols] - ref["conv_logits"]).abs().max() <= TOL
    assert (theirs[:, ref["conv_positions"]][..., cols] - ref["conv_logits_at_positions"]).abs().max() <= TOL
    assert (exact[:, :300, cols] - ref["conv_logits"]).abs().max() <= 5e-3  # the node error, bounded


@pytest.mark.parametrize("name", ["v4_sc09_small", "v4_youtubemix_small"])
def test_v4_is_not_read_with_the_authors_default_softplus_dt(name):
    """The authors' own V4 config (dt_transform=softplus) misreads converted files; we must not."""
    model, ref = _load(name)
    with torch.no_grad():
        conv = model(ref["input_tokens"][:, :1024].long())[:, :256, ref["vocab_columns"]]
    assert (conv - ref["conv_logits_exact_nodes"][:, :256]).abs().max() <= TOL
    assert (conv - ref["head_default_config_conv_logits"]).abs().max() > 0.05


def test_v4_reads_inv_dt_as_log_dt_and_negates_a_imag():
    v3 = dict(sashimi.load_model(str(DIR / "v3_sc09_small.pt")).state_dict())
    v4 = dict(sashimi.load_model(str(DIR / "v4_sc09_small.pt")).state_dict())
    assert v3.keys() == v4.keys()
    for k in v3:
        torch.testing.assert_close(v3[k], v4[k], rtol=0, atol=0)


@pytest.mark.parametrize("fmt,cfg", [
    ("feb2022", dict(d_model=8, n_layers=1, pool=[2], expand=3, ff=0, d_state=8, l_max=512, hurwitz=False, glu=True)),
    ("feb2022", dict(d_model=12, n_layers=3, pool=[2, 3, 2], expand=2, ff=3, d_state=16, l_max=480, hurwitz=False,
                     glu=False)),
    ("v3", dict(d_model=8, n_layers=2, pool=[4], expand=2, ff=1, d_state=32, l_max=1024, glu=True)),
    ("v4", dict(d_model=6, n_layers=1, pool=[], expand=2, ff=2, d_state=4, l_max=300, glu=False)),
    ("v4", dict(d_model=8, n_layers=2, pool=[2, 2], expand=2, ff=2, d_state=8, l_max=256, glu=True, tie_state=False)),
])
def test_other_sizes_load_by_the_same_code(fmt, cfg, tmp_path):
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(norm="scalar", **cfg)).eval()
    with torch.no_grad():  # move the norms and Q off their identity initialisation
        for name, p in model.named_parameters():
            if name.endswith((".norm.m", ".norm.s", ".kernel.Q")):
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / f"{fmt}.pt"
    torch.save(write_authors(model, fmt), path)
    loaded = sashimi.load_model(str(path))
    for field in ("d_model", "n_layers", "pool", "expand", "ff", "d_state", "l_max", "glu", "hurwitz", "tie_state"):
        assert getattr(loaded.config, field) == getattr(model.config, field), field
    x = torch.randint(0, 256, (2, 200))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


def test_native_round_trip_keeps_the_new_options(tmp_path):
    model, _ = _load("feb2022_youtubemix_small")
    sashimi.save_model(model, tmp_path / "m.pt")
    again = sashimi.load_model(str(tmp_path / "m.pt"))
    assert (again.config.norm, again.config.hurwitz, again.config.glu) == ("scalar", False, False)
    x = torch.randint(0, 256, (1, 100))
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_unknown_layouts_fail_with_one_clear_message(tmp_path):
    sd = torch.load(DIR / "v3_sc09_small.pt", map_location="cpu", weights_only=True)
    odd = {k.replace("inv_w_real", "log_A_real"): v for k, v in sd.items()}
    path = tmp_path / "odd.pt"
    torch.save(odd, path)
    with pytest.raises(CheckpointError, match=r"odd\.pt.*not a known layout.*expected.*Feb-2022.*V3.*V4"):
        sashimi.load_model(str(path))
    feb = torch.load(DIR / "feb2022_sc09_small.pt", map_location="cpu", weights_only=True)
    key = next(k for k in feb if k.endswith(".kernel.kernel.w"))
    feb[key] = feb[key].clone()
    feb[key][..., 0, 0] = 0.5  # an unstable eigenvalue
    torch.save(feb, path)
    with pytest.raises(CheckpointError, match=r"odd\.pt.*non-negative real part"):
        sashimi.load_model(str(path))


def test_fast_engines_take_the_authors_models():
    """TransposedLN norms and the free Q are packed (tests/test_fastgen_authors.py checks the
    numbers): generation of the authors' files uses the fast engine."""
    model, _ = _load("v4_sc09_small")
    assert unsupported_reason(model) is None
    assert resolve_engine(model, "auto") == "fast" and resolve_engine(model, "fast") == "fast"
    a = model.unconditional_generate(2, progress=False, length=40, seed=3)
    assert a.shape == (2, 40) and torch.isfinite(a).all()


def test_generation_runs_past_the_kernel_length_and_streams(tmp_path, capsys):
    """A YouTubeMix-layout model (no GLU, TransposedLN, free Q) generates past its l_max (recurrently),
    and `sashimi generate --stream` writes it as it goes (16 kHz)."""
    import soundfile

    from conftest import run_cli

    torch.manual_seed(1)
    model = SashimiAR(ARConfig(d_model=8, n_layers=1, pool=[2], ff=1, d_state=8, l_max=64, glu=False,
                               norm="scalar", hurwitz=False)).eval()
    path = tmp_path / "piano_layout.pt"
    torch.save(write_authors(model, "feb2022"), path)
    loaded = sashimi.load_model(str(path))
    wav = loaded.unconditional_generate(2, progress=False, length=300, seed=0)  # 300 > l_max = 64
    assert wav.shape == (2, 300) and torch.isfinite(wav).all()
    chunks = list(loaded.stream(2, 300, 128, seed=0))
    assert torch.equal(torch.cat(chunks, 1), wav)
    code, _, err = run_cli(capsys, "generate", "--model", str(path), "--seconds", "0.02", "--quiet",
                           "--stream", str(tmp_path / "s.wav"))
    assert code == 0, err
    info = soundfile.info(str(tmp_path / "s.wav"))
    assert (info.samplerate, info.frames) == (16000, 320)
