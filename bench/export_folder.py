"""Writes a packaged data set out as a user's image folder would hold it, to test the folder path on real images.

MNIST (all 70,000, train and test together) or the 8x8 digits become 28x28 (resp. 8x8) greyscale PNGs, one
sub-folder per class (`--layout classes`: what `make_shards --from-folder` lists class by class, the worst order
for mixing) or all in one folder without labels (`--layout flat`). `--pad-to 32` pads MNIST as the packaged set
does, so the folder holds exactly the packaged set's pixels.

    .venv/bin/python bench/export_folder.py --out data/mnist-folder              # 70,000 PNGs in 10 class folders
    .venv/bin/python -m jobs.make_shards --from-folder data/mnist-folder --out data/mnist-folder-shards
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def packaged_images(dataset: str, cache_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W) uint8 at their native size, labels) of a packaged set, in its own order."""
    if dataset == "mnist":
        from gan.shards.mnist import read_mnist

        splits = read_mnist(Path(cache_dir).expanduser())
        return (np.concatenate([splits["train"][0], splits["test"][0]]),
                np.concatenate([splits["train"][1], splits["test"][1]]))
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8), digits.target


def export(images: np.ndarray, labels: np.ndarray, out: Path, layout: str) -> int:
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = out / f"class_{int(label)}" if layout == "classes" else out
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{index:06d}.png")
    return len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "digits"))
    parser.add_argument("--layout", default="classes", choices=("classes", "flat"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache-dir", default="~/.cache/dcgan-ray")
    parser.add_argument("--pad-to", type=int, default=0, help="pad each image with background to this side")
    args = parser.parse_args()
    images, labels = packaged_images(args.dataset, args.cache_dir)
    if args.pad_to:
        from gan.shards.mnist import pad_to

        images = pad_to(images, args.pad_to)
    count = export(images, labels, Path(args.out), args.layout)
    print(f"export_folder: {count} PNGs in {args.out} ({args.layout})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
