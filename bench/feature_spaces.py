"""Do the label-free feature spaces rank generators as the domain classifier's does?

Trains one generator in this process (the default model and optimiser, one rank, no Ray) and snapshots its EMA and
raw generators along the way: generators from noise to the end of a run. Each snapshot is measured in every feature
space (gan/metrics/feature_tasks.py: the class classifier, and the label-free rotation and contrastive encoders),
and the table gives each label-free space's rank correlations (Spearman, Kendall) with the classifier's scores, over
all snapshots and over those past the first quarter of the run (where the generators draw digits), with what each
reference cost to build (wall and CPU seconds).

    .venv/bin/python bench/feature_spaces.py                       # all of MNIST, 60 kimg, 12 snapshots (~8 min)

Writes the table to stdout and the numbers to bench/results/feature_spaces.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan.metrics.classifier import train_reference  # noqa: E402
from gan.metrics.feature_tasks import CLASSIFIER, SPACES  # noqa: E402
from gan.metrics.quality import floor, generate, memorised_share, quality_of_features  # noqa: E402
from gan.shards.batches import normalise, plan_epoch, rank_batches  # noqa: E402
from gan.shards.manifest import read_manifest  # noqa: E402
from gan.training.models import ModelShape  # noqa: E402
from gan.training.state import TrainState, unwrap  # noqa: E402
from gan.training.step import train_step  # noqa: E402

METRICS = ("quality/fid_domain", "quality/kid", "quality/precision", "quality/recall")


def snapshots(shards: str, kimg: float, count: int, batch_size: int, seed: int) -> list[tuple[str, torch.nn.Module]]:
    """(name, generator) pairs: the untrained generator, then the EMA and raw generators at `count` points."""
    manifest = read_manifest(shards)
    torch.set_num_threads(2)
    shape = ModelShape(manifest.resolution, manifest.channels, 100, 32, 32)
    state = TrainState.create(shape, 2e-4, 0.5, seed, ema_half_life_kimg=10.0, ema_rampup=0.05,
                              images_per_step=batch_size)
    total = int(kimg * 1000 / batch_size)
    marks = set(np.unique(np.geomspace(8, total, count).astype(int)).tolist())
    taken = [("untrained", copy.deepcopy(unwrap(state.generator)).eval())]
    epoch = 0
    while state.step < total:
        plan = plan_epoch(manifest.shards("train"), 1, batch_size, epoch, seed)
        for images, _ in rank_batches(shards, plan, 0, manifest.image_spec, 1000, seed + epoch):
            train_step(state, normalise(images))
            if state.step in marks:
                kimg_now = state.step * batch_size / 1000
                taken.append((f"ema@{kimg_now:.1f}", copy.deepcopy(state.sampler).eval()))
                taken.append((f"raw@{kimg_now:.1f}", copy.deepcopy(unwrap(state.generator)).eval()))
            if state.step >= total:
                break
        epoch += 1
    return taken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="data/mnist")
    parser.add_argument("--kimg", type=float, default=60.0)
    parser.add_argument("--snapshots", type=int, default=12, help="points along the run, spaced geometrically")
    parser.add_argument("--samples", type=int, default=1000, help="generated images per measurement")
    parser.add_argument("--out", default="bench/results/feature_spaces.json")
    args = parser.parse_args()
    manifest = read_manifest(args.shards)
    references, build_seconds, build_cpu = {}, {}, {}
    for space in SPACES:
        start, start_cpu = time.perf_counter(), time.process_time()
        references[space] = train_reference(args.shards, manifest, space=space)
        build_seconds[space], build_cpu[space] = time.perf_counter() - start, time.process_time() - start_cpu
        print(f"{space}: built in {build_seconds[space]:.1f} s ({build_cpu[space]:.1f} CPU-s), holdout accuracy "
              f"{references[space].test_accuracy:.3f}", flush=True)
    rows = []
    for name, generator in snapshots(args.shards, args.kimg, args.snapshots, 64, 0):
        images = generate(generator, 100, args.samples, seed=0).float()
        row = {"snapshot": name}
        for space, reference in references.items():
            features = reference.classifier().features(images)
            for key, value in quality_of_features(reference, features).items():
                row[f"{space}:{key}"] = value
            row[f"{space}:quality/memorised_share"] = memorised_share(reference.real_features, features)
        rows.append(row)
        print(name, {k: round(v, 3) for k, v in row.items() if k != "snapshot"}, flush=True)
    late = [row for row in rows if row["snapshot"] != "untrained" and float(row["snapshot"].split("@")[1]) >=
            args.kimg / 4]
    correlations = {}
    print("\n| space | metric | Spearman ρ (all) | Kendall τ (all) | Spearman ρ (late) | Kendall τ (late) |\n"
          "|---|---|---|---|---|---|")
    for space in SPACES[1:]:
        for metric in METRICS:
            values = {}
            for subset, chosen in (("all", rows), ("late", late)):
                a = [row[f"{CLASSIFIER}:{metric}"] for row in chosen]
                b = [row[f"{space}:{metric}"] for row in chosen]
                values[subset] = {"spearman": float(spearmanr(a, b).statistic),
                                  "kendall": float(kendalltau(a, b).statistic), "snapshots": len(chosen)}
            correlations[f"{space}:{metric}"] = values
            print(f"| {space} | {metric} | {values['all']['spearman']:.3f} | {values['all']['kendall']:.3f} | "
                  f"{values['late']['spearman']:.3f} | {values['late']['kendall']:.3f} |")
    floors = {space: floor(reference, args.samples) for space, reference in references.items()}
    for space in SPACES:
        # The EMA generator at the end, and the untrained one.
        final, first = rows[-2][f"{space}:quality/fid_domain"], rows[0][f"{space}:quality/fid_domain"]
        space_floor = floors[space]["quality/fid_domain_floor"]
        print(f"{space}: build {build_seconds[space]:.1f} s / {build_cpu[space]:.1f} CPU-s; final EMA fid "
              f"{final:.2f} = {final / space_floor:.1f}x its floor {space_floor:.3f}; "
              f"untrained {first / space_floor:.0f}x")
    Path(args.out).write_text(json.dumps({
        "command": "bench/feature_spaces.py " + " ".join(sys.argv[1:]), "snapshots": rows,
        "correlations": correlations, "build_seconds": build_seconds, "build_cpu_seconds": build_cpu,
        "floors": floors,
        "holdout_accuracy": {space: reference.test_accuracy for space, reference in references.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
