"""A folder of vectors that nothing can mix or damage unnoticed: one writer at a time, shards that
record the run that wrote them, every kept shard checked (record, header, size, line numbers) and a
bad one computed again, searches that refuse a folder whose shards do not add up, and one line for
every read error."""

import json
import os
import shutil

import numpy as np
import pytest
from test_vectors import TINY, _folder_vectors, _lines, _run

from mlx_albert.cli import main
from mlx_albert.files import FolderLock, atomic_write
from mlx_albert.sentence.search import search
from mlx_albert.sentence.vectors import Manifest, input_identity

ARGS = ["--model", TINY, "--shard-size", "16", "--batch-size", "8", "--no-progress"]


def _embed(capsys, docs, out, *extra):
    return _run(capsys, "embed", "--file", docs, "--output", out, *ARGS, *extra)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run over 50 lines (shards of 16, 16, 16, 2), to compare repairs with."""
    root = tmp_path_factory.mktemp("straight")
    docs = _lines(root / "docs.txt", 50)
    assert main(["embed", "--file", str(docs), "--output", str(root / "vec"), *map(str, ARGS)]) == 0
    return docs, root / "vec", _folder_vectors(root / "vec")


def _copy(straight, tmp_path):
    docs, folder, _ = straight
    shutil.copy(docs, tmp_path / "docs.txt")
    os.utime(tmp_path / "docs.txt", ns=(os.stat(docs).st_mtime_ns,) * 2)
    shutil.copytree(folder, tmp_path / "vec")
    manifest = json.loads((tmp_path / "vec" / "manifest.json").read_text())
    manifest["input"] = input_identity(tmp_path / "docs.txt")
    (tmp_path / "vec" / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "docs.txt", tmp_path / "vec"


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(capsys, tmp_path):
    docs = _lines(tmp_path / "docs.txt", 20)
    (tmp_path / "vec").mkdir()
    lock = FolderLock(tmp_path / "vec")
    assert lock.acquire() is None  # another run, started first
    code, err = _embed(capsys, docs, tmp_path / "vec")
    assert code == 1 and f"is in use by another run (pid {os.getpid()})" in err
    assert len(err.strip().splitlines()) == 1 and os.listdir(tmp_path / "vec") == [".lock"]
    lock.release()
    code, err = _embed(capsys, docs, tmp_path / "vec")
    assert code == 0 and "wrote 20 embeddings" in err and not (tmp_path / "vec" / ".lock").exists()


def test_shards_of_another_run_are_never_kept(capsys, straight, tmp_path):
    """Shards 0-1 of a run over other texts, copied in under this run's names, are computed again."""
    docs, folder = _copy(straight, tmp_path)
    other = _lines(tmp_path / "other.txt", 50, seed=7)
    assert _embed(capsys, other, tmp_path / "other")[0] == 0
    for name in ("shard-000000.npy", "shard-000000.lines.npy", "shard-000000.json", "shard-000001.npy"):
        shutil.copy(tmp_path / "other" / name, folder / name)
    code, err = _embed(capsys, docs, folder)
    assert code == 0 and "holds this run's vectors: checking them" in err
    assert "shard-000000.json was written by another run" in err
    assert "shard-000001.npy is not the file its record shard-000001.json describes" in err
    assert "wrote 50 embeddings" in err
    vectors, lines = _folder_vectors(folder)
    assert np.array_equal(vectors, straight[2][0]) and np.array_equal(lines, straight[2][1])
    code, err = _embed(capsys, docs, folder)
    assert code == 0 and "is already complete (50 embeddings of size 64 in 4 shards, checked)" in err


def _damage(kind: str, path):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "float64":
        np.save(path, np.load(path).astype(np.float64))
    elif kind == "short":
        np.save(path, np.load(path)[:5])
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif kind == "garbage":
        path.write_bytes(b"\x93NUMPY\x01\x00" + os.urandom(300))
    elif kind == "unclosed header":  # numpy's header reader raises tokenize.TokenError on it
        header = b"{'descr': ('<f4'".ljust(54) + b"\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)


@pytest.mark.parametrize("kind", ["empty", "float64", "short", "truncated", "garbage", "unclosed header"])
def test_a_damaged_shard_is_one_line_for_search_and_repaired_by_embed(capsys, straight, tmp_path, kind):
    docs, folder = _copy(straight, tmp_path)
    shard = folder / "shard-000002.npy"
    _damage(kind, shard)
    with pytest.raises(ValueError, match="shard-000002.npy is damaged .*run the same embed command again"):
        search(folder, np.ones((1, 64), np.float32))
    code, err = _run(capsys, "search", "--index", folder, "a query")
    assert code == 1 and "shard-000002.npy is damaged" in err and len(err.strip().splitlines()) == 1, err
    code, err = _embed(capsys, docs, folder)
    assert code == 0 and "recomputed a damaged shard: " in err and "wrote 50 embeddings" in err
    vectors, lines = _folder_vectors(folder)
    assert np.array_equal(vectors, straight[2][0]) and np.array_equal(lines, straight[2][1])


def test_damaged_line_numbers_and_records_are_repaired(capsys, straight, tmp_path):
    docs, folder = _copy(straight, tmp_path)
    np.save(folder / "shard-000001.lines.npy", np.arange(100, 116, dtype=np.int64))
    (folder / "shard-000003.json").write_text("{not json")
    code, err = _embed(capsys, docs, folder)
    assert code == 0 and err.count("recomputed a damaged shard") == 2, err
    assert "shard-000001.lines.npy is not the file its record shard-000001.json describes" in err, err
    assert "shard-000003.json is damaged (is not valid JSON" in err, err
    assert np.array_equal(_folder_vectors(folder)[1], straight[2][1])


def test_a_manifest_count_or_shard_sizes_that_do_not_add_up_are_refused(capsys, straight, tmp_path):
    """count 2 for 50 rows (which searched shard 0 only), and a middle int8 shard shorter than
    shard_size (which failed in rescoring, or rescored the wrong rows): one line naming the file."""
    docs, folder = _copy(straight, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "count": 2}))
    with pytest.raises(ValueError, match="shard-000001.npy lies past the 2 vectors .* again to recompute"):
        search(folder, np.ones((1, 64), np.float32))
    (folder / "manifest.json").write_text(json.dumps({**manifest, "count": 60}))
    with pytest.raises(ValueError, match="shard-000003.npy is damaged .*holds a float32 array of shape"):
        search(folder, np.ones((1, 64), np.float32))
    code, err = _embed(capsys, docs, folder)  # the same run: the count is recomputed, no shard is
    assert code == 0 and "already complete" in err and Manifest.read(folder).count == 50
    out = tmp_path / "int8"
    assert _embed(capsys, docs, out, "--precision", "int8")[0] == 0
    np.save(out / "shard-000001.npy", np.load(out / "shard-000001.npy")[:10])
    code, err = _run(capsys, "search", "--index", out, "--model", TINY, "a query")
    assert code == 1 and "shard-000001.npy is damaged" in err and len(err.strip().splitlines()) == 1


def test_the_manifest_input_is_data_checked_as_user_input(capsys, straight, tmp_path):
    """A recorded input path that is a FIFO (identity faked to match) is not read: a warning and line
    numbers; a path that is not a string is a malformed manifest."""
    docs, folder = _copy(straight, tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "input": input_identity(fifo)}))
    code = main(["search", "--index", str(folder), "--model", str(TINY), "--json", "a query"])
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert code == 0 and all(r["text"] is None for r in rows) and "line numbers only" in captured.err
    (folder / "manifest.json").write_text(json.dumps({**manifest, "input": {"path": ["x"] * 3}}))
    code, err = _run(capsys, "search", "--index", folder, "--model", TINY, "a query")
    assert code == 1 and "manifest.json is malformed (input)" in err


def test_numpys_short_write_is_the_disk_full_message(tmp_path):
    def short(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("64000 requested and 51168 written")

    with pytest.raises(OSError, match="no space left on the device while writing"):
        atomic_write(tmp_path / "shard-000000.npy", short)
    assert list(tmp_path.iterdir()) == []


def test_embed_and_search_take_the_folders_prompts(capsys, tmp_path):
    """--prompt-name puts the folder's prompt before every line (embed) or query (search); the
    manifest records it, so the same folder is resumed only with the same prompt."""
    from sentence_folders import write

    from mlx_albert import SentenceEncoder

    model = write(tmp_path / "st", ("mean",), prompts={"query": "query: ", "document": "passage: "})
    docs = _lines(tmp_path / "docs.txt", 20)
    out = tmp_path / "vec"
    base = ["embed", "--model", model, "--file", docs, "--output", out, "--no-progress"]
    assert _run(capsys, *base, "--prompt-name", "document")[0] == 0
    encoder = SentenceEncoder.from_pretrained(model)
    texts = docs.read_text().split("\n")[:20]
    want = encoder.encode(texts, prompt_name="document", batch_size=64)
    vectors, _ = _folder_vectors(out)
    np.testing.assert_allclose(vectors, want, rtol=0, atol=1e-5)
    code, err = _run(capsys, *base)  # without the prompt: another run
    assert code == 1 and "vectors made with options" in err
    code, err = _run(capsys, *base, "--prompt-name", "passage")
    assert code == 1 and "--prompt-name: prompt_name 'passage' is not one of this model's prompts" in err
    query = encoder.encode("read a file", prompt_name="query")
    best = int(np.argmax(vectors @ query / np.linalg.norm(vectors, axis=1)))
    code = main(["search", "--index", str(out), "--prompt-name", "query", "--json", "read a file"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and rows[0]["corpus_id"] == best
