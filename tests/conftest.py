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


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
