"""`python -m mlx_albert ...`: the mlx-albert command line."""

import sys

from .cli import main

sys.exit(main())
