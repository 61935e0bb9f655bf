"""What importing the package does to the process: nothing. The command line alone asks OpenMP for
passive waiting, for its own process (issue 20: no environment changes on import)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _policy_after(code: str, env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


def test_openmp_threads_sleep_unless_told_otherwise():
    """Started before torch (as the command line is), sashimi's main asks OpenMP for passive waiting;
    a value the user set is kept, and after torch it changes nothing (OpenMP is loaded by then).
    Importing the library changes nothing."""
    cli = "import sashimi.__main__ as m; m.main(['--help'])"
    assert _policy_after(cli, {}) == "PASSIVE"
    assert _policy_after(cli, {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert _policy_after("import torch; " + cli, {}) == "None"
    assert _policy_after("import sashimi, sashimi.ar, sashimi.train", {}) == "None"
