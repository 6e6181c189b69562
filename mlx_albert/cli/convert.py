"""`mlx-albert convert`: the same command as convert.py (mlx_albert.convert)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from ..convert import configure_parser, run

    help = "transformers checkpoint -> MLX folder (dtype, quantization)"
    configure_parser(sub.add_parser("convert", help=help, description=help)).set_defaults(run=run)
