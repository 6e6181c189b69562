"""The mlx-albert command line: every subcommand on the bundled checkpoint, file/stdin inputs, and
one-line errors with a non-zero exit code."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_pipelines import NER_LABELS, _head_checkpoint

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
    assert code == 0 and from_txt == out  # blank lines skipped
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
    from mlx_albert.pipelines import pipeline

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
        code == 0 and vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
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
    assert code == 1 and "needs a 'text' column" in err


def test_python_dash_m_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "mlx_albert", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("convert", "fill-mask", "classify", "ner", "qa", "embed", "info", "examples:"):
        assert command in out
    done = subprocess.run(
        [sys.executable, "-m", "mlx_albert", "fill-mask", "--model", str(TINY), "--json"],
        input="a [MASK] b\n",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and len(json.loads(done.stdout)) == 5
