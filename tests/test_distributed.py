"""Data-parallel training with mx.distributed: two local ranks (`mlx.launch -n 2 --backend ring`)
and one process, same global batch, end with the same weights."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import close_json
from safetensors.numpy import load_file
from test_training import separable, write_jsonl
from tolerances import forward_tol

import mlx_albert

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


def _weight_differences(a: Path, b: Path) -> np.ndarray:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    return np.concatenate([np.abs(x[k] - y[k]).ravel() for k in x])


def _same_weights(a: Path, b: Path) -> float:
    return float(_weight_differences(a, b).max())


def _adam_agrees(differences: np.ndarray, steps: int, lr: float = 1e-3, seq: int = 32) -> None:
    """Weights after `steps` AdamW steps whose gradients differ by rounding only (the ranks sum the
    batch in two halves). AdamW divides each gradient by its own RMS, so a weight whose gradient is
    rounding noise (analytically zero, as the attention key biases, whose every score shifts by the
    same amount: softmax ignores it) takes a step of any sign: at most the lr a step moves it, twice
    over (this step and the other side's). Every other gradient is within its relative rounding
    error rho (a forward and a backward pass, `forward_tol` relative), and so are m and sqrt(v):
    the step m / sqrt(v) within 2 rho of its own size 1, twice over. Such weights are most of them,
    so the median agrees to that; a wiring error (wrong rows, wrong scale per rank) would move most
    weights by O(lr)."""
    rho = forward_tol(mlx_albert.load(TINY).config, seq, passes=3)
    assert np.median(differences) <= steps * lr * 4 * rho
    assert differences.max() <= steps * lr * 2


@pytest.mark.parametrize(
    "task, accumulation",
    [("sequence_classification", "1"), ("sequence_classification", "2"), ("pretraining", "1")],
)
def test_two_ranks_equal_one_process(task, accumulation, tmp_path):
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
            "--eval",
            str(tmp_path / "corpus.txt"),
        ]
    else:
        write_jsonl(tmp_path / "train.jsonl", separable(80, 0))
        write_jsonl(tmp_path / "dev.jsonl", separable(37, 1))
        args = ["--model", str(TINY), "--task", task, "--train", str(tmp_path / "train.jsonl")]
        args += ["--eval", str(tmp_path / "dev.jsonl"), "--eval-batch-size", "4"]
    common = ["--batch-size", "8", "--learning-rate", "1e-3", "--seed", "3", "--max-length", "32"]
    common += ["--grad-accumulation", accumulation]  # composes with the global batch
    one = _train(tmp_path, "one", 1, *args, *common, "--max-steps", "3")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _train(tmp_path, "two", 2, *args, *common, "--max-steps", "3")
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    _adam_agrees(_weight_differences(tmp_path / "one", tmp_path / "two"), steps=3)
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert log and all(e["world_size"] == 2 for e in log)  # every record, evaluations included
    # evaluation sharded across the ranks and combined: the single-process metrics
    evals = [
        [
            e
            for e in map(json.loads, (tmp_path / run / "log.jsonl").read_text().splitlines())
            if "eval_loss" in e
        ]
        for run in ("one", "two")
    ]
    for entries in evals:
        for e in entries:
            e.pop("world_size")
            if "eval_perplexity" in e:  # ~90 here: compared as its log, the MLM loss, like the others
                e["eval_perplexity"] = math.log(e["eval_perplexity"])
    # metrics of the same eval batches by weights that differ as _adam_agrees allows: losses (at most
    # ~4 here, the MLM's included) move by the rounding of three training steps and the evaluation
    # (7 passes in all)
    tol = forward_tol(mlx_albert.load(TINY).config, 32, scale=4, passes=7)
    assert evals[0] and close_json(evals[0], evals[1], tol)
    assert len(two.stdout.splitlines()) == 1  # rank 0 alone prints the result
    assert json.loads(one.stdout.splitlines()[-1])["best"] == json.loads(two.stdout.splitlines()[-1])["best"]
    again = _train(tmp_path, "two", 1, *args, *common, "--max-steps", "4", "--resume")
    assert again.returncode == 1 and "was trained on 2 process(es), this run has 1" in again.stderr


def _cli(tmp: Path, ranks: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mlx_albert", *args]
    if ranks > 1:
        command = [LAUNCH, "-n", str(ranks), "--backend", "ring", *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp, timeout=300)


def test_two_ranks_infer_in_input_order(tmp_path):
    from test_pipelines import NER_LABELS, _head_checkpoint

    rng = random.Random(2)
    words = "maria lives in paris the cat sat on a mat and then the dog ran far away".split()
    lines = [
        " ".join(rng.choices(words, k=rng.randint(2, 20))) for _ in range(203)
    ]  # not a multiple of a round
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    cls = _head_checkpoint(tmp_path / "cls", "for_sequence_classification", num_labels=3)
    ner = _head_checkpoint(tmp_path / "ner", "for_token_classification", num_labels=5, id_to_label=NER_LABELS)
    for ranks in (1, 2):
        out = tmp_path / f"v{ranks}.npy"
        done = _cli(
            tmp_path,
            ranks,
            "embed",
            "--model",
            str(TINY),
            "--file",
            "lines.txt",
            "--output",
            str(out),
            "--batch-size",
            "4",
        )
        assert done.returncode == 0, done.stderr[-2000:]
        for task, model in (("classify", cls), ("ner", ner)):
            done = _cli(
                tmp_path,
                ranks,
                task,
                "--model",
                str(model),
                "--file",
                "lines.txt",
                "--json",
                "--batch-size",
                "4",
            )
            assert done.returncode == 0, done.stderr[-2000:]
            (tmp_path / f"{task}{ranks}.jsonl").write_text(done.stdout)
    assert np.array_equal(np.load(tmp_path / "v1.npy"), np.load(tmp_path / "v2.npy"))
    for task in ("classify", "ner"):
        one = (tmp_path / f"{task}1.jsonl").read_text().splitlines()
        two = (tmp_path / f"{task}2.jsonl").read_text().splitlines()
        assert len(one) == len(two) == len(lines) and one == two  # the same chunks: the same bits


def _classification(tmp: Path, examples: int, *extra: str) -> list[str]:
    """Arguments of a small sequence-classification run on generated data."""
    write_jsonl(tmp / "train.jsonl", separable(examples, 0))
    args = ["--model", str(TINY), "--task", "sequence_classification", "--train", str(tmp / "train.jsonl")]
    return [*args, "--batch-size", "8", "--learning-rate", "1e-3", "--seed", "3", *extra]


def test_a_rank_that_dies_ends_the_run_and_it_resumes(tmp_path):
    args = _classification(tmp_path, 80, "--max-steps", "6", "--save-steps", "2")
    command = [LAUNCH, "-n", "2", "--backend", "ring", sys.executable, "-m", "mlx_albert", "train"]
    command += [*args, "--output-dir", str(tmp_path / "run"), "--no-progress"]
    env = {**os.environ, "MLX_ALBERT_KILL_AT_STEP": "3@1"}  # rank 1 dies after step 3
    died = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert "rank 1 exited" in died.stderr  # mlx.launch ended the run and named the rank: no hang
    assert not (tmp_path / "run" / "model.safetensors").exists()  # the run did not pretend to finish
    assert (tmp_path / "run" / "checkpoint-2").is_dir()
    resumed = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert resumed.returncode == 0 and (tmp_path / "run" / "model.safetensors").exists(), resumed.stderr[
        -2000:
    ]
    straight = _train(tmp_path, "straight", 2, *args)
    # the same ranks from the same checkpoint: the same arithmetic, bit for bit
    assert straight.returncode == 0 and _same_weights(tmp_path / "run", tmp_path / "straight") == 0


def test_lora_adapters_start_equal_on_every_rank(tmp_path):
    args = _classification(tmp_path, 40, "--max-steps", "2", "--lora-rank", "4")
    one, two = _train(tmp_path, "one", 1, *args), _train(tmp_path, "two", 2, *args)
    assert one.returncode == two.returncode == 0, two.stderr[-2000:]
    _adam_agrees(_weight_differences(tmp_path / "one", tmp_path / "two"), steps=2)


@pytest.mark.parametrize("positions", [False, True])
def test_rank_gradients_sum_to_the_whole_batch(positions):
    """In process, what the two-rank test checks through AdamW: each half's scaled_loss gradient
    (MLM over its masked tokens, sentence order over its rows) sums to the whole batch's gradient,
    with the trainer's masked positions too, to float32 rounding (the sums run in another order)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_map

    import mlx_albert
    from mlx_albert.tasks import get
    from mlx_albert.training import masked_batch, sop_dataset

    scaled_loss = get("pretraining").recipe.scaled_loss

    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    model = mlx_albert.AlbertForPreTraining(mlx_albert.load(TINY).config)
    rng = random.Random(0)
    words = "the cat sat on a mat and then the dog ran far away".split()
    docs = [[" ".join(rng.choices(words, k=rng.randint(4, 9))) for _ in range(4)] for _ in range(10)]
    batch = masked_batch(
        sop_dataset(docs, tok, 32).features[:8], tok, 32, np.random.default_rng(0), 0.15, 2, positions
    )
    whole = nn.value_and_grad(model, lambda m, b: m(**b).loss)(model, batch)[1]
    labels, total = np.array(batch["labels"]), None
    for mine in (np.arange(3), np.arange(3, 8)):  # unequal halves: the scales matter
        scale = mx.array([(labels[mine] != -100).sum() / (labels != -100).sum(), mine.size / 8], mx.float32)
        part = {k: v[mx.array(mine)] for k, v in batch.items()}
        grads = nn.value_and_grad(model, scaled_loss)(model, part, scale)[1]
        total = grads if total is None else tree_map(mx.add, total, grads)
    pairs = list(zip(tree_flatten(whole), tree_flatten(total), strict=True))
    scale = max(mx.abs(a).max().item() for (_, a), _ in pairs)
    tol = forward_tol(model.config, 32, scale, passes=3)  # a forward and a backward, in two halves
    assert max(mx.abs(a - b).max().item() for (_, a), (_, b) in pairs) <= tol


def test_sentence_embedding_negatives_are_gathered_across_ranks(tmp_path):
    """MultipleNegativesRankingLoss under 2 ranks: each embeds half the batch and the embeddings are
    gathered before the loss, so every anchor meets the global batch's negatives: the same weights
    as one process with the global batch (to AdamW's rounding, _adam_agrees), and the same losses.
    Without the gathering each rank's loss would see half the negatives and the weights would part
    by O(lr)."""
    words = ["cat", "sea", "river", "list", "file", "sort", "read", "open"] * 4
    rows = [
        {"anchor": f"text number {i} about {w}", "positive": f"{w} again and {i}"}
        for i, w in enumerate(words)
    ]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    args = ["--model", str(TINY), "--task", "sentence-embedding", "--loss", "MultipleNegativesRankingLoss",
            "--train", str(tmp_path / "pairs.jsonl"), "--batch-size", "16", "--learning-rate", "1e-3",
            "--max-steps", "3", "--log-steps", "1"]  # fmt: skip
    for ranks in (1, 2):
        done = _train(tmp_path, f"r{ranks}", ranks, *args)
        assert done.returncode == 0, done.stderr[-2000:]
    _adam_agrees(_weight_differences(tmp_path / "r1", tmp_path / "r2"), steps=3)
    losses = [
        [
            e["loss"]
            for e in map(json.loads, (tmp_path / f"r{r}" / "log.jsonl").read_text().splitlines())
            if "loss" in e
        ]
        for r in (1, 2)
    ]
    assert len(losses[0]) == 3 and np.allclose(losses[0], losses[1], rtol=1e-4), losses
