"""The one transformers <-> mlx_albert weight-name table, and safetensors / .bin file I/O
with strict checks (truncation, corruption, missing files) and atomic writes."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import mlx.core as mx

from .files import atomic_write, open_regular, read_json
from .text import escape

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
MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header
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


def check_safetensors(path: Path) -> dict:
    """Validates a safetensors header (types, offsets, spans) and that the file is as long as the
    header says, before anything is allocated; returns the header."""

    def corrupt(what: str) -> ValueError:
        return ValueError(f"{path} is corrupt or truncated ({what}): re-download or re-convert it")

    with open_regular(path, "safetensors file") as f:  # never a device or a pipe
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise corrupt(f"{size} bytes, no header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > MAX_HEADER:
            raise corrupt(f"a header of {n} bytes in a {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise corrupt("the header is not JSON") from None
    if not isinstance(header, dict):
        raise corrupt(f"the header is a {type(header).__name__}, not an object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        shape = info.get("shape") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]
            or not isinstance(shape, list)
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise corrupt(f"tensor {escape(name)!r} has malformed data_offsets/shape")
        end = max(end, offsets[1])
    if 8 + n + end != size:
        raise corrupt(f"the header describes {8 + n + end} bytes, the file has {size}")
    return header


def read_safetensors(path: Path) -> dict[str, mx.array]:
    """A safetensors file's tensors, its header validated first (check_safetensors)."""
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
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    bad = (
        [f"a {type(state).__name__}"]
        if not isinstance(state, dict)
        else [escape(str(k)) for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    )
    if bad:
        raise ValueError(
            f"{path} is not a state dict of named tensors (found {bad[:5]}): re-download or re-save it"
        )
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
        weight_map = read_json(index_path, "shard index")["weight_map"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{index_path} is not a valid shard index: re-download it") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index_path}: weight_map must map tensor names to shard file names")
    files = []
    for name in sorted(set(weight_map.values())):
        shard = Path(name)
        if shard.is_absolute() or shard.name != name or name in ("", ".", ".."):
            raise ValueError(
                f"{index_path} names the shard {escape(name)!r}, which is not a file in the checkpoint "
                "folder: re-download it"
            )
        files.append(folder / name)
    missing = [escape(f.name) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{index_path} lists shards that are missing: {missing}")
    return files


WEIGHT_FILES = (  # (single file, shard index, reader) in order of preference
    ("model.safetensors", "model.safetensors.index.json", read_safetensors),
    ("pytorch_model.bin", "pytorch_model.bin.index.json", _load_torch_bin),
)


def weight_files(folder: Path) -> tuple[list[Path], object]:
    """The weight files of a checkpoint folder and their reader; refuses a folder holding both a
    single file and a shard index (one of them is stale)."""
    for single, index, reader in WEIGHT_FILES:
        if (folder / index).exists() and (folder / single).exists():
            raise ValueError(
                f"{folder} holds both {single} and {index}: one of them is left over from an earlier "
                "save; delete the stale one"
            )
        if (folder / index).exists():
            return _shards(folder, index), reader
        if (folder / single).exists():
            return [folder / single], reader
    raise FileNotFoundError(
        f"no weights in {folder}: expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin"
    )


def read_weights(folder: Path) -> dict[str, mx.array]:
    """All tensors of a checkpoint folder: safetensors (single or sharded), else pytorch_model.bin."""
    files, reader = weight_files(folder)
    weights = {}
    for f in files:
        weights.update(reader(f))
    return weights


def stale_weight_files(folder: Path) -> list[Path]:
    """Weight files that a new model.safetensors replaces: shard indexes, their shards, .bin files."""
    found = []
    for single, index, _ in WEIGHT_FILES:
        if (folder / index).exists():
            try:
                found += _shards(folder, index)
            except (ValueError, FileNotFoundError):
                pass
            found.append(folder / index)
        if single != "model.safetensors" and (folder / single).exists():
            found.append(folder / single)
    found += folder.glob("model-*-of-*.safetensors")
    found += folder.glob("pytorch_model-*-of-*.bin")
    return sorted(set(found))


def write_safetensors(path: Path, weights: dict[str, mx.array], metadata: dict[str, str]) -> None:
    atomic_write(path, lambda tmp: mx.save_safetensors(str(tmp), weights, metadata=metadata))


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))
