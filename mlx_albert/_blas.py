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
import logging
import os
import sys

logger = logging.getLogger(__name__)
loaded: str | None = None  # the library in use, for `mlx-albert info` and benchmarks

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",  # Debian libopenblas0-pthread
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    os.path.join(sys.prefix, "lib", "libmkl_rt.so.*"),  # pip install mkl
)


def preload() -> str | None:
    """Loads the first usable cblas; returns its path (None when skipped or none found)."""
    global loaded
    choice = os.environ.get("MLX_ALBERT_BLAS", "")
    if not sys.platform.startswith("linux") or choice.lower() in ("0", "off", "false", "no"):
        return None
    if "mlx.core" in sys.modules:
        logger.debug("mlx.core was imported before mlx_albert: keeping MLX's bundled BLAS")
        return None
    for pattern in [choice] if choice else _CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            try:
                lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            if hasattr(lib, "cblas_sgemm"):
                loaded = path
                return path
    return None
