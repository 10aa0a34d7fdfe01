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


def write_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """fid_domain (best per trial) against learning rate (log axis) and against latent size, coloured by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"completed": "tab:green", "stopped early": "tab:orange", "diverged": "tab:red", "failed": "tab:red"}
    figure, (by_lr, by_latent) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for row in rows:
        if math.isnan(row["best_fid_domain"]):
            continue
        colour = colours.get(row["status"], "tab:gray")
        by_lr.scatter(row["lr"], row["best_fid_domain"], color=colour, s=50)
        by_latent.scatter(row["latent_dim"], row["best_fid_domain"], color=colour, s=50)
    by_lr.set_xscale("log")
    by_lr.set(xlabel="learning rate", ylabel="best quality/fid_domain (lower is better)")
    by_latent.set(xlabel="latent size (nz)")
    for status, colour in colours.items():
        by_latent.scatter([], [], color=colour, label=status)
    by_latent.legend(loc="best", fontsize=8)
    figure.suptitle("Sweep: quality against learning rate and latent size")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
