"""The sweep's summary for its parent MLflow run: a CSV of every trial and a plot of quality against settings."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [row for row in rows if not math.isnan(row["best_fid_domain"])]
    return min(scored, key=lambda row: row["best_fid_domain"]) if scored else None


def write_plot(rows: list[dict[str, Any]], path: Path, searched: tuple[str, ...] = ()) -> Path:
    """fid_domain (best per trial) against learning rate (log axis), latent size and each --search field, coloured
    by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"completed": "tab:green", "stopped early": "tab:orange", "diverged": "tab:red", "failed": "tab:red"}
    axes_keys = {"lr": "learning rate", "latent_dim": "latent size (nz)", **{key: key for key in searched}}
    figure, axes = plt.subplots(1, len(axes_keys), figsize=(5 * len(axes_keys), 4), sharey=True, squeeze=False)
    scored = [row for row in rows if not math.isnan(row["best_fid_domain"])]
    for axis, (key, label) in zip(axes[0], axes_keys.items()):
        for row in scored:
            # Non-numeric settings (e.g. bf16=True) are categories on their axis.
            x = row[key] if isinstance(row[key], (int, float)) and not isinstance(row[key], bool) else str(row[key])
            axis.scatter(x, row["best_fid_domain"], color=colours.get(row["status"], "tab:gray"), s=50)
        axis.set(xlabel=label)
    axes[0][0].set_xscale("log")
    axes[0][0].set(ylabel="best quality/fid_domain (lower is better)")
    for status, colour in colours.items():
        axes[0][-1].scatter([], [], color=colour, label=status)
    axes[0][-1].legend(loc="best", fontsize=8)
    figure.suptitle("Sweep: quality against " + ", ".join(axes_keys.values()))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
