"""Loads an optimised cblas before MLX initialises (Linux CPU only).

The Linux `mlx[cpu]` wheel links the reference BLAS (~8 GFLOP/s for float32 matmul). Its cblas
symbols are bound lazily from the global scope, so a faster cblas loaded with RTLD_GLOBAL *before*
`mlx.core` is imported serves every MLX matmul (OpenBLAS ~230 GFLOP/s, MKL ~170 on 2 cores).
Opt out with MLX_ALBERT_BLAS=0; choose a library with MLX_ALBERT_BLAS=/path/to/libcblas.so.
macOS (Accelerate) and GPU backends are untouched.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import warnings

loaded: str | None = None  # the library in use, for `mlx-albert info` and benchmarks
status = "not tried"  # why none was loaded, when none was
_warned = False

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",  # Debian libopenblas0-pthread
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    os.path.join(sys.prefix, "lib", "libmkl_rt.so.*"),  # pip install mkl
)


def preload() -> str | None:
    """Loads the first usable cblas; returns its path (None when skipped or none found)."""
    global loaded, status
    choice = os.environ.get("MLX_ALBERT_BLAS", "")
    if not sys.platform.startswith("linux"):
        status = "platform"
        return None
    if choice.lower() in ("0", "off", "false", "no"):
        status = "opted out (MLX_ALBERT_BLAS=0)"
        return None
    if "mlx.core" in sys.modules:
        status = "mlx.core imported first"
        warnings.warn(
            "mlx.core was imported before mlx_albert, so MLX keeps its bundled reference BLAS (25-55x "
            "slower on CPU): import mlx_albert first",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    for pattern in [choice] if choice else _CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            if hasattr(lib, "cblas_sgemm"):
                loaded, status = path, "loaded"
                return path
    if choice:
        status = f"MLX_ALBERT_BLAS={choice} is not a loadable cblas"
        warnings.warn(
            f"MLX_ALBERT_BLAS={choice!r} is not a loadable library with cblas_sgemm: MLX keeps its bundled "
            "reference BLAS (25-55x slower on CPU); point it at libopenblas.so.0 or libmkl_rt.so",
            RuntimeWarning,
            stacklevel=3,
        )
    else:
        status = "none found"
    return None


def fix_command() -> str:
    """The one command that brings a fast cblas on this machine."""
    if os.path.exists("/usr/bin/apt-get"):
        return "sudo apt-get install libopenblas0-pthread"
    return 'pip install "mlx-albert[blas]"'


def describe() -> str:
    """What MLX multiplies with on this machine (for `mlx-albert info`)."""
    if loaded:
        return loaded
    if status == "platform":
        return "the platform's (Accelerate on macOS)"
    return f"MLX's bundled reference BLAS ({status}; slow on CPU: {fix_command()})"


def warn_if_slow() -> None:
    """Warns once, on the first model call, when the CPU backend runs on the reference BLAS."""
    global _warned
    if _warned:
        return
    _warned = True
    if loaded or status in ("platform", "opted out (MLX_ALBERT_BLAS=0)"):
        return
    import mlx.core as mx

    if mx.default_device() == mx.cpu:
        warnings.warn(
            "MLX is using its bundled reference BLAS on this CPU, 25-55x slower than an optimised one "
            f"(an ALBERT-base forward takes seconds instead of a fraction): run `{fix_command()}` "
            "and restart Python",
            RuntimeWarning,
            stacklevel=3,
        )
