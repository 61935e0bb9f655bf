import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


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
def _deterministic():
    torch.manual_seed(0)
    yield
