"""How many latent vectors the EMA generator's BatchNorm statistics need (gan/training/ema.py).

Takes a run's newest checkpoint, measures the averaged generator's BatchNorm statistics from N fixed latent vectors
in batches (three draws each) and scores each result's fid_domain at two sample seeds against the run's quality
reference; then times the statistics pass itself at 32x32x1 and 64x64x3 with the default networks.

    .venv/bin/python bench/ema_statistics.py RUN_FOLDER --shards data/mnist     # RUN_FOLDER: Ray Train's run folder
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gan.config import TrainConfig  # noqa: E402
from gan.metrics.classifier import load_run_reference  # noqa: E402
from gan.metrics.quality import evaluate_generator  # noqa: E402
from gan.shards.manifest import read_manifest  # noqa: E402
from gan.training.models import Generator, ModelShape, build_models  # noqa: E402

SETTINGS = ((2048, 256), (512, 256), (256, 128))  # (latent vectors, batch)


def measured_statistics(generator: torch.nn.Module, count: int, batch: int, seed: int) -> torch.nn.Module:
    measured = copy.deepcopy(generator).requires_grad_(False)
    noise = torch.randn(count, generator.shape.latent_dim, generator=torch.Generator().manual_seed(100 + seed))
    update_bn(noise.split(batch), measured)
    return measured.eval()


def seconds_per_pass(resolution: int, channels: int, count: int, batch: int) -> float:
    defaults = TrainConfig()
    generator, _ = build_models(ModelShape(resolution, channels, defaults.latent_dim, defaults.g_features,
                                           defaults.d_features))
    generator = generator.to(memory_format=torch.channels_last).requires_grad_(False)
    measured_statistics(generator, count, batch, 0)  # warm-up
    start = time.perf_counter()
    for seed in range(2):
        measured_statistics(generator, count, batch, seed)
    return (time.perf_counter() - start) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_folder")
    parser.add_argument("--shards", required=True)
    parser.add_argument("--samples", type=int, default=1000, help="generated images per fid_domain (the default)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    checkpoint = sorted(Path(args.run_folder).glob("checkpoint_2*"))[-1]
    meta = json.loads((checkpoint / "meta.json").read_text())
    saved = torch.load(checkpoint / "train_state.pt", weights_only=True)
    generator = Generator(ModelShape(**meta["model_shape"]))
    generator.load_state_dict(saved["generator_ema"])
    reference = load_run_reference(args.shards, read_manifest(args.shards))
    result = {"checkpoint": str(checkpoint), "step": meta["step"]}
    for count, batch in SETTINGS:
        fids = [evaluate_generator(measured_statistics(generator, count, batch, seed), reference,
                                   generator.shape.latent_dim, args.samples, seed=sample_seed)["quality/fid_domain"]
                for seed in range(3) for sample_seed in (0, 1)]
        result[f"fid_domain_{count}"] = {"mean": round(statistics.mean(fids), 2),
                                         "sd": round(statistics.stdev(fids), 2), "runs": [round(f, 2) for f in fids]}
        for resolution, channels in ((32, 1), (64, 3)):
            result[f"seconds_{count}_{resolution}x{resolution}x{channels}"] = round(
                seconds_per_pass(resolution, channels, count, batch), 3)
    print(json.dumps(result, indent=2))
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "ema_statistics.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
