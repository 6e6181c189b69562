"""text_classification and token_classification: transformers' TextClassificationPipeline and
TokenClassificationPipeline (aggregation strategies, character offsets, overflow windows)."""

from __future__ import annotations

import numpy as np

from ..runtime import check_strings, clip_text, dispatch, max_tokens, run_batches, to_numpy
from ..tokenizer import AlbertTokenizer
from .fill_mask import softmax

FUNCTIONS = {
    "softmax": softmax,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "none": lambda x: x,
}
_LEGACY = object()  # transformers' default: one {"label", "score"} per text
AGGREGATIONS = ("none", "simple", "first", "average", "max")


def label_name(config, i: int) -> str:
    return config.id_to_label.get(int(i), f"LABEL_{int(i)}")


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
    if function_to_apply is None:
        if config.problem_type == "regression":
            function_to_apply = "none"
        elif config.problem_type == "multi_label_classification" or config.num_labels == 1:
            function_to_apply = "sigmoid"
        else:
            function_to_apply = "softmax"
    if function_to_apply.lower() not in FUNCTIONS:
        raise ValueError(f"function_to_apply must be one of {list(FUNCTIONS)}, got {function_to_apply!r}")
    apply = FUNCTIONS[function_to_apply.lower()]
    legacy = top_k is _LEGACY
    if not legacy and top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    limit = max_tokens(model, tokenizer, max_length)

    def run(items: list) -> list:
        pairs = [_pair(item) for item in items]
        # a single text keeps only what truncation can reach (pairs truncate longest-first: kept whole)
        pairs = [(clip_text(a, limit), b) if b is None else (a, b) for a, b in pairs]
        if any(b is not None for _, b in pairs) and any(b is None for _, b in pairs):
            groups = [tokenizer.encode(a, b, truncation=True, max_length=limit)[0] for a, b in pairs]
        else:
            texts, others = [a for a, _ in pairs], [b for _, b in pairs]
            encodings, _ = tokenizer.encode(
                texts, None if others[0] is None else others, truncation=True, max_length=limit
            )
            groups = [[e] for e in encodings]
        logits = run_batches(
            model,
            groups,
            lambda b: list(to_numpy(model(**b).logits)),
            tokenizer.pad_token_id,
            limit,
            batch_size,
            progress,
        )
        out = []
        for row in logits:
            scores = apply(row.astype(np.float64))
            if legacy:
                out.append({"label": label_name(config, scores.argmax()), "score": float(scores.max())})
                continue
            ranked = sorted(
                ({"label": label_name(config, i), "score": float(s)} for i, s in enumerate(scores)),
                key=lambda d: d["score"],
                reverse=True,
            )
            out.append(ranked if top_k is None else ranked[:top_k])
        return out

    result = dispatch(inputs, lambda x: isinstance(x, str | dict), run, batch_size)
    return [result] if legacy and isinstance(inputs, str) else result  # as transformers: dicts unwrapped


def token_classification(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    aggregation_strategy: str = "none",
    ignore_labels: list[str] | tuple[str, ...] = ("O",),
    stride: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    max_length: int | None = None,
):
    """Labels each token, or groups tokens into entities (transformers' TokenClassificationPipeline).

    Args:
        model: an AlbertForTokenClassification.
        inputs: a text or a list/iterable of texts.
        aggregation_strategy: "none" (one dict per token, with "entity" and "index"), "simple" (adjacent
            tokens with the same B-/I- tag grouped, "entity_group"), or "first"/"average"/"max" (words,
            found by the whitespace heuristic transformers uses for SentencePiece, get one label).
        ignore_labels: labels left out of the results.
        stride: when set, texts longer than the model run as overlapping windows of that overlap
            (an aggregation strategy other than "none" is needed); otherwise they are truncated.

    Returns:
        Per text, a list of {"entity" | "entity_group", "score", "word", "start", "end"[, "index"]}
        where start/end are character offsets into the text.
    """
    strategy = aggregation_strategy.lower()
    if strategy not in AGGREGATIONS:
        raise ValueError(f"aggregation_strategy must be one of {AGGREGATIONS}, got {aggregation_strategy!r}")
    limit = max_tokens(model, tokenizer, max_length)
    if stride is not None:
        if strategy == "none":
            raise ValueError('stride needs an aggregation_strategy other than "none" to merge the windows')
        if not 0 <= stride < limit - 2:
            raise ValueError(
                f"stride must be in [0, {limit - 2}) for windows of {limit} tokens, got {stride}"
            )
    ignore = set(ignore_labels)

    def run(texts: list) -> list:
        texts = check_strings("token_classification", texts)
        if stride is None:  # windows need the whole text; truncation only its start
            texts = [clip_text(t, limit) for t in texts]
        encodings, sample = tokenizer.encode(
            texts,
            truncation=True,
            max_length=limit,
            stride=stride or 0,
            return_overflowing_tokens=stride is not None,
        )
        logits = run_batches(
            model,
            [[e] for e in encodings],
            lambda b: list(to_numpy(model(**b).logits)),
            tokenizer.pad_token_id,
            limit,
            batch_size,
            progress,
        )
        out = [[] for _ in texts]
        windows = [0] * len(texts)
        for e, row, i in zip(encodings, logits, sample, strict=True):
            entities = _aggregate(model.config, tokenizer, texts[i], e, softmax(row[: len(e.ids)]), strategy)
            out[i] += [d for d in entities if d.get("entity", d.get("entity_group")) not in ignore]
            windows[i] += 1
        return [_merge_overlapping(ents) if n > 1 else ents for ents, n in zip(out, windows, strict=True)]

    return dispatch(inputs, lambda x: isinstance(x, str), run, batch_size)


def _aggregate(config, tokenizer, text: str, e, scores: np.ndarray, strategy: str) -> list[dict]:
    tokens = []
    for idx, (token_id, special, (start, end)) in enumerate(
        zip(e.ids, e.special_tokens_mask, e.offsets, strict=True)
    ):
        if special:
            continue
        word = tokenizer.tokenizer.id_to_token(token_id)
        is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if token_id == tokenizer.unk_token_id:
            word, is_subword = text[start:end], False
        tokens.append(
            {
                "word": word,
                "scores": scores[idx],
                "start": start,
                "end": end,
                "index": idx,
                "is_subword": is_subword,
            }
        )
    if strategy in ("none", "simple"):
        entities = [
            {
                "entity": label_name(config, t["scores"].argmax()),
                "score": float(t["scores"].max()),
                "index": t["index"],
                "word": t["word"],
                "start": t["start"],
                "end": t["end"],
            }
            for t in tokens
        ]
    else:
        words, group = [], []
        for t in tokens:
            if group and not t["is_subword"]:
                words.append(group)
                group = []
            group.append(t)
        words += [group] if group else []
        entities = [_aggregate_word(config, tokenizer, w, strategy) for w in words]
    return entities if strategy == "none" else _group_entities(tokenizer, entities)


def _aggregate_word(config, tokenizer, tokens: list[dict], strategy: str) -> dict:
    if strategy == "first":
        scores = tokens[0]["scores"]
    elif strategy == "max":
        scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
    else:  # average
        scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
    return {
        "entity": label_name(config, scores.argmax()),
        "score": float(scores.max()),
        "word": tokenizer.tokenizer.decoder.decode([t["word"] for t in tokens]),
        "start": tokens[0]["start"],
        "end": tokens[-1]["end"],
    }


def _tag(label: str) -> tuple[str, str]:
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label  # not B-/I- tagged: a continuation


def _group_entities(tokenizer, entities: list[dict]) -> list[dict]:
    groups: list[list[dict]] = []
    for entity in entities:
        bi, tag = _tag(entity["entity"])
        if groups and tag == _tag(groups[-1][-1]["entity"])[1] and bi != "B":
            groups[-1].append(entity)
        else:
            groups.append([entity])
    return [
        {
            "entity_group": _tag(g[0]["entity"])[1],
            "score": float(np.nanmean([e["score"] for e in g])),
            "word": tokenizer.tokenizer.decoder.decode([e["word"] for e in g]),
            "start": g[0]["start"],
            "end": g[-1]["end"],
        }
        for g in groups
    ]


def _merge_overlapping(entities: list[dict]) -> list[dict]:
    """Entities found in several windows: of overlapping ones keep the longest, then the best scored."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda d: d["start"])
    merged, previous = [], entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or (
                length == previous_length and entity["score"] > previous["score"]
            ):
                previous = entity
        else:
            merged.append(previous)
            previous = entity
    merged.append(previous)
    return merged
