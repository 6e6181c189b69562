"""Training checkpoints: weights, optimiser state, step and config in one folder, written to a
temporary folder and renamed into place, so a checkpoint either exists whole or not at all. (Random
numbers need no saving: the trainer reseeds from (seed, step) before every step.)"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ..checks import finite, integer_in
from ..files import clean_stale, read_json, staged_folder
from ..pretrained import check_finite
from ..text import escape
from ..weights import read_safetensors

logger = logging.getLogger(__name__)
PATTERN = re.compile(r"^checkpoint-(\d+)$")
DONE = "trainer_state.json"  # written last: its presence marks a complete checkpoint


def save(
    output_dir: Path, step: int, model: nn.Module, optimizer, state: dict, extra_weights: dict | None = None
) -> Path:
    """Writes output_dir/checkpoint-{step} atomically (fsynced, then one rename); returns its path.
    On any error, a full disk included, the partial folder is removed and earlier checkpoints stay."""
    final = output_dir / f"checkpoint-{step}"
    with staged_folder(final) as tmp:  # replaces a same-step checkpoint of an interrupted run
        weights = dict(tree_flatten(model.parameters()))
        weights.update(extra_weights or {})
        mx.save_safetensors(str(tmp / "weights.safetensors"), weights)
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        (tmp / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2))
        kill_point("MLX_ALBERT_KILL_IN_SAVE", step)  # test hook: die with a half-written checkpoint
        (tmp / DONE).write_text(json.dumps({**state, "step": step}, indent=2))
    return final


def kill_point(variable: str, step: int, rank: int = 0) -> None:
    """Test hook: with the variable set to this step (or "step@rank" for one rank of a distributed
    run), the process kills itself (SIGKILL: no cleanup)."""
    if os.environ.get(variable) in (str(step), f"{step}@{rank}"):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def latest(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step (half-written ones are never picked)."""
    if not output_dir.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if (m := PATTERN.match(p.name)) and (p / DONE).is_file()
    ]
    return max(found)[1] if found else None


def complete(output_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if (m := PATTERN.match(p.name)) and (p / DONE).is_file()
    ]
    return [p for _, p in sorted(found)]


def read_state(path: Path) -> dict:
    """A checkpoint's trainer_state.json (a bounded read); ValueError naming it when unreadable."""
    try:
        state = read_json(path / DONE, "trainer state")
        if not isinstance(state, dict):
            raise ValueError("not an object")
        _check_state(state, path)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path / DONE} is unreadable ({escape(str(e))[:160]})") from None
    return state


def _check_state(state: dict, path: Path) -> None:
    """The fields resume trusts: the step is the folder's own, the best metric a finite number."""
    m = PATTERN.match(path.name)
    step = state.get("step")
    if not integer_in(step, 0) or (m and step != int(m[1])):
        raise ValueError(
            f"field step is {str(step)[:30]}, not the step {m[1] if m else '>= 0'} its folder names"
        )
    best, best_step = state.get("best_metric"), state.get("best_step")
    if best is not None and (not finite(best)):
        raise ValueError(f"field best_metric is {str(best)[:30]}, not a finite number")
    if best_step is not None and (not integer_in(best_step, 1, step)):
        raise ValueError(f"field best_step is {str(best_step)[:30]}, not a step of this run up to {step}")
    if not isinstance(state.get("log", []), list):
        raise ValueError("field log is not a list")


def load(path: Path, model: nn.Module, optimizer, state: dict | None = None) -> tuple[dict, dict]:
    """Restores weights and optimiser state; returns (trainer state, extra weights). A checkpoint
    whose files are empty, truncated or corrupt raises a ValueError naming the file."""
    state = read_state(path) if state is None else state  # (resume has read it already)
    current = path / "weights.safetensors"
    try:
        weights = read_safetensors(current)
        own = dict(tree_flatten(model.parameters()))
        extra = {k: v for k, v in weights.items() if k not in own}
        model.load_weights([(k, v) for k, v in weights.items() if k in own], strict=True)
        current = path / "optimizer.safetensors"
        moments = read_safetensors(current)
    except (ValueError, RuntimeError, OSError) as e:
        raise ValueError(f"{current} is unreadable ({escape(str(e))[:120]})") from None
    try:
        check_finite(moments, str(current))
    except ValueError:
        raise ValueError(
            f"{current} is unreadable (it holds NaN or infinity: no state to resume from)"
        ) from None
    optimizer.state = tree_unflatten(list(moments.items()))
    return state, extra


def prune(output_dir: Path, keep: int) -> None:
    """Deletes all but the `keep` newest complete checkpoints, and leftovers of interrupted saves."""
    for p in output_dir.glob(".tmp-checkpoint-*"):  # the layout of earlier versions
        shutil.rmtree(p, ignore_errors=True)
    clean_stale(output_dir / "checkpoint-", any_suffix=True)
    if keep < 1:
        return
    done = sorted(
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if (m := PATTERN.match(p.name)) and (p / DONE).is_file()
    )
    for _, p in done[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def resume(output_dir: Path, model: nn.Module, optimizer, now: dict) -> tuple[Path, tuple[dict, dict]] | None:
    """(path, (state, extra weights)) of the newest checkpoint that loads, restored into the model
    and optimiser; a corrupt newer one is skipped with a warning (a crash or a full disk cut it
    short). None when there is none. A checkpoint of a different run (`now`: see check_resumable)
    is refused before its weights are read."""
    problems = []
    for path in reversed(complete(output_dir)):
        try:
            state = read_state(path)
            check_resumable(path, state, now)
            return path, load(path, model, optimizer, state)
        except ResumeMismatch:
            raise
        except ValueError as e:
            problems.append(str(e))
            logger.warning("%s; resuming from an earlier checkpoint", e)
    if problems:
        raise ValueError(f"no checkpoint in {output_dir} can be read: {'; '.join(problems)}")
    return None


def fingerprint(args, config, data, steps: dict | None = None) -> dict:
    """What a run's steps follow from besides seed and world size: a checkpoint resumes bit for
    bit only into a run with the same (check_resumable)."""
    digest = hashlib.sha256()
    for f in data.features:
        digest.update(json.dumps(f, sort_keys=True, default=_plain).encode())
    return {
        "task": data.task.training,
        "data": digest.hexdigest(),
        "labels": {str(k): v for k, v in config.id_to_label.items()} or config.num_labels,
        "batch_size": args.batch_size,
        "grad_accumulation": args.grad_accumulation,
        "lora": [args.lora_rank, args.lora_alpha, args.lora_dropout] if args.lora_rank else None,
        "mixed_precision": args.mixed_precision,
        **({"steps": steps} if steps else {}),
    }


def _plain(value):
    """JSON for what features hold besides ints and lists (numpy arrays and scalars)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


class ResumeMismatch(ValueError):
    """The checkpoint belongs to a run that differs from this one in what training follows from."""


# What a run's steps follow from, beyond world size and seed: (field, how to resume with it).
_RUN_FIELDS = {  # the data last: other changes (labels, max length) change its features too
    "task": lambda v: f"--task {v}",
    "labels": lambda v: (
        f"training data with {v} labels"
        if isinstance(v, int)
        else f"training data with the labels {escape(str(list(v.values())))[:200]}"
    ),
    "lora": lambda v: "--lora-rank {} --lora-alpha {} --lora-dropout {}".format(*v) if v else "no LoRA",
    "batch_size": lambda v: f"--batch-size {v}",
    "grad_accumulation": lambda v: f"--grad-accumulation {v}",
    "mixed_precision": lambda v: f"--mixed-precision {v}" if v else "no --mixed-precision",
    "data": lambda v: "the same --train file, --max-length and tokenizer (its features differ)",
}


def schedule_change(path: Path, state: dict, now: dict) -> str | None:
    """What a resumed run changes in the learning-rate schedule (another --epochs, --max-steps,
    --schedule, --learning-rate or warm-up), said with the flags that would keep it; None if nothing."""
    then, steps = (state.get("run") or {}).get("steps"), now["run"].get("steps")
    if not isinstance(then, dict) or then == steps:
        return None
    try:
        keep = (
            f"--max-steps {int(then['total'])} --schedule {escape(str(then['schedule']))[:20]} "
            f"--learning-rate {float(then['learning_rate'])} --warmup-steps {int(then['warmup'])}"
        )
    except (KeyError, TypeError, ValueError):
        keep = "the run's own flags"
    return (
        f"{path} was trained on a learning-rate schedule of {escape(str(then))[:200]}; it continues on "
        f"this run's {steps} (the rate jumps to where the new schedule is at step {state['step']}): to "
        f"keep the old one, resume with {keep}"
    )


def check_resumable(path: Path, state: dict, now: dict) -> None:
    """Refuses to resume a checkpoint whose run differs from this one in what the rest of the run
    follows from (world size: data shards; seed: data order, masks and dropout; `now["run"]`: the
    task, data, labels, batch, LoRA and precision), naming the field and the flag that matches.
    Checkpoints written before runs were recorded are checked for world size and seed only."""
    if state.get("world_size", 1) != now["world_size"]:
        raise ResumeMismatch(
            f"{path} was trained on {state.get('world_size', 1)} process(es), this run has "
            f"{now['world_size']}: resume with the same number (data shards and batches follow it)"
        )
    if state.get("seed", now["seed"]) != now["seed"]:
        raise ResumeMismatch(
            f"{path} was trained with seed {state['seed']}: resume with --seed {state['seed']} "
            "(data order, masks and dropout follow it)"
        )
    then = state.get("run")
    if not isinstance(then, dict):
        return
    for name, flag in _RUN_FIELDS.items():
        if name in then and then[name] != now["run"].get(name):
            raise ResumeMismatch(
                f"{path} belongs to a run with another {name}: resume with {flag(then[name])}, or "
                "train into a new --output-dir"
            )
