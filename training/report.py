"""metrics.json and the training-curve PNG."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from training.train import History, TrainConfig

VERSIONED = (
    "tensorflow-cpu",
    "transformers",
    "tokenizers",
    "keras",
    "tf-keras",
    "numpy",
    "scikit-learn",
)
LEAKY_NOTE = (
    "LEAKY: trained with the validation file's tweet_ids (every one of them is also in the training "
    "file), then scored on the validation file. This measures memory, not skill; it is here only "
    "to compare with figures published elsewhere."
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def build_metrics(
    config: TrainConfig,
    history: History,
    test: dict[str, Any] | None,
    dev: dict[str, Any],
    data: dict[str, Any],
    leaky: dict[str, Any] | None,
    wall_time: float,
) -> dict[str, Any]:
    return {
        "labels": list(config.labels),
        "protocol": "clean" if test is not None else "clean, dev only (test not scored)",
        "test": test,
        "dev": dev,
        "leaky": leaky,
        "best_epoch": history.best_epoch,
        "epochs": history.epochs,
        "soup_members": history.members,  # empty unless config.soup > 1
        "config": asdict(config),
        "seed": config.seed,
        "data": data,
        "versions": versions(),
        "wall_time_seconds": round(wall_time, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    path.write_text(json.dumps(metrics, indent=2) + "\n")


def write_run(
    out: Path, metrics: dict[str, Any], history: History, baseline: dict[str, Any] | None
) -> None:
    """metrics.json (with the TF-IDF baseline, when one was scored) and curve.png."""
    if baseline is not None:
        metrics["baselines"] = {"tfidf_svm": baseline}
    write_metrics(out / "metrics.json", metrics)
    plot_curve(out / "curve.png", history)


def plot_curve(path: Path, history: History) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    losses = np.asarray(history.step_loss)
    window = max(1, min(50, len(losses) // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid") if len(losses) else losses
    left.plot(losses, alpha=0.25, label="train loss (step)")
    left.plot(np.arange(len(smooth)) + window - 1, smooth, label=f"train loss ({window}-step mean)")
    left.set_xlabel("step")
    left.set_ylabel("cross-entropy")
    left.legend()
    epochs = sorted({e["epoch"] for e in history.epochs})
    if history.members:  # a soup: one dev curve per member
        for member in history.members:
            run = [e for e in history.epochs if e["member_seed"] == member["seed"]]
            right.plot(
                [e["epoch"] for e in run],
                [e["dev_macro_f1"] for e in run],
                "s--",
                label=f"dev macro-F1, seed {member['seed']}",
            )
    else:
        right.plot(epochs, [e["dev_accuracy"] for e in history.epochs], "o-", label="dev accuracy")
        right.plot(epochs, [e["dev_macro_f1"] for e in history.epochs], "s--", label="dev macro-F1")
        right.axvline(history.best_epoch, color="grey", linestyle=":", label="chosen epoch")
    right.set_xlabel("epoch")
    right.set_xticks(epochs)
    right.legend()
    fig.suptitle("Fine-tuning (model choice on dev only)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
