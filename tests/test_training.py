"""Training: AdamW and schedules equal to torch/transformers, accumulation, learning on generated
data, resume after a kill (bit for bit), LoRA merge, mixed precision, metrics, and bad input."""

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import PEAK_KB, case_folder, get_case, needs_torch, tiny_config
from mlx.utils import tree_flatten
from tolerances import EPS32, PARITY, adam_tol, forward_tol, ulps

import mlx_albert
from mlx_albert.metrics import entity_scores, macro_f1, spearman, squad_scores
from mlx_albert.training import (
    DataError,
    Trainer,
    TrainingArgs,
    TrainingError,
    adamw,
    build,
    clip_by_global_norm,
    mask_tokens,
    read_records,
    schedule,
)
from mlx_albert.training.run import finetune
from mlx_albert.weights import mlx_to_hf

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
ANIMALS, PLACES = ["cat", "dog", "bird", "fish", "horse"], ["river", "mountain", "sea", "lake", "hill"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def separable(n: int, seed: int) -> list[dict]:
    """Texts of animal words vs place words: a task a small model learns in seconds."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        animal = i % 2 == 1
        words = rng.choices(ANIMALS if animal else PLACES, k=rng.randint(3, 8))
        rows.append({"text": " ".join(words), "label": "animal" if animal else "place"})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {
        "train": write_jsonl(root / "train.jsonl", separable(160, 0)),
        "dev": write_jsonl(root / "dev.jsonl", separable(60, 1)),
    }


# -- optimiser -------------------------------------------------------------------------------


@needs_torch
def test_adamw_steps_match_torch(tmp_path):
    """Two clipped AdamW steps (decay skipping biases and LayerNorm weights) equal torch's, within what
    the gradients' parity (test_gradients: PARITY of each tensor's largest entry, floored) allows
    after AdamW's normalisation (adam_tol)."""
    import torch
    import transformers

    case = get_case("grouped_deep", "AlbertForSequenceClassification", "golden")
    folder = case_folder(case, tmp_path)
    inputs = {k: case["inputs"][k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
    hf = transformers.AlbertForSequenceClassification.from_pretrained(
        folder, attn_implementation="eager"
    ).eval()
    no_decay = {
        id(p)
        for m in hf.modules()
        for n, p in m.named_parameters(recurse=False)
        if isinstance(m, torch.nn.LayerNorm) or n == "bias"
    }
    groups = [
        {"params": [p for p in hf.parameters() if id(p) not in no_decay], "weight_decay": 0.01},
        {"params": [p for p in hf.parameters() if id(p) in no_decay], "weight_decay": 0.0},
    ]
    torch_opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    model = mlx_albert.load(folder)
    optimizer = adamw(1e-2, 0.01, (0.9, 0.98), 1e-6)
    loss_and_grad = nn.value_and_grad(model, lambda m: m(**inputs).loss)
    names = {id(p): n for n, p in hf.named_parameters()}
    seen, errors = [], []
    for _ in range(2):
        torch_opt.zero_grad()
        loss = hf(**{k: torch.tensor(v) for k, v in inputs.items()}).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(hf.parameters(), 0.05)  # small: clipping is active
        g = {names[id(p)]: p.grad.numpy().copy() for p in hf.parameters()}
        largest = max(np.abs(v).max() for v in g.values())
        noise = 1e-6 * largest + 16 * EPS32 * loss.item() * min(1.0, 0.05 / norm.item())
        seen.append(g)
        errors.append({k: PARITY * max(np.abs(v).max(), 1e-3 * largest) + noise for k, v in g.items()})
        torch_opt.step()
        _, grads = loss_and_grad(model)
        grads, _ = clip_by_global_norm(grads, 0.05)
        optimizer.update(model, grads)
        mx.eval(model.parameters())
    ours = mlx_to_hf(dict(tree_flatten(model.parameters())))
    ref = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    for key, value in ours.items():
        grads = [g[key] for g in seen] if key in seen[0] else [np.zeros_like(ref[key])] * 2
        bound = adam_tol(grads, [e.get(key, 0.0) for e in errors], 1e-2, (0.9, 0.98), 1e-6)
        bound += 4 * EPS32 * np.abs(ref[key])  # the weights' own rounding, two steps
        assert (np.abs(np.array(value) - ref[key]) <= bound).all(), key


@needs_torch
@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_schedules_match_transformers(name):
    import torch
    import transformers

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    ref = {
        "linear": transformers.get_linear_schedule_with_warmup,
        "cosine": transformers.get_cosine_schedule_with_warmup,
        "constant": lambda o, w, t: transformers.get_constant_schedule_with_warmup(o, w),
    }[name](opt, 7, 40)
    lr = schedule(name, 3e-4, 7, 40)
    for step in range(41):  # to the last step (past it, transformers' cosine rises again)
        want = ref.get_last_lr()[0]  # float64; ours in float32 through ~6 roundings of the result,
        # and the decay factor formed near 1 (1 - progress, 1 + cos): a few ulps of 1, times the lr
        assert abs(lr(mx.array(step)).item() - want) <= ulps(want, 8) + ulps(3e-4, 4), step
        opt.step()
        ref.step()


def test_weight_decay_skips_biases_and_norms():
    from mlx_albert.training.optim import decays

    assert decays("albert.encoder.groups.0.layers.0.ffn.weight")
    assert decays("albert.embeddings.word_embeddings.weight")
    assert not decays("albert.encoder.groups.0.layers.0.ffn.bias")
    assert not decays("albert.encoder.groups.0.layers.0.attention.norm.weight")
    assert not decays("albert.embeddings.norm.weight")


# -- the loop --------------------------------------------------------------------------------


def _args(tmp_path, **fields) -> TrainingArgs:
    """Quiet run arguments writing to tmp_path/run."""
    return TrainingArgs(**{"output_dir": str(tmp_path / "run"), "progress": False, **fields})


def _trainer(data, tmp_path, **changes) -> Trainer:
    args = _args(tmp_path, **{"batch_size": 8, "learning_rate": 1e-3, **changes})
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    mx.random.seed(0)
    model = mlx_albert.load(TINY, "for_sequence_classification", num_labels=2, dropout_rate=0.0)
    train = build("sequence_classification", read_records(data["train"]), tok, 64, {"place": 0, "animal": 1})
    return Trainer(model, tok, args, train)


def test_accumulation_equals_one_big_batch(data, tmp_path):
    one = _trainer(data, tmp_path / "a", compile=True)
    two = _trainer(data, tmp_path / "b", compile=True)
    features = one.train_data.features[:8]
    from mlx_albert.training import collate

    full = collate(features, 0)
    halves = [collate(features[:4], 0), collate(features[4:], 0)]
    (_, g1), (_, g2) = two._grads(halves[0]), two._grads(halves[1])
    _, g = one._grads(full)
    g, g_acc = (
        dict(tree_flatten(g)),
        dict(tree_flatten(g1)),
    )
    g2 = dict(tree_flatten(g2))
    largest = max(mx.abs(v).max().item() for v in g.values())
    config = one.model.config
    # a forward and a backward pass over the batch in two halves: the same sums reordered
    tol = forward_tol(config, 64, scale=largest, passes=3)
    for k in g:  # the mean of the two halves' gradients is the full batch's gradient
        assert mx.abs((g_acc[k] + g2[k]) / 2 - g[k]).max().item() <= tol, k
    loss_full, _ = one._step([(full,)])
    loss_acc, _ = two._step([(h,) for h in halves])
    assert abs(loss_full - loss_acc) <= forward_tol(config, 64, scale=loss_full)
    a, b = dict(tree_flatten(one.model.parameters())), dict(tree_flatten(two.model.parameters()))
    clip = min(1.0, 1.0 / np.sqrt(sum(float((v * v).sum()) for v in g.values())))  # max_grad_norm 1
    for k in a:  # one AdamW step from gradients that differ by `tol` (clipped alike)
        bound = adam_tol([np.array(g[k]) * clip], [tol * clip], 1e-3) + 2 * EPS32 * np.abs(np.array(a[k]))
        assert (np.abs(np.array(a[k] - b[k])) <= bound).all(), k


def test_compiled_step_equals_eager(data, tmp_path):
    """Three steps: the compiled graph fuses and orders operations its own way, so each step's loss
    and gradients agree to rounding (forward_tol), and the weights as AdamW carries such gradient
    differences (adam_tol); later losses also move by the weights' differences (first order)."""
    compiled = _trainer(data, tmp_path / "c", compile=True)
    eager = _trainer(data, tmp_path / "e", compile=False)
    config = eager.model.config
    grads, errors, bound = [], [], {}
    for i in range(3):
        (batch,) = compiled._micro_batch(i)
        loss, g = eager._grads(batch)
        g = {k: np.array(v) for k, v in tree_flatten(g)}
        drift = sum(float((np.abs(g[k]) * bound[k]).sum()) for k in bound)  # dL from weights apart
        assert abs(compiled._step([(batch,)])[0] - eager._step([(batch,)])[0]) <= (
            forward_tol(config, 64, scale=loss.item()) + drift
        )
        clip = min(1.0, 1.0 / np.sqrt(sum(float((v * v).sum()) for v in g.values())))
        largest = max(np.abs(v).max() for v in g.values())
        grads.append({k: v * clip for k, v in g.items()})
        errors.append(forward_tol(config, 64, scale=largest, passes=3) * clip)
        bound = {k: adam_tol([s[k] for s in grads], errors, 1e-3) for k in g}
    a, b = dict(tree_flatten(compiled.model.parameters())), dict(tree_flatten(eager.model.parameters()))
    for k in a:
        assert (np.abs(np.array(a[k] - b[k])) <= bound[k] + 3 * EPS32 * np.abs(np.array(b[k]))).all(), k


@pytest.mark.slow
def test_fine_tuning_learns_a_separable_task(data, tmp_path):
    """Stated target: >= 95% held-out accuracy after 3 epochs (seconds on a CPU)."""
    args = _args(tmp_path, epochs=3, batch_size=16, learning_rate=1e-3, warmup_ratio=0.1)
    trainer, results = finetune(TINY, "sequence_classification", data["train"], data["dev"], args)
    assert results["accuracy"] >= 0.95 and results["macro_f1"] >= 0.95
    out = Path(args.output_dir)
    model = mlx_albert.load(out)  # the run folder is a checkpoint: weights, config, tokenizer
    assert model.config.id_to_label == {0: "animal", 1: "place"}
    from mlx_albert.tasks import text_classification

    tok = mlx_albert.AlbertTokenizer.from_pretrained(out)
    assert text_classification(model, tok, "dog cat bird")[0]["label"] == "animal"
    assert (out / "best" / "model.safetensors").exists() and (out / "log.jsonl").exists()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("eval_accuracy" in e for e in log) and all(math.isfinite(e.get("loss", 0)) for e in log)


@pytest.mark.slow
def test_pretraining_lowers_the_mlm_loss(tmp_path):
    """From random weights, 8 epochs on a small generated corpus cut the held-out MLM loss by a fifth."""
    from mlx_albert.training import read_documents, sop_dataset

    rng = random.Random(0)
    text = "\n\n".join(
        "\n".join(" ".join(["the", rng.choice(ANIMALS), "sees", "the", rng.choice(PLACES)]) for _ in range(4))
        for _ in range(40)
    )
    (tmp_path / "corpus.txt").write_text(text)
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    mx.random.seed(0)
    model = mlx_albert.AlbertForPreTraining(mlx_albert.load(TINY).config)
    documents = read_documents(tmp_path / "corpus.txt")
    train, held_out = sop_dataset(documents[:32], tok, 64), sop_dataset(documents[32:], tok, 64)
    args = _args(tmp_path, epochs=8, batch_size=8, learning_rate=3e-3, max_ngram=3)
    trainer = Trainer(model, tok, args, train, held_out)
    before = trainer.evaluate()
    after = trainer.train()
    assert after["loss"] < 0.8 * before["loss"] and after["perplexity"] < before["perplexity"]
    assert after["mlm_accuracy"] > before["mlm_accuracy"]


def test_lora_trains_few_weights_and_merges_exactly(data, tmp_path):
    args = _args(tmp_path, epochs=2, batch_size=16, learning_rate=5e-3, lora_rank=4)
    trainer, results = finetune(TINY, "sequence_classification", data["train"], data["dev"], args)
    trainable = sum(v.size for _, v in tree_flatten(trainer.model.trainable_parameters()))
    total = sum(v.size for _, v in tree_flatten(trainer.model.parameters()))
    assert trainable < 0.25 * total and results["accuracy"] > 0.5
    merged = mlx_albert.load(args.output_dir)
    assert not any("lora" in k for k, _ in tree_flatten(merged.parameters()))
    trainer.model.eval()
    ids = mlx_albert.AlbertTokenizer.from_pretrained(TINY)(
        ["cat dog", "sea hill lake"], padding=True, return_tensors="mlx"
    )
    want = merged(**ids).logits  # W + s A B merged, against x W + s (x A) B: the sums regrouped
    tol = forward_tol(merged.config, 16, scale=mx.abs(want).max().item())
    assert mx.abs(trainer.model(**ids).logits - want).max().item() <= tol


@pytest.mark.slow
def test_mixed_precision_keeps_float32_master_weights(data, tmp_path):
    trainer = _trainer(data, tmp_path, mixed_precision="bfloat16", max_steps=4)
    trainer.train()
    assert all(v.dtype == mx.float32 for _, v in tree_flatten(trainer.master))
    assert trainer.model.dtype == mx.bfloat16
    saved = mlx_albert.load(trainer.output_dir)
    assert saved.dtype == mx.float32
    for k, v in tree_flatten(trainer.master):
        assert mx.array_equal(dict(tree_flatten(saved.parameters()))[k], v), k


@needs_torch
def test_result_loads_in_transformers(data, tmp_path):
    import torch
    import transformers

    trainer = _trainer(data, tmp_path, max_steps=3)
    trainer.train()
    ref = transformers.AlbertForSequenceClassification.from_pretrained(trainer.output_dir).eval()
    ids = trainer.tokenizer(["cat dog", "sea"], padding=True, return_tensors="np")
    with torch.no_grad():
        theirs = ref(**{k: torch.tensor(v).long() for k, v in ids.items()}).logits.numpy()
    model = mlx_albert.load(trainer.output_dir)
    assert np.abs(np.array(model(**ids).logits) - theirs).max() < PARITY


# -- resume ----------------------------------------------------------------------------------


def _train_cli(data, out: Path, resume=False, env=None, extra=()) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "mlx_albert",
        "train",
        "--model",
        str(TINY),
        "--task",
        "sequence_classification",
        "--train",
        str(data["train"]),
        "--output-dir",
        str(out),
        "--max-steps",
        "16",
        "--batch-size",
        "8",
        "--save-steps",
        "5",
        "--learning-rate",
        "1e-3",
        "--no-progress",
        "--seed",
        "3",
    ]
    return subprocess.run(
        argv + (["--resume"] if resume else []) + list(extra),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        cwd=out.parent,
    )


def _weights(folder: Path) -> dict:
    return {k: np.array(v) for k, v in mx.load(str(folder / "model.safetensors")).items()}


@pytest.mark.slow
def test_resume_after_a_kill_ends_with_the_same_weights(data, tmp_path):
    straight = _train_cli(data, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _train_cli(data, tmp_path / "killed", env={"MLX_ALBERT_KILL_AT_STEP": "7"})
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-5"]
    other_seed = _train_cli(data, tmp_path / "killed", resume=True, extra=["--seed", "4"])
    assert other_seed.returncode == 1 and "resume with --seed 3" in other_seed.stderr
    resumed = _train_cli(data, tmp_path / "killed", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # bit for bit
    log = [json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == sorted({e["step"] for e in log})  # no step logged twice


@pytest.mark.slow
def test_a_half_written_checkpoint_is_never_picked(data, tmp_path):
    out = tmp_path / "run"
    died = _train_cli(data, out, env={"MLX_ALBERT_KILL_IN_SAVE": "10"})
    assert died.returncode == -9
    assert (out / "checkpoint-5").is_dir() and not (out / "checkpoint-10").exists()
    assert list(out.glob(".checkpoint-10.tmp-*"))  # the half-written one is there, under a temp name
    from mlx_albert.training import checkpoint

    assert checkpoint.latest(out).name == "checkpoint-5"
    resumed = _train_cli(data, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(out.glob(".*tmp*"))  # the dead writer's leftovers are cleaned
    assert _train_cli(data, tmp_path / "straight").returncode == 0
    a, b = _weights(tmp_path / "straight"), _weights(out)
    assert all(np.array_equal(a[k], b[k]) for k in a)


# -- data and metrics ------------------------------------------------------------------------


def test_qa_positions_point_at_the_answer(tmp_path):
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    context = "Maria lives in Paris near the river. " * 4 + "John lives in Rome."
    rows = [
        {
            "question": "Where does John live?",
            "context": context,
            "answers": {"text": ["Rome"], "answer_start": [context.index("Rome")]},
        }
    ]
    ds = build(
        "question_answering", read_records(write_jsonl(tmp_path / "qa.jsonl", rows)), tok, 48, doc_stride=8
    )
    assert len(ds) > 1  # several windows
    hits = [f for f in ds.features if f["start_positions"] > 0]
    assert hits and all(f["start_positions"] == f["end_positions"] == 0 for f in ds.features if f not in hits)
    for f in hits:
        encodings, _ = tok.encode(
            "Where does John live?",
            context,
            truncation="only_second",
            max_length=48,
            stride=8,
            return_overflowing_tokens=True,
        )
        window = next(e for e in encodings if e.ids == f["input_ids"])
        start, end = window.offsets[f["start_positions"]][0], window.offsets[f["end_positions"]][1]
        assert context[start:end].strip() == "Rome"


def test_mlm_masking_follows_bert_rules():
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, tok.vocab_size, (64, 128))
    special = np.zeros_like(ids, dtype=bool)
    special[:, 0] = special[:, -1] = True
    corrupted, labels = mask_tokens(ids, special, tok, rng)
    chosen = labels != -100
    assert abs(chosen.sum() / (~special).sum() - 0.15) < 0.01 and not chosen[special].any()
    assert np.array_equal(labels[chosen], ids[chosen])
    as_mask = (corrupted[chosen] == tok.mask_token_id).mean()
    kept = (corrupted[chosen] == ids[chosen]).mean()
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03
    assert np.array_equal(corrupted[~chosen], ids[~chosen])
    _, ngram_labels = mask_tokens(ids, special, tok, np.random.default_rng(1), max_ngram=3)
    runs = np.diff(
        np.flatnonzero(np.diff(np.concatenate([[0], (ngram_labels[0] != -100).astype(int), [0]])))
    )[::2]
    assert runs.max() >= 2  # whole n-grams are masked


@pytest.mark.parametrize("head", ["AlbertForPreTraining", "AlbertForMaskedLM"])
def test_masked_positions_give_the_full_loss_and_gradients(head):
    """Logits at the masked positions only (what the trainer runs): every labelled position is
    in masked_positions once, padding points at unlabelled ones, so the loss and its gradients equal
    those of full logits (to float32 rounding: summation order)."""
    from mlx_albert.training import masked_batch, read_documents, sop_dataset

    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    model = getattr(mlx_albert, head)(mlx_albert.load(TINY).config)
    docs = read_documents(Path(__file__).parent / "data" / "pydoc_heldout.txt")[:8]
    batch = masked_batch(
        sop_dataset(docs, tok, 64).features[:12], tok, 64, np.random.default_rng(0), 0.15, 3, True
    )
    if head == "AlbertForMaskedLM":
        del batch["sentence_order_label"]
    labels, positions = np.array(batch["labels"]), np.array(batch["masked_positions"])
    assert positions.shape == (12, round(batch["input_ids"].shape[1] * 0.15))
    for row, pos in zip(labels, positions, strict=True):  # each labelled position once, the rest unlabelled
        chosen = np.flatnonzero(row != -100)
        assert sorted(pos[: chosen.size]) == list(chosen) and (row[pos[chosen.size :]] == -100).all()
    full = {k: v for k, v in batch.items() if k != "masked_positions"}
    loss = lambda m, b: m(**b).loss  # noqa: E731
    (l1, g1), (l2, g2) = (nn.value_and_grad(model, loss)(model, b) for b in (full, batch))
    config, width = model.config, batch["input_ids"].shape[1]
    assert abs(l1.item() - l2.item()) <= forward_tol(config, width, scale=l1.item())
    pairs = list(zip(tree_flatten(g1), tree_flatten(g2), strict=True))
    largest = max(mx.abs(a).max().item() for (_, a), _ in pairs)
    tol = forward_tol(config, width, scale=largest, passes=3)  # a forward and a backward pass
    assert max(mx.abs(a - b).max().item() for (_, a), (_, b) in pairs) <= tol
    out = model(**batch)
    logits = out.prediction_logits if head == "AlbertForPreTraining" else out.logits
    assert logits.shape == (12, positions.shape[1], model.config.vocab_size)
    with pytest.raises(ValueError, match=r"masked_positions must lie in \[0, "):
        model(batch["input_ids"], masked_positions=positions + 1000)
    with pytest.raises(ValueError, match="masked_positions must be .batch, K. integers"):
        model(batch["input_ids"], masked_positions=positions[0])


def test_metrics_follow_their_references():
    gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    assert entity_scores(pred, gold) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}  # seqeval's README
    assert entity_scores([["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])["f1"] == 1.0  # IOB1 start
    scores = squad_scores(["the Eiffel Tower!", "Paris"], [["Eiffel tower"], ["in Paris France"]])
    # float64 arithmetic of a few operations each: within 16 float64 ulps of the values
    ulp64 = 16 * np.finfo(np.float64).eps
    assert scores["exact_match"] == 50.0 and abs(scores["f1"] - 100 * (1 + 0.5) / 2) <= ulp64 * 75
    assert abs(macro_f1([0, 0, 1, 2], [0, 1, 1, 2]) - (2 / 3 + 2 / 3 + 1) / 3) <= ulp64
    assert abs(spearman([1, 2, 2, 3], [10, 20, 20, 30]) - 1.0) <= ulp64
    assert abs(spearman([1, 2, 3, 4], [4, 3, 2, 1]) + 1.0) <= ulp64


# -- bad input -------------------------------------------------------------------------------


def test_bad_data_files_name_file_and_line(tmp_path):
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label"\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        read_records(bad)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="holds no examples"):
        read_records(tmp_path / "empty.jsonl")
    (tmp_path / "ragged.csv").write_text("text,label\nhello,x,extra\n")
    with pytest.raises(DataError, match=r"ragged.csv:2: has a different number of columns"):
        read_records(tmp_path / "ragged.csv")
    records = read_records(write_jsonl(tmp_path / "l.jsonl", [{"text": "a", "label": "zebra"}]))
    with pytest.raises(
        DataError, match=r"l.jsonl:1: label 'zebra' is not in the label set \['animal', 'place'\]"
    ):
        build("sequence_classification", records, tok, 32, {"animal": 0, "place": 1})
    records = read_records(write_jsonl(tmp_path / "m.jsonl", [{"txt": "a", "label": "x"}]))
    with pytest.raises(DataError, match=r"m.jsonl:1: missing field 'text'"):
        build("sequence_classification", records, tok, 32, {"x": 0})
    qa = [
        {
            "question": "q?",
            "context": "Maria lives in Paris.",
            "answers": {"text": ["Paris"], "answer_start": [3]},
        }
    ]
    with pytest.raises(DataError, match=r"qa.jsonl:1: answer 'Paris' is not at character 3"):
        build("question_answering", read_records(write_jsonl(tmp_path / "qa.jsonl", qa)), tok, 32)
    mc = [{"question": "q", "choices": ["a", "b"], "answer": "c"}]
    with pytest.raises(DataError, match=r"mc.jsonl:1: answer 'c' is not one of the choices"):
        build("multiple_choice", read_records(write_jsonl(tmp_path / "mc.jsonl", mc)), tok, 32)
    mc = [{"question": "q", "choices": ["a", "b"], "answer": "b"}]
    assert (
        build("multiple_choice", read_records(write_jsonl(tmp_path / "mc.jsonl", mc)), tok, 32).features[0][
            "labels"
        ]
        == 1
    )
    ner = [{"tokens": ["a", "b"], "tags": ["O"]}]
    with pytest.raises(DataError, match=r"ner.jsonl:1: 2 tokens but 1 tags"):
        build(
            "token_classification", read_records(write_jsonl(tmp_path / "ner.jsonl", ner)), tok, 32, {"O": 0}
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl")


def test_model_and_data_must_match(data, tmp_path):
    trainer = _trainer(data, tmp_path)
    with pytest.raises(
        ValueError, match="sequence_classification data needs an AlbertForSequenceClassification"
    ):
        Trainer(mlx_albert.load(TINY), trainer.tokenizer, trainer.args, trainer.train_data)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    trainer = _trainer(data, tmp_path, max_steps=6, save_steps=2)
    real = Trainer._step
    monkeypatch.setattr(
        Trainer, "_step", lambda self, b: (float("nan"), 0.0) if self.state["step"] == 4 else real(self, b)
    )
    with pytest.raises(
        TrainingError, match=r"the loss became nan at step 5: lower the learning rate .*checkpoint-4"
    ):
        trainer.train()
    assert (trainer.output_dir / "checkpoint-4" / "trainer_state.json").exists()
    assert not (trainer.output_dir / "checkpoint-6").exists()


def test_out_of_memory_gives_a_hint(data, tmp_path, monkeypatch):
    trainer = _trainer(data, tmp_path, max_steps=2)

    def oom(self, batches):
        raise RuntimeError("[malloc] Unable to allocate 123456789 bytes: out of memory")

    monkeypatch.setattr(Trainer, "_step", oom)
    with pytest.raises(
        TrainingError, match="out of memory at batch_size=8: lower --batch-size and raise --grad-accum"
    ):
        trainer.train()


def test_cli_train_errors_are_one_line(data, tmp_path, capsys):
    from mlx_albert.cli import main

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a"}])
    code = main(
        [
            "train",
            "--model",
            str(TINY),
            "--task",
            "sequence_classification",
            "--train",
            str(bad),
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "bad.jsonl:1: missing field 'label'" in err and "Traceback" not in err
    existing = tmp_path / "exists"
    (existing / "checkpoint-3").mkdir(parents=True)
    (existing / "checkpoint-3" / "trainer_state.json").write_text("{}")
    code = main(
        [
            "train",
            "--model",
            str(TINY),
            "--task",
            "sequence_classification",
            "--train",
            str(data["train"]),
            "--output-dir",
            str(existing),
        ]
    )
    assert code == 1 and "--resume" in capsys.readouterr().err


# -- every task from files -------------------------------------------------------------------

NAMES, CITIES, FILLER = (
    ["maria", "john", "ann"],
    ["paris", "rome", "york"],
    ["lives", "in", "near", "the", "river"],
)


def _task_files(root: Path, task: str, rng: random.Random) -> tuple[Path, Path]:
    def rows(n):
        out = []
        for _ in range(n):
            if task == "regression":
                k = rng.randint(0, 5)
                words = rng.sample(ANIMALS, k) + rng.sample(PLACES, 5 - k)
                rng.shuffle(words)
                out.append({"text": " ".join(words), "label": float(k)})
            elif task == "multi_label":
                labels = [t for t, pool in (("animal", ANIMALS), ("place", PLACES)) if rng.random() < 0.5]
                words = [w for t in labels for w in rng.sample(ANIMALS if t == "animal" else PLACES, 2)]
                out.append({"text": " ".join(words) or "the", "label": labels})
            elif task == "token_classification":  # CSV: space-separated cells
                tokens, tags = [], []
                for _ in range(rng.randint(3, 8)):
                    pool, tag = rng.choice(
                        [(NAMES, "B-PER"), (CITIES, "B-LOC"), (FILLER, "O"), (FILLER, "O")]
                    )
                    tokens.append(rng.choice(pool))
                    tags.append(tag)
                out.append({"tokens": " ".join(tokens), "tags": " ".join(tags)})
            elif task == "question_answering":
                name, city = rng.choice(NAMES), rng.choice(CITIES)
                context = f"{name} lives in {city} near the river."
                out.append(
                    {
                        "question": f"where does {name} live?",
                        "context": context,
                        "answer": city,
                        "answer_start": context.index(city),
                    }
                )
            else:  # multiple choice, CSV: "|"-separated choices
                name = rng.choice(NAMES)
                choices = ["person", "place"] if rng.random() < 0.5 else ["place", "person"]
                out.append(
                    {
                        "question": f"{name} is a",
                        "choices": "|".join(choices),
                        "label": choices.index("person"),
                    }
                )
        return out

    paths = []
    for split, n in (("train", 96), ("dev", 32)):
        data = rows(n)
        if task in ("token_classification", "multiple_choice"):
            import csv

            path = root / f"{task}_{split}.csv"
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(data[0]))
                writer.writeheader()
                writer.writerows(data)
        else:
            path = write_jsonl(root / f"{task}_{split}.jsonl", data)
        paths.append(path)
    return tuple(paths)


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, kind, metric, floor",
    [
        ("regression", "sequence_classification", "pearson", 0.5),
        ("multi_label", "sequence_classification", "accuracy", 0.6),
        ("token_classification", "token_classification", "f1", 0.5),
        ("question_answering", "question_answering", "f1", 50.0),
        ("multiple_choice", "multiple_choice", "accuracy", 0.7),
    ],
)
def test_every_task_trains_from_files(tmp_path, task, kind, metric, floor):
    train, dev = _task_files(tmp_path, task, random.Random(0))
    args = _args(tmp_path, epochs=6, batch_size=8, learning_rate=2e-3, warmup_ratio=0.1)
    trainer, results = finetune(TINY, kind, train, dev, args)
    assert results[metric] >= floor, results
    losses = [e["loss"] for e in trainer.state["log"] if "loss" in e]
    assert losses[-1] < losses[0]
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from mlx_albert.training.report import plot_losses

    curves = plot_losses(trainer.state["log"], tmp_path / "again.png")  # the eval metrics beside the losses
    assert curves[0] == "train loss" and metric in curves, curves
    model = mlx_albert.load(tmp_path / "run")
    if task == "regression":
        assert model.config.problem_type == "regression" and model.config.num_labels == 1
    if task == "multi_label":
        assert model.config.problem_type == "multi_label_classification"


# -- untrusted data, outputs and checkpoints -------------------------------------------------


def _small_vocab_model(folder: Path, vocab_size: int) -> Path:
    """A checkpoint whose embedding table is smaller than the tiny tokenizer's 101 tokens."""
    config = mlx_albert.load(TINY).config.replace(vocab_size=vocab_size)
    mlx_albert.AlbertForSequenceClassification(config).save_pretrained(folder)
    (folder / "spiece.model").write_bytes((TINY / "spiece.model").read_bytes())
    return folder


def test_token_ids_past_the_embedding_table_are_refused(data, tmp_path):
    folder = _small_vocab_model(tmp_path / "m", 50)
    with pytest.raises(ValueError, match="has 101 tokens but the model's vocab_size is 50"):
        mlx_albert.load(folder, return_tokenizer=True)
    with pytest.raises(ValueError, match="has 101 tokens but the model's vocab_size is 50"):
        finetune(folder, "sequence_classification", data["train"], None, _args(tmp_path))
    with pytest.raises(ValueError, match="has 101 tokens but the model's vocab_size is 50"):
        mlx_albert.pipeline(
            "embed", mlx_albert.load(folder), mlx_albert.AlbertTokenizer.from_pretrained(TINY)
        )
    # a dataset built elsewhere is checked once, on the host, before the compiled step reads it
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    train = build("sequence_classification", read_records(data["train"]), tok, 64, {"place": 0, "animal": 1})
    train.features[3]["input_ids"][1] = 50_000_000
    model = mlx_albert.load(TINY, "for_sequence_classification", num_labels=2)
    with pytest.raises(
        DataError, match="training example 3 holds token id 50000000 outside the model's vocabulary"
    ):
        Trainer(model, tok, _args(tmp_path), train)


@pytest.mark.parametrize(
    "labels, kind, names",
    [
        ([0.5, 5, 2.5], "regression", []),
        ([1, 2, 1], "single_label_classification", ["1", "2"]),
        ([[1, 0, 1], [0, 1, 0]], "multi_label_vectors", ["0", "1", "2"]),
        ([["a", "b"], ["c"]], "multi_label_classification", ["a", "b", "c"]),
    ],
)
def test_label_kinds_follow_explicit_rules(labels, kind, names):
    from mlx_albert.training import label_set

    records = [(f"f:{i}", {"text": "a", "label": v}) for i, v in enumerate(labels, 1)]
    assert label_set("sequence_classification", records) == (kind, names)


@pytest.mark.parametrize(
    "labels, message",
    [
        (["a", None], "f:2: label null is not"),
        (["a", {"x": 1}], 'f:2: label {"x": 1} is not'),
        (["a", True], "f:2: label true is not"),
        (["a", ["b"]], "f:2: mixes a list label with single labels"),
        (["pos", 1], "f:2: mixes label names and numbers"),
    ],
)
def test_labels_that_cannot_be_read_name_the_line(labels, message):
    from mlx_albert.training import label_set

    records = [(f"f:{i}", {"text": "a", "label": v}) for i, v in enumerate(labels, 1)]
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("{", r"\{")):
        label_set("sequence_classification", records)


def test_csv_regression_multi_label_vectors_and_choice_labels(tmp_path):
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    csv_file = tmp_path / "r.csv"
    csv_file.write_text("text,label\na b,0.5\nc d,5\ne f,2.5\n")
    from mlx_albert.training import label_set

    records = read_records(csv_file)
    assert label_set("sequence_classification", records) == ("regression", [])
    built = build("sequence_classification", records, tok, 32, problem_type="regression")
    assert [f["labels"] for f in built.features] == [0.5, 5.0, 2.5]
    rows = [{"text": "a", "label": [1, 0, 1]}, {"text": "b", "label": [0, 1, 0]}]
    built = build(
        "sequence_classification",
        read_records(write_jsonl(tmp_path / "v.jsonl", rows)),
        tok,
        32,
        {"x": 0, "y": 1, "z": 2},
        "multi_label_classification",
    )
    assert [f["labels"] for f in built.features] == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    for bad in (1.7, True, "one"):
        mc = [{"question": "q", "choices": ["a", "b"], "label": bad}]
        with pytest.raises(DataError, match=r"mc.jsonl:1: label .* should be the index \(an integer\)"):
            build("multiple_choice", read_records(write_jsonl(tmp_path / "mc.jsonl", mc)), tok, 32)


def test_malformed_records_name_file_and_line(tmp_path):
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    with pytest.raises(DataError, match=f"{latin}:2: not UTF-8 text"):
        read_records(latin)
    pair = write_jsonl(tmp_path / "pair.jsonl", [{"text": "a", "text_pair": 5, "label": "x"}])
    with pytest.raises(DataError, match=r"pair.jsonl:1: field 'text_pair' should be a str"):
        build("sequence_classification", read_records(pair), tok, 32, {"x": 0})
    tags = write_jsonl(tmp_path / "t.jsonl", [{"tokens": ["a", "b"], "tags": ["O", None]}])
    from mlx_albert.training import label_set

    with pytest.raises(DataError, match=r"t.jsonl:1: tags must be strings, got None"):
        label_set("token_classification", read_records(tags))
    corpus = tmp_path / "c.txt"
    corpus.write_text("one sentence here.\nanother one there.\n")
    with pytest.raises(ValueError, match="--max-length 3 is too short"):
        finetune(TINY, "pretraining", corpus, None, _args(tmp_path), max_length=3)


def test_one_run_at_a_time_writes_into_an_output_dir(data, tmp_path, capsys):
    """A second run into a folder another live process is training into is refused in one line
    naming its pid (the CLI, and Trainer.train past the CLI's checks); once that process is killed
    the kernel frees its lock, so the file it left (naming a dead pid) does not block the next run,
    and a finished run removes its lock."""
    from mlx_albert.cli import main
    from mlx_albert.files import FolderLock

    out = tmp_path / "run"
    out.mkdir()
    hold = "import sys, time\nfrom mlx_albert.files import FolderLock\n"
    hold += "assert FolderLock(sys.argv[1]).acquire() is None\nprint('held', flush=True)\ntime.sleep(60)"
    holder = subprocess.Popen(  # from tmp_path: the installed package, not the checkout
        [sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    argv = ["train", "--model", TINY, "--task", "sequence_classification", "--train", data["train"]]
    argv = [str(a) for a in [*argv, "--output-dir", out, "--max-steps", "2", "--no-progress"]]
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert (
            f"{out} is in use by another run (pid {holder.pid})" in err and len(err.strip().splitlines()) == 1
        )
        with pytest.raises(TrainingError, match=rf"in use by another run \(pid {holder.pid}\)"):
            _trainer(data, tmp_path, max_steps=2).train()
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written by the refused runs
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".lock").read_text().strip() == str(holder.pid)  # left behind by a killed process
    assert main(argv) == 0, capsys.readouterr().err
    assert not (out / ".lock").exists() and (out / "model.safetensors").is_file()
    lock = FolderLock(out)  # and the lock is free again
    assert lock.acquire() is None
    lock.release()


def test_outputs_never_replace_inputs(data, tmp_path, capsys):
    from mlx_albert.cli import main

    model = tmp_path / "model"
    mlx_albert.load(TINY).save_pretrained(model)
    (model / "spiece.model").write_bytes((TINY / "spiece.model").read_bytes())
    before = (model / "model.safetensors").read_bytes()
    base = ["train", "--model", str(TINY), "--task", "sequence_classification", "--train", str(data["train"])]
    code = main([*base, "--output-dir", str(model), "--max-steps", "1"])
    assert code == 1 and "already holds files" in capsys.readouterr().err
    code = main([*base[:2], str(model), *base[3:], "--output-dir", str(model), "--force", "--max-steps", "1"])
    assert code == 1 and "--output-dir" in capsys.readouterr().err
    assert (model / "model.safetensors").read_bytes() == before
    code = main(["convert", "--hf-path", str(model), "--mlx-path", str(tmp_path), "--force"])
    assert code == 1 and "would replace or delete the input" in capsys.readouterr().err
    assert (model / "model.safetensors").read_bytes() == before


def test_resume_skips_a_corrupt_newest_checkpoint(data, tmp_path, caplog):
    import logging

    trainer = _trainer(data, tmp_path, max_steps=4, save_steps=2)
    trainer.train()
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    (run / "checkpoint-4" / "weights.safetensors").write_bytes(b"")  # cut short by a crash
    again = _trainer(data, tmp_path, max_steps=6, save_steps=2, resume=True)
    with caplog.at_level(logging.WARNING):
        again.train()
    assert "checkpoint-4/weights.safetensors is unreadable" in caplog.text
    assert again.state["step"] == 6
    for name in ("checkpoint-4", "checkpoint-6"):
        (run / name / "trainer_state.json").write_text("{not json")
    third = _trainer(data, tmp_path, max_steps=8, save_steps=2, resume=True)
    with pytest.raises(
        ValueError, match=r"no checkpoint in .* can be read: .*checkpoint-6/trainer_state.json is unreadable"
    ):
        third.train()


def test_resume_refuses_another_run_naming_the_field(data, tmp_path, caplog):
    """A checkpoint records what its run's steps follow from; resuming with another batch size,
    LoRA setting, label set or data file is refused before any weight is read, naming the field and
    the flag that matches (never "unreadable", never silently not bit for bit)."""
    import logging

    from mlx_albert.training.checkpoint import ResumeMismatch

    _trainer(data, tmp_path, max_steps=2, save_steps=2).train()
    refused = {
        "batch_size": (dict(batch_size=4), "--batch-size 8"),
        "lora": (dict(lora_rank=4), "no LoRA"),
        "grad_accumulation": (dict(grad_accumulation=2), "--grad-accumulation 1"),
    }
    for name, (change, flag) in refused.items():
        with pytest.raises(
            ResumeMismatch, match=f"checkpoint-2 belongs to a run with another {name}: resume with {flag}"
        ):
            _trainer(data, tmp_path, max_steps=4, resume=True, **change).train()
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    other = {
        "labels": ({"place": 0, "animal": 1, "thing": 2}, data["train"], "training data with 2 labels"),
        "data": ({"place": 0, "animal": 1}, data["dev"], "the same --train file"),
    }
    for name, (labels, file, flag) in other.items():
        model = mlx_albert.load(TINY, "for_sequence_classification", num_labels=len(labels))
        train = build("sequence_classification", read_records(file), tok, 64, labels)
        with pytest.raises(ResumeMismatch, match=f"another {name}: resume with {flag}"):
            Trainer(model, tok, _args(tmp_path, batch_size=8, max_steps=4, resume=True), train).train()
    state_file = tmp_path / "run" / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state.pop("run")  # written before runs were recorded: world size and seed are checked only
    state_file.write_text(json.dumps(state))
    again = _trainer(data, tmp_path, max_steps=4, resume=True)
    again.train()
    assert again.state["step"] == 4 and again.state["run"]["batch_size"] == 8
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "a b", "label": "x"}] * 4)
    with caplog.at_level(logging.WARNING):
        finetune(TINY, "sequence_classification", one, None, _args(tmp_path / "one", max_steps=1))
    assert "the training data holds one label only (x)" in caplog.text


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(data, tmp_path, monkeypatch):
    import errno

    from mlx_albert.training import checkpoint

    trainer = _trainer(data, tmp_path, max_steps=2, save_steps=1)
    real = mx.save_safetensors
    calls = {"n": 0}

    def full(path, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (two files) fits; the second does not
            open(path, "wb").write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **k)

    monkeypatch.setattr(checkpoint.mx, "save_safetensors", full)
    with pytest.raises(OSError, match="no space left on the device while writing .*checkpoint-2"):
        trainer.train()
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint-1"]
    state, _ = checkpoint.load(run / "checkpoint-1", trainer.model, trainer.optimizer)
    assert state["step"] == 1


def test_progress_in_a_log_file_is_one_line_per_log_and_evaluations_are_printed(data, tmp_path, capsys):
    trainer = _trainer(data, tmp_path, max_steps=4, log_steps=2, progress=True)
    trainer.eval_data = trainer.train_data
    trainer.args.eval_steps = 2
    trainer.train()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert sum(line.startswith("step ") for line in lines) == 2
    assert sum(line.startswith("eval at step ") and "accuracy=" in line for line in lines) == 2


def test_half_precision_weights_train_as_float32_masters(data, tmp_path):
    """A float16 checkpoint (as shipped models are) fine-tunes from float32 weights; a Trainer handed
    half-precision weights without mixed_precision refuses them instead of losing every update."""
    half = tmp_path / "half"
    mlx_albert.load(TINY, dtype=mx.float16).save_pretrained(half)
    mlx_albert.AlbertTokenizer.from_pretrained(TINY).save_pretrained(half)
    args = _args(tmp_path, max_steps=3, batch_size=8, learning_rate=1e-3)
    trainer, _ = finetune(half, "sequence_classification", data["train"], None, args)
    assert trainer.model.dtype == mx.float32
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    # asked for float16 (loading alone computes a half-precision checkpoint in float32 on the CPU)
    model = mlx_albert.load(half, "for_sequence_classification", num_labels=2, dtype=mx.float16)
    train = build("sequence_classification", read_records(data["train"]), tok, 64, {"place": 0, "animal": 1})
    with pytest.raises(ValueError, match="weights are float16: .*dtype=mx.float32"):
        Trainer(model, tok, _args(tmp_path / "b"), train)
    Trainer(model, tok, _args(tmp_path / "c", mixed_precision="float16"), train)  # half compute: fine


def test_pretraining_metrics_count_top1_top5_and_the_baseline():
    """batch_stats/combine on hand-made logits: top-1 and top-5 hits, perplexity from the masked
    positions only, sentence order; evaluate_pretraining's constant-token baseline on a real model."""
    from types import SimpleNamespace

    from mlx_albert.tasks import Dataset, get

    task = get("pretraining")
    recipe = task.recipe

    logits = np.full((1, 3, 8), -10.0, np.float32)
    logits[0, 0, 2] = 5.0  # position 0: label 2 is top-1
    logits[0, 1, [0, 1, 3, 4, 5]] = [5, 4, 3, 2, 1]  # position 1: label 5 is 5th
    logits[0, 2, 7] = 5.0  # position 2: not predicted (-100)
    batch = {"labels": mx.array([[2, 5, -100]]), "sentence_order_label": mx.array([1])}
    out = SimpleNamespace(
        loss=mx.array(1.0), prediction_logits=mx.array(logits), sop_logits=mx.array([[0.0, 1.0]])
    )
    data = Dataset(task, [{"input_ids": [2, 9, 3]}])
    stats = recipe.batch_stats(None, data, [0], batch, out)
    assert (stats["hit"], stats["hit5"], stats["total"], stats["sop"]) == (1, 2, 2, 1)
    metrics = recipe.combine(None, data, [stats])
    assert metrics["mlm_accuracy"] == 0.5 and metrics["mlm_top5_accuracy"] == 1.0
    logp = logits[0, :2] - np.log(np.exp(logits[0, :2].astype(np.float64)).sum(-1, keepdims=True))
    # both in float64 from the same float32 logits (|values| <= 20): the log-probabilities agree to
    # a few float64 ulps of 20, which exp turns into that relative error of the perplexity
    want = math.exp(-(logp[0, 2] + logp[1, 5]) / 2)
    assert abs(metrics["perplexity"] - want) <= 64 * np.finfo(np.float64).eps * 20 * want

    from mlx_albert.training import evaluate_pretraining, read_documents, sop_dataset

    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    model = mlx_albert.AlbertForPreTraining(mlx_albert.load(TINY).config)
    path = Path(__file__).parent / "data" / "pydoc_heldout.txt"
    held_out = sop_dataset(read_documents(path)[:5], tok, 64)
    the = tok.convert_tokens_to_ids(["▁the"])[0]
    a = evaluate_pretraining(model, tok, held_out, seed=0, constant_token=the)
    b = evaluate_pretraining(model, tok, held_out, seed=0, constant_token=the)
    assert a == b and 0 < a["baseline_accuracy"] < 1 and a["masked_tokens"] > 0  # fixed masks
    assert a["mlm_top5_accuracy"] >= a["mlm_accuracy"]


def test_lora_adapters_save_alone_and_load_onto_the_base(data, tmp_path):
    """A LoRA run writes its adapters alone (adapters.safetensors + adapter_config.json, as mlx-lm):
    small, and loading them onto the base model gives the merged model's outputs; adapter_only
    writes nothing else. An adapter on the wrong base is refused by name."""
    args = _args(tmp_path, max_steps=4, batch_size=8, learning_rate=5e-3, lora_rank=4)
    finetune(TINY, "sequence_classification", data["train"], None, args)
    run = Path(args.output_dir)
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["lora_rank"] == 4 and config["architecture"] == "AlbertForSequenceClassification"
    assert config["base_model"] == str(TINY)
    assert (run / "adapters.safetensors").stat().st_size < 0.3 * (run / "model.safetensors").stat().st_size
    merged = mlx_albert.load(run)
    onto = mlx_albert.load(TINY, adapter_path=run)
    assert type(onto) is type(merged) and onto.config.id_to_label == merged.config.id_to_label
    ids = mlx_albert.AlbertTokenizer.from_pretrained(TINY)(
        ["cat dog", "sea"], padding=True, return_tensors="mlx"
    )
    want = merged(**ids).logits  # both merge W + s A B from the same float32 weights: the same arithmetic
    assert mx.array_equal(onto(**ids).logits, want)
    only = _args(tmp_path / "only", max_steps=2, batch_size=8, lora_rank=4, adapter_only=True)
    finetune(TINY, "sequence_classification", data["train"], None, only)
    names = {p.name for p in Path(only.output_dir).iterdir() if p.is_file()}
    assert {"adapters.safetensors", "adapter_config.json"} <= names and "model.safetensors" not in names
    other = tmp_path / "other"
    mlx_albert.AlbertModel(tiny_config(hidden_size=32)).save_pretrained(other)
    with pytest.raises(ValueError, match="adapters.safetensors does not fit"):
        mlx_albert.load(other, adapter_path=run)
    with pytest.raises(ValueError, match="adapter_only needs lora_rank"):
        _trainer(data, tmp_path / "x", adapter_only=True)


_HUGE = {  # (task, a record whose one field is ~8 MB, the same record cut to its first words)
    "sequence_classification": (
        {"text": "the cat " * 1_000_000, "label": "a"},
        {"text": "the cat " * 200, "label": "a"},
    ),
    "sequence_classification_pair": (
        {"text": "a mat", "text_pair": "the cat " * 1_000_000, "label": "a"},
        {"text": "a mat", "text_pair": "the cat " * 200, "label": "a"},
    ),
    "multiple_choice": (
        {"question": "the cat " * 1_000_000, "choices": ["a", "x"], "label": 0},
        {"question": "the cat " * 200, "choices": ["a", "x"], "label": 0},
    ),
    "token_classification": (
        {"tokens": ["the"] * 1_000_000, "tags": ["O"] * 1_000_000},
        {"tokens": ["the"] * 200, "tags": ["O"] * 200},
    ),
}


@pytest.mark.parametrize("case", sorted(_HUGE))
def test_a_huge_record_is_cut_before_it_is_tokenised(case, tmp_path):
    """An ~8 MB field trains on what truncation keeps of it, and tokenising it costs what its first
    words cost: the same features as the record cut short, at a bounded peak (measured in a child
    process; tokenising 8 MB whole takes seconds and over a GB)."""
    task = case.removesuffix("_pair")
    huge, short = _HUGE[case]
    files = [write_jsonl(tmp_path / f"{n}.jsonl", [r]) for n, r in (("huge", huge), ("short", short))]
    code = f"""{PEAK_KB}
import json
from mlx_albert import AlbertTokenizer
from mlx_albert.records import read_records
from mlx_albert.training.data import build
tok = AlbertTokenizer.from_pretrained({str(TINY)!r})
labels = {{"a": 0, "O": 0}}
a, b = (build({task!r}, read_records(f), tok, 64, labels).features for f in {[str(f) for f in files]!r})
equal = json.dumps(a, default=list) == json.dumps(b, default=list)
print(json.dumps([equal, peak_kb()]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    equal, peak_kb = json.loads(done.stdout)
    assert equal
    assert peak_kb < 600_000, f"peak {peak_kb // 1024} MB"  # the 8 MB field is read once or twice


def test_pretraining_cuts_long_sentences_and_a_record_past_the_bound_names_its_line(tmp_path):
    """A sentence is cut to what a pair of max_length tokens can hold of it (clip_text) before it is
    tokenised; a line past the records' bound is refused with file:line, having read only the bound."""
    from mlx_albert.batching import clip_text
    from mlx_albert.records import MAX_RECORD
    from mlx_albert.tasks import get

    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    sentence = "the cat " * 1_000_000
    long, cut = tmp_path / "long.txt", tmp_path / "cut.txt"
    long.write_text(f"a cat sat.\n{sentence}\nthe end.\n")
    cut.write_text(f"a cat sat.\n{clip_text(sentence, 64)}\nthe end.\n")
    assert len(cut.read_text()) < 2000
    read = get("pretraining").recipe.read
    features = [build("pretraining", read(p), tok, 64, seed=1).features for p in (long, cut)]
    assert features[0] == features[1]
    too_big = tmp_path / "big.jsonl"
    too_big.write_text('{"text": "ok", "label": "a"}\n{"text": "' + "x" * MAX_RECORD + '", "label": "a"}\n')
    with pytest.raises(DataError, match=rf"big.jsonl:2: a line of over {MAX_RECORD} bytes"):
        read_records(too_big)
