"""Test helper: write a SashimiAR in the SaShiMi authors' checkpoint layouts (the inverse of
sashimi.persistence.authors, written from the fixtures' README), to check that files of any size
load by the same code. Used only by the tests."""
import math
import re

import torch


def write_authors(model, fmt: str) -> dict:
    """A bare state dict in layout ``fmt`` ('feb2022', 'v3', 'v4') holding ``model``'s weights."""
    cfg = model.config
    assert cfg.norm == "scalar" and (cfg.hurwitz or fmt == "feb2022")
    lengths = {name: m.l_max for name, m in model.named_modules() if type(m).__name__ == "SSMKernel"}
    suffix = "" if fmt == "feb2022" else ".0"
    out = {}
    for key, value in model.state_dict().items():
        value = value.clone()
        if key.startswith("mu_embedder."):
            out[f"encoder{suffix}." + key.split(".", 1)[1]] = value
            continue
        if key.startswith("head."):
            out[f"decoder{suffix}.output_transform." + key.split(".", 1)[1]] = value
            continue
        new = "model." + key[len("sashimi."):]
        new = new.replace(".layer.fc1.", ".layer.ff.0.0.").replace(".layer.fc2.", ".layer.ff.2.")
        if cfg.glu:
            new = new.replace(".layer.output_linear.", ".layer.output_linear.0.")
        new = re.sub(r"\.norm\.(m|s)$", r".norm.norm.\1", new)
        module, _, leaf = key.rpartition(".")
        if module in lengths:
            new_module = new.rpartition(".")[0]
            kmod = new_module[:-len(".layer.kernel")] + (".layer.layer.kernel" if fmt == "v4" else ".layer.kernel.kernel")
            if leaf == "log_w_real":
                if fmt == "feb2022" and not cfg.hurwitz:
                    w = torch.complex(-torch.exp(value), model.get_parameter(module + ".w_imag").detach())
                    out[kmod + ".w"] = torch.view_as_real(w).contiguous()
                else:
                    out[kmod + {"feb2022": ".log_w_real", "v3": ".inv_w_real", "v4": ".A_real"}[fmt]] = value
                continue
            if leaf == "w_imag":
                if fmt == "feb2022" and not cfg.hurwitz:
                    continue
                out[kmod + (".A_imag" if fmt == "v4" else ".w_imag")] = -value if fmt == "v4" else value
                continue
            if leaf == "log_dt" and fmt == "v4":
                out[kmod + ".inv_dt"] = value[:, None]
                continue
            out[f"{kmod}.{leaf}"] = value
            continue
        if fmt == "v4" and new.endswith(".layer.D"):
            new = new[:-len(".layer.D")] + ".layer.layer.D"
        if fmt == "feb2022" and new.endswith(".bias") and not new.startswith("model.norm."):
            value = value[:, None]  # transposed linears' biases (d, 1)
        out[new] = value
    for module, length in lengths.items():
        new_module = "model." + module[len("sashimi."):-len(".kernel")]
        if fmt == "feb2022":
            k = torch.arange(length // 2 + 1, dtype=torch.float64)
            omega = torch.exp(-2j * math.pi * k / length)
            base = new_module + ".kernel.kernel"
            out[base + ".omega"] = torch.view_as_real(omega.to(torch.complex64)).contiguous()
            out[base + ".z"] = torch.view_as_real((2 * (1 - omega) / (1 + omega)).to(torch.complex64)).contiguous()
        elif fmt == "v3":
            out[new_module + ".kernel.kernel.L"] = torch.tensor(length)
        else:
            out[new_module + ".layer.kernel.l_kernel"] = torch.tensor(length)
    return out
