"""How much one quality measurement of one fixed generator varies with the images it happens to draw: the generator
scored over several seeds, once from a single sample of `--samples` images and once as a run measures it (the mean
over measurement_draws samples; gan/metrics/quality.py), with the floor at the same count beside them.

    .venv/bin/python bench/measurement_noise.py --model models:/dcgan-mnist@champion \
        --tracking-uri sqlite:///mlruns.db --shards data/mnist

This noise comes on top of run-to-run noise (docs/quality.md#measurement-noise): it is what a second measurement of
the same weights would change.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from gan.metrics.classifier import load_reference, reference_location
from gan.metrics.quality import floor, measured_noise, quality_of_draws, quality_of_features
from gan.shards.manifest import read_manifest
from gan.tracking.sampling import load

METRICS = ("quality/fid_domain", "quality/precision", "quality/recall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an MLflow model URI or a Ray Train checkpoint directory")
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns.db")
    parser.add_argument("--shards", default="data/mnist")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    sampler = load(args.model, args.tracking_uri)
    reference = load_reference(reference_location(args.shards, read_manifest(args.shards)))
    single, averaged = [], []
    for seed in range(args.seeds):
        noise, classes = measured_noise(reference, sampler.latent_dim, args.samples, seed, sampler.num_classes > 0)
        with torch.no_grad():
            features = reference.classifier().features(sampler(noise, classes).float())
        single.append(quality_of_features(reference, features[:args.samples]))
        averaged.append(quality_of_draws(reference, features, args.samples))
    floors = floor(reference, args.samples)
    print(f"{args.model}: {args.seeds} seeds, {args.samples} images a sample, {len(noise) // args.samples} samples "
          f"a measurement")
    print("| metric | floor | one sample: mean ± sd (min–max) | a measurement: mean ± sd (min–max) |")
    print("|---|---|---|---|")
    for name in METRICS:
        cells = []
        for rows in (single, averaged):
            values = [row[name] for row in rows]
            cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} "
                         f"({min(values):.3f}–{max(values):.3f})")
        print(f"| {name.split('/')[1]} | {floors[name + '_floor']:.3f} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
