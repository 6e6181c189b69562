"""The one transformers <-> mlx_albert weight-name table, and safetensors / .bin file I/O
with strict checks (truncation, corruption, missing files) and atomic writes."""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from pathlib import Path

import mlx.core as mx

# (transformers name, mlx_albert name, or None: tied in transformers and dropped on import).
# {g}: group, {d}: layer within the group, {p}: a parameter of the module (weight, bias and, for
# quantized layers, scales/biases). Backbone names may carry the "albert." prefix of task models.
WEIGHT_NAMES: tuple[tuple[str, str | None], ...] = (
    ("embeddings.word_embeddings.{p}", "embeddings.word_embeddings.{p}"),
    ("embeddings.position_embeddings.{p}", "embeddings.position_embeddings.{p}"),
    ("embeddings.token_type_embeddings.{p}", "embeddings.token_type_embeddings.{p}"),
    ("embeddings.LayerNorm.{p}", "embeddings.norm.{p}"),
    ("encoder.embedding_hidden_mapping_in.{p}", "encoder.embedding_projection.{p}"),
    (
        "encoder.albert_layer_groups.{g}.albert_layers.{d}.attention.query.{p}",
        "encoder.groups.{g}.layers.{d}.attention.query.{p}",
    ),
    (
        "encoder.albert_layer_groups.{g}.albert_layers.{d}.attention.key.{p}",
        "encoder.groups.{g}.layers.{d}.attention.key.{p}",
    ),
    (
        "encoder.albert_layer_groups.{g}.albert_layers.{d}.attention.value.{p}",
        "encoder.groups.{g}.layers.{d}.attention.value.{p}",
    ),
    (
        "encoder.albert_layer_groups.{g}.albert_layers.{d}.attention.dense.{p}",
        "encoder.groups.{g}.layers.{d}.attention.out_proj.{p}",
    ),
    (
        "encoder.albert_layer_groups.{g}.albert_layers.{d}.attention.LayerNorm.{p}",
        "encoder.groups.{g}.layers.{d}.attention.norm.{p}",
    ),
    ("encoder.albert_layer_groups.{g}.albert_layers.{d}.ffn.{p}", "encoder.groups.{g}.layers.{d}.ffn.{p}"),
    (
        "encoder.albert_layer_groups.{g}.albert_layers.{d}.ffn_output.{p}",
        "encoder.groups.{g}.layers.{d}.ffn_output.{p}",
    ),
    (
        "encoder.albert_layer_groups.{g}.albert_layers.{d}.full_layer_layer_norm.{p}",
        "encoder.groups.{g}.layers.{d}.norm.{p}",
    ),
    ("pooler.{p}", "pooler.{p}"),
    ("predictions.dense.{p}", "predictions.dense.{p}"),
    ("predictions.LayerNorm.{p}", "predictions.norm.{p}"),
    ("predictions.bias", "predictions.bias"),
    ("predictions.decoder.weight", None),  # tied to embeddings.word_embeddings.weight
    ("predictions.decoder.bias", None),  # tied to predictions.bias
    ("sop_classifier.classifier.{p}", "sop_classifier.classifier.{p}"),
    ("classifier.{p}", "classifier.{p}"),
    ("qa_outputs.{p}", "qa_outputs.{p}"),
    ("embeddings.position_ids", None),  # a buffer old transformers versions saved
)
BACKBONE = "albert."
_PLACEHOLDERS = {"g": r"(?P<g>\d+)", "d": r"(?P<d>\d+)", "p": r"(?P<p>weight|bias|scales|biases)"}


def _compile(pattern: str) -> re.Pattern:
    parts = re.split(r"\{(\w)\}", pattern)  # literal, name, literal, name, ...
    regex = "".join(re.escape(s) if i % 2 == 0 else _PLACEHOLDERS[s] for i, s in enumerate(parts))
    return re.compile(rf"(?P<prefix>(?:{re.escape(BACKBONE)})?){regex}")


_TO_MLX = [(_compile(hf), ours) for hf, ours in WEIGHT_NAMES]
_TO_HF = [(_compile(ours), hf) for hf, ours in WEIGHT_NAMES if ours is not None]


def _rename(name: str, table) -> tuple[bool, str | None]:
    for regex, target in table:
        m = regex.fullmatch(name)
        if m:
            if target is None:
                return True, None
            groups = {k: v for k, v in m.groupdict().items() if k != "prefix"}
            return True, m["prefix"] + target.format(**groups)
    return False, None


def hf_to_mlx(weights: dict[str, mx.array]) -> tuple[dict[str, mx.array], list[str]]:
    """Renames transformers weights to ours; returns (renamed, names the table does not know)."""
    out, unknown = {}, []
    for name, value in weights.items():
        known, ours = _rename(name, _TO_MLX)
        if not known:
            unknown.append(name)
        elif ours is not None:
            out[ours] = value
    return out, unknown


def mlx_to_hf(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Renames our weights to transformers' (the inverse of hf_to_mlx)."""
    out = {}
    for name, value in weights.items():
        known, hf = _rename(name, _TO_HF)
        if not known:
            raise KeyError(f"no transformers name for weight {name!r}: add it to WEIGHT_NAMES")
        out[hf] = value
    return out


def check_safetensors(path: Path) -> None:
    """Validates a safetensors header and that the file is as long as the header says."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated ({size} bytes): re-download or re-convert it")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(
                f"{path} is truncated or corrupt (header of {n} bytes in a {size}-byte "
                "file): re-download or re-convert it"
            )
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(
                f"{path} has a corrupt safetensors header: re-download or re-convert it"
            ) from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError(
            f"{path} is truncated or corrupt: the header describes {8 + n + end} bytes, "
            f"the file has {size}; re-download or re-convert it"
        )


def _load_safetensors(path: Path) -> dict[str, mx.array]:
    check_safetensors(path)
    try:
        return mx.load(str(path))
    except Exception as e:  # MLX raises RuntimeError/ValueError with terse messages
        raise ValueError(f"could not read {path} ({e}): re-download or re-convert it") from None


def _load_torch_bin(path: Path) -> dict[str, mx.array]:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{path} is a PyTorch .bin checkpoint and reading it needs torch "
            "(pip install torch), or convert it to safetensors first"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read {path} ({e}): re-download it") from None
    # bfloat16 has no numpy dtype: go through float32 and cast back in MLX.
    return {
        k: mx.array(v.float().numpy()).astype(mx.bfloat16)
        if v.dtype == torch.bfloat16
        else mx.array(v.numpy())
        for k, v in state.items()
    }


def _shards(folder: Path, index_name: str) -> list[Path]:
    index_path = folder / index_name
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError):
        raise ValueError(f"{index_path} is not a valid shard index: re-download it") from None
    files = [folder / f for f in sorted(set(weight_map.values()))]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{index_path} lists shards that are missing: {missing}")
    return files


def read_weights(folder: Path) -> dict[str, mx.array]:
    """All tensors of a checkpoint folder: safetensors (single or sharded), else pytorch_model.bin."""
    for single, index, reader in (
        ("model.safetensors", "model.safetensors.index.json", _load_safetensors),
        ("pytorch_model.bin", "pytorch_model.bin.index.json", _load_torch_bin),
    ):
        if (folder / index).exists():
            files = _shards(folder, index)
        elif (folder / single).exists():
            files = [folder / single]
        else:
            continue
        weights = {}
        for f in files:
            weights.update(reader(f))
        return weights
    raise FileNotFoundError(
        f"no weights in {folder}: expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin"
    )


def atomic_write(path: Path, write) -> None:
    """Calls write(tmp_path) then renames tmp_path onto path, so path is never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_safetensors(path: Path, weights: dict[str, mx.array], metadata: dict[str, str]) -> None:
    atomic_write(path, lambda tmp: mx.save_safetensors(str(tmp), weights, metadata=metadata))


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))
