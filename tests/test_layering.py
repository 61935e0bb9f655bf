"""The package's structure: the import-linter contracts in pyproject.toml (layers, no circles), no
private names imported across modules, and importing sashimi changes nothing."""
import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    """Each layer imports only the layers below it; no package's modules import each other in a circle."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", "--config", str(REPO / "pyproject.toml"),
                           "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private_imports(path: Path) -> list[str]:
    """``from X import _name`` and ``module._name`` uses, X / module being another module."""
    tree = ast.parse(path.read_text(), str(path))
    module, is_package = _module_name(path), path.name == "__init__.py"
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            source = _resolve(module, node, is_package)
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: from {source} import {alias.name}")
                if source.startswith("sashimi"):
                    modules[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sashimi"):
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules \
                and node.attr.startswith("_") and not node.attr.startswith("__"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_private_names_cross_module_boundaries():
    files = sorted((REPO / "sashimi").rglob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
    files += [REPO / "hubconf.py", REPO / "train.py", REPO / "split_data.py"]
    found = [hit for path in files for hit in _private_imports(path)]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_importing_sashimi_changes_nothing():
    """No environment variables, no exit handlers, no torch import until a name is used."""
    code = ("import atexit, os, sys, multiprocessing, torch, torch.utils.data, numpy, scipy.signal, tqdm, yaml; "
            "before = dict(os.environ); n = atexit._ncallbacks(); import sashimi, sashimi.train, "
            "sashimi.eval, sashimi.fastgen, sashimi.pretrained; assert dict(os.environ) == before, "
            "set(os.environ.items()) ^ set(before.items()); assert atexit._ncallbacks() == n, 'atexit handler'; "
            "print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    lazy = subprocess.run([sys.executable, "-c", "import sys, sashimi; print('torch' in sys.modules)"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert lazy.stdout.strip() == "False", lazy.stderr


def test_the_command_line_asks_openmp_for_passive_waiting(tmp_path):
    """...for its own process only: the library does not (see the test above)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, sys; from sashimi.__main__ import main; main(['split', '--help']) if False else None; "
            "import sashimi.__main__ as m; m._quiet_openmp(); print(os.environ.get('OMP_WAIT_POLICY'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "PASSIVE", proc.stderr[-2000:]


def test_documented_public_imports_keep_working():
    from sashimi import (ARConfig, CheckpointError, DiffWaveConfig, NoiseSchedule, S4, SILENCE_TOKEN,  # noqa: F401
                         SamplingOptions, Sashimi, SashimiAR, SashimiDiffWave, am_score, cauchy, frechet_distance,
                         inception_score, load_classifier, load_model, modified_inception_score, mulaw_decode,
                         mulaw_encode, sample_logits, save_model)
    from sashimi.fastgen import set_num_threads, set_weight_storage  # noqa: F401
    from sashimi.eval import log_mel, utterance_nll_bits  # noqa: F401
    from sashimi.train import build_config, train  # noqa: F401
    import sashimi

    assert set(sashimi.__all__) <= set(dir(sashimi))
    for name in sashimi.__all__:
        assert getattr(sashimi, name) is not None
