"""The loss curve of a run (loss.png), from its log entries; needs matplotlib (the [plot] extra)."""

from __future__ import annotations

import logging
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
