"""What every benchmark worker script shares: one JSON config in, one tagged JSON result line out.

The scripts in this folder run in fresh processes against whichever library version is first on
``PYTHONPATH`` (see :mod:`sashimi.cli.baseline`), so they import nothing from ``sashimi`` here;
this folder is their ``sys.path[0]``.
"""
import json
import sys

RESULT_TAG = "SASHIMI_BENCH_RESULT "  # as sashimi.cli.baseline.RESULT_TAG


def worker_main(argv: list[str], worker, name: str) -> int:
    """``name CONFIG_JSON``: run ``worker(config)`` and print its result (or its error) as one line."""
    if len(argv) != 1:
        print(f"usage: {name} CONFIG_JSON", file=sys.stderr)
        return 2
    cfg = json.loads(argv[0])
    try:
        result = worker(cfg)
    except Exception as e:  # reported as this configuration's status; the others still run
        result = dict(cfg, status=f"error: {type(e).__name__}: {e}")
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0
