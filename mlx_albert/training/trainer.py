"""The training loop: compiled steps (value_and_grad + clipping + AdamW), gradient accumulation,
mixed precision with float32 master weights, evaluation, atomic checkpoints with bit-for-bit
resume, best-model keeping, a JSONL log and a loss plot. It knows no task: the loss, the batches,
the evaluation and how a model folder is written are callables, by default the data's task's
recipe (tasks/recipe.py), as mlx-lm's trainer takes `loss=` and `iterate_batches=`."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map

from ..files import FolderLock, clean_stale, in_use, staged_folder
from ..lora import apply_lora
from ..tasks import Dataset
from . import checkpoint
from .args import TrainingArgs
from .data import batch_order
from .distributed import DataParallel
from .final import save_into_run, write_model
from .optim import adamw, clip_by_global_norm, schedule
from .report import Progress, append_log, plot_losses, rewrite_log

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, memory): the message says why and what to do."""


class Trainer:
    """Fine-tunes (or pre-trains) `model` on a Dataset; see `train`.

    Args:
        loss: loss(model, *batch) -> the scalar to minimise, where batch is what iterate_batches
            yields (under `mlx.launch`: this rank's contribution, summed over ranks). Default: the
            recipe's mean loss (one process) or its share-scaled loss (several ranks).
        iterate_batches: iterate_batches(start) -> (batch, tokens) pairs from micro-batch number
            `start` on (epochs laid end to end; the same for the same seed, which resume relies on).
            Default: the recipe's collated batches of train_data in length-bucketed order.
        evaluate: evaluate(data) -> metrics (JSON-able; rank 0's are every rank's). Default: the
            recipe's units, stats and combine, shared over ranks.
        write: write(folder, trainer) stages a model folder (best/ and the final model). Default:
            transformers' layout with the tokenizer (training/final.py).
        metric: default metric when args.metric is unset (default: the recipe's).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        args: TrainingArgs,
        train_data: Dataset,
        eval_data=None,
        base_model: str | None = None,
        *,
        loss=None,
        iterate_batches=None,
        evaluate=None,
        write=None,
        metric: str | None = None,
    ):
        self.model, self.tokenizer, self.args = model, tokenizer, args
        self.base_model = base_model  # what LoRA adapters are loaded onto (named in adapter_config.json)
        self.train_data, self.eval_data = train_data, eval_data
        self.recipe = getattr(train_data.task, "recipe", None)  # the defaults of every callable
        self._check(model, args, train_data, eval_data, custom=loss is not None)
        self.metric = args.metric or metric or self.recipe.default_metric(model.config)
        self.output_dir = Path(args.output_dir)
        self._lock = FolderLock(self.output_dir)  # one run at a time writes there; rank 0 holds it
        self.lengths = train_data.lengths()
        self.token_counts = train_data.token_counts()  # for tokens/s without reading the device
        self.batches_per_epoch = math.ceil(len(train_data) / args.batch_size)
        self.steps_per_epoch = max(1, self.batches_per_epoch // args.grad_accumulation)
        self.total_steps = args.max_steps or max(1, math.ceil(args.epochs * self.steps_per_epoch))
        self.dp = DataParallel()  # one process unless launched with mlx.launch
        self.loss = loss or (self.recipe.scaled_loss if self.dp.active else self.recipe.loss)
        self.iterate_batches = iterate_batches or self._recipe_batches
        self._evaluate = evaluate or self._recipe_evaluate
        self._write = write or _write_model
        if args.batch_size % self.dp.world:
            raise ValueError(
                f"--batch-size {args.batch_size} is the global batch: it must divide among the "
                f"{self.dp.world} ranks"
            )
        mx.random.seed(args.seed)  # LoRA adapters are initialised from it: the same on every rank
        if args.lora_rank:
            n = apply_lora(model, args.lora_rank, args.lora_alpha, args.lora_dropout)
            logger.info("LoRA rank %d: %d trainable parameters", args.lora_rank, n)
        self.compute_dtype = self._compute_dtype(model, args)
        warmup = (
            args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * self.total_steps)
        )
        warmup = min(warmup, self.total_steps)
        self.steps = {  # what the learning-rate schedule is built for: a resumed run must keep them
            "total": self.total_steps, "warmup": warmup, "schedule": args.schedule,
            "learning_rate": args.learning_rate,
        }  # fmt: skip
        self.optimizer = adamw(
            schedule(args.schedule, args.learning_rate, warmup, self.total_steps),
            args.weight_decay,
            (args.adam_beta1, args.adam_beta2),
            args.adam_epsilon,
        )
        self.master = None
        if self.compute_dtype is not None:
            self.master = tree_map(lambda p: p.astype(mx.float32), model.trainable_parameters())
            model.set_dtype(self.compute_dtype)
        self.optimizer.init(self.master if self.master is not None else model.trainable_parameters())
        if self.dp.active:  # dropout masks differ by rank (rank 0 draws as one process does)
            mx.random.seed(args.seed + 1_000_003 * self.dp.rank)
        self._build_steps()
        self.state = {"step": 0, "seed": args.seed, "best_metric": None, "best_step": None, "log": []}
        self.progress = Progress(args.progress and self.dp.rank == 0, self.total_steps)

    def _check(self, model, args: TrainingArgs, train_data: Dataset, eval_data, custom: bool) -> None:
        """The run's pieces fit: sizes, the model's head (for the recipe's loss), the data's task,
        every token id (the compiled step runs without the model's input checks: each id is checked
        once, here)."""
        from ..heads import ARCHITECTURES

        if len(train_data) == 0:
            raise ValueError("the training set is empty")
        if args.batch_size < 1 or args.grad_accumulation < 1:
            raise ValueError("batch_size and grad_accumulation must be >= 1")
        if args.adapter_only and not args.lora_rank:
            raise ValueError("adapter_only needs lora_rank > 0: without LoRA there is no adapter to save")
        task = train_data.task
        expected = None if custom else ARCHITECTURES.get(getattr(task, "architecture", None))
        if expected is not None and type(model) is not expected:
            raise ValueError(f"{task.training} data needs an {expected.__name__}, got {type(model).__name__}")
        if eval_data is not None and eval_data.task is not task:
            raise ValueError(
                f"evaluation data is for {_name(eval_data.task)}, training data for {_name(task)}"
            )
        for name, data in (("training", train_data), ("evaluation", eval_data)):
            if data is not None:
                data.check_ids(model.config, name)

    @staticmethod
    def _compute_dtype(model, args: TrainingArgs):
        """The half-precision compute dtype of mixed precision (None: float32); half-precision
        weights without it are refused (AdamW's updates would be lost to rounding)."""
        half = {v.dtype for _, v in tree_flatten(model.trainable_parameters())} & {mx.float16, mx.bfloat16}
        if half and not args.mixed_precision:
            name = str(half.pop()).removeprefix("mlx.core.")
            raise ValueError(
                f"the model's weights are {name}: AdamW updates on half-precision weights are lost to "
                "rounding or overflow; load the model in float32 (mlx_albert.load(..., dtype=mx.float32)) "
                "and set mixed_precision for half-precision compute"
            )
        if not args.mixed_precision:
            return None
        if args.mixed_precision not in ("bfloat16", "float16"):
            raise ValueError(f"mixed_precision must be bfloat16 or float16, got {args.mixed_precision!r}")
        if mx.default_device() == mx.cpu:
            logger.warning("mixed precision on the CPU backend is slower than float32 (no fast half kernels)")
        return getattr(mx, args.mixed_precision)

    # -- the compiled pieces ------------------------------------------------------------------
    def _build_steps(self):
        model, optimizer, args = self.model, self.optimizer, self.args
        # a loss may bring its own value_and_grad (GradCache's two passes): it runs eagerly
        own = getattr(self.loss, "value_and_grad", None)
        loss_and_grad = own or nn.value_and_grad(model, self.loss)

        def grads(*batch):
            return loss_and_grad(model, *batch)

        if self.master is None:  # update the model's own (float32) weights

            def update(grads):
                grads, norm = clip_by_global_norm(grads, args.max_grad_norm)
                optimizer.update(model, grads)
                return norm

            def fused(batch):
                loss, g = grads(*batch)
                return loss, update(g)

        else:  # mixed precision: half-precision grads update the float32 master weights

            def update(grads, master):
                grads = tree_map(lambda g: g.astype(mx.float32), grads)
                grads, norm = clip_by_global_norm(grads, args.max_grad_norm)
                return norm, optimizer.apply_gradients(grads, master)

            def fused(batch, master):
                loss, g = grads(*batch)
                return (loss, *update(g, master))

        if args.compile:
            state = [model.state, optimizer.state, mx.random.state]
            update = mx.compile(
                update, inputs=[model.state, optimizer.state], outputs=[model.state, optimizer.state]
            )
            if own is None:
                # value_and_grad swaps the model's arrays while tracing: they are outputs too.
                grads = mx.compile(
                    grads, inputs=[model.state, mx.random.state], outputs=[model.state, mx.random.state]
                )
                fused = mx.compile(fused, inputs=state, outputs=state)
        self._grads, self._update, self._fused = grads, update, fused

    def _set_master(self, master):
        self.master = master
        self.model.update(tree_map(lambda p: p.astype(self.compute_dtype), master))

    def _step(self, batches: list[tuple]) -> tuple[float, float]:
        """One optimiser step over grad_accumulation micro-batches (each the loss's arguments after
        the model): (mean loss, gradient norm)."""
        master = () if self.master is None else (self.master,)
        if len(batches) == 1 and not self.dp.active:
            loss, *rest = self._fused(batches[0], *master)
        else:
            total, acc = 0.0, None
            for batch in batches:
                loss, g = self._grads(*batch)
                acc = g if acc is None else tree_map(mx.add, acc, g)
                total = total + loss
            grads, loss = tree_map(lambda g: g / len(batches), acc), total / len(batches)
            if self.dp.active:
                grads, loss = self.dp.all_sum(grads, loss)
            rest = self._update(grads, *master)
            rest = [rest] if self.master is None else rest
        norm = rest[0]
        if self.master is not None:
            self._set_master(rest[1])
        mx.eval(loss, norm, self.model.parameters(), self.optimizer.state)
        return loss.item(), norm.item()

    # -- data -----------------------------------------------------------------------------------
    def _rows(self, index: int) -> tuple[int, int, np.ndarray]:
        """(epoch, position, example rows) of micro-batch `index` (epochs laid end to end)."""
        epoch, position = divmod(index, self.batches_per_epoch)
        if getattr(self, "_order_epoch", None) != epoch:
            self._order = batch_order(self.lengths, self.args.batch_size, self.args.seed, epoch)
            self._order_epoch = epoch
        return epoch, position, self._order[position]

    def _recipe_batches(self, start: int):
        """The recipe's micro-batches from number `start` on, as (loss arguments, tokens): this
        rank's rows and their loss shares under `mlx.launch`; deterministic in the seed."""
        index = start
        while True:
            epoch, position, rows = self._rows(index)
            features = [self.train_data.features[i] for i in rows]
            batch = self._collate(features, rng=np.random.default_rng([self.args.seed, epoch, position]))
            args = self.dp.shard(batch, self.recipe) if self.dp.active else (batch,)
            yield args, int(self.token_counts[rows].sum())  # tokens counted host-side
            index += 1

    def _micro_batch(self, index: int) -> tuple:
        """The loss's arguments for micro-batch number `index`."""
        return next(self.iterate_batches(index))[0]

    def _collate(self, features, rng) -> dict:
        return self.recipe.collate(features, self.tokenizer, self.model.config.max_positions, rng, self.args)

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> dict:
        """Runs to total_steps (resuming from the newest checkpoint when args.resume); returns the
        final metrics. The final model (LoRA merged) is saved to output_dir with the tokenizer."""
        try:
            self._start()
            return self._run()
        finally:
            self._lock.release()

    def _run(self) -> dict:
        main = self.dp.rank == 0
        self.model.train()
        first, start, self._tokens, self._losses = self.state["step"], time.perf_counter(), 0, []
        for step in range(first + 1, self.total_steps + 1):
            self._train_step(step)
            self.state["step"] = step
            checkpoint.kill_point("MLX_ALBERT_KILL_AT_STEP", step, self.dp.rank)  # test hook
            if step % self.args.log_steps == 0 or step == self.total_steps:
                self._log_step(step, first, time.perf_counter() - start)
            self._after_step(step, main)
        self.progress.end()
        results = self.evaluate() if self.eval_data is not None else {}
        if main:
            save_into_run(self.output_dir, self._write_model)
            plot_losses(self.state["log"], self.output_dir / "loss.png")
        self.dp.barrier()  # the final model is on disk before any rank returns
        return results

    def _start(self) -> None:
        """The output folder made ready (rank 0), and the newest readable checkpoint restored with
        --resume; a folder holding an earlier run's checkpoints is refused without it."""
        out = self.output_dir
        holder = self.dp.from_rank0(self._lock_output)
        if holder is not None:
            raise TrainingError(in_use(out, holder))
        if self.dp.rank == 0:  # only rank 0 writes: checkpoints, logs, plots and the final model
            checkpoint.prune(out, 0)  # leftovers of saves that died half-way
            for name in ("best", "final"):
                clean_stale(out / name)
        self.dp.barrier()
        self.state["world_size"] = self.dp.world
        run = checkpoint.fingerprint(self.args, self.model.config, self.train_data, self.steps)
        self.state["run"] = run
        now = {"world_size": self.dp.world, "seed": self.args.seed, "run": run}
        found = checkpoint.resume(out, self.model, self.optimizer, now) if self.args.resume else None
        if found is not None:
            last, (self.state, extra) = found
            if (change := checkpoint.schedule_change(last, self.state, now)) is not None:
                logger.warning(change)
            if self.state["step"] > self.total_steps:  # a shorter run than the checkpoint's step
                raise ValueError(
                    f"{last} is at step {self.state['step']}, past this run's {self.total_steps} steps: "
                    f"resume with --max-steps {self.state['step']} or more, or train into a new --output-dir"
                )
            self.state["run"] = run  # a checkpoint from before runs were recorded gets this one
            if self.master is not None:
                self._set_master(_unflatten_master(extra))
            self._build_steps()  # the compiled steps captured the optimiser state objects just replaced
            logger.info("resumed from %s (step %d)", last, self.state["step"])
        elif self.args.resume:
            logger.info("no checkpoint in %s: starting from scratch", out)
        elif checkpoint.latest(out) is not None:
            raise ValueError(
                f"{out} holds checkpoints of an earlier run: resume it (--resume) or pick another output_dir"
            )
        if self.dp.rank == 0:
            rewrite_log(out / "log.jsonl", self.state["log"])

    def _lock_output(self) -> int | None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return self._lock.acquire()

    def _train_step(self, step: int) -> None:
        """Optimiser step `step` (1-based) over its micro-batches; a non-finite loss or memory stops
        the run with what to do."""
        args = self.args
        start = (step - 1) * args.grad_accumulation
        if getattr(self, "_next_batch", None) != start:  # the first step of this call, or a resume
            self._batches = self.iterate_batches(start)
        pairs = [next(self._batches) for _ in range(args.grad_accumulation)]
        self._next_batch = start + args.grad_accumulation
        try:
            loss, self._norm = self._step([batch for batch, _ in pairs])
        except (RuntimeError, MemoryError) as e:
            if isinstance(e, MemoryError) or any(w in str(e).lower() for w in ("memory", "allocate")):
                raise TrainingError(
                    f"out of memory at batch_size={args.batch_size}: lower --batch-size and raise "
                    f"--grad-accumulation to keep the effective batch ({e})"
                ) from None
            raise
        if not math.isfinite(loss):
            last = checkpoint.latest(self.output_dir)
            raise TrainingError(
                f"the loss became {loss} at step {step}: lower the learning rate ({args.learning_rate}) or "
                "enable clipping (--max-grad-norm); "
                + (f"the last good checkpoint is {last}" if last else "no checkpoint was written")
            )
        self._losses.append(loss)
        self._tokens += sum(tokens for _, tokens in pairs)

    def _log_step(self, step: int, first: int, elapsed: float) -> None:
        entry = {
            "step": step,
            "epoch": round(step / self.steps_per_epoch, 4),
            "loss": float(np.mean(self._losses)),
            "learning_rate": float(self.optimizer.learning_rate),
            "grad_norm": self._norm,
            "tokens_per_second": self._tokens / max(elapsed, 1e-9),
            "world_size": self.dp.world,
        }
        if self.dp.active:
            entry["allreduce_bytes_per_step"] = self.dp.bytes_per_step(self.model.trainable_parameters())
        self._log(entry)
        self._losses = []
        self.progress.step(step, first, elapsed, self.state["log"][-1])

    def _after_step(self, step: int, main: bool) -> None:
        """Evaluation (keeping the best model) and checkpoints, every N steps or at each epoch's end."""
        args = self.args
        end_of_epoch = step % self.steps_per_epoch == 0 or step == self.total_steps
        if self.eval_data is not None and (
            (args.eval_steps and step % args.eval_steps == 0) or (not args.eval_steps and end_of_epoch)
        ):
            self._evaluate_and_keep_best(step)
        if main and (
            (args.save_steps and step % args.save_steps == 0) or (not args.save_steps and end_of_epoch)
        ):
            self._save_checkpoint(step)

    def _save_checkpoint(self, step: int) -> None:
        extra = {f"master.{k}": v for k, v in tree_flatten(self.master)} if self.master is not None else None
        checkpoint.save(self.output_dir, step, self.model, self.optimizer, self.state, extra)
        checkpoint.prune(self.output_dir, self.args.save_total_limit)

    def _evaluate_and_keep_best(self, step: int) -> None:
        metrics = self.evaluate()
        self._log({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}, "world_size": self.dp.world})
        self.progress.evaluation(step, metrics)
        value, best = metrics.get(self.metric), self.state["best_metric"]
        if value is None:
            raise ValueError(f"metric {self.metric!r} is not computed for this task; have {sorted(metrics)}")
        better = best is None or (value > best if self.args.greater_is_better else value < best)
        if better:
            self.state["best_metric"], self.state["best_step"] = value, step
            if self.dp.rank == 0:
                with staged_folder(self.output_dir / "best") as tmp:  # swapped in whole
                    self._write_model(tmp)

    def _write_model(self, folder: Path) -> None:
        self._write(folder, self)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, data: Dataset | None = None) -> dict:
        """The metrics on `data` (default: the eval set), with dropout off."""
        data = data or self.eval_data
        was_training = self.model.training
        self.model.eval()
        try:
            return self._evaluate(data)
        finally:
            self.model.train(was_training)

    def _recipe_evaluate(self, data: Dataset) -> dict:
        """The recipe's metrics: its evaluation units shared over ranks, combined on rank 0."""
        model, recipe = self.model, self.recipe
        units, chunk = recipe.eval_units(data, self.args.eval_batch_size)

        def run(part: list) -> list:
            return recipe.eval_run(model, self.tokenizer, data, part, self._collate, self.args.seed)

        stats = self.dp.map(run, units, chunk)
        return self.dp.from_rank0(lambda: recipe.combine(model.config, data, stats))

    # -- logging --------------------------------------------------------------------------------
    def _log(self, entry: dict) -> None:
        self.state["log"].append(entry)
        if self.dp.rank == 0:
            append_log(self.output_dir / "log.jsonl", entry)


def _unflatten_master(extra: dict):
    from mlx.utils import tree_unflatten

    return tree_unflatten(
        [(k.removeprefix("master."), v) for k, v in extra.items() if k.startswith("master.")]
    )


def _write_model(folder: Path, trainer: Trainer) -> None:
    write_model(folder, trainer.model, trainer.tokenizer, trainer.args, trainer.master, trainer.base_model)


def _name(task) -> str:
    return getattr(task, "training", None) or str(task)
