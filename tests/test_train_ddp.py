"""Two CPU processes under torchrun (gloo): DDP trains and keeps every rank's parameters identical."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from sashimi import ARConfig, SashimiAR
from sashimi.data.audio import write_wav

DRIVER = textwrap.dedent("""
    import os, sys, torch
    from sashimi.train import train
    from sashimi.train.config import build_config
    out = train(build_config(sys.argv[2:]))
    rank = int(os.environ["RANK"])
    torch.save({k: v.detach().clone() for k, v in out["model"].state_dict().items()},
               os.path.join(sys.argv[1], f"params_rank{rank}.pt"))
""")


@pytest.mark.slow
def test_torchrun_two_cpu_processes_stay_in_sync(tmp_path):
    data = tmp_path / "wavs"
    os.makedirs(data)
    rng = np.random.default_rng(0)
    for i in range(8):
        write_wav(data / f"{i}.wav", 0.3 * rng.standard_normal(200 + 50 * i), 8000)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    run = tmp_path / "run"
    args = [f"train_csv={data}", f"valid_csv={data}", f"checkpoint_path={run}", "model_cfg.d_model=8",
            "model_cfg.n_layers=1", "model_cfg.l_max=128", "seq_len=128", "sample_rate=8000", "batch_size=2",
            "max_steps=3", "validation_interval=2", "num_workers=0", "progress=false", "tensorboard=false",
            "model_cfg.dropout=0.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver),
           str(tmp_path), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    p0 = torch.load(tmp_path / "params_rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "params_rank1.pt", weights_only=True)
    ckpt = torch.load(run / "ckpt_00000003.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2  # one RNG state per rank, for an exact resume
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
        assert torch.equal(p0[k], ckpt["state_dict"][k]), k
    torch.manual_seed(1775)  # the run's seed: its initial parameters
    init = SashimiAR(ARConfig(d_model=8, n_layers=1, l_max=128, sample_rate=8000, dropout=0.1)).state_dict()
    assert not torch.equal(init["head.weight"], p0["head.weight"])  # it did train
    assert proc.stdout.count("validation at step 2") == 1  # printed by rank 0 only
