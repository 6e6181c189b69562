"""`train --task sentence-embedding`: sentence-transformers' data conventions with file:line errors
for bad records, a learning test on pairs made here, the evaluator's metrics against
sentence-transformers' InformationRetrievalEvaluator (live), resume, LoRA, and an output folder that
sentence-transformers loads with the same vectors."""

import json
import random
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from test_pipelines import EMBEDDING

from mlx_albert import SentenceEncoder
from mlx_albert.cli import main
from mlx_albert.sentence.training import evaluate, featurize, read_pairs, retrieval_metrics
from mlx_albert.tasks import get

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
WORDS = (
    "cat dog sea river mountain python list file socket thread sort read write open close network "
    "table chair light dark green blue stone paper"
).split()


def _pairs(path: Path, n: int = 48, seed: int = 0) -> Path:
    """Anchors of four words, positives of their images under a fixed random word mapping: nothing
    an untrained model can match by shared tokens."""
    rng = random.Random(seed)
    image = dict(zip(WORDS, rng.sample(WORDS, len(WORDS)), strict=True))
    rows = []
    for _ in range(n):
        words = rng.sample(WORDS, 4)
        rows.append({"anchor": " ".join(words), "positive": " ".join(image[w] for w in words)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(tmp_path, *flags, data=None, out="out") -> tuple[int, Path]:
    data = data or _pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / out
    code = main(["train", "--task", "sentence-embedding", "--model", TINY, "--train", data,
                 "--output-dir", out, "--batch-size", "16", "--no-progress", *map(str, flags)])  # fmt: skip
    return code, out


@pytest.mark.parametrize(
    "line, loss, message",
    [
        ('{"anchor": "a b"}', "MultipleNegativesRankingLoss", "missing column 'positive'"),
        ('{"anchor": "a b", "positive": ""}', "MultipleNegativesRankingLoss", "non-empty text"),
        ('{"anchor": "a b", "positive": 3}', "MultipleNegativesRankingLoss", "non-empty text"),
        (
            '{"anchor": "a", "positive": "b", "extra": "c"}',
            "MultipleNegativesRankingLoss",
            "unexpected column",
        ),
        ('{"sentence1": "a", "sentence2": "b", "score": 1.5}', "CoSENTLoss", "outside [0, 1]"),
        ('{"sentence1": "a", "sentence2": "b", "score": "high"}', "CoSENTLoss", "a number in [0, 1]"),
        ('{"sentence1": "a", "sentence2": "b", "score": NaN}', "CosineSimilarityLoss", "a number in [0, 1]"),
    ],
)
def test_a_bad_record_is_one_line_naming_file_and_line(tmp_path, capsys, line, loss, message):
    first = (
        '{"anchor": "x y", "positive": "z w"}'
        if "Ranking" in loss
        else '{"sentence1": "x", "sentence2": "y", "score": 0.5}'
    )
    data = tmp_path / "pairs.jsonl"
    data.write_text(f"{first}\n{first}\n{line}\n")
    code, out = _train(tmp_path, "--loss", loss, data=data)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "pairs.jsonl:3" in err and message in err, err
    assert not (out / "model.safetensors").exists()


def test_columns_must_fit_the_loss(tmp_path):
    scored = tmp_path / "scored.jsonl"
    scored.write_text('{"sentence1": "a", "score": 0.5}\n')
    with pytest.raises(ValueError, match="anchor, positive"):
        read_pairs(scored, "MultipleNegativesRankingLoss")  # one text column once the score is set aside
    pairs = _pairs(tmp_path / "pairs.jsonl", 3)
    with pytest.raises(ValueError, match="two text columns and a 'score'"):
        read_pairs(pairs, "CoSENTLoss")
    assert read_pairs(pairs, "MultipleNegativesRankingLoss").columns == ["anchor", "positive"]


def test_training_learns_pairs_an_untrained_model_cannot_match(tmp_path):
    """In-batch negatives over a word mapping: retrieval on the pairs goes from near chance to
    nearly always right, and the training loss falls."""
    from mlx_albert.hub import Checkpoint
    from mlx_albert.training import TrainingArgs

    data = _pairs(tmp_path / "pairs.jsonl")
    args = TrainingArgs(output_dir=str(tmp_path / "out"), epochs=12, batch_size=16, learning_rate=2e-3,
                        log_steps=3, progress=False)  # fmt: skip
    mx.random.seed(0)
    task = get("sentence-embedding")
    trainer = task.recipe.trainer(
        Checkpoint.open(TINY), str(TINY), data, data, args, 64, "MultipleNegativesRankingLoss", task=task
    )
    before = trainer.evaluate()
    after = trainer.train()
    losses = [e["loss"] for e in trainer.state["log"] if "loss" in e]
    assert after["ndcg@10"] >= before["ndcg@10"] + 0.3, (before, after)
    assert after["mrr@10"] > before["mrr@10"] and losses[-1] < 0.5 * losses[0], (before, after, losses)


def test_the_folder_written_loads_with_the_same_vectors(tmp_path):
    """--output-dir (and best/) is a sentence-transformers folder: SentenceEncoder reads it, and
    sentence-transformers gives the same vectors to the arithmetic's tolerance (EMBEDDING)."""
    held_out = _pairs(tmp_path / "e.jsonl", 16, 1)
    code, out = _train(
        tmp_path, "--loss", "MultipleNegativesRankingLoss", "--eval", held_out, "--max-steps", "3"
    )
    assert code == 0
    assert json.loads((out / "modules.json").read_text())[0]["type"].endswith("Transformer")
    texts = ["cat dog sea", "python list sort again", "a"]
    ours = SentenceEncoder(str(out)).encode(texts)
    base = SentenceEncoder(str(TINY)).encode(texts)
    assert np.abs(ours - base).max() > 100 * EMBEDDING  # it trained
    assert np.abs(SentenceEncoder(str(out / "best")).encode(texts)).max() > 0
    st = pytest.importorskip("sentence_transformers")
    theirs = st.SentenceTransformer(str(out), device="cpu").encode(texts)
    assert np.abs(ours - theirs).max() <= EMBEDDING


def test_lora_cached_and_matryoshka_train_and_merge(tmp_path):
    """LoRA adapters merged into the written folder; GradCache in mini-batches of 4 inside
    MatryoshkaLoss; the written vectors differ from the base's and are finite."""
    code, out = _train(
        tmp_path, "--loss", "CachedMultipleNegativesRankingLoss", "--mini-batch-size", "4",
        "--matryoshka-dims", "16,8", "--lora-rank", "4", "--learning-rate", "1e-2", "--max-steps", "3",
    )  # fmt: skip
    assert code == 0
    names = {k for k, _ in tree_flatten(SentenceEncoder(str(out)).model.parameters())}
    assert not any("lora" in n for n in names)
    vectors = SentenceEncoder(str(out)).encode(["cat dog sea", "blue stone"])
    assert np.isfinite(vectors).all()
    assert np.abs(vectors - SentenceEncoder(str(TINY)).encode(["cat dog sea", "blue stone"])).max() > 1e-4


def test_a_killed_run_resumes_to_the_uninterrupted_one(tmp_path):
    """4 steps in one run, or killed (SIGKILL) after step 3 and resumed from checkpoint-2: the same
    weights, bit for bit (batches are a function of seed, epoch and position)."""
    import os
    import subprocess
    import sys

    data = _pairs(tmp_path / "pairs.jsonl")
    flags = ["--loss", "MultipleNegativesRankingLoss", "--save-steps", "2", "--learning-rate", "1e-3",
             "--max-steps", "4", "--batch-size", "16", "--no-progress", "--model", str(TINY),
             "--train", str(data)]  # fmt: skip

    def run(out, *more, env=None):
        command = [sys.executable, "-m", "mlx_albert", "train", "--task", "sentence-embedding", *flags]
        return subprocess.run(
            [*command, "--output-dir", str(tmp_path / out), *more], env={**os.environ, **(env or {})},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    assert run("one").returncode == 0
    killed = run("two", env={"MLX_ALBERT_KILL_AT_STEP": "3"})
    assert killed.returncode != 0 and (tmp_path / "two" / "checkpoint-2").is_dir()
    resumed = run("two", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = SentenceEncoder(str(tmp_path / "one")).model.parameters()
    b = SentenceEncoder(str(tmp_path / "two")).model.parameters()
    for (name, x), (_, y) in zip(tree_flatten(a), tree_flatten(b), strict=True):
        assert mx.array_equal(x, y).item(), name


def test_scored_pairs_report_spearman(tmp_path):
    rows = [{"sentence1": f"{a} {b}", "sentence2": f"{b} {a}" if i % 2 else "paper", "score": float(i % 2)}
            for i, (a, b) in enumerate(zip(WORDS, reversed(WORDS), strict=True))]  # fmt: skip
    data = tmp_path / "scored.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = _train(tmp_path, "--loss", "CoSENTLoss", "--eval", data, "--max-steps", "2", data=data)
    assert code == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert -1.0 <= log[-1]["eval_spearman"] <= 1.0 and "eval_pearson" in log[-1]


def test_retrieval_metrics_by_hand():
    """Two queries: the first's relevant document ranked 2nd, the second's 1st (of two relevant)."""
    scores = np.array([[0.9, 0.8, 0.1], [0.7, 0.2, 0.5]])
    got = retrieval_metrics(scores, [{1}, {0, 2}])
    assert got["mrr@10"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["accuracy@1"] == 0.5 and got["recall@1"] == pytest.approx((0 + 1 / 2) / 2)
    ndcg_first = (1 / np.log2(3)) / 1.0
    ndcg_second = (1 + 1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert got["ndcg@10"] == pytest.approx((ndcg_first + ndcg_second) / 2)


def test_metrics_equal_sentence_transformers_evaluator(tmp_path):
    """Our evaluation of pairs and sentence-transformers' InformationRetrievalEvaluator (cosine) on
    the same folder: the same numbers (rankings of float32 cosines that agree to ~1e-7; ties
    would break alike)."""
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    data = _pairs(tmp_path / "pairs.jsonl", 24, 3)
    pairs = read_pairs(data, "MultipleNegativesRankingLoss")
    encoder = SentenceEncoder(str(TINY))
    ours = evaluate(encoder, featurize(pairs, encoder, 64, get("embed")), 16)
    queries = {str(i): t[0] for i, t in enumerate(pairs.texts)}
    corpus_texts = list(dict.fromkeys(t[1] for t in pairs.texts))
    corpus = {str(i): t for i, t in enumerate(corpus_texts)}
    relevant = {str(i): {str(corpus_texts.index(t[1]))} for i, t in enumerate(pairs.texts)}
    evaluator = InformationRetrievalEvaluator(
        queries, corpus, relevant, accuracy_at_k=[1], precision_recall_at_k=[1, 5, 10], mrr_at_k=[10],
        ndcg_at_k=[10], map_at_k=[10],
    )  # fmt: skip
    theirs = evaluator(st.SentenceTransformer(str(TINY), device="cpu"))
    pick = {k.split("cosine_", 1)[1]: v for k, v in theirs.items() if "cosine_" in k}
    for name in ("mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10", "accuracy@1"):
        assert ours[name] == pytest.approx(pick[name], abs=1e-6), (name, ours, theirs)
