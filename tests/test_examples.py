"""Every script in examples/ runs end to end on what ships with the repo (no network)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SCRIPTS = sorted(p.name for p in (ROOT / "examples").glob("[!_]*.py") if p.name != "finetune.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        cwd=tmp_path,  # from any working directory, not only the repository root
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "printed nothing"


@pytest.mark.slow
def test_finetune_example_runs_end_to_end(tmp_path):
    out = tmp_path / "topics"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "finetune.py"), "--epochs", "1", "--output-dir", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "from pre-trained" in done.stdout and "from random weights" in done.stdout
    assert (out / "model.safetensors").exists()
