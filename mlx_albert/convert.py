"""Hugging Face ALBERT checkpoint -> MLX folder (dtype cast, optional quantization), as mlx-lm's
convert: `python convert.py --hf-path albert/albert-base-v2 --mlx-path mlx_model -q`."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .hub import resolve
from .loading import load
from .pretrained import quantizable

logger = logging.getLogger(__name__)
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
TOKENIZER_FILES = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def _model_card(hf_path: str, model: nn.Module, dtype: str, quantization: dict | None) -> str:
    n = sum(v.size for _, v in tree_flatten(model.parameters()))
    q = f"{quantization['bits']}-bit (group size {quantization['group_size']})" if quantization else "none"
    overrides = sorted({v["bits"] for v in (quantization or {}).values() if isinstance(v, dict)})
    if overrides:
        q += f"; shared layers {'/'.join(map(str, overrides))}-bit"
    return (
        f"---\nlibrary_name: mlx\ntags: [mlx, albert]\nbase_model: {hf_path}\n---\n\n"
        f"# {type(model).__name__} for MLX\n\nConverted from `{hf_path}` with mlx_albert.\n\n"
        f"- dtype: {dtype}\n- quantization: {q}\n- stored parameters: {n:,}\n\n"
        '```python\nimport mlx_albert\nmodel = mlx_albert.load("path/to/this/folder")\n```\n'
    )


def convert(
    hf_path: str,
    mlx_path: str = "mlx_model",
    dtype: str | None = None,
    quantize: bool = False,
    q_bits: int = 4,
    q_group_size: int = 64,
    q_shared_bits: int | None = None,
    upload_repo: str | None = None,
    force: bool = False,
    revision: str | None = None,
    architecture: str | None = None,
    cache_dir: str | None = None,
) -> Path:
    """Converts a transformers ALBERT checkpoint (folder or repo id) into an MLX folder.

    The folder is assembled beside `mlx_path` and renamed into place, so an interrupted run
    never leaves a half-written model. With `quantize`, linear and embedding layers get `q_bits`
    bits; `q_shared_bits` gives the shared transformer layers (which run num_blocks times, so their
    error compounds) their own width. Returns the output path.
    """
    out = Path(mlx_path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    src = resolve(hf_path, revision, cache_dir)
    model = load(src, architecture, dtype=DTYPES[dtype] if dtype else None)
    config = model.config
    if quantize:
        if config.quantization:
            raise ValueError(
                f"{hf_path} is already quantized ({config.quantization}); convert from "
                "the float checkpoint instead"
            )
        quantization = {"group_size": q_group_size, "bits": q_bits}

        def predicate(path: str, module: nn.Module):
            if not quantizable(path, module, q_group_size):
                return False
            if q_shared_bits is not None and q_shared_bits != q_bits and ".groups." in path:
                quantization[path] = {"group_size": q_group_size, "bits": q_shared_bits}
                return dict(quantization[path])
            return True

        nn.quantize(model, group_size=q_group_size, bits=q_bits, class_predicate=predicate)
        model.config = config.replace(quantization=quantization)
    stored = str(model.dtype).removeprefix("mlx.core.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, tmp / name)
        (tmp / "README.md").write_text(_model_card(hf_path, model, stored, model.config.quantization))
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{tmp.name[-8:]}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.debug("wrote %s", out)
    if upload_repo:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(upload_repo, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=upload_repo)
    return out


def configure_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hf-path", required=True, help="transformers checkpoint folder or Hub repo id")
    parser.add_argument("--mlx-path", default="mlx_model", help="output folder (default: mlx_model)")
    parser.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default=None,
        help="cast float weights (default: keep the checkpoint's; float32 is fastest on CPU)",
    )
    parser.add_argument("-q", "--quantize", action="store_true", help="quantize linear and embedding layers")
    parser.add_argument("--q-bits", type=int, choices=[2, 3, 4, 5, 6, 8], default=4, help="bits per weight")
    parser.add_argument(
        "--q-shared-bits",
        type=int,
        choices=[2, 3, 4, 5, 6, 8],
        default=None,
        help="bits for the shared transformer layers, which run num_blocks times (default: --q-bits)",
    )
    parser.add_argument(
        "--q-group-size",
        type=int,
        choices=[32, 64, 128],
        default=64,
        help="weights sharing one scale and bias",
    )
    parser.add_argument("--upload-repo", default=None, help="Hub repo id to upload the result to")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --mlx-path")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument(
        "--architecture",
        default=None,
        help="spec architecture name (default: the checkpoint's `architectures`)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = convert(**vars(args))
    except (OSError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Converted {args.hf_path} -> {out}")
    return 0
