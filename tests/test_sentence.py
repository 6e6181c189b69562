"""sentence-transformers folders, both Hub layouts and every pooling mode: the vectors of every
entry point (SentenceEncoder, the embed pipeline and command, the server, export) equal
sentence-transformers' own encode (live, when it is installed); a module this library does not
implement is refused by name."""

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import sentence_folders
from sentence_folders import write
from tolerances import unit_norm_tol

import mlx_albert
from mlx_albert import SentenceEncoder, pipeline
from mlx_albert.cli import main

TEXTS = [
    "The cat sat on the mat.",
    "A dog ran far away from home, across the fields and the river, until night fell",
    "rivers",
    "",
    "Café naïve 😀 ☃",
]
# the issue's bound against sentence-transformers, relative to the vectors' size (raw pooled states
# reach a few units; unit vectors 1): another implementation agrees far closer (~1e-6)
ST_TOL = 1e-5
CASES = {  # name: (pooling modes, layout, Dense width, Dense activation, Normalize)
    "cls-old": (("cls",), "old", None, "Tanh", False),
    "mean-new-normalize": (("mean",), "new", None, "Tanh", True),
    "max-old": (("max",), "old", None, "Tanh", False),
    "mean_sqrt_len-new": (("mean_sqrt_len_tokens",), "new", None, "Tanh", False),
    "weightedmean-old-dense": (("weightedmean",), "old", 16, "Tanh", False),
    "lasttoken-new": (("lasttoken",), "new", None, "Tanh", False),
    "cls+mean-new-dense-normalize": (("cls", "mean"), "new", 24, "Identity", True),
    "mean+max-old-dense-relu": (("max", "mean"), "old", 8, "ReLU", True),
}


def _st():
    return pytest.importorskip("sentence_transformers")


def _folder(tmp_path: Path, name: str) -> Path:
    modes, layout, dense, activation, normalize = CASES[name]
    return write(tmp_path / name, modes, layout, dense, activation, normalize)


def _close(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= ST_TOL * max(1.0, np.abs(theirs).max())


@pytest.mark.parametrize("name", list(CASES))
def test_every_pooling_mode_and_layout_equals_sentence_transformers(name, tmp_path):
    st = _st()
    folder = _folder(tmp_path, name)
    theirs = st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS, batch_size=2)
    encoder = SentenceEncoder.from_pretrained(folder)
    _close(encoder.encode(TEXTS, batch_size=2), theirs)
    _close(encoder.encode(TEXTS[1]), theirs[1])  # one text, alone
    _close(pipeline("embed", folder)(TEXTS), theirs)


def test_cli_server_and_export_give_sentence_transformers_vectors(tmp_path, capsys):
    st = _st()
    folder = _folder(tmp_path, "weightedmean-old-dense")
    other = _folder(tmp_path, "cls+mean-new-dense-normalize")
    for source in (folder, other):
        theirs = st.SentenceTransformer(str(source), device="cpu").encode(TEXTS)
        out = tmp_path / f"{source.name}.npy"
        (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
        code = main(["embed", "--model", source, "--file", tmp_path / "texts.txt", "--output", out])
        _close(np.load(out), theirs)  # the blank line keeps its row
        assert code == 0
        exported = tmp_path / f"{source.name}.mlxfn"
        shape = ["--seq", "64", "--batch", str(len(TEXTS))]  # the folders' max_seq_length
        assert main(["export", "--model", source, "--task", "embed", "--output", exported, *shape]) == 0
        forward = mx.import_function(str(exported))
        tok = mlx_albert.AlbertTokenizer.from_pretrained(source)
        batch = tok(TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="mlx")
        (vectors,) = forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        _close(np.array(vectors), theirs)
    capsys.readouterr()
    pytest.importorskip("starlette")
    from test_serve import Server

    server = Server(tmp_path, "--model", f"st={folder}")
    try:
        status, body, _ = server.call("/v1/embeddings", {"model": "st", "input": TEXTS[:3]})
        assert status == 200
        theirs = st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS[:3])
        _close([d["embedding"] for d in body["data"]], theirs)
        info = {m["id"]: m for m in server.call("/v1/models")[1]["data"]}["st"]["embedding"]
        assert info == {
            "pooling": "weightedmean",
            "normalize": False,
            "from": "sentence-transformers' modules.json",
        }
    finally:
        server.stop()


def test_a_prompt_left_out_of_pooling_and_max_seq_length(tmp_path):
    """include_prompt false: the prompt's tokens (and [CLS]) are left out of mean pooling, as
    sentence-transformers does; max_seq_length cuts texts."""
    st = _st()
    folder = write(
        tmp_path / "p",
        ("mean",),
        "new",
        include_prompt=False,
        max_seq_length=12,
        prompts={"query": "query: "},
    )
    model = st.SentenceTransformer(str(folder), device="cpu")
    encoder = SentenceEncoder.from_pretrained(folder)
    assert encoder.max_seq_length == 12
    for prompt_name in (None, "query"):
        theirs = model.encode(TEXTS, prompt_name=prompt_name)
        _close(encoder.encode(TEXTS, prompt_name=prompt_name), theirs)
    _close(encoder.encode(TEXTS, prompt="search: "), model.encode(TEXTS, prompt="search: "))


def test_modules_this_library_does_not_implement_are_refused(tmp_path):
    folder = write(tmp_path / "ln", ("mean",), "old")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append(
        {"idx": 2, "name": "2", "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    for call in (lambda: mlx_albert.load(folder), lambda: pipeline("embed", folder)):
        with pytest.raises(
            ValueError, match="sentence_transformers.models.LayerNorm.*mlx_albert does not implement"
        ):
            call()
    dense = write(tmp_path / "gelu", ("mean",), "new", dense=8)
    config = json.loads((dense / "2_Dense" / "config.json").read_text())
    config["activation_function"] = "torch.nn.modules.activation.Softplus"
    (dense / "2_Dense" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Dense activation 'torch.nn.modules.activation.Softplus'"):
        SentenceEncoder.from_pretrained(dense)
    code = subprocess.run(
        [sys.executable, "-m", "mlx_albert", "embed", "--model", str(folder), "a b"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert code.returncode == 1 and "LayerNorm" in code.stderr and len(code.stderr.strip().splitlines()) == 1


def test_plain_checkpoints_keep_mean_pooling_and_unit_norm(tmp_path):
    vectors = SentenceEncoder.from_pretrained(sentence_folders.TINY).encode(TEXTS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, rtol=0, atol=unit_norm_tol(64))
    _close(vectors, pipeline("embed", sentence_folders.TINY)(TEXTS))


def test_max_pooling_of_a_prompt_that_fills_the_sequence_is_finite_as_in_sentence_transformers(tmp_path):
    """include_prompt false and a prompt longer than max_seq_length: sentence-transformers measures
    the prompt cut to the same length, so [SEP] is left to pool and the vector is finite (was NaN)."""
    prompts = {"query": "a long prompt of many many words that fills the sequence: "}
    folder = write(tmp_path / "p", ("max",), "new", include_prompt=False, max_seq_length=8, prompts=prompts)
    ours = SentenceEncoder.from_pretrained(folder).encode(TEXTS[:2], prompt_name="query")
    assert np.isfinite(ours).all()
    st = pytest.importorskip("sentence_transformers")
    _close(ours, st.SentenceTransformer(str(folder), device="cpu").encode(TEXTS[:2], prompt_name="query"))


def _edit(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    "file, changes, message",
    [
        ("config_sentence_transformers.json", {"prompts": ["query: "]}, "prompts must be an object"),
        ("config_sentence_transformers.json", {"prompts": "query: "}, "prompts must be an object"),
        ("config_sentence_transformers.json", {"default_prompt_name": ["query"]}, "default_prompt_name"),
        (
            "config_sentence_transformers.json",
            {"default_prompt_name": "passage"},
            "is not one of its prompts",
        ),
        (
            "config_sentence_transformers.json",
            {"similarity_fn_name": "hamming"},
            "similarity_fn_name 'hamming'",
        ),
        ("sentence_bert_config.json", {"max_seq_length": True}, "max_seq_length must be a positive integer"),
        ("1_Pooling/config.json", {"pooling_mode": ["mean"] * 1000}, "pooling mode"),
        ("1_Pooling/config.json", {"pooling_mode": [["mean"]]}, "pooling mode"),
        ("1_Pooling/config.json", {"include_prompt": "no"}, "include_prompt must be true or false"),
        (
            "2_Dense/config.json",
            {"in_features": 65},
            "2_Dense/config.json: in_features is 65, but the pooling gives 64",
        ),
    ],
)
def test_untrusted_folder_configs_are_refused_at_load_naming_the_file(tmp_path, file, changes, message):
    folder = write(tmp_path / "f", ("mean",), "new", dense=16, prompts={"query": "query: "})
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    _edit(folder / file, **changes)
    with pytest.raises(ValueError, match=message) as error:
        SentenceEncoder.from_pretrained(folder)
    assert file.split("/")[0] in str(error.value)


def test_semantic_search_scores_by_cosine_unless_told_and_refuses_quantized_corpora():
    """sentence-transformers' default score_function is cosine whatever the folder's similarity; an
    int8 or packed-bits corpus is refused naming its precision (it compared integers as vectors)."""
    encoder = SentenceEncoder.from_pretrained(TINY_FOLDER)
    encoder.similarity_fn_name = "dot"
    corpus = encoder.encode(TEXTS[:3]) * np.array([[1.0], [3.0], [0.5]], np.float32)  # dot favours row 1
    query = encoder.encode(TEXTS[0])
    cosine = encoder.semantic_search(query, corpus, top_k=3)[0]
    assert cosine[0]["corpus_id"] == 0 and abs(cosine[0]["score"] - 1.0) < 1e-5
    dot = encoder.semantic_search(query, corpus, top_k=3, score_function="dot")[0]
    np.testing.assert_allclose([h["score"] for h in dot], np.sort(corpus @ query)[::-1], rtol=1e-5)
    custom = encoder.semantic_search(query, corpus, top_k=1, score_function=lambda a, b: -(a @ b.T))[0]
    assert custom[0]["corpus_id"] == int(np.argmin(corpus @ query))
    for precision in ("int8", "uint8", "binary", "ubinary"):
        quantized = encoder.encode(TEXTS, precision=precision)
        with pytest.raises(ValueError, match="corpus_embeddings are u?int8 \\(quantized"):
            encoder.semantic_search(query, quantized)


TINY_FOLDER = sentence_folders.TINY


def test_a_drop_in_for_sentence_transformer(tmp_path):
    """Code written for SentenceTransformer runs after changing the import: construction by name,
    encode's parameters (inputs=, sentences=, convert_to_tensor, output_value), encode_query and
    encode_document with the folder's prompts, truncate_dim, similarity_pairwise, the dimension,
    save() writing a folder sentence-transformers loads with the same vectors, and __call__."""
    folder = write(tmp_path / "f", ("cls", "mean"), "new", dense=24, activation="Identity", normalize=True,
                   prompts={"query": "query: ", "document": "passage: "})  # fmt: skip
    model = SentenceEncoder(str(folder))
    assert isinstance(model, SentenceEncoder) and model.get_sentence_embedding_dimension() == 24
    vectors = model.encode(TEXTS)
    np.testing.assert_array_equal(model.encode(inputs=TEXTS), vectors)
    np.testing.assert_array_equal(model.encode(sentences=TEXTS), vectors)
    np.testing.assert_array_equal(model(TEXTS), vectors)
    tensor = model.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, mx.array) and tensor.shape == (len(TEXTS), 24)
    np.testing.assert_array_equal(model.encode_query(TEXTS[:2]), model.encode(TEXTS[:2], prompt_name="query"))
    np.testing.assert_array_equal(
        model.encode_document(TEXTS[:2]), model.encode(TEXTS[:2], prompt="passage: ")
    )
    tokens = model.encode(TEXTS[:2], output_value="token_embeddings")
    lengths = [len(model.tokenize([t])[0][0]) for t in TEXTS[:2]]
    assert [t.shape for t in tokens] == [(n, 64) for n in lengths]
    both = model.encode(TEXTS[0], output_value=None)
    np.testing.assert_allclose(both["sentence_embedding"], vectors[0], atol=1e-6)
    assert both["token_embeddings"].shape == (lengths[0], 64) and len(both["input_ids"]) == lengths[0]
    pairs = model.similarity_pairwise(vectors[:2], vectors[2:4])
    np.testing.assert_allclose(pairs, np.diag(model.similarity(vectors[:2], vectors[2:4])), atol=1e-9)
    short = SentenceEncoder(str(folder), truncate_dim=8)
    assert short.get_sentence_embedding_dimension() == 8
    np.testing.assert_array_equal(short.encode(TEXTS), vectors[:, :8])
    assert model.encode([]).shape == (0, 24)  # (sentence-transformers: an empty list)
    with pytest.raises(ValueError, match="model object with its tokenizer"):
        SentenceEncoder(str(folder), model.tokenizer)
    saved = tmp_path / "saved"
    model.save(saved)
    _close(SentenceEncoder(str(saved)).encode(TEXTS), vectors)
    st = pytest.importorskip("sentence_transformers")
    theirs = st.SentenceTransformer(str(saved), device="cpu")
    _close(theirs.encode(TEXTS), vectors)
    _close(theirs.encode(TEXTS[:2], prompt_name="query"), model.encode_query(TEXTS[:2]))
