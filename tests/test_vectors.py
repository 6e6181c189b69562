"""Embedding large inputs into a folder of shards and searching it: the same vectors as the .npy path,
resumed after SIGKILL to exactly an uninterrupted run's vectors, ranks that write their own shards,
quantized shards as sentence-transformers makes them, streamed top-k equal to brute force, and every
refusal in one line."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tolerances import EPS32

from mlx_albert import SentenceEncoder
from mlx_albert.cli import main
from mlx_albert.sentence.encoder import quantize, semantic_search
from mlx_albert.sentence.search import search
from mlx_albert.sentence.vectors import Manifest, read_shard

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
HELDOUT = Path(__file__).parent / "data" / "pydoc_heldout.txt"
LAUNCH = shutil.which("mlx.launch") or str(Path(sys.executable).parent / "mlx.launch")


def _lines(path: Path, n: int, seed: int = 0) -> Path:
    """n lines of real prose of 1-40 words, with a blank line every 37th."""
    words = HELDOUT.read_text().split()
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            k = rng.randint(1, 40)
            start = rng.randrange(len(words) - k)
            f.write("\n" if i % 37 == 36 else " ".join(words[start : start + k]) + "\n")
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _folder_vectors(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    manifest = Manifest.read(folder)
    parts = [read_shard(folder, i, manifest) for i in range(manifest.shards())]
    return np.concatenate([np.asarray(v) for v, _ in parts]), np.concatenate([n for _, n in parts])


def _embed_cli(docs: Path, out: Path, *extra, env=None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "mlx_albert", "embed", "--model", str(TINY), "--file", str(docs)]
    argv += ["--output", str(out), "--shard-size", "40", "--batch-size", "8", "--no-progress", *extra]
    env = {**os.environ, **(env or {})}  # run from the data's folder: the installed package, not the checkout
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=docs.parent)


def test_a_folder_holds_the_npy_vectors_one_row_per_line(capsys, tmp_path):
    """Shards of either storage hold the .npy output's vectors (float32 sums in another batch
    composition: a few ulps of a unit vector's components) with each row's 1-based line number,
    blank lines included."""
    docs = _lines(tmp_path / "docs.txt", 150)
    base = ["embed", "--model", TINY, "--file", docs, "--batch-size", "8"]
    assert _run(capsys, *base, "--output", tmp_path / "all.npy")[0] == 0
    expected = np.load(tmp_path / "all.npy")
    for storage in ("npy", "safetensors"):
        out = tmp_path / storage
        code, err = _run(capsys, *base, "--output", out, "--shard-size", "64", "--storage", storage)
        assert code == 0 and f"wrote 150 embeddings of size {expected.shape[1]} in 3 shards to {out}" in err
        vectors, lines = _folder_vectors(out)
        assert lines.tolist() == list(range(1, 151))
        np.testing.assert_allclose(vectors, expected, rtol=0, atol=64 * EPS32)


def test_a_killed_run_resumes_to_exactly_the_vectors_of_an_uninterrupted_one(tmp_path):
    """SIGKILL after the second of six shards; the same command again computes only the missing
    shards, and every vector equals the uninterrupted run's bit for bit (a shard's batches depend on
    its own texts only). An unfinished index is refused by search."""
    docs = _lines(tmp_path / "docs.txt", 230)
    straight = _embed_cli(docs, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _embed_cli(docs, tmp_path / "killed", env={"MLX_ALBERT_KILL_AFTER_SHARD": "1"})
    assert killed.returncode == -9
    assert sorted(p.name for p in (tmp_path / "killed").glob("shard-*.npy") if ".lines" not in p.name) == [
        "shard-000000.npy",
        "shard-000001.npy",
    ]
    with pytest.raises(ValueError, match="is not complete .* run the same embed command again"):
        search(tmp_path / "killed", np.ones((1, 64), np.float32))
    resumed = _embed_cli(docs, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _folder_vectors(tmp_path / "straight"), _folder_vectors(tmp_path / "killed")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and len(a[1]) == 230


@pytest.mark.slow
@pytest.mark.skipif(not Path(LAUNCH).exists(), reason="mlx.launch is not installed")
def test_two_ranks_write_their_own_shards_and_equal_one_process(tmp_path):
    docs = _lines(tmp_path / "docs.txt", 170)
    one = _embed_cli(docs, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    argv = [LAUNCH, "-n", "2", "--backend", "ring", sys.executable, "-m", "mlx_albert", "embed"]
    argv += ["--model", str(TINY), "--file", str(docs), "--output", str(tmp_path / "two")]
    argv += ["--shard-size", "40", "--batch-size", "8", "--no-progress"]
    two = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stderr.count("wrote 170 embeddings") == 1  # rank 0 reports
    a, b = _folder_vectors(tmp_path / "one"), _folder_vectors(tmp_path / "two")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_refusals_are_one_line_and_lose_nothing(capsys, tmp_path):
    docs = _lines(tmp_path / "docs.txt", 30)
    out = tmp_path / "vec"
    base = ["embed", "--file", docs, "--output", out]
    assert _run(capsys, *base, "--model", TINY)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = _run(capsys, *base, "--model", "pydoc-small")  # another model (dimension 256, not 64)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert (
        f"holds the vectors of model {TINY} (dimension 64), not of model pydoc-small (dimension 256)" in err
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, err = _run(capsys, *base, "--model", TINY, "--precision", "int8")
    assert code == 1 and "vectors made with precision 'float32' (this run: 'int8')" in err
    code, err = _run(capsys, *base, "--model", TINY)  # the same run, complete: nothing to redo
    assert code == 0 and {p.name: p.read_bytes() for p in out.iterdir()} == before
    with open(docs, "a") as f:
        f.write("one more line\n")
    code, err = _run(capsys, *base, "--model", TINY)
    assert code == 1 and "holds the vectors of another input" in err and "--force" in err
    code, err = _run(capsys, *base, "--model", "pydoc-small", "--force")
    assert code == 0 and Manifest.read(out).dimension == 256 and Manifest.read(out).count == 31
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    code, err = _run(capsys, "embed", "--model", TINY, "--file", docs, "--output", foreign)
    assert code == 1 and "holds files that are not mlx-albert vectors" in err
    empty, bad = tmp_path / "empty.txt", tmp_path / "bad.jsonl"
    empty.write_text("")
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    for path, message in ((empty, "no inputs"), (bad, f"{bad}:2: not valid JSON")):
        code, err = _run(capsys, "embed", "--model", TINY, "--file", path, "--output", tmp_path / "x")
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
        assert not list(tmp_path.glob("x/shard-*"))
    bad.write_text('{"text": "fine"}\n{"text": "mended"}\n')  # a run that wrote no shard needs no --force
    assert _run(capsys, "embed", "--model", TINY, "--file", bad, "--output", tmp_path / "x")[0] == 0


def test_search_streams_shards_to_the_brute_force_top_k(capsys, tmp_path):
    """A float32 index: the top-k over shards of 40 equals numpy's cosine ranking of all vectors
    (scores to float32 rounding of a dot product of unit vectors); the CLI prints rank, score, line
    and the line's text; another model is refused naming both."""
    docs = _lines(tmp_path / "docs.txt", 200)
    out = tmp_path / "vec"
    assert _embed_cli(docs, out).returncode == 0
    vectors, lines = _folder_vectors(out)
    encoder = SentenceEncoder.from_pretrained(TINY)
    queries = ["how to read a file", "sort the list"]
    q = encoder.encode(queries)
    found = search(out, queries, top_k=5, encoder=encoder)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ unit.T
    for row, hits in zip(cosine, found, strict=True):
        best = np.argsort(-row, kind="stable")[:5]
        assert [h["corpus_id"] for h in hits] == best.tolist()
        np.testing.assert_allclose([h["score"] for h in hits], row[best], atol=64 * EPS32)
        assert [h["line"] for h in hits] == lines[best].tolist()
    code = main(["search", "--index", str(out), "--model", str(TINY), "--top-k", "3", "--json", queries[0]])
    rows = json.loads(capsys.readouterr().out)
    text = docs.read_text().split("\n")
    assert code == 0 and [r["rank"] for r in rows] == [1, 2, 3]
    assert all(r["text"] == text[r["line"] - 1] for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "probe": ["\x1b[2J"] * 64}))  # tampered
    code, err = _run(capsys, "search", "--index", out, "--model", TINY, "a query")
    assert code == 1 and "manifest.json is malformed (probe vector values)" in err and "\x1b" not in err
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, err = _run(capsys, "search", "--index", out, "--model", "pydoc-small", "a query")
    assert (
        code == 1
        and "was built with model" in err
        and "pydoc-small (dimension 256) gives other vectors" in err
    )


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_quantized_indexes_store_and_rescore_as_sentence_transformers(tmp_path, precision):
    """Shards store quantize_embeddings' values (int8 ranges from the first shard); search finds the
    top_k x multiplier candidates by the quantized scores and ranks them by the float query's dot
    product with the dequantized (int8) or 0/1 (binary) candidates — recomputed here in numpy over all
    rows at once."""
    docs = _lines(tmp_path / "docs.txt", 120)
    out = tmp_path / precision
    assert _embed_cli(docs, out, "--precision", precision).returncode == 0
    assert _embed_cli(docs, tmp_path / "float").returncode == 0
    floats, _ = _folder_vectors(tmp_path / "float")
    stored, _ = _folder_vectors(out)
    manifest = Manifest.read(out)
    ranges = np.asarray(manifest.ranges, np.float32) if precision == "int8" else None
    if precision == "int8":
        np.testing.assert_array_equal(ranges, np.vstack([floats[:40].min(0), floats[:40].max(0)]))
    assert np.array_equal(stored, quantize(floats, precision, ranges))
    q = floats[[3, 77]] + 0.01  # queries near two documents
    k, multiplier = 4, 3
    if precision == "int8":
        first = quantize(q, "int8", ranges).astype(np.float64) @ stored.astype(np.float64).T
        steps = np.where(ranges[1] == ranges[0], 1, (ranges[1] - ranges[0]) / 255)
        rescore = (stored.astype(np.float64) + 128) * steps + ranges[0]
    else:
        bits = np.unpackbits(stored.view(np.uint8) ^ 0x80, axis=1)[:, : floats.shape[1]].astype(np.float64)
        qbits = np.unpackbits(quantize(q, "binary").view(np.uint8) ^ 0x80, axis=1)[:, : floats.shape[1]]
        first = -(qbits[:, None, :] != bits[None]).sum(-1)  # minus the Hamming distance
        rescore = bits
    found = search(out, q, top_k=k, rescore_multiplier=multiplier)
    for i, hits in enumerate(found):
        candidates = np.lexsort((np.arange(len(stored)), -first[i]))[: k * multiplier]
        scores = rescore[candidates] @ q[i].astype(np.float64)
        want = candidates[np.lexsort((candidates, -scores))][:k]
        assert [h["corpus_id"] for h in hits] == want.tolist()
    if precision == "int8":  # dequantized unit vectors: the dot product is nearly the cosine
        assert found[0][0]["corpus_id"] == 3 and found[1][0]["corpus_id"] == 77


def _random_search_case():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 24)).astype(np.float32), rng.normal(size=(1000, 24)).astype(np.float32)


def test_semantic_search_over_blocks_matches_brute_force():
    queries, corpus = _random_search_case()
    found = semantic_search(queries, corpus, top_k=7, block=128)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    ).T
    for row, hits in zip(cosine, found, strict=True):
        assert [h["corpus_id"] for h in hits] == np.argsort(-row, kind="stable")[:7].tolist()
        np.testing.assert_allclose([h["score"] for h in hits], np.sort(row)[::-1][:7], atol=64 * EPS32)


def test_semantic_search_matches_sentence_transformers():
    """Live: sentence-transformers' util.semantic_search gives the same ids (scores to float32)."""
    util = pytest.importorskip("sentence_transformers.util")
    import torch

    queries, corpus = _random_search_case()
    found = semantic_search(queries, corpus, top_k=7, block=128)
    theirs = util.semantic_search(torch.tensor(queries), torch.tensor(corpus), top_k=7)
    for ours, ref in zip(found, theirs, strict=True):
        assert [h["corpus_id"] for h in ours] == [h["corpus_id"] for h in ref]
        np.testing.assert_allclose([h["score"] for h in ours], [h["score"] for h in ref], atol=64 * EPS32)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantize_is_sentence_transformers_quantize_embeddings(precision):
    """Live: the values shards and encode(precision=...) hold are quantize_embeddings' own."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.quantization import quantize_embeddings

    rng = np.random.default_rng(1)
    vectors, calibration = rng.normal(size=(50, 37)).astype(np.float32), rng.normal(size=(80, 37))
    ranges = np.vstack([calibration.min(0), calibration.max(0)]).astype(np.float32)
    given = {"ranges": ranges} if precision in ("int8", "uint8") else {}
    theirs = quantize_embeddings(vectors, precision=precision, **given)
    ours = quantize(vectors, precision, ranges if given else None)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
