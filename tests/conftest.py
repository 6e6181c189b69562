"""Shared test helpers: reference cases (live from transformers, or the committed golden files)
and writing them out as transformers checkpoint folders."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import mlx_albert  # noqa: F401  first, so its optimised-BLAS preload precedes mlx.core

# isort: split
import numpy as np
import pytest
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parent))
import oracle  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Child processes (`python -m mlx_albert`, `python -c`) run with a temporary working directory, so
# they import the package these tests import, never the checkout's folder.
INSTALLED = os.environ.get("MLX_ALBERT_TEST_INSTALLED") == "1"
if INSTALLED and Path(mlx_albert.__file__).resolve().parent == ROOT / "mlx_albert":
    raise RuntimeError(
        f"MLX_ALBERT_TEST_INSTALLED=1 but mlx_albert was imported from the checkout "
        f"({mlx_albert.__file__}): run `pytest`, not `python -m pytest`, after `pip install .`"
    )

HAS_TORCH = (
    importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None
)
GOLDEN = Path(__file__).parent / "fixtures" / "golden"
needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="transformers/torch not installed (golden tests cover this)"
)
MODES = ["golden", pytest.param("live", marks=needs_torch)]
_cache: dict = {}


def golden_case(name: str, arch: str) -> dict:
    from safetensors import safe_open

    path = GOLDEN / f"{name}-{arch}.safetensors"
    case = {"weights": {}, "inputs": {}, "outputs": {}}
    with safe_open(str(path), "np") as f:
        case["hf_config"] = json.loads(f.metadata()["hf_config"])
        for key in f.keys():
            group, _, k = key.partition("/")
            case[group][k] = f.get_tensor(key)
    return case


def get_case(name: str, arch: str, mode: str) -> dict:
    key = (name, arch, mode)
    if key not in _cache:
        _cache[key] = oracle.make_case(name, arch) if mode == "live" else golden_case(name, arch)
    return _cache[key]


def write_hf_folder(folder: Path, hf_config: dict, weights: dict[str, np.ndarray]) -> Path:
    """A transformers-layout checkpoint folder (config.json + model.safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config))
    save_file(
        {k: np.ascontiguousarray(v) for k, v in weights.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return folder


def case_folder(case: dict, folder: Path, regression: bool = False) -> Path:
    weights = {k: v for k, v in case["weights"].items() if not k.startswith("regression.")}
    config = dict(case["hf_config"])
    if regression:
        weights = {k: v for k, v in weights.items() if "classifier" not in k}
        weights.update(
            {
                k.removeprefix("regression."): v
                for k, v in case["weights"].items()
                if k.startswith("regression.")
            }
        )
        config["id2label"] = {"0": "LABEL_0"}
        config["label2id"] = {"LABEL_0": 0}
    return write_hf_folder(folder, config, weights)


def tiny_config(**changes):
    """A few-thousand-parameter AlbertConfig for tests that need no reference numbers."""
    from mlx_albert import AlbertConfig

    base = dict(
        vocab_size=50,
        embedding_size=8,
        hidden_size=16,
        num_blocks=2,
        num_attention_heads=2,
        intermediate_size=20,
        max_positions=16,
    )
    return AlbertConfig(**{**base, **changes})


def close_json(a, b, tol: float) -> bool:
    """Two JSON-like values (dicts, lists, numbers, strings) equal but for floats within `tol`."""
    a, b = json.loads(json.dumps(a, default=float)), json.loads(json.dumps(b, default=float))

    def close(x, y) -> bool:
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, list):
            return isinstance(y, list) and len(x) == len(y) and all(map(close, x, y))
        if isinstance(x, float) or isinstance(y, float):
            return abs(x - y) <= tol
        return x == y

    return close(a, b)


# Source for a child process's own peak resident size, in KiB. Linux's ru_maxrss carries the parent's
# resident size at fork across exec, so in a child of a grown pytest process it measures pytest;
# VmHWM is the high-water mark of the child's own address space.
PEAK_KB = """
def peak_kb():
    try:
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource, sys
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak
"""
