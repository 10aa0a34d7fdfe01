"""What each stabiliser buys: the default data and schedule trained once per setting, side by side in one run.

Settings: baseline DCGAN, +EMA, +DiffAugment (translation, cutout), +both. Each row is the real training job (Ray Train,
2 DDP workers, MLflow) and reports the final EMA-or-raw generator's fid_domain against its real-vs-real floor at the
same sample count, KID and its floor, precision, recall, the memorisation share and the wall time; one sample grid
per row is written beside the table.

    .venv/bin/python bench/quality_table.py                                     # all of MNIST, ~6 min a row
    .venv/bin/python bench/quality_table.py --shards data/mnist-5k --settings ema,both --tag subset-5k

The Markdown table goes to stdout and to OUT/<tag>.md; the raw numbers to OUT/<tag>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient
from PIL import Image

from gan.config import TrainConfig, parse
from gan.run.launch import prepare, run
from gan.tracking.registry import LOGGED_MODEL_NAME
from gan.tracking.sampling import load, sample_picture

# Explicit, so a rerun means the same whatever the default: since 2026-12-04 labelled sets train class-conditional
# unless --no-conditional, so every setting below not named conditional pins the unconditional networks.
AUGMENT = ["--no-conditional", "--diffaugment", "translation,cutout"]
NO_AUGMENT = ["--no-conditional", "--diffaugment", ""]
OLD_DEFAULT = [*NO_AUGMENT, "--lr", "2e-4"]
SETTINGS = {  # name -> (what it is, flags)
    "default": ("the default flags (conditional on labelled sets, lr 1.6e-3, mode seeking 0.75 since cb3e845)", []),
    "baseline": ("DCGAN (Radford et al. 2015)", ["--ema-half-life-kimg", "0", *NO_AUGMENT]),
    "ema": ("+ EMA of G", NO_AUGMENT),
    "diffaugment": ("+ DiffAugment", ["--ema-half-life-kimg", "0", *AUGMENT]),
    "both": ("+ EMA + DiffAugment", AUGMENT),
    # Candidates for the default (docs/quality.md, "Quality against compute"): each is the default of 2026-12-02
    # (EMA, lr 2e-4: OLD_DEFAULT, pinned so a rerun means the same) with one change. Width 64 costs ~3x per image,
    # so it gets a shorter run of about the same wall time.
    "lr2": ("lr 2e-4, DCGAN's (the default until 2026-12-03)", OLD_DEFAULT),
    "lr4": ("lr 4e-4 for G and D", [*NO_AUGMENT, "--lr", "4e-4"]),
    "lr8": ("lr 8e-4 for G and D", [*NO_AUGMENT, "--lr", "8e-4"]),
    "lr16": ("lr 1.6e-3 for G and D", [*NO_AUGMENT, "--lr", "1.6e-3"]),
    "lr32": ("lr 3.2e-3 for G and D (the best of the MNIST sweep in docs/sweeps.md)", [*NO_AUGMENT, "--lr", "3.2e-3"]),
    "width64": ("width 64 (the DCGAN paper's)", [*OLD_DEFAULT, "--g-features", "64", "--d-features", "64",
                                                  "--kimg", "40"]),
    "batch64": ("batch 64 per worker", [*OLD_DEFAULT, "--batch-size", "64"]),
    "batch16": ("batch 16 per worker", [*OLD_DEFAULT, "--batch-size", "16"]),
    "ttur": ("TTUR: lr 1e-4 G, 4e-4 D (Heusel et al. 2017)", [*NO_AUGMENT, "--lr", "1e-4", "--lr-d", "4e-4"]),
    "ttur_d": ("TTUR: lr 2e-4 G, 4e-4 D", [*OLD_DEFAULT, "--lr-d", "4e-4"]),
    "ema2": ("EMA half-life 2 kimg", [*OLD_DEFAULT, "--ema-half-life-kimg", "2"]),
    "conditional": ("class-conditional (Miyato & Koyama 2018)", [*OLD_DEFAULT, "--conditional"]),
    "conditional8": ("class-conditional at lr 8e-4", [*NO_AUGMENT, "--lr", "8e-4", "--conditional"]),
    "conditional16": ("class-conditional at lr 1.6e-3", [*NO_AUGMENT, "--lr", "1.6e-3", "--conditional"]),
    "hinge_sn": ("hinge loss + spectral norm in D (Miyato et al. 2018)", [*OLD_DEFAULT, "--loss", "hinge",
                                                                            "--d-norm", "spectral"]),
    "r1": ("lazy R1, gamma 0.01 (StyleGAN2-ADA's CIFAR-10 value)", [*OLD_DEFAULT, "--r1-gamma", "0.01"]),
}
COLUMNS = ("quality/fid_domain", "quality/fid_domain_floor", "quality/kid", "quality/kid_floor", "quality/precision",
           "quality/recall", "quality/memorised_share", "quality/memorised_share_floor", "quality_raw/fid_domain",
           "quality_ema/fid_domain")
CONDITIONAL_COLUMNS = ("quality/class_match", "quality/class_match_floor")  # --conditional runs only
HISTORY = ("quality/fid_domain", "quality/fid_domain_floor", "quality/precision", "quality/recall")


def train_row(name: str, shards: str, work: Path, extra: list[str]) -> dict:
    flags = SETTINGS[name][1]
    config = parse(TrainConfig, ["--shards", shards, "--storage-path", str(work / "ray"), "--run-name", name,
                                 "--tracking-uri", f"sqlite:///{work / 'mlruns.db'}", "--artifact-root",
                                 str(work / "mlartifacts"), "--experiment", "quality-table", *flags, *extra]).resolved()
    start, started_at = time.perf_counter(), time.time()
    run(config, prepare(config))
    seconds = time.perf_counter() - start
    client = MlflowClient(config.tracking_uri)
    (found,) = client.search_runs([client.get_experiment_by_name("quality-table").experiment_id],
                                  filter_string=f"tags.`ray.run_name` = '{name}'")
    row = {"setting": name, "seconds": seconds, "kimg": found.data.metrics["kimg"],
           **{key: found.data.metrics[key] for key in COLUMNS + CONDITIONAL_COLUMNS if key in found.data.metrics}}
    row["history"] = measurements(client, found.info.run_id, config.batch_size * config.num_workers, started_at)
    final = load(f"runs:/{found.info.run_id}/{LOGGED_MODEL_NAME}", config.tracking_uri)  # the newest: the last
    row["grid"] = sample_picture(final, 64, seed=1)  # a conditional generator's: a row per class
    return row


def measurements(client: MlflowClient, run_id: str, images_per_step: int, started_at: float) -> list[dict]:
    """Every quality measurement of the run: its kimg, the wall minutes since the job started (Ray's start, data
    checks and the earlier measurements included) and the HISTORY metrics."""
    series = {key: {point.step: point for point in client.get_metric_history(run_id, key)} for key in HISTORY}
    return [{"kimg": step * images_per_step / 1000,
             "minutes": (series[HISTORY[0]][step].timestamp / 1000 - started_at) / 60,
             **{key: series[key][step].value for key in HISTORY}} for step in sorted(series[HISTORY[0]])]


def markdown(rows: list[dict]) -> str:
    lines = ["| setting | fid_domain (floor) | × floor | EMA / raw G fid_domain | KID (floor) | precision | recall | "
             "memorised (floor) | kimg | wall |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        matched = (f", class match {row['quality/class_match']:.2f} ({row['quality/class_match_floor']:.2f})"
                   if "quality/class_match" in row else "")
        lines.append(
            f"| {SETTINGS[row['setting']][0]}{matched} | {row['quality/fid_domain']:.1f} ({row['quality/fid_domain_floor']:.1f})"
            f" | {row['quality/fid_domain'] / row['quality/fid_domain_floor']:.1f} | "
            f"{row.get('quality_ema/fid_domain', math.nan):.1f} / {row['quality_raw/fid_domain']:.1f} | "
            f"{row['quality/kid']:.0f} ({row['quality/kid_floor']:.0f}) | "
            f"{row['quality/precision']:.2f} | {row['quality/recall']:.2f} | {row['quality/memorised_share']:.2f} "
            f"({row['quality/memorised_share_floor']:.2f}) | {row['kimg']:.0f} | {row['seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="data/mnist")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--tag", default="mnist", help="name of the table and its grids")
    parser.add_argument("--out", default="docs/quality", help="folder for the table, the JSON and the grids")
    args, extra = parser.parse_known_args()  # anything else goes to every training run, e.g. --kimg 60
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="quality-table-") as work:
        for name in args.settings.split(","):
            row = train_row(name, args.shards, Path(work), extra)
            Image.fromarray(row.pop("grid")).save(out / f"{args.tag}-{name}.png")
            rows.append(row)
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    table = markdown(rows)
    command = "bench/quality_table.py " + " ".join(sys.argv[1:])
    (out / f"{args.tag}.md").write_text(f"{table}\n\nMeasured with `.venv/bin/python {command}`.\n")
    (out / f"{args.tag}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
