"""The C++ CPU step (sashimi.fastgen.cpu): thread layouts give identical results and match the
dense reference, the layout controller, reduced-precision weights, errors as Python exceptions."""
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sashimi import ARConfig, SamplingOptions, SashimiAR, fastgen
from sashimi.fastgen import cpu
from conftest import dense_logits

HAS_CPP = cpu.load_library() is not None
pytestmark = pytest.mark.skipif(not HAS_CPP, reason=f"no C++ build: {cpu.build_error}")
ROOT = Path(__file__).resolve().parent.parent
STEPS = 1500
TOL = 1e-5




@pytest.fixture(scope="module")
def speech(ar_reference):
    return ar_reference["input_mu"][:, :STEPS].long()


@pytest.fixture(scope="module")
def dense_ref(ar_small, speech):
    return dense_logits(ar_small, speech)


def pinned(model, batch, rows, threads, weights=None):
    engine = fastgen.get_engine(model, batch, "cpp", threads=max(2, rows * threads), weights=weights)
    engine.set_layout(rows, threads)
    return engine


@pytest.mark.parametrize("layout", [(1, 1), (1, 2), (2, 1), (2, 2)], ids=lambda l: f"{l[0]}x{l[1]}")
def test_every_thread_layout_matches_dense_bit_for_bit(ar_small, speech, dense_ref, layout):
    """Rows split between thread groups and channels split between the threads of a group: the
    same logits to the bit as one thread, within 1e-5 of the dense reference step."""
    engine = pinned(ar_small, 2, *layout)
    engine.reset()
    logits = engine.feed(speech, want_logits=True)
    assert float((logits - dense_ref).abs().max()) <= TOL
    one = pinned(ar_small, 2, 1, 1)
    one.reset()
    assert torch.equal(logits, one.feed(speech, want_logits=True))


@pytest.mark.parametrize("cfg", [dict(d_model=24, n_layers=1, pool=[2, 3], ff=0, glu=False),
                                 dict(d_model=8, n_layers=1, tie_state=False)], ids=["odd-widths", "untied"])
def test_odd_shapes_split_across_threads(cfg):
    """Channel counts that are not multiples of the 16-channel unit, pools of 2 and 3, no FF, no
    GLU, untied state: every layout agrees with the plain PyTorch fast step."""
    from sashimi.fastgen.torch_engine import TorchEngine

    torch.manual_seed(0)
    model = SashimiAR(ARConfig(**cfg)).eval()
    tokens = torch.randint(0, 256, (3, 200), generator=torch.Generator().manual_seed(0))
    ref = TorchEngine(fastgen.plan_for(model), 3, "cpu")
    ref.reset()
    expected = ref.feed(tokens, want_logits=True)
    for layout in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        engine = pinned(model, 3, *layout)
        engine.reset()
        assert float((engine.feed(tokens, want_logits=True) - expected).abs().max()) <= TOL, layout


def test_sampling_identical_in_every_layout(ar_small):
    """Generation in every layout (the sampler split between a group's threads or repeated by each)
    draws the same tokens: the controller may switch layouts without changing a seeded sample."""
    runs = []
    for layout in [(1, 1), (1, 2), (2, 1), (1, 3)]:
        pinned(ar_small, 3, *layout)
        runs.append(fastgen.generate_tokens(ar_small, torch.empty(3, 0, dtype=torch.long), 600, sampling=SamplingOptions(top_k=40, nucleus_p=0.9),
                                            generator=torch.Generator().manual_seed(5), kind="cpp",
                                            threads=max(2, layout[0] * layout[1])))
    assert all(torch.equal(runs[0], r) for r in runs[1:])


def test_layout_controller_times_every_layout_and_keeps_the_fastest(ar_small):
    """Unpinned, the engine times each layout (one thread; channels or rows on two) and then runs
    the fastest one measured: on a busy machine that is one thread."""
    engine = fastgen.get_engine(ar_small, 2, "cpp", threads=2)
    engine.set_layout()  # measure and choose
    fastgen.generate_tokens(ar_small, torch.empty(2, 0, dtype=torch.long), 600,
                            generator=torch.Generator().manual_seed(0), kind="cpp", threads=2)
    layouts = engine.layouts()
    assert {(l["rows"], l["threads"]) for l in layouts} == {(1, 1), (1, 2), (2, 1)}
    assert all(l["us_per_step"] for l in layouts), layouts
    current = next(l for l in layouts if l["current"])
    assert current["us_per_step"] == min(l["us_per_step"] for l in layouts)  # (re-timing starts >= 1024 steps later)


def test_thread_settings_and_validation(ar_small):
    assert fastgen.get_num_threads() == torch.get_num_threads()
    fastgen.set_num_threads(3)
    try:
        assert fastgen.get_num_threads() == 3
        assert fastgen.get_engine(ar_small, 1, "cpp").threads == 3
    finally:
        fastgen.set_num_threads(None)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            fastgen.set_num_threads(bad)
    with pytest.raises(ValueError, match="weight storage"):
        fastgen.get_engine(ar_small, 1, "cpp", weights="int4")
    engine = fastgen.get_engine(ar_small, 1, "cpp", threads=2)
    with pytest.raises(ValueError, match="not available"):
        engine.set_layout(4, 4)
    with pytest.raises(ValueError, match="both"):
        engine.set_layout(rows=1)


@pytest.mark.parametrize("weights, tol", [("float16", 5e-3), ("bfloat16", 3e-2)])
def test_reduced_precision_weights_close_to_float32(ar_small, speech, dense_ref, weights, tol):
    """Opt-in 16-bit weight storage (float32 arithmetic): logits close to float32's, not equal
    (the weights really are rounded), and the same in every thread layout."""
    logits = fastgen.teacher_forced_logits(ar_small, speech, kind="cpp", threads=1, weights=weights)
    error = float((logits - dense_ref).abs().max())
    assert 1e-5 < error <= tol, error
    engine = pinned(ar_small, 2, 1, 2, weights=weights)
    engine.reset()
    assert torch.equal(engine.feed(speech, want_logits=True), logits)


def test_weight_storage_setting_applies_to_generation(ar_small):
    torch.manual_seed(0)
    assert fastgen.get_weight_storage() == "float32"
    fastgen.set_weight_storage("float16")
    try:
        ar_small.unconditional_generate(1, length=32, progress=False, seed=0)
        assert any(key[3] == "float16" for key in fastgen.cached_engine_keys(ar_small))
    finally:
        fastgen.set_weight_storage("float32")
    with pytest.raises(ValueError, match="weight storage"):
        fastgen.set_weight_storage("int8")


def test_portable_build_matches_native(tmp_path, ar_small, speech):
    """The build without -march=native (what a compiler that rejects it gets: narrower vectors,
    float16 widened in software) gives the same logits as the native build."""
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    script = textwrap.dedent("""
        import sys, torch
        from sashimi import load_model, fastgen
        from sashimi.fastgen import cpu
        cpu.ARCH_FLAGS = ([],)
        model = load_model(sys.argv[1])
        tokens = torch.load(sys.argv[2], weights_only=True)["input_mu"][:1, :300].long()
        for weights in ("float32", "float16"):
            torch.save(fastgen.teacher_forced_logits(model, tokens, kind="cpp", threads=1, weights=weights),
                       sys.argv[3] + weights)
    """)
    fixtures = ROOT / "tests" / "fixtures"
    subprocess.run([sys.executable, "-c", script, str(fixtures / "rf5_ar_small.ckpt.pt"),
                    str(fixtures / "rf5_ar_small.reference.pt"), str(tmp_path / "logits_")], env=env, check=True,
                   timeout=300)
    for weights in ("float32", "float16"):
        native = fastgen.teacher_forced_logits(ar_small, speech[:1, :300], kind="cpp", threads=1, weights=weights)
        portable = torch.load(tmp_path / f"logits_{weights}", weights_only=True)
        assert float((native - portable).abs().max()) <= TOL, weights


# ---- errors reach Python as exceptions, never abort the interpreter --------------------------------
def test_allocation_failure_is_a_memory_error(ar_small):
    plan = fastgen.plan_for(ar_small)
    with pytest.raises(MemoryError, match="out of memory"):
        cpu.CppEngine(plan, 2**40, cpu.load_library())


def test_allocation_failure_under_ulimit_is_catchable():
    """The issue's repro, in a child process whose address space is limited: a MemoryError the
    caller catches (before the fix: std::bad_alloc, SIGABRT, exit status 134)."""
    script = textwrap.dedent("""
        import resource, sys
        from sashimi import load_model
        model = load_model(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        try:
            model.unconditional_generate(10**9, progress=False)
        except MemoryError as e:
            print("caught:", e)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script, str(ROOT / "tests" / "fixtures" / "rf5_ar_small.ckpt.pt")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "caught: fast CPU step (batch 1000000000): out of memory" in proc.stdout


def test_bad_inputs_raise(ar_small):
    engine = fastgen.get_engine(ar_small, 1, "cpp")
    engine.reset()
    with pytest.raises(ValueError, match="token out of range"):
        engine.feed(torch.tensor([[3, 256]]))
    with pytest.raises(FloatingPointError, match="non-finite"):
        cpu.sample(cpu.load_library(), torch.full((1, 8), float("nan")), torch.zeros(1))
    with pytest.raises(RuntimeError, match="bad spec"):
        spec, weights = cpu.pack_plan(fastgen.plan_for(ar_small))
        cpu.CppEngine(fastgen.plan_for(ar_small), 1, cpu.load_library(), packed=(spec[:20].clone(), weights))


def _generate_in_child(model, queue):
    queue.put(model.unconditional_generate(1, length=400, progress=False, seed=1, engine="fast").tolist())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_engine_threads_survive_fork():
    """A process that forked after the parent ran a multi-threaded engine (DataLoader workers do)
    generates without waiting for the parent's threads, which do not exist in the child."""
    torch.manual_seed(0)
    model = SashimiAR(ARConfig(d_model=32, n_layers=1)).eval()
    engine = fastgen.get_engine(model, 1, "cpp", threads=2)
    engine.set_layout(1, 2)
    expected = model.unconditional_generate(1, length=400, progress=False, seed=1, engine="fast")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_generate_in_child, args=(model, queue))  # the same engine, inherited
    child.start()
    got = queue.get(timeout=60)
    child.join(10)
    assert child.exitcode == 0 and got == expected.tolist()
