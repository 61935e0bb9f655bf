"""The S4 convolution kernel at lengths other than the one C is corrected for, with and without autograd."""
import pytest
import torch

from sashimi.s4 import SSMKernel


def _kernel(tie_state=True, d_state=16, dtype=torch.float64):
    torch.manual_seed(0)
    return SSMKernel(d_model=3, d_state=d_state, l_max=64, tie_state=tie_state).to(dtype)


@pytest.mark.parametrize("length", [40, 200])
def test_inference_conversion_matches_autograd_path(length):
    """Without autograd C is converted in the eigenbasis; with it, cut or converted exactly."""
    k = _kernel()
    with torch.no_grad():
        fast = k(length)
    exact = k(length).detach()
    torch.testing.assert_close(fast, exact, rtol=0, atol=1e-9)


def test_gradients_with_frozen_C_are_exact():
    """Training the state parameters with C frozen still takes the exact (differentiable) path."""
    def grads(freeze_c: bool):
        # float32 (float64 always converts exactly); exact HiPPO-LegS: an ill-conditioned eigenbasis
        k = _kernel(tie_state=False, d_state=64, dtype=torch.float32)
        k.C.requires_grad_(not freeze_c)
        k(200).square().sum().backward()
        return k.w_imag.grad, k.log_dt.grad

    for frozen, trained in zip(grads(True), grads(False)):
        torch.testing.assert_close(frozen, trained, rtol=1e-4, atol=1e-6)


def test_true_C_matches_discrete_system():
    k = _kernel(tie_state=False)
    torch.testing.assert_close(k.true_C(), k.discrete_system()["C"][..., : k.N], rtol=1e-9, atol=1e-12)
