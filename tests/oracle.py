"""Reference cases from transformers (torch, CPU, float32): HF config + weights + inputs + every
output and loss. Used live by the parity tests and, frozen, by tests/fixtures/make_fixtures.py."""

from __future__ import annotations

import numpy as np

# Small configs that exercise the spec's options (transformers names).
CONFIGS = {
    "factorised": dict(
        vocab_size=64,
        embedding_size=8,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=24,
        hidden_act="gelu_new",
        max_position_embeddings=24,
        type_vocab_size=2,
        num_labels=2,
    ),
    "grouped_deep": dict(
        vocab_size=64,
        embedding_size=12,
        hidden_size=24,
        num_hidden_layers=4,
        num_hidden_groups=2,
        inner_group_num=2,
        num_attention_heads=4,
        intermediate_size=20,
        hidden_act="gelu",
        max_position_embeddings=24,
        type_vocab_size=3,
        num_labels=3,
        layer_norm_eps=1e-5,
    ),
    "relu_groups": dict(
        vocab_size=48,
        embedding_size=16,
        hidden_size=16,
        num_hidden_layers=3,
        num_hidden_groups=3,
        num_attention_heads=4,
        intermediate_size=32,
        hidden_act="relu",
        max_position_embeddings=16,
        type_vocab_size=2,
        num_labels=2,
    ),
}
ARCHITECTURES = (
    "AlbertModel",
    "AlbertForMaskedLM",
    "AlbertForSequenceClassification",
    "AlbertForTokenClassification",
    "AlbertForQuestionAnswering",
    "AlbertForMultipleChoice",
    "AlbertForPreTraining",
)
B, C, L = 3, 2, 9  # batch, choices, sequence


def make_inputs(hf: dict, arch: str, seed: int) -> dict[str, np.ndarray]:
    """A padded batch with custom position ids and token types, plus labels for every loss."""
    rng = np.random.default_rng(seed)
    shape = (B, C, L) if arch == "AlbertForMultipleChoice" else (B, L)
    ids = rng.integers(5, hf["vocab_size"], shape)
    mask = np.ones(shape, np.int64)
    mask[1, ..., 6:] = 0  # padded rows
    mask[2, ..., 4:] = 0
    types = (np.arange(L) >= 4).astype(np.int64) * np.ones(shape, np.int64)
    types[0, ..., 7:] = hf["type_vocab_size"] - 1
    positions = np.broadcast_to(np.arange(L) + 2, shape).copy()  # shifted, < max_positions
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types, position_ids=positions)
    n = hf["num_labels"]
    if arch in ("AlbertForMaskedLM", "AlbertForPreTraining"):
        labels = rng.integers(0, hf["vocab_size"], shape)
        labels[rng.random(shape) < 0.5] = -100
        inputs["labels"] = labels
    if arch == "AlbertForPreTraining":
        inputs["sentence_order_label"] = rng.integers(0, n, (B,))
    if arch == "AlbertForSequenceClassification":
        inputs["labels"] = rng.integers(0, n, (B,))
        inputs["labels_multi"] = (rng.random((B, n)) > 0.5).astype(np.float32)
        inputs["labels_regression"] = rng.normal(size=(B,)).astype(np.float32)
    if arch == "AlbertForTokenClassification":
        labels = rng.integers(0, n, shape)
        labels[mask == 0] = -100
        inputs["labels"] = labels
    if arch == "AlbertForQuestionAnswering":
        inputs["start_positions"] = np.array([1, 3, L + 5])  # the last is out of range: ignored
        inputs["end_positions"] = np.array([2, 5, 4])
    if arch == "AlbertForMultipleChoice":
        inputs["labels"] = rng.integers(0, C, (B,))
    return inputs


def make_case(name: str, arch: str, seed: int = 0) -> dict:
    """Runs transformers on a random-initialised model; returns everything a test compares."""
    import torch
    import transformers

    hf = dict(CONFIGS[name])
    if arch in ("AlbertForQuestionAnswering", "AlbertForPreTraining"):
        hf["num_labels"] = 2  # start/end logits; transformers' SOP loss assumes 2 classes
    torch.manual_seed(seed)
    config = transformers.AlbertConfig(**hf, attn_implementation="eager")
    model = getattr(transformers, arch)(config).eval()
    inputs = make_inputs(hf, arch, seed)
    t = {k: torch.tensor(v) for k, v in inputs.items()}
    base = {k: t[k] for k in ("input_ids", "attention_mask", "token_type_ids", "position_ids")}
    outputs = {}
    with torch.no_grad():
        label_args = {
            k: t[k] for k in ("labels", "sentence_order_label", "start_positions", "end_positions") if k in t
        }
        out = model(**base, **label_args, output_hidden_states=True, output_attentions=True)
        for key, value in out.items():
            if isinstance(value, tuple):
                for i, v in enumerate(value):
                    outputs[f"{key}.{i}"] = v.numpy()
            else:
                outputs[key] = value.numpy()
        if arch == "AlbertForSequenceClassification":
            model.config.problem_type = None  # transformers caches the first call's problem type
            outputs["loss_multi"] = model(**base, labels=t["labels_multi"]).loss.numpy()
            reg = transformers.AlbertForSequenceClassification(
                transformers.AlbertConfig(**{**hf, "num_labels": 1}, attn_implementation="eager")
            ).eval()
            reg.load_state_dict(
                {k: v for k, v in model.state_dict().items() if "classifier" not in k}, strict=False
            )
            outputs["regression.logits"] = reg(**base).logits.numpy()
            outputs["regression.loss"] = reg(**base, labels=t["labels_regression"]).loss.numpy()
            weights = {f"regression.{k}": v.numpy() for k, v in reg.state_dict().items() if "classifier" in k}
        else:
            weights = {}
    weights.update({k: v.numpy() for k, v in model.state_dict().items()})
    config.architectures = [arch]  # as save_pretrained writes it
    config.problem_type = None  # undo the loss calls' caching
    return dict(hf_config=config.to_dict(), weights=weights, inputs=inputs, outputs=outputs)


# Tokenizer corpus: accents, curly quotes, CJK, emoji, tabs/newlines, repeated spaces, empty, long.
TEXTS = [
    "The cat likes [MASK] every morning.",
    "  Héllo   wörld\t\nnew line ``quoted'' “curly” ‘single’",
    "",
    "日本語のテキスト 😀 emoji",
    "1,000,000 numbers, 12, 3.5",
    "CAFÉ naïve façade Ångström",
    "the river " * 40,
]
PAIRS = [
    ("Where is the cat?", "The cat is in the garden near the station."),
    ("", "only the second"),
    ("a small bird " * 10, "paints the house " * 10),
]


def window_args(strategy: str) -> dict:
    """Tokenizer arguments of the overflow-window cases (PAIRS' first texts fit either length)."""
    return dict(
        truncation=strategy,
        max_length=96 if strategy == "only_second" else 40,
        stride=5,
        padding=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )


def tokenizer_case(folder) -> dict:
    """transformers' AlbertTokenizer on TEXTS and PAIRS: ids, types, truncation and padding."""
    import transformers

    tok = transformers.AlbertTokenizer.from_pretrained(folder)
    kw = dict(return_token_type_ids=True)
    return dict(
        single=[tok(t, **kw)["input_ids"] for t in TEXTS],
        pairs=[dict(tok(a, b, **kw)) for a, b in PAIRS],
        truncated=dict(
            tok(
                [a for a, _ in PAIRS],
                [b for _, b in PAIRS],
                truncation=True,
                max_length=16,
                padding="max_length",
                **kw,
            )
        ),
        decoded=[tok.decode(tok(t)["input_ids"]) for t in TEXTS],
        offsets=[tok(t, return_offsets_mapping=True)["offset_mapping"] for t in TEXTS],
        windows={
            strategy: tok([a for a, _ in PAIRS], [b for _, b in PAIRS], **window_args(strategy), **kw).data
            for strategy in ("only_second", "longest_first")
        },
    )
