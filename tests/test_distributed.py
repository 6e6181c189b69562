"""Data-parallel training with mx.distributed: two local ranks (`mlx.launch -n 2 --backend ring`)
and one process, same global batch, end with the same weights."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_training import separable, write_jsonl

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
LAUNCH = shutil.which("mlx.launch") or str(Path(sys.executable).parent / "mlx.launch")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(LAUNCH).exists(), reason="mlx.launch is not installed"),
]


def _train(tmp: Path, out: str, ranks: int, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "mlx_albert",
        "train",
        "--output-dir",
        str(tmp / out),
        "--no-progress",
        *args,
    ]
    if ranks > 1:
        command = [LAUNCH, "-n", str(ranks), "--backend", "ring", *command]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp, timeout=300, env=dict(os.environ))
    return done


def _same_weights(a: Path, b: Path) -> float:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    return max(float(np.abs(x[k] - y[k]).max()) for k in x)


@pytest.mark.parametrize("task", ["sequence_classification", "pretraining"])
def test_two_ranks_equal_one_process(task, tmp_path):
    if task == "pretraining":
        rng = random.Random(0)
        words = "the cat sat on a mat and then the dog ran far away".split()
        text = "\n\n".join(
            "\n".join(" ".join(rng.choices(words, k=rng.randint(4, 9))) for _ in range(4)) for _ in range(40)
        )
        (tmp_path / "corpus.txt").write_text(text + "\n")
        args = [
            "--model",
            str(TINY),
            "--task",
            "pretraining",
            "--train",
            str(tmp_path / "corpus.txt"),
            "--max-ngram",
            "2",
        ]
    else:
        write_jsonl(tmp_path / "train.jsonl", separable(80, 0))
        args = ["--model", str(TINY), "--task", task, "--train", str(tmp_path / "train.jsonl")]
    common = ["--batch-size", "8", "--learning-rate", "1e-3", "--seed", "3", "--max-length", "32"]
    one = _train(tmp_path, "one", 1, *args, *common, "--max-steps", "3")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _train(tmp_path, "two", 2, *args, *common, "--max-steps", "3")
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    assert _same_weights(tmp_path / "one", tmp_path / "two") <= 1e-5
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert log and all(e["world_size"] == 2 for e in log if "loss" in e)
    again = _train(tmp_path, "two", 1, *args, *common, "--max-steps", "4", "--resume")
    assert again.returncode == 1 and "was trained on 2 process(es), this run has 1" in again.stderr
