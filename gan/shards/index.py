"""`make_shards --index`: a shards.json for WebDataset shards that other tools wrote, where they are. Each shard is
read once (its sample count, sha256, image extensions, labels and how many images are smaller than the training
size) and never written; the loader decodes and fits the images at load time (gan/shards/foreign.py).

The holdout is other shards (a second pattern) or a seeded share of whole shards, so a sample is never split from its
shard and no shard is rewritten.
"""
from __future__ import annotations

import contextlib
import hashlib
import posixpath
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from braceexpand import braceexpand
from webdataset.tariterators import group_by_keys, tar_file_iterator

from gan.shards import storage
from gan.shards.foreign import check_label_source, image_member, image_size, label_value, sorted_label_values
from gan.shards.class_mix import holdout_mix
from gan.shards.manifest import MANIFEST_NAME, Manifest, ManifestError, ShardInfo, write_manifest


class IndexingError(ManifestError):
    """Shards that cannot be indexed as they are; the message names the shard, the sample and the fix."""


@dataclass
class ShardIndex:
    """What one pass over one shard found."""

    url: str
    samples: int = 0
    sha256: str = ""
    extensions: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)  # raw label text -> samples; None counts unlabelled ones
    small_images: int = 0  # shorter side below the training resolution: upscaled at load time


class _Hashing:
    """A read-only stream that hashes what passes through it, so one read of a shard gives both samples and sha256."""

    def __init__(self, stream: IO[bytes]):
        self.stream, self.digest = stream, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def finish(self) -> str:
        while self.read(1 << 20):  # tar's end blocks and padding, which the tar reader leaves unread
            pass
        return self.digest.hexdigest()


def expand(pattern: str, flag: str = "--index") -> list[str]:
    """The shard URLs of a brace pattern (`s3://b/train-{000000..000127}.tar`) or of a folder/prefix ending in '/'
    (every .tar in it), each checked to exist: a pattern that matches nothing, or only partly, is named."""
    if pattern.endswith("/"):
        urls = [url for url in storage.list_prefix(pattern) if url.endswith(".tar")]
        if not urls:
            raise IndexingError(f"{flag} {pattern}: no .tar shards there")
        return urls
    urls = list(braceexpand(pattern))
    folder = posixpath.commonprefix(urls).rsplit("/", 1)[0] + "/" if "/" in pattern else "./"
    existing = set(storage.list_prefix(folder)) | {str(Path(url)) for url in urls if Path(url).is_file()}
    missing = [url for url in urls if url not in existing and str(Path(url)) not in existing]
    if len(missing) == len(urls):
        raise IndexingError(f"{flag} {pattern}: matches none of the {len(existing)} objects under {folder}; check the "
                            f"bucket, the prefix and the brace range (e.g. train-{{000000..000127}}.tar)")
    if missing:
        raise IndexingError(f"{flag} {pattern}: {len(missing)} of {len(urls)} shards do not exist (first: "
                            f"{missing[0]}); fix the brace range or upload them")
    return urls


def index_shard(url: str, label_source: str, resolution: int) -> ShardIndex:
    """One read of one shard; IndexingError naming it for a sample with no or two images or a missing label."""
    found = ShardIndex(url)
    try:
        with contextlib.closing(storage.open_stream(url)) as stream:
            hashing = _Hashing(stream)
            members = ({**member, "__url__": url} for member in tar_file_iterator(hashing))
            for sample in group_by_keys(members):
                extension, body = image_member(sample)
                found.extensions[extension] += 1
                found.labels[None if label_source == "auto" and "cls" not in sample
                             else label_value(sample, "cls" if label_source == "auto" else label_source)] += 1
                found.small_images += min(_size_of(sample["__key__"], extension, body)) < resolution
                found.samples += 1
            found.sha256 = hashing.finish()
    except (ValueError, tarfile.TarError) as error:
        raise IndexingError(f"{url}: {error}") from None
    if not found.samples:
        raise IndexingError(f"{url}: holds no samples (an empty or non-WebDataset tar); leave it out of the pattern")
    return found


def _size_of(key: str, extension: str, body: bytes) -> tuple[int, int]:
    try:
        return image_size(body)
    except OSError as error:  # PIL cannot identify it: a broken file the loader would have to skip
        raise ValueError(f"sample {key!r}: its .{extension} is not a readable image ({error})") from None


def _index_all(urls: list[str], label_source: str, resolution: int, tasks: int) -> list[ShardIndex]:
    if not tasks:
        return [index_shard(url, label_source, resolution) for url in urls]
    import ray

    endpoint = storage.endpoint_url()

    @ray.remote(num_cpus=1)
    def index_many(part: list[str]) -> list[ShardIndex]:
        storage.configure(endpoint)  # each task runs in a worker process on any node of the cluster
        return [index_shard(url, label_source, resolution) for url in part]

    size = max(1, -(-len(urls) // tasks))
    return [found for part in ray.get([index_many.remote(urls[i:i + size]) for i in range(0, len(urls), size)])
            for found in part]


def _labels_used(found: list[ShardIndex], label_source: str) -> str:
    """`auto` resolved: cls when every sample has one, none when no sample has."""
    unlabelled = sum(shard.labels.get(None, 0) for shard in found)
    if label_source != "auto" or unlabelled == 0:
        return "cls" if label_source == "auto" else label_source
    if unlabelled == sum(shard.samples for shard in found):
        return "none"
    raise IndexingError(f"{unlabelled} samples have no .cls member and the others do: index with --labels none, or "
                        f"--labels json:FIELD when the label is in each sample's .json")


def _name_of(url: str, out: str) -> str:
    """A shard beside shards.json is named relative to it (the set moves as one folder); others by URL."""
    base = url.rsplit("/", 1)[-1]
    return base if storage.join(out, base) == url else url


def default_out(pattern: str) -> str:
    """Beside the shards: the folder of the pattern's first URL."""
    return next(braceexpand(pattern)).rsplit("/", 1)[0] if "/" in pattern else "."


def build_index(pattern: str, out: str, resolution: int, channels: int, label_source: str = "auto",
                holdout_pattern: str = "", holdout_fraction: float = 0.1, seed: int = 0, strict: bool = False,
                tasks: int = 0) -> Manifest:
    """Index the shards of `pattern` (and `holdout_pattern`) and write shards.json at `out`; returns the manifest."""
    if label_source != "auto":
        check_label_source(label_source)
    urls = expand(pattern)
    holdout_urls = expand(holdout_pattern, "--holdout") if holdout_pattern else []
    if set(urls) & set(holdout_urls):
        raise IndexingError("--index and --holdout share shards; the holdout must be images the generator never sees")
    found = _index_all(urls + holdout_urls, label_source, resolution, tasks)
    used = _labels_used(found, label_source)
    small = sum(shard.small_images for shard in found)
    if small and strict:
        raise IndexingError(f"{small} images are smaller than --resolution {resolution} px; they would be upscaled. "
                            f"Index at a lower --resolution, or without --strict to upscale them (counted)")
    values = sorted_label_values({value for shard in found for value in shard.labels if value is not None})
    by_url = {shard.url: shard for shard in found}
    splits = {"train": [by_url[url] for url in urls], "holdout": [by_url[url] for url in holdout_urls]}
    if not holdout_urls:
        splits = _hold_out_whole_shards(splits["train"], holdout_fraction, seed)
    extensions = sorted({extension for shard in found for extension in shard.extensions})
    positions = {value: index for index, value in enumerate(values)}

    def info(shard: ShardIndex) -> ShardInfo:
        histogram = np.zeros(max(len(values), 1), np.int64)
        for value, count in shard.labels.items():
            histogram[positions.get(value, 0)] += count
        return ShardInfo(_name_of(shard.url, out), shard.samples, shard.sha256, tuple(int(n) for n in histogram))

    class_names = list(values) if values else [_set_name(pattern)]
    manifest = Manifest(resolution=resolution, channels=channels, class_names=class_names,
                        splits={split: [info(shard) for shard in shards] for split, shards in splits.items()},
                        image_format=",".join(extensions), source=f"indexed:{pattern}", indexed=True,
                        label_source=used, label_values=list(values), small_images=small)
    try:
        write_manifest(out, manifest)
    except storage.StorageError as error:
        raise storage.StorageError(f"{error}; when the shards' bucket is read-only, write the index elsewhere with "
                                   f"--out") from None
    return manifest


def index_warnings(manifest: Manifest, seed: int = 0) -> list[str]:
    """What an index found that a user should fix or know: upscaled images, a holdout of few classes."""
    warnings = []
    if manifest.small_images:
        warnings.append(f"{manifest.small_images} images are smaller than {manifest.resolution} px and will be "
                        f"upscaled when loaded, or padded if at least 3/4 of it (--strict refuses them)")
    held = holdout_mix(manifest.shards("train"), manifest.splits.get("holdout", []), seed)
    if held is not None and held.skewed:
        warnings.append(f"{held.describe()}; name shards that hold every class with --holdout")
    return warnings


def summary(manifest: Manifest, pattern: str, out: str) -> str:
    labels = (f"{len(manifest.class_names)} classes from {manifest.label_source}" if manifest.label_source != "none"
              else "no labels (the label-free metric applies)")
    counts = ", ".join(f"{split}: {len(shards)} shards / {manifest.sample_count(split)} images"
                       for split, shards in manifest.splits.items())
    return (f"indexed {pattern} into {storage.join(out, MANIFEST_NAME)} ({counts}; {manifest.image_format} fitted to "
            f"{manifest.resolution}px x {manifest.channels}ch at load time; {labels}; dataset hash "
            f"{manifest.dataset_hash}); no shard was rewritten")


def _hold_out_whole_shards(shards: list[ShardIndex], fraction: float, seed: int) -> dict[str, list[ShardIndex]]:
    """A seeded `fraction` of the shards (at least one) as the holdout, at least one left to train on."""
    if len(shards) < 2:
        raise IndexingError("one shard cannot be split into train and holdout without rewriting it: index more "
                            "shards, or name the holdout's with --holdout PATTERN")
    count = min(len(shards) - 1, max(1, round(len(shards) * fraction)))
    held = set(np.random.default_rng(seed).permutation(len(shards))[:count].tolist())
    return {"train": [s for i, s in enumerate(shards) if i not in held],
            "holdout": [s for i, s in enumerate(shards) if i in held]}


def _set_name(pattern: str) -> str:
    """An unlabelled set's one class name: the folder the shards are in (as a flat image folder is named)."""
    folder = default_out(pattern).rstrip("/").rsplit("/", 1)[-1]
    return folder or "images"
