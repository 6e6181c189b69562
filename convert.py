"""Convert a Hugging Face ALBERT checkpoint to MLX: `python convert.py --hf-path PATH_OR_REPO`."""

import sys

from mlx_albert.convert import main

if __name__ == "__main__":
    sys.exit(main())
