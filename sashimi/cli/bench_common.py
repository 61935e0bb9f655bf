"""What the benchmark commands share: the model presets and the parsing of their options."""
from __future__ import annotations

from sashimi.cli import CLIError

# Model presets of ``bench train``: the published SC09 model, and the FSDD model of the
# training-throughput issue (8 kHz, kernels defined for the 6,000-sample crops it trains on).
PRESETS = {
    "sc09": {"model_cfg": {}, "batch_sizes": "1,8", "seq_len": 16000},
    "fsdd": {"model_cfg": {"d_model": 64, "n_layers": 4, "pool": [4, 4], "l_max": 6000, "sample_rate": 8000},
             "batch_sizes": "8", "seq_len": 6000},
}


def model_cfg(preset: dict, overrides: list[str]) -> dict:
    """The preset's ARConfig fields with ``KEY=VALUE`` overrides (values parsed as YAML scalars/lists)."""
    import dataclasses

    import yaml

    from sashimi.config import ARConfig

    cfg = dict(preset["model_cfg"])
    names = {f.name for f in dataclasses.fields(ARConfig)}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in names:
            raise CLIError(f"--model-cfg expects KEY=VALUE with KEY an ARConfig field ({', '.join(sorted(names))}), "
                           f"got {item!r}")
        try:
            cfg[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise CLIError(f"--model-cfg {item!r}: cannot parse the value") from None
    try:
        ARConfig(**cfg)
    except (TypeError, ValueError) as e:
        raise CLIError(f"--model-cfg: {e}") from None
    return cfg


def batch_sizes(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise CLIError(f"--batch-sizes must be positive integers, got {text!r}")
    return values
