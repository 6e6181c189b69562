"""The mlx-albert command line: every subcommand on the bundled checkpoint, file/stdin inputs, and
one-line errors with a non-zero exit code."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import close_json
from test_pipelines import NER_LABELS, _head_checkpoint
from tolerances import forward_tol, unit_norm_tol

from mlx_albert import load
from mlx_albert.cli import main

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fill_mask_from_arguments_and_files(capsys, tmp_path):
    code, out, _ = run(
        capsys, "fill-mask", "--model", TINY, "--json", "--top-k", "2", "The [MASK] sat.", "[MASK] b"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 2 and all(len(r) == 2 and "token_str" in r[0] for r in lines)
    (tmp_path / "in.txt").write_text("The [MASK] sat.\n\n[MASK] b\n")
    code, from_txt, _ = run(
        capsys, "fill-mask", "--model", TINY, "--json", "--top-k", "2", "--file", tmp_path / "in.txt"
    )
    assert code == 0 and from_txt == out  # blank lines skipped: the same batch, bit for bit
    (tmp_path / "in.jsonl").write_text('{"text": "The [MASK] sat."}\n"[MASK] b"\n')
    code, from_jsonl, _ = run(
        capsys, "fill-mask", "--model", TINY, "--json", "--top-k", "2", "--file", tmp_path / "in.jsonl"
    )
    assert code == 0 and from_jsonl == out


def test_classify_ner_qa_embed_info(capsys, tmp_path):
    cls = _head_checkpoint(tmp_path / "cls", "for_sequence_classification", num_labels=2)
    (tmp_path / "pairs.csv").write_text(
        'text,text_pair\nWhere is Maria?,"Maria lives in Paris, France."\nonly one,\n'
    )
    code, out, _ = run(
        capsys, "classify", "--model", cls, "--file", tmp_path / "pairs.csv", "--json", "--top-k", "2"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 2 and all(len(r) == 2 and r[0]["score"] >= r[1]["score"] for r in rows)
    from mlx_albert.tasks import pipeline

    expected = pipeline("text-classification", cls, top_k=2)(
        [{"text": "Where is Maria?", "text_pair": "Maria lives in Paris, France."}, {"text": "only one"}]
    )
    assert [[d["label"] for d in r] for r in rows] == [[d["label"] for d in r] for r in expected]

    ner = _head_checkpoint(tmp_path / "ner", "for_token_classification", num_labels=5, id_to_label=NER_LABELS)
    code, out, _ = run(capsys, "ner", "--model", ner, "--json", "Maria lives in Paris.")
    assert code == 0 and all({"entity_group", "start", "end"} <= e.keys() for e in json.loads(out))

    qa = _head_checkpoint(tmp_path / "qa", "for_question_answering", scale=3.0)
    context = "The cat sat on the mat in the garden."
    code, out, _ = run(capsys, "qa", "--model", qa, "--context", context, "--json", "Where is the cat?")
    answer = json.loads(out)
    assert code == 0 and answer["answer"] == context[answer["start"] : answer["end"]]
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "Where?", "context": context}) + "\n")
    code, out2, _ = run(capsys, "qa", "--model", qa, "--file", tmp_path / "qa.jsonl", "--json")
    assert code == 0 and set(json.loads(out2)) == {"score", "start", "end", "answer"}

    code, _, err = run(capsys, "embed", "--model", TINY, "a b", "c d e", "--output", tmp_path / "v.npy")
    vectors = np.load(tmp_path / "v.npy")
    assert (
        code == 0
        and vectors.shape == (2, 64)
        and np.allclose(np.linalg.norm(vectors, axis=1), 1, rtol=0, atol=unit_norm_tol(64))
    )

    code, out, _ = run(capsys, "info", "--model", TINY, "--json")
    info = json.loads(out)
    assert code == 0 and info["architecture"] == "AlbertForMaskedLM" and info["parameters"] > 40_000
    assert info["dtype"] == "float32" and info["tokenizer"] == "spiece.model"


def test_convert_subcommand(capsys, tmp_path):
    code, out, _ = run(
        capsys, "convert", "--hf-path", TINY, "--mlx-path", tmp_path / "out", "-q", "--q-bits", "8"
    )
    assert code == 0 and "Converted" in out
    code, out, _ = run(capsys, "info", "--model", tmp_path / "out", "--json")
    assert json.loads(out)["quantization"]["bits"] == 8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fill-mask", "--model", TINY, "no mask here"], "No mask_token"),
        (["fill-mask", "--model", "/no/such/folder", "x [MASK]"], "does not exist"),
        (["fill-mask", "--model", TINY, "--file", "/no/such.txt"], "no such file"),
        (["qa", "--model", TINY, "Where?"], "give --context"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_malformed_files_name_the_line(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a [MASK]"}\n{not json\n')
    code, _, err = run(capsys, "fill-mask", "--model", TINY, "--file", bad)
    assert code == 1 and f"{bad}:2: not valid JSON" in err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sentence\nhello\n")
    code, _, err = run(capsys, "classify", "--model", TINY, "--file", wrong)
    assert code == 1 and f"{wrong}:1 (header): unknown field 'sentence'" in err


def test_csv_duplicate_columns_and_long_fields_in_train_and_classify(capsys, tmp_path):
    """A repeated CSV column is refused naming it (csv.DictReader would keep the last silently); a
    field past csv's default 131,072-character limit is read (MAX_RECORD is the bound), and one past
    MAX_RECORD is a one-line file:line error, for `train` and for `classify --file`."""
    from mlx_albert.records import MAX_RECORD

    cls = _head_checkpoint(tmp_path / "cls", "for_sequence_classification", num_labels=2)
    train = ["train", "--model", TINY, "--task", "sequence_classification", "--max-steps", "1"]
    dup = tmp_path / "dup.csv"
    dup.write_text("text,label,label\na b,x,y\n")
    for argv in (
        [*train, "--train", dup, "--output-dir", tmp_path / "o1"],
        ["classify", "--model", cls, "--file", dup],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 1 and f"{dup}:1 (header): the column 'label' appears twice" in err, err
        assert len(err.strip().splitlines()) == 1
    long = tmp_path / "long.csv"
    long.write_text("text,label\n" + "the cat " * 25_000 + ",x\nthe dog,y\n")  # a 200,000-character field
    code, _, err = run(capsys, *train, "--train", long, "--output-dir", tmp_path / "o2", "--no-progress")
    assert code == 0, err
    code, out, err = run(capsys, "classify", "--model", cls, "--file", long, "--json")
    assert code == 0 and len(out.splitlines()) == 2, err
    huge = tmp_path / "huge.csv"
    with open(huge, "w") as f:  # one quoted field over the bound, spread over short lines
        f.write('text,label\n"' + ("word " * 50 + "\n") * (MAX_RECORD // 250 + 1) + '",x\n')
    for argv in (
        [*train, "--train", huge, "--output-dir", tmp_path / "o3"],
        ["classify", "--model", cls, "--file", huge],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 1 and f"{huge}:" in err and f"fields hold at most {MAX_RECORD} bytes" in err, err[
            -500:
        ]
        assert "Traceback" not in err


def test_context_file_is_read_with_a_bound(capsys, tmp_path):
    """--context-file reads a regular file within the records' bound: a device or an oversized file is
    one line, never an endless read."""
    from mlx_albert.records import MAX_RECORD

    qa = ["qa", "--model", TINY, "--allow-untrained-head", "Who?", "--context-file"]
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (MAX_RECORD + 1))
    for path, message in (("/dev/zero", "not a regular file"), (big, f"is over {MAX_RECORD} bytes")):
        code, _, err = run(capsys, *qa, path)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "c.txt").write_text("Maria lives in Paris.")
    code, out, err = run(capsys, *qa, tmp_path / "c.txt", "--json")
    assert code == 0 and "answer" in json.loads(out.splitlines()[0]), err


def test_python_dash_m_and_help(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mlx_albert", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    for command in ("convert", "fill-mask", "classify", "ner", "qa", "embed", "info", "examples:"):
        assert command in out
    done = subprocess.run(
        [sys.executable, "-m", "mlx_albert", "fill-mask", "--model", str(TINY), "--json"],
        input="a [MASK] b\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and len(json.loads(done.stdout)) == 5


# -- release quality: no silent wrong answers, one-line errors, readable output -------------------


def _stdin(monkeypatch, text: str):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def test_fill_mask_targets_do_not_swallow_the_text(capsys, caplog):
    code, out, _ = run(
        capsys, "fill-mask", "--model", TINY, "--json", "--targets", "the,car", "The [MASK] sat."
    )
    answers = json.loads(out)
    assert code == 0 and {a["token"] for a in answers} == {8, 52}  # ▁the, ▁car
    code, out2, _ = run(
        capsys,
        "fill-mask",
        "--model",
        TINY,
        "--json",
        "--targets",
        "the",
        "--targets",
        "car",
        "The [MASK] sat.",
    )
    assert out2 == out
    # a vocabulary token is looked up as it is (re-tokenising "▁ca" would give "▁", "ca")
    code, out, _ = run(capsys, "fill-mask", "--model", TINY, "--json", "--targets", "▁ca", "The [MASK] sat.")
    assert [a["token"] for a in json.loads(out)] == [96]
    import logging

    with caplog.at_level(logging.WARNING):
        code, out, _ = run(
            capsys, "fill-mask", "--model", TINY, "--json", "--targets", "zebra", "The [MASK] sat."
        )
    assert code == 0 and any("'zebra' is not in the vocabulary" in r.getMessage() for r in caplog.records)


def test_plain_output_names_the_input(capsys):
    code, out, _ = run(capsys, "fill-mask", "--model", TINY, "--top-k", "1", "a [MASK] b", "[MASK] c [MASK]")
    lines = out.splitlines()
    assert (
        code == 0 and lines[0].startswith("a [MASK] b\t") and lines[1].startswith("[MASK] c [MASK]\t[MASK 1]")
    )
    assert lines[2].startswith("\t[MASK 2]") and len(lines) == 3


def test_untrained_heads_fail_unless_allowed(capsys, tmp_path):
    for argv in (
        ["classify", "--model", TINY, "good"],
        ["ner", "--model", TINY, "Maria lives in Paris."],
        ["qa", "--model", TINY, "--context", "The cat sat.", "Who sat?"],
        ["multiple-choice", "--model", TINY, "--question", "Fire?", "out", "up"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 1 and "has no trained" in err and "--allow-untrained-head" in err and not out, argv
        assert len(err.strip().splitlines()) == 1
        code, out, err = run(capsys, *argv, "--allow-untrained-head")
        assert code == 0 and out, argv
    from mlx_albert import pipeline
    from mlx_albert.tasks import UntrainedHeadError

    with pytest.raises(UntrainedHeadError, match="no trained qa_outputs weights"):
        pipeline("question-answering", TINY)
    base = tmp_path / "base"
    import mlx_albert

    mlx_albert.load(TINY, "base").save_pretrained(base)
    shutil.copy(TINY / "spiece.model", base / "spiece.model")
    with pytest.raises(UntrainedHeadError, match="no trained predictions weights for fill-mask"):
        pipeline("fill-mask", base)
    pipeline("embed", TINY)  # mean pooling needs no head; the pooler is only checked when asked for
    with pytest.raises(UntrainedHeadError, match="no trained pooler"):
        pipeline("embed", TINY)("a b", pooling="pooler")
    assert pipeline("embed", TINY, allow_untrained_head=True)("a b", pooling="pooler").shape == (64,)


def test_jsonl_on_stdin_and_strict_records(capsys, monkeypatch, tmp_path):
    cls = _head_checkpoint(tmp_path / "cls", "for_sequence_classification", num_labels=2)
    pair = {"text": "Where is Maria?", "text_pair": "Maria lives in Paris."}
    _stdin(monkeypatch, json.dumps(pair) + "\n" + json.dumps("only one") + "\n")
    code, from_stdin, _ = run(capsys, "classify", "--model", cls, "--json", "--top-k", "2")
    (tmp_path / "in.jsonl").write_text(json.dumps(pair) + "\n" + json.dumps("only one") + "\n")
    code2, from_file, _ = run(
        capsys, "classify", "--model", cls, "--json", "--top-k", "2", "--file", tmp_path / "in.jsonl"
    )
    code3, as_pair, _ = run(
        capsys, "classify", "--model", cls, "--json", "--top-k", "2", "--file", tmp_path / "in.jsonl"
    )
    # the same inputs in the same batch: the same arithmetic, bit for bit
    assert code == code2 == 0 and from_stdin == from_file and len(from_stdin.splitlines()) == 2
    from mlx_albert import pipeline

    expected = pipeline("text-classification", cls, top_k=2)([pair, "only one"])
    assert [json.loads(line) for line in from_stdin.splitlines()] == json.loads(json.dumps(expected))
    _stdin(monkeypatch, json.dumps(pair) + "\n")
    code, as_text, _ = run(capsys, "classify", "--model", cls, "--json", "--format", "txt")
    assert code == 0 and len(as_text.splitlines()) == 1 and as_text != from_stdin.splitlines()[0] + "\n"
    (tmp_path / "x.json").write_text(json.dumps(pair) + "\n")
    code, out, _ = run(
        capsys, "classify", "--model", cls, "--json", "--top-k", "2", "--file", tmp_path / "x.json"
    )
    # alone here, beside another input there: a batch of another size, summed in another order
    alone, batched = json.loads(out.splitlines()[0]), json.loads(from_stdin.splitlines()[0])
    assert code == 0 and close_json(alone, batched, forward_tol(load(cls).config, 16))
    (tmp_path / "typo.jsonl").write_text(json.dumps({"text": "a", "textpair": "b"}) + "\n")
    code, _, err = run(capsys, "classify", "--model", cls, "--file", tmp_path / "typo.jsonl")
    assert (
        code == 1
        and f"{tmp_path / 'typo.jsonl'}:1: unknown field 'textpair' (did you mean 'text_pair'?)" in err
    )
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "Who?", "contxt": "Maria."}) + "\n")
    code, _, err = run(capsys, "qa", "--model", cls, "--file", tmp_path / "qa.jsonl")
    assert code == 1 and f"{tmp_path / 'qa.jsonl'}:1: unknown field 'contxt' (did you mean 'context'?)" in err
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "a", "text_pair": 5}) + "\n")
    code, _, err = run(capsys, "classify", "--model", cls, "--file", tmp_path / "bad.jsonl")
    assert code == 1 and ":1: field 'text_pair' must be a string" in err
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    code, _, err = run(capsys, "classify", "--model", cls, "--file", tmp_path / "latin1.txt")
    assert code == 1 and f"{tmp_path / 'latin1.txt'}:1: not UTF-8 text" in err


def test_one_line_errors_for_outputs_and_empty_inputs(capsys, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    code, _, err = run(
        capsys, "embed", "--model", TINY, "--file", tmp_path / "empty.txt", "--output", tmp_path / "v.npy"
    )
    assert code == 1 and "no inputs" in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "embed", "--model", TINY, "a b", "--output", tmp_path / "nodir" / "v.npy")
    assert code == 1 and "the folder" in err and "does not exist" in err and ".tmp" not in err
    (tmp_path / "v.npy").write_text("mine")
    code, _, err = run(capsys, "embed", "--model", TINY, "a b", "--output", tmp_path / "v.npy")
    assert code == 1 and "pass --force" in err and (tmp_path / "v.npy").read_text() == "mine"
    code, _, err = run(capsys, "embed", "--model", TINY, "a b", "--output", tmp_path / "v.npy", "--force")
    assert code == 0 and np.load(tmp_path / "v.npy").shape == (1, 64)


def test_broken_pipe_exits_quietly(tmp_path):
    lines = "\n".join(f"text number {i}" for i in range(300))
    done = subprocess.run(
        f"{sys.executable} -m mlx_albert embed --model {TINY} --json | head -n 1",
        shell=True,
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.stdout.count("\n") == 1 and done.stderr == ""


def test_verbose_after_the_subcommand_version_multiple_choice_and_features(capsys):
    code, out, err = run(capsys, "info", "--model", TINY, "-v")
    assert code == 0 and "blas" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip().startswith("mlx-albert 0.")
    code, out, _ = run(
        capsys,
        "multiple-choice",
        "--model",
        TINY,
        "--allow-untrained-head",
        "--json",
        "--question",
        "Q",
        "a",
        "b c",
    )
    assert code == 0 and sorted(d["choice"] for d in json.loads(out)) == ["a", "b c"]
    code, out, _ = run(capsys, "feature-extraction", "--model", TINY, "a b", "--max-length", "3")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and np.array(rows[0]).shape == (1, 3, 64)


def test_strings_from_checkpoints_are_escaped(capsys, tmp_path):
    evil = "\x1b[2J\x1b]0;owned\x07"
    cls = _head_checkpoint(
        tmp_path / "cls", "for_sequence_classification", num_labels=2, id_to_label={0: evil, 1: "ok"}
    )
    for extra in ((), ("--json",)):
        code, out, _ = run(capsys, "classify", "--model", cls, "--top-k", "2", *extra, "good")
        assert code == 0 and "\x1b" not in out and "\x07" not in out
        assert ("\\x1b[2J" in out) if not extra else ("\\u001b[2J" in out)
    rows = json.loads(run(capsys, "classify", "--model", cls, "--top-k", "2", "--json", "good")[1])
    assert evil in {r["label"] for r in rows}  # JSON stays lossless


def test_half_precision_on_cpu_warns(capsys):
    code, _, err = run(capsys, "fill-mask", "--model", TINY, "--dtype", "bfloat16", "a [MASK]")
    assert code == 0 and "about 30x slower than float32" in err


def test_progress_on_qa_and_embed(capsys, tmp_path):
    lines = tmp_path / "s.txt"
    lines.write_text("".join(f"sentence {i}\n" for i in range(40)))
    code, _, err = run(
        capsys,
        "embed",
        "--model",
        TINY,
        "--file",
        lines,
        "--batch-size",
        "4",
        "--progress",
        "--output",
        tmp_path / "v.npy",
    )
    assert code == 0 and "batches 10/10" in err
    code, _, err = run(
        capsys, "embed", "--model", TINY, "--file", lines, "--no-progress", "--output", tmp_path / "w.npy"
    )
    assert code == 0 and "batches" not in err
    qa = _head_checkpoint(tmp_path / "qa", "for_question_answering")
    code, _, err = run(
        capsys, "qa", "--model", qa, "--context", "The cat sat.", "--file", lines, "--progress"
    )
    assert code == 0 and "batches" in err


def test_file_dash_reads_stdin_and_convert_runs_as_a_module(capsys, monkeypatch, tmp_path):
    _stdin(monkeypatch, "The [MASK] sat.\n")
    code, from_stdin, _ = run(capsys, "fill-mask", "--model", TINY, "--json", "--file", "-")
    code2, from_args, _ = run(capsys, "fill-mask", "--model", TINY, "--json", "The [MASK] sat.")
    assert code == code2 == 0 and from_stdin == from_args  # the same input and batch: bit for bit
    done = subprocess.run(
        [sys.executable, "-m", "mlx_albert.convert", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0 and "--hf-path" in done.stdout


def test_stdin_json_lines_after_blank_lines_keep_their_numbers(capsys, monkeypatch):
    _stdin(monkeypatch, '\n\n{"text": "a [MASK]"}\n{"txt": "b [MASK]"}\n')
    code, _, err = run(capsys, "fill-mask", "--model", TINY)
    assert code == 1 and "<stdin>:4: unknown field 'txt' (did you mean 'text'?)" in err


def test_the_cli_works_without_the_serve_extra(tmp_path):
    """Starlette and uvicorn are an optional extra: every other command must run without them."""
    code = (
        "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
        "from mlx_albert.cli import main\n"
        f"sys.exit(main(['fill-mask', '--model', {str(TINY)!r}, '--json', 'a [MASK] b']) "
        f"or main(['serve', '--model', {str(TINY)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert len(json.loads(done.stdout.splitlines()[0])) == 5  # fill-mask ran
    assert done.returncode == 1 and 'pip install "mlx-albert[serve]"' in done.stderr
