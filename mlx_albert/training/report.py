"""What a run reports: its log.jsonl, a progress line on stderr and the loss curve (loss.png,
needs matplotlib: the [plot] extra)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ..files import atomic_write

logger = logging.getLogger(__name__)


# eval metrics left out of the metric panel: the loss has its own, perplexity is exp(loss)
_NOT_METRICS = {"eval_loss", "eval_perplexity"}


def plot_losses(log: list[dict], path: Path) -> list[str]:
    """Training and evaluation loss per step and, beside them, every evaluation metric (accuracy,
    F1, ...) per step, written atomically as a PNG. Returns the curves' labels ([] without
    matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("pip install matplotlib (the [plot] extra) for a loss plot")
        return []
    evals = [e for e in log if any(k.startswith("eval_") for k in e)]
    metrics = sorted({k for e in evals for k in e if k.startswith("eval_")} - _NOT_METRICS)
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 4), squeeze=False)
    losses, panel = axes[0][0], axes[0][-1]
    entries = [e for e in log if "loss" in e]
    losses.plot([e["step"] for e in entries], [e["loss"] for e in entries], label="train loss")
    labels = ["train loss"]
    if any("eval_loss" in e for e in evals):
        points = [e for e in evals if "eval_loss" in e]
        losses.plot([e["step"] for e in points], [e["eval_loss"] for e in points], "o-", label="eval loss")
        labels.append("eval loss")
    losses.set(xlabel="step", ylabel="loss")
    losses.legend()
    for name in metrics:
        points = [e for e in evals if isinstance(e.get(name), int | float)]
        label = name.removeprefix("eval_")
        panel.plot([e["step"] for e in points], [e[name] for e in points], "o-", label=label)
        labels.append(label)
    if metrics:
        panel.set(xlabel="step", ylabel="evaluation metric")
        panel.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(str(tmp), format="png", dpi=100))
    plt.close(fig)
    return labels


def append_log(path: Path, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def rewrite_log(path: Path, entries: list[dict]) -> None:
    """log.jsonl holds exactly `entries` (a resume drops the lines of steps it redoes)."""
    lines = "".join(json.dumps(e) + "\n" for e in entries)
    atomic_write(path, lambda tmp: Path(tmp).write_text(lines))


class Progress:
    """A progress line on stderr every log: redrawn in place on a terminal, one line each in a log
    file (no carriage returns piling up); each evaluation's metrics on a line of their own."""

    def __init__(self, enabled: bool, total_steps: int):
        self.enabled, self.total_steps = enabled, total_steps
        self.open = False  # a line redrawn in place, not yet ended

    def step(self, step: int, first: int, elapsed: float, last: dict) -> None:
        if not self.enabled:
            return
        eta = elapsed / max(step - first, 1) * (self.total_steps - step)
        line = (
            f"step {step}/{self.total_steps} | loss {last['loss']:.4f} | lr {last['learning_rate']:.2e} | "
            f"{last['tokens_per_second']:.0f} tok/s | ETA {int(eta // 60)}:{int(eta % 60):02d}"
        )
        if sys.stderr.isatty():
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
            self.open = True
        else:
            print(line, file=sys.stderr, flush=True)

    def evaluation(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self.end()
        shown = "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        print(f"eval at step {step}: {shown}", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.open:
            print(file=sys.stderr)
            self.open = False
