"""Pipelines: same answers as transformers' pipelines (live) on small checkpoints with every head,
batching equal to one-by-one, streaming, and clear errors on bad input."""

import shutil
import types
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import needs_torch
from tolerances import PARITY, forward_tol, unit_norm_tol

import mlx_albert
from mlx_albert.tasks import (
    embed,
    feature_extraction,
    fill_mask,
    pipeline,
    question_answering,
    similarity,
)

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
TEXTS = ["The cat likes [MASK] every morning.", "A [MASK] visits [MASK].", "[MASK]"]
SENTENCES = [
    "Maria lives in Paris near the river.",
    "",
    "  John   Smith met Ann in New York ",
    "the river " * 80,  # longer than the model: truncated, or windows with stride
    "Café naïve 😀 unknown ☃ chars",
]
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
CONTEXT = (
    "The cat sat on the mat in the garden of the old station. Maria walked to Paris on a Monday, "
    "and her brother John stayed near the river. A dog visits every morning; it likes warm bread. "
    "In the evening the station closes and the birds paint the house with songs."
)
QUESTIONS = ["Where is the cat?", "What did the cat sit on?"]
HEAD_SCALE = 30.0  # _head_checkpoint's: predictions differ token to token
# One text alone or inside a batch (other sizes, widths, packing): the same sums reordered; the
# heads scale the hidden states' rounding by HEAD_SCALE (unit-norm embeddings: by 1)
REORDERED = forward_tol(mlx_albert.load(TINY).config, 128, scale=HEAD_SCALE)
EMBEDDING = forward_tol(mlx_albert.load(TINY).config, 128)


def _head_checkpoint(folder: Path, architecture: str, scale: float = HEAD_SCALE, **config) -> Path:
    """The tiny checkpoint with a new random head, scaled so predictions differ token to token."""
    model = mlx_albert.load(TINY, architecture, **config)
    head = {k: v for k, v in model.children().items() if k != "albert"}
    from mlx.utils import tree_map

    model.update(tree_map(lambda w: w * scale, head))
    model.save_pretrained(folder)
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(TINY / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    return types.SimpleNamespace(
        mlm=TINY,
        cls=_head_checkpoint(
            root / "cls",
            "for_sequence_classification",
            num_labels=3,
            id_to_label={0: "neg", 1: "neu", 2: "pos"},
        ),
        multi=_head_checkpoint(
            root / "multi",
            "for_sequence_classification",
            num_labels=3,
            problem_type="multi_label_classification",
        ),
        ner=_head_checkpoint(root / "ner", "for_token_classification", num_labels=5, id_to_label=NER_LABELS),
        qa=_head_checkpoint(root / "qa", "for_question_answering", scale=3.0),
        mc=_head_checkpoint(root / "mc", "for_multiple_choice"),
    )


def _same(ours, ref, tol=PARITY):
    """Equal structure, equal labels/strings/offsets, floats within tol."""
    if isinstance(ref, list):
        assert isinstance(ours, list) and len(ours) == len(ref), (ours, ref)
        for a, b in zip(ours, ref, strict=True):
            _same(a, b, tol)
    elif isinstance(ref, dict):
        assert isinstance(ours, dict) and ours.keys() == ref.keys(), (ours, ref)
        for k in ref:
            _same(ours[k], ref[k], tol)
    elif isinstance(ref, float | np.floating):
        assert abs(ours - float(ref)) < tol, (ours, ref)
    else:
        assert ours == ref


def _hf(task, folder):
    import transformers

    pipe = transformers.pipeline(task, model=str(folder), device="cpu")
    # transformers 5 leaves token_type_ids out of ALBERT's inputs, so pairs would run as one segment;
    # ALBERT was trained with them (and transformers 4 sent them): ask for them.
    pipe.tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return pipe


@needs_torch
def test_fill_mask_matches_transformers(folders):
    ref, pipe = _hf("fill-mask", folders.mlm), pipeline("fill-mask", folders.mlm)
    for text in TEXTS:
        _same(pipe(text, top_k=4), ref(text, top_k=4))
    _same(pipe(TEXTS, top_k=2), ref(TEXTS, top_k=2))
    _same(
        pipe("The cat likes [MASK].", targets=["the", "▁paris"]),
        ref("The cat likes [MASK].", targets=["the", "▁paris"]),
    )


@needs_torch
def test_text_classification_matches_transformers(folders):
    texts = [s for s in SENTENCES if len(s) < 100]  # transformers' pipeline does not truncate
    pair = {"text": "Where is Maria?", "text_pair": "Maria lives in Paris."}
    for folder in (folders.cls, folders.multi):
        ref, pipe = _hf("text-classification", folder), pipeline("text-classification", folder)
        _same(pipe(texts[0]), ref(texts[0]))
        _same(pipe(texts), ref(texts))
        _same(pipe(pair), ref(pair))
        _same(pipe([pair, texts[0]]), ref([pair, texts[0]]))
        for options in (
            {"top_k": None},
            {"top_k": 2},
            {"function_to_apply": "none"},
            {"function_to_apply": "sigmoid"},
        ):
            _same(pipe(texts, **options), ref(texts, **options))
            _same(pipe(texts[2], **options), ref(texts[2], **options))


@needs_torch
@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_transformers(folders, strategy):
    import warnings

    ref, pipe = _hf("token-classification", folders.ner), pipeline("ner", folders.ner)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers warns that SentencePiece has no real words
        for options in ({}, {"ignore_labels": []}):
            _same(
                pipe(SENTENCES, aggregation_strategy=strategy, **options),
                ref(SENTENCES, aggregation_strategy=strategy, **options),
            )
        if strategy != "none":  # long text in overlapping windows
            _same(
                pipe(SENTENCES[3], aggregation_strategy=strategy, stride=16),
                ref(SENTENCES[3], aggregation_strategy=strategy, stride=16),
            )
    entities = pipe(SENTENCES[0], aggregation_strategy=strategy, ignore_labels=[])
    for e in entities:  # offsets point into the text
        assert 0 <= e["start"] <= e["end"] <= len(SENTENCES[0])


@needs_torch
def test_feature_extraction_matches_transformers(folders):
    ref, pipe = _hf("feature-extraction", folders.mlm), pipeline("feature-extraction", folders.mlm)
    texts = [s for s in SENTENCES if len(s) < 100]
    ours, theirs = pipe(texts), ref(texts)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=0, atol=PARITY)


def _reference_answer(folder, question, context, max_seq_len, doc_stride, max_answer_len):
    """By brute force over transformers' windows and logits: each window's best span by
    p(start) * p(end) (softmax over [CLS] + context), equal texts from different windows summed."""
    import torch
    import transformers

    tok = transformers.AlbertTokenizer.from_pretrained(folder)
    model = transformers.AlbertForQuestionAnswering.from_pretrained(folder).eval()
    enc = tok(
        question,
        context,
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_overflowing_tokens=True,
        padding=True,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    assert enc["input_ids"].shape[0] > 1  # the test is about several windows
    with torch.no_grad():
        out = model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=enc["token_type_ids"],
        )
    found: dict[str, list] = {}
    for w in range(enc["input_ids"].shape[0]):
        context_tokens = [i for i, s in enumerate(enc.sequence_ids(w)) if s == 1]
        allowed = [0, *context_tokens]
        p_start = torch.softmax(out.start_logits[w, allowed].double(), 0)[1:]
        p_end = torch.softmax(out.end_logits[w, allowed].double(), 0)[1:]
        best = max(
            (float(p_start[a] * p_end[b]), a, b)
            for a in range(len(context_tokens))
            for b in range(a, min(a + max_answer_len, len(context_tokens)))
        )
        s, e = context_tokens[best[1]], context_tokens[best[2]]
        chars = (
            enc.word_to_chars(w, enc.token_to_word(w, s), 1)[0],
            enc.word_to_chars(w, enc.token_to_word(w, e), 1)[1],
        )
        key = context[chars[0] : chars[1]].lower()
        if key in found:
            found[key][0] += best[0]
        else:
            found[key] = [best[0], chars]
    return max(found.values(), key=lambda v: v[0])


@needs_torch
def test_question_answering_matches_a_brute_force_reference(folders):
    model, tok = mlx_albert.load(folders.qa), mlx_albert.AlbertTokenizer.from_pretrained(folders.qa)
    for question in QUESTIONS:
        answer = question_answering(
            model, tok, question=question, context=CONTEXT, max_seq_len=64, doc_stride=16
        )
        score, (start, end) = _reference_answer(folders.qa, question, CONTEXT, 64, 16, 15)
        assert (answer["start"], answer["end"]) == (start, end)
        assert answer["answer"] == CONTEXT[start:end]
        assert abs(answer["score"] - score) < PARITY


def test_question_answering_semantics(folders):
    model, tok = mlx_albert.load(folders.qa), mlx_albert.AlbertTokenizer.from_pretrained(folders.qa)
    top = question_answering(
        model, tok, {"question": QUESTIONS[0], "context": CONTEXT}, top_k=3, max_seq_len=64, doc_stride=16
    )
    assert len(top) == 3 and [a["score"] for a in top] == sorted((a["score"] for a in top), reverse=True)
    for a in top:
        assert a["answer"] == CONTEXT[a["start"] : a["end"]] and a["answer"]
    short = question_answering(
        model, tok, question=QUESTIONS[0], context=CONTEXT, max_answer_len=1, max_seq_len=64, doc_stride=16
    )
    assert " " not in short["answer"].strip()  # one token -> one word
    both = question_answering(model, tok, question=QUESTIONS, context=CONTEXT, max_seq_len=64, doc_stride=16)
    assert isinstance(both, list) and len(both) == 2
    impossible = question_answering(
        model,
        tok,
        question=QUESTIONS[0],
        context=CONTEXT,
        top_k=10_000,
        handle_impossible_answer=True,
        max_seq_len=64,
        doc_stride=16,
    )
    assert {"score", "start", "end", "answer"} == impossible[0].keys()
    assert any(a["answer"] == "" and a["start"] == a["end"] == 0 for a in impossible)
    with pytest.raises(ValueError, match="`context` cannot be empty"):
        question_answering(model, tok, question="Where?", context="  ")
    with pytest.raises(ValueError, match="leaves no room for the context in max_seq_len=32 tokens: shorten"):
        question_answering(model, tok, question="why " * 40, context=CONTEXT, max_seq_len=32, doc_stride=4)
    with pytest.raises(ValueError, match="question and context"):
        question_answering(model, tok, question=["a", "b"], context=["c"])


@needs_torch
def test_multiple_choice_matches_transformers(folders):
    import torch
    import transformers

    tok = transformers.AlbertTokenizer.from_pretrained(folders.mc)
    ref = transformers.AlbertForMultipleChoice.from_pretrained(folders.mc).eval()
    item = {"question": "The cat sat on the", "choices": ["mat.", "river of paris", "garden station old"]}
    enc = tok(
        [item["question"]] * 3, item["choices"], padding=True, return_tensors="pt", return_token_type_ids=True
    )
    with torch.no_grad():
        probs = torch.softmax(ref(**{k: v[None] for k, v in enc.items()}).logits[0].double(), 0).numpy()
    ours = pipeline("multiple-choice", folders.mc)(item)
    assert [a["index"] for a in ours] == list(np.argsort(-probs))
    for a in ours:
        assert a["choice"] == item["choices"][a["index"]] and abs(a["score"] - probs[a["index"]]) < PARITY


def test_multiple_choice_batches_mixed_choice_counts(folders):
    pipe = pipeline("multiple-choice", folders.mc)
    items = [{"question": "q one", "choices": ["a", "b"]}, {"question": "q two", "choices": ["c", "d", "e"]}]
    both = pipe(items, batch_size=1)
    # a batch of one either way: the same arithmetic, bit for bit
    assert [len(r) for r in both] == [2, 3] and both[1] == pipe(items[1])
    with pytest.raises(ValueError, match="at least one choice"):
        pipe({"question": "q", "choices": []})


def test_batching_equals_one_by_one_and_streams(folders):
    pipe = pipeline("ner", folders.ner, aggregation_strategy="simple")
    one_by_one = [pipe(s) for s in SENTENCES]
    for batch_size in (1, 2, 8):
        _same(pipe(SENTENCES, batch_size=batch_size), one_by_one, tol=REORDERED)
    stream = pipe(s for s in SENTENCES)  # a generator in, a generator out, same order
    assert not isinstance(stream, list)
    _same(list(stream), one_by_one, tol=REORDERED)
    classify = pipeline("text-classification", folders.cls, top_k=None)
    _same(classify(SENTENCES * 3, batch_size=4), [classify(s) for s in SENTENCES] * 3, tol=REORDERED)


def test_embeddings(folders):
    model, tok = mlx_albert.load(folders.mlm, "base"), mlx_albert.AlbertTokenizer.from_pretrained(folders.mlm)
    vectors = embed(model, tok, SENTENCES)
    assert vectors.shape == (len(SENTENCES), model.config.hidden_size)
    H = model.config.hidden_size
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=0, atol=unit_norm_tol(H))
    one = embed(model, tok, SENTENCES[0])
    np.testing.assert_allclose(one, vectors[0], rtol=0, atol=EMBEDDING)
    states = feature_extraction(model, tok, SENTENCES[0], return_tensors=True)  # (1, L, H)
    mean = states[0].mean(axis=0)
    np.testing.assert_allclose(one, mean / np.linalg.norm(mean), rtol=0, atol=EMBEDDING)
    cls = embed(model, tok, SENTENCES[:2], pooling="cls", normalize=False)
    scale = np.abs(states).max()  # raw hidden states: their own size
    np.testing.assert_allclose(cls[0], states[0, 0], rtol=0, atol=EMBEDDING * scale)
    pooled = embed(model, tok, SENTENCES[0], pooling="pooler", normalize=False)
    ids = tok(SENTENCES[0], return_tensors="mlx")
    np.testing.assert_allclose(pooled, np.array(model(**ids).pooler_output[0]), rtol=0, atol=EMBEDDING)
    sims = similarity(vectors)  # float64 cosines of unit vectors
    assert sims.shape == (5, 5) and np.allclose(np.diag(sims), 1, rtol=0, atol=unit_norm_tol(H))
    with pytest.raises(ValueError, match="pooling must be one of"):
        embed(model, tok, "x", pooling="median")


def test_packed_embeddings_equal_each_alone(folders):
    """`embed` packs texts of different lengths into shared rows; every vector must still equal
    the text's own forward (float rounding apart), for every pooling and batch size."""
    from mlx_albert.batching import pack

    model, tok = mlx_albert.load(folders.mlm, "base"), mlx_albert.AlbertTokenizer.from_pretrained(folders.mlm)
    texts = [" ".join(SENTENCES[: 1 + i % 5])[: 8 + 9 * i] for i in range(12)]
    ids = [tok(t)["input_ids"] for t in texts]
    assert len(set(map(len, ids))) > 4
    width = max(map(len, ids))
    packed = pack(sorted(ids, key=len, reverse=True), tok.pad_token_id, width)
    assert packed.inputs["input_ids"].shape[0] < len(ids)  # some rows really hold several texts
    for pooling in ("mean", "cls", "pooler"):
        alone = []
        for t in texts:
            out = model(**tok(t, return_tensors="mlx"))
            states = np.array(out.last_hidden_state[0])
            alone.append(
                {"mean": states.mean(0), "cls": states[0]}.get(pooling, np.array(out.pooler_output[0]))
            )
        for batch_size in (3, 64):
            vectors = embed(model, tok, texts, pooling=pooling, normalize=False, batch_size=batch_size)
            reference = np.stack(alone)
            tol = EMBEDDING * max(1.0, np.abs(reference).max())  # raw states: their own size
            np.testing.assert_allclose(vectors, reference, rtol=0, atol=tol)
    from mlx_albert import SentenceEncoder

    limit = model.config.max_positions
    for bad in ([], [5] * (limit + 1)):  # positions are given to the model: lengths checked first
        with pytest.raises(ValueError, match=rf"sequence 1 has {len(bad)} tokens: each needs 1 to {limit}"):
            SentenceEncoder(model, tok).encode_ids([ids[0], bad])


def test_fill_mask_semantics(folders):
    model, tok = mlx_albert.load(TINY), mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    answers = fill_mask(model, tok, TEXTS[0], top_k=5)
    scores = [a["score"] for a in answers]
    assert len(answers) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    assert all(a["token_str"].strip() in a["sequence"] for a in answers)
    two = fill_mask(model, tok, TEXTS[1], top_k=3)
    assert len(two) == 2 and all(len(per_mask) == 3 for per_mask in two)  # one list per mask
    batch = fill_mask(model, tok, TEXTS, top_k=1)
    alone = fill_mask(model, tok, TEXTS[0], top_k=1)  # padding in a batch changes only float rounding
    assert [(a["token"], a["sequence"]) for a in batch[0]] == [(a["token"], a["sequence"]) for a in alone]
    assert abs(batch[0][0]["score"] - alone[0]["score"]) <= forward_tol(model.config, 16)
    # the head runs only at the masks, yet gives the full model's numbers
    full = model(**tok(TEXTS[0], return_tensors="mlx")).logits[0]
    position = tok(TEXTS[0])["input_ids"].index(tok.mask_token_id)
    probs = np.array(mx.softmax(full[position]))
    # the full forward against the head at one position: other shapes (and a float64 softmax)
    assert abs(alone[0]["score"] - probs.max()) <= forward_tol(model.config, 16)


def test_bad_inputs(folders):
    model, tok = mlx_albert.load(TINY), mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    with pytest.raises(ValueError, match=r"No mask_token \(\[MASK\]\) found on the input 'no mask here'"):
        fill_mask(model, tok, ["The [MASK] cat", "no mask here"])
    with pytest.raises(ValueError, match="lies past its first 128 tokens, which is all the model reads"):
        fill_mask(model, tok, "word " * 300 + "[MASK]")
    with pytest.raises(ValueError, match="empty list"):
        fill_mask(model, tok, [])
    with pytest.raises(TypeError, match="takes strings, got int"):
        fill_mask(model, tok, ["[MASK]", 3])
    with pytest.raises(TypeError, match="unsupported input of type int"):
        fill_mask(model, tok, 3)
    classify = pipeline("text-classification", folders.cls)
    assert classify("")[0]["label"] in {"neg", "neu", "pos"}  # empty text: just [CLS] [SEP]
    assert classify("the river " * 500)[0]["score"] > 0  # truncated, not a crash
    with pytest.raises(ValueError, match="text_pair"):
        classify({"text": "a", "pair": "b"})
    with pytest.raises(ValueError, match="function_to_apply must be one of"):
        classify("a", function_to_apply="relu")
    ner = pipeline("ner", folders.ner)
    assert ner("") == []
    with pytest.raises(ValueError, match="aggregation_strategy must be one of"):
        ner("a", aggregation_strategy="median")
    with pytest.raises(ValueError, match='stride needs an aggregation_strategy other than "none"'):
        ner("a", stride=8)
    with pytest.raises(ValueError, match="unknown task 'summarize'"):
        pipeline("summarize", TINY)
    no_tokenizer = folders.cls.parent / "bare"
    mlx_albert.load(folders.cls).save_pretrained(no_tokenizer)
    with pytest.raises(FileNotFoundError, match="tokenizer.json or spiece.model"):
        pipeline("text-classification", no_tokenizer)


def test_load_returns_the_tokenizer_when_asked():
    model, tok = mlx_albert.load(TINY, return_tokenizer=True)
    assert isinstance(tok, mlx_albert.AlbertTokenizer) and tok.mask_token_id == 4
    pipe = mlx_albert.pipeline("fill-mask", model, tokenizer=tok, top_k=1)
    assert pipe("a [MASK]") == fill_mask(model, tok, "a [MASK]", top_k=1)
    with pytest.raises(ValueError, match="pass tokenizer="):
        mlx_albert.pipeline("fill-mask", model)


def test_a_huge_text_is_cut_before_tokenising_with_the_same_answer(monkeypatch):
    """A 10 MB text costs what its first tokens cost: cut to 2*limit+16 words before tokenising,
    which cannot change the first `limit` tokens (each word gives at least one)."""
    from mlx_albert import batching as _batching

    model = mlx_albert.load(TINY, "base")
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    words = "the cat sat   on\tthe mat\u3000again and again ".split(" ")
    huge = " ".join(words[i % len(words)] for i in range(2_500_000))  # ~10 MB
    assert len(huge) > 10_000_000
    seen = []
    real = tok.encode

    def spy(texts, *a, **k):
        seen.append(sum(len(t) for t in ([texts] if isinstance(texts, str) else texts)))
        return real(texts, *a, **k)

    monkeypatch.setattr(tok, "encode", spy)
    cut = embed(model, tok, [huge])
    assert max(seen) < 5_000  # not ten million characters
    full = real([huge], truncation=True, max_length=128)[0][0].ids
    short = real([_batching.clip_text(huge, 128)], truncation=True, max_length=128)[0][0].ids
    assert full == short
    # the same tokens in the same batch: the same arithmetic, bit for bit
    assert np.array_equal(cut, embed(model, tok, [huge[:4000]]))
    with_spaces = "a" + " " * 1_000_000 + " b c" * 10
    assert _batching.clip_text(with_spaces, 4).endswith("b c b c b c b c b c b c b c b c b c b c")


def test_question_answering_on_the_tiny_model_names_the_stride_to_lower():
    """The README's snippet (doc_stride=128) on a model of 128 positions: lower doc_stride, which is
    what can change, not max_seq_len, which is already the model's limit."""
    model = mlx_albert.load(TINY, "for_question_answering")
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    long_text = "The cat sat on the mat. " * 60
    with pytest.raises(
        ValueError, match=r"doc_stride=128 must be below the \d+ context tokens .* lower doc_stride"
    ):
        question_answering(model, tok, question="Where?", context=long_text, top_k=2, doc_stride=128)
    answers = question_answering(model, tok, question="Where?", context=long_text, top_k=2, doc_stride=60)
    assert len(answers) == 2 and all(a["answer"] == long_text[a["start"] : a["end"]] for a in answers)
