"""Quality against compute, as a picture: fid_domain / its floor, precision and recall of every quality measurement of
each setting in the given bench/quality_table.py results, against kimg (top row) and wall minutes on this machine
(bottom row). The dashed lines are the targets of issue #27 (2.5x the floor; precision and recall 0.85).

    .venv/bin/python bench/quality_curves.py docs/quality/curves.json --out docs/quality/curves.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("× floor (fid_domain / floor, log)",
           lambda p: p["quality/fid_domain"] / p["quality/fid_domain_floor"], 2.5),
          ("precision", lambda p: p["quality/precision"], 0.85),
          ("recall", lambda p: p["quality/recall"], 0.85))
AXES = (("kimg", "thousands of training images"), ("minutes", "wall minutes, whole job, 2 CPU cores"))


def plot(rows: list[dict], out: Path, labels: dict[str, str]) -> None:
    figure, grid = plt.subplots(len(AXES), len(PANELS), figsize=(15, 10), squeeze=False)
    for row_axes, (x_key, x_label) in zip(grid, AXES):
        for axes, (y_label, value, target) in zip(row_axes, PANELS):
            for index, row in enumerate(rows):  # tab20: a colour of its own for each of up to 20 settings
                points = row["history"]
                axes.plot([p[x_key] for p in points], [value(p) for p in points], marker="o", markersize=3,
                          color=plt.get_cmap("tab20")(index % 20),
                          label=row.get("label") or labels.get(row["setting"], row["setting"]))
            axes.axhline(target, color="grey", linestyle="--", linewidth=1)
            axes.set_xlabel(x_label)
            axes.set_ylabel(y_label)
            axes.grid(alpha=0.3)
            if PANELS[0][0] == y_label:
                axes.set_yscale("log")
    figure.legend(*grid[0][0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=9)
    figure.tight_layout(rect=(0, 0.04 + 0.022 * ((len(rows) + 2) // 3), 1, 1))
    figure.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="JSON files written by bench/quality_table.py")
    parser.add_argument("--out", type=Path, default=Path("docs/quality/curves.png"))
    args = parser.parse_args()
    from quality_table import SETTINGS  # noqa: PLC0415  (beside this file)

    rows = [{**row, "file": path.stem} for path in args.results for row in json.loads(path.read_text())["rows"]
            if "history" in row]
    if not rows:
        raise SystemExit("no row with a measurement history: re-run bench/quality_table.py on the current code")
    settings = [row["setting"] for row in rows]
    for row in rows:  # one setting over several files (seeds, weights): each curve is named by its file's tag
        if settings.count(row["setting"]) > 1:
            row.setdefault("label", row["file"])
    plot(rows, args.out, {name: text for name, (text, _) in SETTINGS.items()})
    print(f"{len(rows)} curves -> {args.out}")


if __name__ == "__main__":
    main()
