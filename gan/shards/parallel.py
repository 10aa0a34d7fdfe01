"""`make_shards --from-folder` spread over a Ray cluster: Ray tasks decode the images, and then write whole shards
straight to the destination (a folder every node sees, or s3://). The driver lists the files, plans the shards
exactly as the single-process build does (gan/shards/writer.py) and writes the manifest once, last. The same
folder and seed therefore give the same shards byte for byte, so the same dataset_hash.

Decoding (PIL open, resize, crop) is the expensive part of a folder build, so that is what the tasks split; the
decoded images come back to the driver, which holds them all, as the single-process build does (32x32x3 is 3 KB
an image).
"""
from __future__ import annotations

import numpy as np
import ray

from gan.shards.manifest import Manifest
from gan.shards.sources import ImageSet, decode_files, folder_image_set, list_folder, stratified_subset
from gan.shards.writer import ShardPlan, finish_manifest, new_manifest, plan_shards, write_shard


@ray.remote(num_cpus=1)
def _decode(paths: list, resolution: int, channels: int) -> list:
    return decode_files(paths, resolution, channels)


@ray.remote(num_cpus=1)
def _write(out: str, plan: ShardPlan, images: np.ndarray, labels: np.ndarray, image_format: str, num_classes: int,
           endpoint: str):
    from gan.shards import storage

    storage.configure(endpoint)  # each task runs in a worker process on any node of the cluster
    return write_shard(out, plan, images, labels, image_format, num_classes), ray.get_runtime_context().get_node_id()


def _chunks(items: list, count: int) -> list[list]:
    size = max(1, -(-len(items) // count))
    return [items[start:start + size] for start in range(0, len(items), size)]


def load_folder_parallel(folder: str, resolution: int, channels: int, tasks: int) -> ImageSet:
    """`sources.load_folder`, with the decoding split over `tasks` Ray tasks."""
    listing = list_folder(folder)
    parts = ray.get([_decode.remote(chunk, resolution, channels) for chunk in _chunks(listing.paths, tasks)])
    return folder_image_set(listing, [image for part in parts for image in part])


def build_from_folder(folder: str, out: str, resolution: int, channels: int, samples_per_shard: int,
                      holdout_fraction: float, seed: int, image_format: str, max_images: int, tasks: int,
                      endpoint: str = "") -> tuple[Manifest, list[str], int]:
    """The shard set of an image folder, built by Ray tasks; returns its manifest, the unreadable files (path:
    reason) and how many Ray nodes wrote shards."""
    data = stratified_subset(load_folder_parallel(folder, resolution, channels, tasks), max_images, seed)
    plans = plan_shards(data, samples_per_shard, holdout_fraction, seed)
    results = ray.get([_write.remote(out, plan, data.images[plan.indices], data.labels[plan.indices], image_format,
                                     len(data.class_names), endpoint) for plan in plans])
    manifest = finish_manifest(out, new_manifest(data, image_format), plans, [shard for shard, _ in results])
    return manifest, data.unreadable, len({node for _, node in results})
