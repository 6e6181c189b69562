"""Training checkpoints: weights, optimiser state, step and config in one folder, written to a
temporary folder and renamed into place, so a checkpoint either exists whole or not at all. (Random
numbers need no saving: the trainer reseeds from (seed, step) before every step.)"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ..files import clean_stale, staged_folder

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


def load(path: Path, model: nn.Module, optimizer) -> tuple[dict, dict]:
    """Restores weights and optimiser state; returns (trainer state, extra weights). A checkpoint
    whose files are empty, truncated or corrupt raises a ValueError naming the file."""
    current = path / DONE
    try:
        state = json.loads(current.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no step")
        current = path / "weights.safetensors"
        weights = mx.load(str(current))
        own = dict(tree_flatten(model.parameters()))
        extra = {k: v for k, v in weights.items() if k not in own}
        model.load_weights([(k, v) for k, v in weights.items() if k in own], strict=True)
        current = path / "optimizer.safetensors"
        optimizer.state = tree_unflatten(list(mx.load(str(current)).items()))
    except (ValueError, RuntimeError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{current} is unreadable ({str(e)[:120]})") from None
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


def resume(output_dir: Path, model: nn.Module, optimizer) -> tuple[Path, tuple[dict, dict]] | None:
    """(path, (state, extra weights)) of the newest checkpoint that loads, restored into the model
    and optimiser; a corrupt newer one is skipped with a warning (a crash or a full disk cut it
    short). None when there is none."""
    problems = []
    for path in reversed(complete(output_dir)):
        try:
            return path, load(path, model, optimizer)
        except ValueError as e:
            problems.append(str(e))
            logger.warning("%s; resuming from an earlier checkpoint", e)
    if problems:
        raise ValueError(f"no checkpoint in {output_dir} can be read: {'; '.join(problems)}")
    return None


def check_resumable(path: Path, state: dict, now: dict) -> None:
    """Refuses to resume a checkpoint whose run differs from this one in what the rest of the run
    follows from (world size: data shards; seed: data order, masks, dropout)."""
    if state.get("world_size", 1) != now["world_size"]:
        raise ValueError(
            f"{path} was trained on {state.get('world_size', 1)} process(es), this run has "
            f"{now['world_size']}: resume with the same number (data shards and batches follow it)"
        )
    if state.get("seed", now["seed"]) != now["seed"]:
        raise ValueError(
            f"{path} was trained with seed {state['seed']}: resume with --seed {state['seed']} "
            "(data order, masks and dropout follow it)"
        )
