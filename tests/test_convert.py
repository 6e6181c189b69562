"""convert.py: transformers folder -> MLX folder -> same outputs, for each dtype and quantization;
save_pretrained output loads in transformers; safe overwrites; Hub cache loading."""

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import needs_torch
from tolerances import PARITY, min_cosine, model_depth, quantization_rms

import mlx_albert
from mlx_albert import AlbertConfig, AlbertForMaskedLM
from mlx_albert.convert import convert, main

CONFIG = AlbertConfig(
    vocab_size=256,
    embedding_size=64,
    hidden_size=128,
    num_blocks=2,
    num_attention_heads=4,
    intermediate_size=256,
    max_positions=32,
)
IDS = np.random.default_rng(0).integers(5, 256, (2, 12))
MASK = np.ones_like(IDS)
MASK[1, 9:] = 0


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    mx.random.seed(0)
    model = AlbertForMaskedLM(CONFIG)
    folder = tmp_path_factory.mktemp("hf")
    model.save_pretrained(folder)
    (folder / "spiece.model").write_bytes(b"sentencepiece model bytes")
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


@pytest.fixture(scope="module")
def reference(hf_folder):
    return np.array(mlx_albert.load(hf_folder)(IDS, attention_mask=MASK).logits)


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# (flags, max abs error allowed relative to the logits' scale, min cosine similarity).
# The weights are stored rounded (float16: u = 2^-11, bfloat16: 2^-8) or quantized, and computed in
# float32 (the CPU backend's default for half-precision checkpoints). Each of the model's DEPTH sums
# then errs by at most u of its terms' size, so the logits by DEPTH * u of their scale (errors adding
# in the worst case); the direction of the output by min_cosine over the quantized matrices on the
# path (embeddings, 2 x 4 per block, the MLM head's dense and tied decoder: 12).
DEPTH, PATH = model_depth(CONFIG), 12
Q4, Q8 = quantization_rms(4, 32), quantization_rms(8, 64)
CASES = {
    "float32": ([], 0.0, 1 - 1e-12),  # the same weights: the same logits, bit for bit
    "float16": (["--dtype", "float16"], DEPTH * 2**-11, min_cosine(2**-11 / 3**0.5, PATH)),
    "bfloat16": (["--dtype", "bfloat16"], DEPTH * 2**-8, min_cosine(2**-8 / 3**0.5, PATH)),
    "q8": (["-q", "--q-bits", "8"], None, min_cosine(Q8, PATH)),
    "q4": (["-q", "--q-bits", "4", "--q-group-size", "32"], None, min_cosine(Q4, PATH)),
    # 4-bit embeddings and head (3 matrices), 8-bit shared layers (the 8 in the blocks)
    "q4s8": (
        ["-q", "--q-bits", "4", "--q-group-size", "32", "--q-shared-bits", "8"],
        None,
        1 - 2 * (3 * Q4**2 + 8 * quantization_rms(8, 32) ** 2),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip(name, hf_folder, reference, tmp_path):
    flags, rel, min_cos = CASES[name]
    assert main(["--hf-path", str(hf_folder), "--mlx-path", str(tmp_path / "out"), *flags]) == 0
    model = mlx_albert.load(tmp_path / "out")
    assert isinstance(model, AlbertForMaskedLM)
    logits = np.array(model(IDS, attention_mask=MASK).logits.astype(mx.float32))
    if rel is not None:
        assert np.abs(logits - reference).max() <= rel * np.abs(reference).max()
    assert cosine(logits, reference) >= min_cos
    assert (tmp_path / "out" / "spiece.model").read_bytes() == b"sentencepiece model bytes"
    assert "AlbertForMaskedLM" in (tmp_path / "out" / "README.md").read_text()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    if name.startswith("q"):
        assert config["quantization"]["bits"] == int(flags[2])
        size = (tmp_path / "out" / "model.safetensors").stat().st_size
        assert size < 0.45 * (hf_folder / "model.safetensors").stat().st_size
        assert isinstance(model.albert.encoder.groups[0].layers[0].ffn, nn.QuantizedLinear)
        assert isinstance(model.albert.embeddings.word_embeddings, nn.QuantizedEmbedding)
        shared_bits = 8 if "--q-shared-bits" in flags else int(flags[2])
        assert model.albert.encoder.groups[0].layers[0].ffn.bits == shared_bits
        assert model.albert.embeddings.word_embeddings.bits == int(flags[2])
        # the bare backbone loads the same per-layer widths from the task model's file
        backbone = mlx_albert.load(tmp_path / "out", "base")
        assert backbone.encoder.groups[0].layers[0].attention.query.bits == shared_bits


def test_refuses_to_overwrite_without_force(hf_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["--hf-path", str(hf_folder), "--mlx-path", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert main(["--hf-path", str(hf_folder), "--mlx-path", str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folders left


def test_interrupted_conversion_leaves_nothing(hf_folder, tmp_path, monkeypatch):
    def boom(self, path):
        (path / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(AlbertForMaskedLM, "save_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        convert(str(hf_folder), str(tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_requantizing_is_refused(hf_folder, tmp_path):
    convert(str(hf_folder), str(tmp_path / "q"), quantize=True)
    with pytest.raises(ValueError, match="already quantized"):
        convert(str(tmp_path / "q"), str(tmp_path / "qq"), quantize=True)


def test_missing_source_is_one_line_error(tmp_path, capsys):
    assert main(["--hf-path", str(tmp_path / "missing"), "--mlx-path", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_upload(hf_folder, tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok):
            calls.append(("create", repo_id))

        def upload_folder(self, folder_path, repo_id):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    convert(str(hf_folder), str(tmp_path / "out"), upload_repo="me/tiny-mlx")
    assert calls[0] == ("create", "me/tiny-mlx")
    assert calls[1][1] == "me/tiny-mlx" and "model.safetensors" in calls[1][2]


@needs_torch
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_save_pretrained_loads_in_transformers(hf_folder, reference, tmp_path, dtype):
    import torch
    import transformers

    convert(str(hf_folder), str(tmp_path / "out"), dtype=dtype)
    hf = transformers.AlbertForMaskedLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
    # transformers (float32) on our saved weights: parity; on bfloat16-rounded ones, their rounding too
    tol = PARITY if dtype is None else PARITY + model_depth(CONFIG) * 2**-8 * np.abs(reference).max()
    assert np.abs(logits - reference).max() <= tol


def _fake_cache(cache, repo, source):
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0123456789abcdef")


def test_hub_repo_id_from_local_cache(hf_folder, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_cache(tmp_path, "someone/tiny-albert", hf_folder)
    model = mlx_albert.load("someone/tiny-albert", cache_dir=tmp_path)
    assert np.abs(np.array(model(IDS, attention_mask=MASK).logits) - reference).max() == 0
    convert(
        "someone/tiny-albert", str(tmp_path / "out"), cache_dir=str(tmp_path)
    )  # convert.py takes repo ids too
    assert (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="not-cached.*offline"):
        mlx_albert.load("someone/not-cached", cache_dir=tmp_path)


def test_an_unreachable_hub_says_so_not_that_the_repo_is_unknown(tmp_path):
    """The Hub's address set to a closed loopback port (no network, nothing downloaded): the message
    says the Hub cannot be reached and the cache lacks the repo."""
    import os
    import subprocess
    import sys

    code = "import mlx_albert\ntry:\n    mlx_albert.load('someone/x')\n"
    code += "except FileNotFoundError as e:\n    print(e)"
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path)}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert "'someone/x' is not a local folder, the Hub cannot be reached (no network)" in done.stdout, done


def test_quantization_flags_need_quantize_and_a_supported_width(hf_folder, tmp_path, capsys):
    assert main(["--hf-path", str(hf_folder), "--mlx-path", str(tmp_path / "o"), "--q-bits", "4"]) == 1
    assert "--q-bits without -q/--quantize would write an unquantized model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(
        ValueError, match=r"--q-bits 7 is not supported by MLX: use one of \[2, 3, 4, 5, 6, 8\]"
    ):
        convert(str(hf_folder), str(tmp_path / "o"), quantize=True, q_bits=7)


def test_model_card_names_no_local_path_and_counts_as_info_does(hf_folder, tmp_path, capsys):
    from mlx_albert.cli import main as cli

    out = convert(str(hf_folder), str(tmp_path / "q"), quantize=True, q_bits=4, q_group_size=32)
    card = (out / "README.md").read_text()
    assert "base_model" not in card and str(hf_folder.parent) not in card
    assert cli(["info", "--model", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert f"- parameters: {info['parameters']:,}" in card
    assert info["parameters"] == mlx_albert.load(hf_folder).num_parameters()  # the float model's count


def test_upload_offline_is_one_line(hf_folder, tmp_path, monkeypatch, capsys):
    class Offline:
        def create_repo(self, *a, **k):
            raise ConnectionError("Failed to resolve 'huggingface.co'\n" + "stack\n" * 70)

    monkeypatch.setattr("huggingface_hub.HfApi", Offline)
    code = main(["--hf-path", str(hf_folder), "--mlx-path", str(tmp_path / "o"), "--upload-repo", "me/x"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert (
        "could not upload" in err
        and "the converted model is in" in err
        and (tmp_path / "o" / "config.json").exists()
    )


def test_disk_full_during_convert_and_save_keeps_what_was_there(hf_folder, tmp_path, monkeypatch, capsys):
    import errno

    out = convert(str(hf_folder), str(tmp_path / "out"))
    before = (out / "model.safetensors").read_bytes()
    real = mx.save_safetensors

    def full(path, *a, **k):
        open(path, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mx, "save_safetensors", full)
    assert main(["--hf-path", str(hf_folder), "--mlx-path", str(out), "--force"]) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(OSError, match="no space left"):
        mlx_albert.load(out).save_pretrained(out)
    monkeypatch.setattr(mx, "save_safetensors", real)
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial files or folders left
