"""Hugging Face ALBERT checkpoint -> MLX folder (dtype cast, optional quantization), as mlx-lm's
convert: `python convert.py --hf-path albert/albert-base-v2 --mlx-path mlx_model -q`."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import mlx.nn as nn

from .files import check_disjoint, check_replaceable, staged_folder
from .hub import Checkpoint
from .loading import load
from .pretrained import DTYPES, quantizable
from .text import escape

logger = logging.getLogger(__name__)
BITS = [2, 3, 4, 5, 6, 8]  # the widths MLX's quantized kernels support (no 7)
TOKENIZER_FILES = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def _model_card(hf_path: str, from_hub: bool, model: nn.Module, dtype: str, quantization: dict | None) -> str:
    n = model.num_parameters()
    q = f"{quantization['bits']}-bit (group size {quantization['group_size']})" if quantization else "none"
    overrides = sorted({v["bits"] for v in (quantization or {}).values() if isinstance(v, dict)})
    if overrides:
        q += f"; shared layers {'/'.join(map(str, overrides))}-bit"
    source = hf_path if from_hub else Path(hf_path).name  # a local path means nothing to readers
    base = f"base_model: {hf_path}\n" if from_hub else ""
    return (
        f"---\nlibrary_name: mlx\ntags: [mlx, albert]\n{base}---\n\n"
        f"# {type(model).__name__} for MLX\n\nConverted from `{source}` with mlx_albert.\n\n"
        f"- dtype: {dtype}\n- quantization: {q}\n- parameters: {n:,}\n\n"
        '```python\nimport mlx_albert\nmodel = mlx_albert.load("path/to/this/folder")\n```\n'
    )


def convert(
    hf_path: str,
    mlx_path: str = "mlx_model",
    dtype: str | None = None,
    quantize: bool = False,
    q_bits: int | None = None,
    q_group_size: int | None = None,
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
    q_bits, q_group_size = _check_quantization_flags(quantize, q_bits, q_group_size, q_shared_bits)
    out = Path(mlx_path)
    check_replaceable(out, force)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {list(DTYPES)}, got {dtype!r}")
    checkpoint = Checkpoint.open(hf_path, revision, cache_dir)
    src = checkpoint.folder
    check_disjoint({"--mlx-path": out}, {"--hf-path": checkpoint.root})
    model = load(checkpoint, architecture, dtype=dtype or "auto")  # as stored unless --dtype
    config = model.config
    if quantize:
        if config.quantization:
            raise ValueError(
                f"{hf_path} is already quantized ({config.quantization}); convert from the float "
                "checkpoint instead"
            )
        model.config = config.replace(quantization=quantize_model(model, q_bits, q_group_size, q_shared_bits))
    stored = str(model.dtype).removeprefix("mlx.core.")
    from_hub = not Path(hf_path).expanduser().exists()
    with staged_folder(out) as tmp:
        model.save_pretrained(tmp)
        copy_tokenizer_files(src, tmp)
        card = _model_card(hf_path, from_hub, model, stored, model.config.quantization)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    logger.debug("wrote %s", out)
    if upload_repo:
        upload(out, upload_repo)
    return out


def copy_tokenizer_files(src: Path, dest: Path) -> None:
    """The tokenizer's files of a checkpoint folder, copied beside a model written from it."""
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def _check_quantization_flags(quantize: bool, q_bits, q_group_size, q_shared_bits) -> tuple[int, int]:
    """(bits, group size) with their defaults; quantization flags without -q are refused."""
    given = [
        flag
        for flag, value in (
            ("--q-bits", q_bits),
            ("--q-group-size", q_group_size),
            ("--q-shared-bits", q_shared_bits),
        )
        if value is not None
    ]
    if given and not quantize:
        raise ValueError(f"{', '.join(given)} without -q/--quantize would write an unquantized model: add -q")
    for name, bits in (("--q-bits", q_bits), ("--q-shared-bits", q_shared_bits)):
        if bits is not None and bits not in BITS:
            raise ValueError(f"{name} {bits} is not supported by MLX: use one of {BITS}")
    return q_bits or 4, q_group_size or 64


def quantize_model(model: nn.Module, bits: int, group_size: int, shared_bits: int | None = None) -> dict:
    """Quantizes the linear and embedding layers (the shared transformer layers with shared_bits,
    as per-layer overrides); returns the config's quantization block."""
    quantization = {"group_size": group_size, "bits": bits}

    def predicate(path: str, module: nn.Module):
        if not quantizable(path, module, group_size):
            return False
        if shared_bits is not None and shared_bits != bits and ".groups." in path:
            quantization[path] = {"group_size": group_size, "bits": shared_bits}
            return dict(quantization[path])
        return True

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)
    return quantization


def upload(folder: Path, repo_id: str) -> None:
    """Uploads a converted folder to the Hub; errors (offline, not logged in) become one line."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except Exception as e:  # huggingface_hub raises many types (HTTP, connection, auth)
        raise OSError(
            f"could not upload {folder} to the Hub repo {repo_id!r} ({type(e).__name__}): check the network "
            f"and `hf auth login`; the converted model is in {folder}"
        ) from None


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
    parser.add_argument("--q-bits", type=int, choices=BITS, default=None, help="bits per weight (default 4)")
    parser.add_argument(
        "--q-shared-bits",
        type=int,
        choices=BITS,
        default=None,
        help="bits for the shared transformer layers, which run num_blocks times (default: --q-bits)",
    )
    parser.add_argument(
        "--q-group-size",
        type=int,
        choices=[32, 64, 128],
        default=None,
        help="weights sharing one scale and bias (default 64)",
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


def run(args: argparse.Namespace) -> int:
    """The command: convert with the parsed flags (shared by convert.py and `mlx-albert convert`)."""
    names = ("hf_path", "mlx_path", "dtype", "quantize", "q_bits", "q_group_size", "q_shared_bits",
             "upload_repo", "force", "revision", "architecture")  # fmt: skip
    out = convert(**{k: getattr(args, k) for k in names})
    print(f"Converted {args.hf_path} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return run(args)
    except (OSError, ValueError, ImportError) as e:
        print(f"error: {escape(str(e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m mlx_albert.convert
    sys.exit(main())
