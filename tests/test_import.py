"""What importing the package does to the process."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _policy_after_import(env_extra: dict, first: str = "sashimi") -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    code = f"import {first}, os, sashimi; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_openmp_threads_sleep_unless_told_otherwise():
    """Imported before torch (as the command line does), sashimi asks OpenMP for passive waiting;
    a value the user set is kept, and after torch it changes nothing (OpenMP is loaded by then)."""
    assert _policy_after_import({}) == "PASSIVE"
    assert _policy_after_import({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert _policy_after_import({}, first="torch") == "None"
