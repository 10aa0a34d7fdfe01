"""Where a generator's recall goes: its precision and recall with z drawn at wider scales, the k-NN radii of its
samples against real ones per class, and (given a Ray Train checkpoint) the raw generator beside the EMA one.

    .venv/bin/python bench/recall_probe.py --model models:/dcgan-mnist@champion --tracking-uri sqlite:///mlruns.db \
        --shards data/mnist [--checkpoint ray_results/<run>/checkpoint_...]

A generator whose samples sit closer together than real images (smaller radii), and whose recall rises when z is
drawn wider, under-uses z: docs/quality.md, "The default, chosen". Drawing z wider is a probe here, never a fix.
"""
from __future__ import annotations

import argparse

import torch

from gan.metrics.classifier import load_reference, reference_location
from gan.metrics.quality import _knn_radii, conditioning_classes, quality_of_features
from gan.shards.manifest import read_manifest
from gan.tracking.sampling import Sampler, load

SCALES = (1.0, 1.15, 1.3)
SAMPLES = 1000


def scores(sampler: Sampler, reference, seed: int, scale: float) -> tuple[dict[str, float], torch.Tensor]:
    classes = conditioning_classes(reference, SAMPLES, seed) if sampler.num_classes else None
    z = torch.randn(SAMPLES, sampler.latent_dim, generator=torch.Generator().manual_seed(seed)) * scale
    features = reference.classifier().features(sampler(z, classes).float())
    metrics = quality_of_features(reference, features)
    return {k.split("/")[1]: round(v, 3) for k, v in metrics.items() if not k.endswith("_std")}, features


def raw_generator(directory: str) -> Sampler:
    """The raw (not averaged) generator of a local checkpoint, in eval mode."""
    import json
    from pathlib import Path

    from gan.training.checkpoint import META_FILE, STATE_FILE
    from gan.training.models import Generator, ModelShape, PackedClassInput

    meta = json.loads((Path(directory) / META_FILE).read_text())
    generator = Generator(ModelShape(**meta["model_shape"]))
    generator.load_state_dict(torch.load(Path(directory) / STATE_FILE, weights_only=True)["generator"])
    classes = generator.shape.num_classes
    return Sampler(PackedClassInput(generator.eval()) if classes else generator.eval(), generator.shape.latent_dim,
                   "raw", classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an MLflow model URI or a checkpoint directory")
    parser.add_argument("--tracking-uri", default="")
    parser.add_argument("--shards", default="data/mnist")
    parser.add_argument("--checkpoint", default="", help="a checkpoint directory: its raw generator is probed too")
    args = parser.parse_args()
    reference = load_reference(reference_location(args.shards, read_manifest(args.shards)))
    real = reference.real_features[:SAMPLES].double()
    with torch.no_grad():
        real_class = reference.classifier().head(real.float()).argmax(1)
    probes = {"model": load(args.model, args.tracking_uri)}
    if args.checkpoint:
        probes["raw"] = raw_generator(args.checkpoint)
    for name, sampler in probes.items():
        for seed in (0, 1):
            for scale in SCALES:
                metrics, features = scores(sampler, reference, seed, scale)
                print(f"{name} seed {seed} z x {scale:g}: {metrics}", flush=True)
                if seed == 0 and scale == 1.0:
                    fake, real_radii = features.double(), _knn_radii(real, 3)
                    fake_radii = _knn_radii(fake, 3)
                    covered = (torch.cdist(real, fake) <= fake_radii[None, :]).any(1)
                    print(f"  3-NN radius, median: generated {fake_radii.median():.2f}, real {real_radii.median():.2f}")
                    for label in range(int(real_class.max()) + 1):
                        chosen = real_class == label
                        print(f"  real images of class {label}: {int(chosen.sum())}, covered "
                              f"{covered[chosen].double().mean():.2f}, real radius {real_radii[chosen].median():.2f}")


if __name__ == "__main__":
    main()
