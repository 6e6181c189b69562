"""text-classification: transformers' TextClassificationPipeline (texts and text pairs, top_k,
function_to_apply), and sequence-classification training: single-label, multi-label (0/1 vectors
or lists of names) and regression, with accuracy and macro-F1 or Pearson/Spearman."""

from __future__ import annotations

import numpy as np

from ..batching import dispatch, max_tokens, run_batches, to_numpy
from ..checks import finite
from ..metrics import accuracy, macro_f1, pearson, spearman
from ..pairs import encode_texts
from ..records import DataError
from ..tokenizer import AlbertTokenizer
from .base import Limits, Task, label_name, scores, softmax, text_of, tokens_at_most
from .labels import class_set, is_vector, label_id, plan
from .options import Option, declare
from .recipe import Dataset, Recipe, field_of, logits_and_rows, mean_loss

FUNCTIONS = {
    "softmax": softmax,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "none": lambda x: x,
}
_LEGACY = object()  # transformers' default: one {"label", "score"} per text


def _pair(item) -> tuple[str, str | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, dict) and "text" in item and set(item) <= {"text", "text_pair"}:
        if all(isinstance(v, str) for v in item.values()):
            return item["text"], item.get("text_pair")
    raise ValueError(
        f"cannot classify {item!r}: pass a string, or a dict {{'text': ..., 'text_pair': ...}} for a pair"
    )


def text_classification(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    top_k=_LEGACY,
    function_to_apply: str | None = None,
    batch_size: int = 8,
    progress: bool = False,
    max_length: int | None = None,
):
    """Classifies texts or text pairs (transformers' TextClassificationPipeline).

    Args:
        model: an AlbertForSequenceClassification.
        inputs: a text, a {"text", "text_pair"} dict, or a list/iterable of those. Texts longer than
            the model are truncated (longest first for pairs).
        top_k: left out: the best {"label", "score"} per input ([that dict] for one string); an int: the
            k best, sorted; None: every label, sorted.
        function_to_apply: "softmax", "sigmoid" or "none"; default from the config as transformers:
            none for regression, sigmoid for multi-label or one label, else softmax.
    """
    config = model.config
    apply = FUNCTIONS[_function(config, function_to_apply)]
    legacy = top_k is _LEGACY
    if not legacy and top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    limit = max_tokens(model, tokenizer, max_length)

    def run(items: list) -> list:
        groups = _encode(tokenizer, [_pair(item) for item in items], limit)
        logits = run_batches(
            model,
            groups,
            lambda b: list(to_numpy(model(**b).logits)),
            tokenizer.pad_token_id,
            limit,
            batch_size,
            progress,
        )
        return [_ranked(config, apply(row.astype(np.float64)), top_k) for row in logits]

    result = dispatch(inputs, lambda x: isinstance(x, str | dict), run, batch_size)
    return [result] if legacy and isinstance(inputs, str) else result  # as transformers: dicts unwrapped


def _function(config, name: str | None) -> str:
    """function_to_apply, by default from the config as transformers: none for regression, sigmoid
    for multi-label or one label, else softmax."""
    if name is None:
        if config.problem_type == "regression":
            return "none"
        return (
            "sigmoid"
            if config.problem_type == "multi_label_classification" or config.num_labels == 1
            else "softmax"
        )
    if name.lower() not in FUNCTIONS:
        raise ValueError(f"function_to_apply must be one of {list(FUNCTIONS)}, got {name!r}")
    return name.lower()


def _encode(tokenizer, pairs: list[tuple[str, str | None]], limit: int) -> list:
    """One encoding group per input."""
    return [[e] for e in encode_texts(tokenizer, [a for a, _ in pairs], [b for _, b in pairs], limit)]


def _ranked(config, scores: np.ndarray, top_k):
    """transformers' answer: the best {"label", "score"} (top_k left out), else the top_k best
    (None: all), best first."""
    if top_k is _LEGACY:
        return {"label": label_name(config, scores.argmax()), "score": float(scores.max())}
    ranked = sorted(
        ({"label": label_name(config, i), "score": float(s)} for i, s in enumerate(scores)),
        key=lambda d: d["score"],
        reverse=True,
    )
    return ranked if top_k is None else ranked[:top_k]


def featurize(examples, tokenizer, max_length, label_to_id, problem_type) -> Dataset:
    """Records of text, optional text_pair and label (a class name, a number for regression, a list
    of names or a 0/1 vector for multi-label) as features."""
    texts = [field_of(where, r, "text") for where, r in examples]
    pairs = [field_of(where, r, "text_pair") if "text_pair" in r else None for where, r in examples]
    encodings = encode_texts(tokenizer, texts, pairs, max_length)
    features = []
    for (where, record), e in zip(examples, encodings, strict=True):
        label = _label(where, field_of(where, record, "label", object), label_to_id, problem_type)
        features.append({"input_ids": e.ids, "token_type_ids": e.type_ids, "labels": label})
    return Dataset(TASK, features)


def _label(where: str, value, label_to_id: dict, problem_type: str | None):
    if problem_type == "regression":
        if not finite(value):
            raise DataError(f"{where}: a regression label must be a finite number, got {value!r}")
        return float(value)
    if problem_type == "multi_label_classification" and isinstance(value, list) and is_vector([value]):
        if len(value) != len(label_to_id):
            raise DataError(
                f"{where}: a 0/1 label vector of {len(value)} entries for {len(label_to_id)} labels"
            )
        return [float(v) for v in value]
    if problem_type == "multi_label_classification":
        if not isinstance(value, list):
            raise DataError(f"{where}: a multi-label label must be a list, got {repr(value)[:60]}")
        label = [0.0] * len(label_to_id)
        for v in value:
            label[label_id(where, v, label_to_id)] = 1.0
        return label
    return label_id(where, value, label_to_id)


class TextClassificationRecipe(Recipe):
    name = "sequence_classification"

    def label_set(self, examples) -> tuple[str, list[str]]:
        return class_set(examples)

    def label_plan(self, examples, config, problem_type):
        kind, labels = class_set(examples)
        return plan(kind, labels, config, problem_type, sets_problem_type=True)

    def featurize(self, examples, tokenizer, max_length, label_to_id, problem_type, doc_stride, seed):
        return featurize(examples, tokenizer, max_length, label_to_id, problem_type)

    def default_metric(self, config) -> str:
        return "pearson" if config.problem_type == "regression" else "accuracy"

    def combine(self, config, data: Dataset, stats: list[dict]) -> dict:
        loss = mean_loss(stats)
        logits, rows = logits_and_rows(stats)
        labels = np.array([data.features[i]["labels"] for i in rows])
        if config.problem_type == "regression":
            return {
                "loss": loss,
                "pearson": pearson(logits[:, 0], labels),
                "spearman": spearman(logits[:, 0], labels),
            }
        if config.problem_type == "multi_label_classification":
            predicted = (logits > 0).astype(int)
            subset = float((predicted == labels).all(1).mean())
            return {
                "loss": loss,
                "accuracy": accuracy(predicted.ravel(), labels.ravel()),
                "subset_accuracy": subset,
            }
        predicted = logits.argmax(-1)
        return {
            "loss": loss,
            "accuracy": accuracy(predicted, labels),
            "macro_f1": macro_f1(predicted, labels),
        }


class TextClassification(Task):
    name = "text-classification"
    help = "label texts or text pairs (jsonl/csv: text, text_pair)"
    architecture = "for_sequence_classification"
    aliases = ("sentiment-analysis",)
    command, route = "classify", "/v1/classify"
    optional_fields = ("text_pair",)
    options = declare(
        text_classification,
        Option("top_k", int, "the k best labels (unset: the best one)", lo=1),
        Option(
            "function_to_apply", str, "score function (unset: the config's)", choices=tuple(FUNCTIONS),
            flag="--function",
        ),
    )  # fmt: skip
    recipe = TextClassificationRecipe()

    def predict(self, model, tokenizer, inputs, **options):
        return text_classification(model, tokenizer, inputs, **options)

    def human(self, result, args) -> str:
        return scores(result if isinstance(result, list) else [result], "label")

    def check_request(self, item, options: dict, limits: Limits) -> tuple[int, int]:
        if isinstance(item, dict) and set(item) <= {"text", "text_pair"} and "text" in item:
            text = text_of(item["text"], "text", limits)
            if "text_pair" in item:
                text += text_of(item["text_pair"], "text_pair", limits)
        else:
            text = text_of(item, "inputs", limits)
        return tokens_at_most(text, limits), 1

    def single_result(self, result, inputs, options: dict):
        # as transformers: one string without top_k answers [best], a dict as it is
        return [result] if "top_k" not in options and isinstance(inputs, str) else result


TASK = TextClassification()
