"""Training curves: the loss of every epoch and the scores of every evaluation, as one PNG."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

__all__ = ["plot_training_curves", "loss_keys"]

_NOT_LOSSES = {"loss", "lr", "epoch", "train_seconds", "images_per_second", "prepare_seconds"}


def loss_keys(history: Sequence[Dict]) -> List[str]:
    """The named losses recorded in a history (``loss_id``, ``loss_triplet``, ...), in first-seen order."""
    keys: List[str] = []
    for entry in history:
        for key in entry:
            if key.startswith("loss_") and key not in keys:
                keys.append(key)
    return keys


def plot_training_curves(history: Sequence[Dict], out_path: str, title: str = "") -> str:
    """Left: total and named losses per epoch; middle: mAP and rank-1 (%) per evaluation, epoch 0
    included; right, for clustering algorithms: clusters, outliers and the pseudo labels' agreement
    with the true identities per epoch."""
    from pyreid.evaluation.visualize import pyplot

    plt = pyplot()
    clustered = [h for h in history if "num_clusters" in h]
    fig, axes = plt.subplots(1, 3 if clustered else 2, figsize=(16 if clustered else 11, 4.6), dpi=100)
    ax_loss, ax_score = axes[0], axes[1]
    try:
        if clustered:
            _plot_pseudo_labels(axes[2], clustered)
        trained = [h for h in history if "loss" in h]
        if trained:
            epochs = [h["epoch"] for h in trained]
            ax_loss.plot(epochs, [h["loss"] for h in trained], marker="o", markersize=3, label="total", color="k")
            for key in loss_keys(trained):
                ax_loss.plot(epochs, [h.get(key, float("nan")) for h in trained], marker=".", label=key[5:])
            _legend_below(ax_loss)
        from matplotlib.ticker import MaxNLocator

        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("training loss (epoch mean)")
        ax_loss.grid(True, alpha=0.3)
        evaluated = [h for h in history if "mAP" in h]
        if evaluated:
            epochs = [h["epoch"] for h in evaluated]
            for key, label in (("mAP", "mAP"), ("rank1", "rank-1")):
                ax_score.plot(epochs, [100 * h[key] for h in evaluated], marker="o", markersize=3, label=label)
            last = evaluated[-1]
            ax_score.set_title(f"epoch {last['epoch']}: mAP {100 * last['mAP']:.1f}%, "
                               f"rank-1 {100 * last['rank1']:.1f}%", fontsize=10)
            _legend_below(ax_score)
        ax_score.set_xlabel("epoch")
        ax_score.set_ylabel("%")
        ax_score.set_ylim(0, 100)
        ax_score.grid(True, alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        folder = os.path.dirname(os.fspath(out_path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig.savefig(out_path, format="png")
    finally:
        plt.close(fig)
    return str(out_path)


def _legend_below(ax, lines=None, labels=None) -> None:
    """The legend under the axes (below the x label), never over the curves."""
    if lines is None:
        lines, labels = ax.get_legend_handles_labels()
    ax.legend(lines, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(len(labels), 4), fontsize=8,
              frameon=False)


def _plot_pseudo_labels(ax, history: Sequence[Dict]) -> None:
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["num_clusters"] for h in history], marker="o", markersize=3, color="k", label="clusters")
    ax.plot(epochs, [h["num_outliers"] for h in history], marker="x", markersize=3, color="grey", label="outliers")
    ax.set_xlabel("epoch")
    ax.set_ylabel("count")
    ax.grid(True, alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    if any("ari" in h for h in history):
        quality = ax.twinx()
        for key, style in (("ari", "-"), ("nmi", "--"), ("precision", ":"), ("recall", "-.")):
            quality.plot(epochs, [h.get(key, float("nan")) for h in history], style, label=key)
        quality.set_ylim(0, 1)
        quality.set_ylabel("agreement with true identities")
        more, more_labels = quality.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    _legend_below(ax, lines, labels)
    ax.set_title("pseudo labels", fontsize=10)
