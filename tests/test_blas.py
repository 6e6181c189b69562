"""Honest about speed: the slow reference BLAS is named, with the one command that fixes it."""

import subprocess
import sys

import pytest

CALL = (
    "import numpy as np; m = mlx_albert.AlbertModel(mlx_albert.AlbertConfig(vocab_size=20, hidden_size=8, "
    "num_attention_heads=2, intermediate_size=8, embedding_size=8, num_blocks=1)); "
    "m(np.array([[1, 2]])); m(np.array([[1, 2]]))"
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is Linux-only")


def _run(code: str, tmp_path, **env):
    import os

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env},
        timeout=120,
    )


def test_a_bad_blas_path_warns_and_the_first_model_call_says_how_to_fix_it(tmp_path):
    done = _run(f"import mlx_albert; {CALL}", tmp_path, MLX_ALBERT_BLAS="/no/such/libcblas.so")
    assert done.returncode == 0, done.stderr
    assert "MLX_ALBERT_BLAS='/no/such/libcblas.so' is not a loadable library" in done.stderr
    assert done.stderr.count("bundled reference BLAS on this CPU") == 1  # once, not per call
    assert (
        "apt-get install libopenblas0-pthread" in done.stderr
        or 'pip install "mlx-albert[blas]"' in done.stderr
    )


def test_importing_mlx_first_warns(tmp_path):
    done = _run(f"import mlx.core; import mlx_albert; {CALL}", tmp_path)
    assert "mlx.core was imported before mlx_albert" in done.stderr


def test_opting_out_is_quiet_and_info_names_the_blas(tmp_path):
    done = _run(f"import mlx_albert; {CALL}", tmp_path, MLX_ALBERT_BLAS="0")
    assert done.returncode == 0 and "BLAS" not in done.stderr
    done = _run(
        "import mlx_albert._blas as b, mlx_albert; print(b.describe())", tmp_path, MLX_ALBERT_BLAS="0"
    )
    assert "bundled reference BLAS (opted out" in done.stdout
