"""token-classification (ner): transformers' TokenClassificationPipeline (aggregation strategies,
character offsets, overflow windows), and tagging training: the first piece of each word carries
its tag, scored by seqeval's entity-level precision, recall and F1."""

from __future__ import annotations

import numpy as np

from ..batching import check_strings, clip_text, dispatch, max_tokens, run_batches, to_numpy
from ..metrics import accuracy, entity_scores
from ..records import DataError
from ..text import escape
from ..tokenizer import AlbertTokenizer
from .base import Limits, Task, label_name, softmax, text_of, tokens_at_most
from .labels import label_id, plan, tag_set
from .options import Option, declare
from .recipe import Dataset, Recipe, field_of, mean_loss

AGGREGATIONS = ("none", "simple", "first", "average", "max")


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
    limit = max_tokens(model, tokenizer, max_length)
    _check_options(strategy, stride, limit)
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
        forward = lambda b: list(to_numpy(model(**b).logits))  # noqa: E731
        logits = run_batches(
            model, [[e] for e in encodings], forward, tokenizer.pad_token_id, limit, batch_size, progress
        )
        out = [[] for _ in texts]
        windows = [0] * len(texts)
        for e, row, i in zip(encodings, logits, sample, strict=True):
            entities = _aggregate(model.config, tokenizer, texts[i], e, softmax(row[: len(e.ids)]), strategy)
            out[i] += [d for d in entities if d.get("entity", d.get("entity_group")) not in ignore]
            windows[i] += 1
        return [_merge_overlapping(ents) if n > 1 else ents for ents, n in zip(out, windows, strict=True)]

    return dispatch(inputs, lambda x: isinstance(x, str), run, batch_size)


def _check_options(strategy: str, stride: int | None, limit: int) -> None:
    if strategy not in AGGREGATIONS:
        raise ValueError(f"aggregation_strategy must be one of {AGGREGATIONS}, got {strategy!r}")
    if stride is not None:
        if strategy == "none":
            raise ValueError('stride needs an aggregation_strategy other than "none" to merge the windows')
        if not 0 <= stride < limit - 2:
            raise ValueError(
                f"stride must be in [0, {limit - 2}) for windows of {limit} tokens, got {stride}"
            )


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


def _encode_words(tokenizer, words: list[list[str]], max_length: int) -> list:
    """Word lists encoded and truncated, a long one cut to its first 2 * max_length + 16 words
    first; one whose cut encoding does not fill max_length (words that give no token) is encoded
    whole again, so the result is truncation's own."""
    keep = 2 * max_length + 16
    cut = [w[:keep] for w in words]
    encodings, _ = tokenizer.encode(cut, truncation=True, max_length=max_length, is_split_into_words=True)
    for i, (e, w) in enumerate(zip(encodings, words, strict=True)):
        if len(w) > keep and len(e.ids) < max_length:
            encodings[i] = tokenizer.encode(
                [w], truncation=True, max_length=max_length, is_split_into_words=True
            )[0][0]
    return encodings


def featurize(examples, tokenizer, max_length: int, label_to_id: dict) -> Dataset:
    """Records of tokens and tags (lists; in CSV space-separated) as features."""
    words, tags = [], []
    for where, record in examples:
        w, t = field_of(where, record, "tokens", list), field_of(where, record, "tags", list)
        bad = [x for x in w if not isinstance(x, str)] + [
            x for x in t if not isinstance(x, str | int) or isinstance(x, bool)
        ]
        if bad:
            raise DataError(f"{where}: tokens and tags must be strings, got {escape(repr(bad[0])[:40])}")
        if len(w) != len(t):
            raise DataError(f"{where}: {len(w)} tokens but {len(t)} tags")
        if not w:
            raise DataError(f"{where}: an example with no tokens")
        words.append([str(x) for x in w])
        tags.append([label_id(where, x, label_to_id) for x in t])
    encodings = _encode_words(tokenizer, words, max_length)
    features, kept = [], []
    for e, word_tags in zip(encodings, tags, strict=True):
        labels, previous = [], None
        for word in e.word_ids:  # the first piece of each word carries its tag, as transformers' examples
            labels.append(-100 if word is None or word == previous else word_tags[word])
            previous = word
        features.append({"input_ids": e.ids, "token_type_ids": e.type_ids, "labels": labels})
        kept.append({"word_ids": e.word_ids, "tags": word_tags})
    return Dataset(TASK, features, kept)


class TokenClassificationRecipe(Recipe):
    name = "token_classification"
    token_level = True

    def label_set(self, examples) -> tuple[str, list[str]]:
        return tag_set(examples)

    def label_plan(self, examples, config, problem_type):
        kind, labels = tag_set(examples)
        return plan(kind, labels, config, problem_type, sets_problem_type=False)

    def featurize(self, examples, tokenizer, max_length, label_to_id, problem_type, doc_stride, seed):
        return featurize(examples, tokenizer, max_length, label_to_id)

    def default_metric(self, config) -> str:
        return "f1"

    def batch_stats(self, config, data: Dataset, rows, batch: dict, out) -> dict:
        predicted, gold = [], []
        logits = np.array(out.logits.argmax(-1))
        for r, i in enumerate(rows):
            example, feature = data.examples[i], data.features[i]
            words = [
                (t, w)
                for t, w in enumerate(example["word_ids"])
                if w is not None and feature["labels"][t] != -100
            ]
            predicted.append([config.id_to_label.get(int(logits[r, t]), "O") for t, _ in words])
            gold.append([config.id_to_label.get(example["tags"][w], "O") for _, w in words])
        return {"loss": float(out.loss.item()), "n": len(rows), "predicted": predicted, "gold": gold}

    def combine(self, config, data: Dataset, stats: list[dict]) -> dict:
        predicted = [p for s in stats for p in s["predicted"]]
        gold = [g for s in stats for g in s["gold"]]
        flat_p, flat_g = sum(predicted, []), sum(gold, [])
        return {
            "loss": mean_loss(stats),
            **entity_scores(predicted, gold),
            "accuracy": accuracy(flat_p, flat_g),
        }


class TokenClassification(Task):
    name = "token-classification"
    help = "label tokens / find entities"
    architecture = "for_token_classification"
    aliases = ("ner",)
    command, route = "ner", "/v1/ner"
    options = declare(
        token_classification,
        Option(
            "aggregation_strategy", str, "group tokens into entities", choices=AGGREGATIONS,
            flag="--aggregation", cli_default="simple",
        ),
        Option("ignore_labels", list, "labels left out of the answer", flag=None),
        Option("stride", int, "cover long texts in windows overlapping this much", lo=0, hi="max_length"),
    )  # fmt: skip
    recipe = TokenClassificationRecipe()

    def predict(self, model, tokenizer, inputs, **options):
        return token_classification(model, tokenizer, inputs, **options)

    def human(self, result, args) -> str:
        key = "entity" if args.aggregation == "none" else "entity_group"
        return (
            "  ".join(
                f"[{escape(e['word'])}]{escape(e[key])}({e['start']}:{e['end']} {e['score']:.3f})"
                for e in result
            )
            or "-"
        )

    def check_request(self, item, options: dict, limits: Limits) -> tuple[int, int]:
        """With a stride, a long text runs as windows: every character may cost a token."""
        text = text_of(item, "inputs", limits)
        if options.get("stride") is None:
            return tokens_at_most(text, limits), limits.max_length
        step = max(limits.max_length - 2 - options["stride"], 1)
        windows = 1 + -(-max(len(text) + 2 - limits.max_length, 0) // step)
        return windows * limits.max_length, windows * limits.max_length


TASK = TokenClassification()
