"""What a run reports: its log.jsonl, a progress line on stderr and the loss curve (loss.png,
needs matplotlib: the [plot] extra)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from ..files import atomic_write

logger = logging.getLogger(__name__)


def plot_losses(log: list[dict], path: Path) -> None:
    """Training loss per logged step, and evaluation loss where evaluated, written atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("pip install matplotlib (the [plot] extra) for a loss plot")
        return
    entries = [e for e in log if "loss" in e]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e["step"] for e in entries], [e["loss"] for e in entries], label="train loss")
    evals = [e for e in log if "eval_loss" in e]
    if evals:
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(str(tmp), format="png", dpi=100))
    plt.close(fig)


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
