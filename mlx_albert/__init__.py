"""mlx_albert: the ALBERT model family (Bumblebee.Text.Albert's options) on Apple's MLX."""

__version__ = "0.2.0"

from . import _blas  # noqa: E402  (must run before mlx.core is imported)

_blas.preload()

from .config import AlbertConfig  # noqa: E402
from .heads import (  # noqa: E402
    ARCHITECTURES,
    AlbertForMaskedLM,
    AlbertForMultipleChoice,
    AlbertForPreTraining,
    AlbertForQuestionAnswering,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
)
from .loading import load  # noqa: E402
from .model import AlbertModel  # noqa: E402
from .sentence.encoder import SentenceEncoder  # noqa: E402
from .tasks import pipeline  # noqa: E402
from .tokenizer import AlbertTokenizer  # noqa: E402

__all__ = [
    "AlbertConfig",
    "AlbertModel",
    "AlbertForMaskedLM",
    "AlbertForSequenceClassification",
    "AlbertForTokenClassification",
    "AlbertForQuestionAnswering",
    "AlbertForMultipleChoice",
    "AlbertForPreTraining",
    "AlbertTokenizer",
    "ARCHITECTURES",
    "SentenceEncoder",
    "load",
    "pipeline",
    "__version__",
]
