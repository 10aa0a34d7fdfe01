"""The Ray Train side: `train_loop_per_worker` (the only caller of ray.train.report) and `build_trainer`.

Reads top to bottom: setup (config, models, DDP, restore), then per epoch: plan -> batches -> steps -> metrics
-> sample grid -> checkpoint + report. Every rank reports once per epoch and takes the same number of steps.
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train import (Checkpoint, CheckpointConfig, CheckpointUploadMode, FailureConfig, LoggingConfig, RunConfig,
                       ScalingConfig)
from ray.train.torch import TorchTrainer, prepare_model

from gan import storage
from gan.checkpoint import (BEST_MODEL_DIR, FINAL_MODEL_DIR, GENERATOR_FILE, load_checkpoint, save_checkpoint,
                            save_generator)
from gan.classifier import load_reference, reference_location
from gan.config import TrainConfig, from_dict, to_dict
from gan.data import normalise, plan_epoch, rank_batches
from gan.images import sample_grid
from gan.loader_processes import process_batches
from gan.manifest import read_manifest
from gan.models import ModelShape
from gan.quality import evaluate_generator
from gan.shard_reader import DataHealth, ReadPolicy
from gan.state import TrainState, unwrap
from gan.stats import WindowMeter, sum_across_ranks
from gan.step import STEP_STATS, train_step
from gan.tracking import RunLogger

log = logging.getLogger(__name__)
BEST_METRIC = "best/fid_domain"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    config = from_dict(TrainConfig, loop_config["train"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    device = ray.train.torch.get_device()
    storage.configure(config.s3_endpoint_url)
    read_policy = ReadPolicy(strict=config.strict, attempts=config.read_attempts,
                             outage_seconds=config.store_outage_seconds)

    manifest = read_manifest(config.shards)
    shape = ModelShape(manifest.resolution, manifest.channels, config.latent_dim, config.g_features, config.d_features)
    state = TrainState.create(shape, config.lr, config.beta1, config.seed, lr_d=config.lr_d)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    state.generator = prepare_model(state.generator.to(memory_format=memory_format))
    # D is never run in eval mode, so its BatchNorm running statistics need no per-forward broadcast.
    state.discriminator = prepare_model(state.discriminator.to(memory_format=memory_format),
                                        parallel_strategy_kwargs={"forward_sync_buffers": False})
    if config.compile:
        state.generator, state.discriminator = torch.compile(state.generator), torch.compile(state.discriminator)
    restarted = ray.train.get_checkpoint()  # this run's own latest: the worker group is being restarted
    # Else a checkpoint handed over to start from (a PBT trial continuing its own or a leader's weights).
    checkpoint = restarted or loop_config.get("start_checkpoint")
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            load_checkpoint(state, directory)
        state.set_lr(config.lr, config.lr_d)  # the restored optimiser carries the old rates; PBT may set new ones
    torch.manual_seed(config.seed * 7919 + rank + 1000 * state.step)  # distinct noise per rank and per resume

    tracker = RunLogger(config.tracking_uri, loop_config["run_id"], active=rank == 0 and loop_config["run_id"])
    if restarted is not None:
        tracker.note_restart(state.epoch, state.step)
    reference = None
    if rank == 0 and config.quality_every:
        reference = load_reference(reference_location(config.shards, manifest))
        # The run's own best so far, over restarts, resumes and PBT generations (a leader's does not count).
        best_fid = tracker.lowest(BEST_METRIC)
    quality: dict[str, float] = {}  # the latest measurement, carried into every later report for Tune
    meter = WindowMeter(STEP_STATS)
    latest: dict[str, float] = {}
    images_per_step = config.batch_size * world_size
    cycle_start = time.perf_counter()  # an epoch's time includes the previous epoch's grid, checkpoint and report
    cycle_tracking_cpu = tracker.cpu_seconds
    if rank == 0 and checkpoint is None:
        tracker.log_image(sample_grid(unwrap(state.generator), state.fixed_noise), "samples", step=0)

    for epoch in range(state.epoch, config.epochs):
        plan = plan_epoch(manifest.shards("train"), world_size, config.batch_size, epoch, config.seed,
                          config.steps_per_epoch)
        health = DataHealth()
        batch_seed = config.seed + 1_000_003 * epoch + rank
        if config.loader_processes:
            batches = process_batches(config.shards, plan, rank, manifest.image_spec, config.shuffle_buffer,
                                      batch_seed, health, read_policy, config.loader_processes,
                                      pin_memory=device.type == "cuda")
        else:
            batches = rank_batches(config.shards, plan, rank, manifest.image_spec, config.shuffle_buffer, batch_seed,
                                   health, read_policy)
        loop_start = window_start = time.perf_counter()
        step_seconds = 0.0
        for images, _labels in batches:
            step_start = time.perf_counter()
            meter.add(train_step(state, _to_device(images, device, memory_format), bf16=config.bf16))
            step_seconds += time.perf_counter() - step_start
            if state.step % config.log_every == 0:
                latest = _log_window(meter, tracker, state.step, window_start, images_per_step)
                window_start = time.perf_counter()
        if meter.pending:  # the epoch's last, partial window
            latest = _log_window(meter, tracker, state.step, window_start, images_per_step)
        state.epoch = epoch + 1
        now = time.perf_counter()
        loop_seconds, seconds = now - loop_start, now - cycle_start
        cycle_start = now  # from here: this epoch's quality, grid, checkpoint and report count to the next epoch
        tracking_cpu, cycle_tracking_cpu = tracker.cpu_seconds - cycle_tracking_cpu, tracker.cpu_seconds
        # The share of the epoch spent in train_step (DDP all-reduce included): the rest is data, logging, snapshots.
        epoch_metrics = {"epoch": state.epoch, "perf/epoch_seconds": seconds, "perf/step_fraction": step_seconds / seconds,
                         "perf/epoch_img_per_s": plan.steps * images_per_step / seconds,
                         # The steady rate: the epoch's steps with their data loading and logging, no snapshot.
                         "perf/loop_img_per_s": plan.steps * images_per_step / loop_seconds,
                         # Tracking's cost in CPU time, which a wall-clock A/B on a shared machine cannot resolve.
                         "perf/tracking_cpu_share": tracking_cpu / seconds,
                         "data/unused_samples": plan.unused_samples, **sum_across_ranks(health.as_metrics())}
        tracker.log_metrics(epoch_metrics, state.step)
        if reference is not None and (state.epoch % config.quality_every == 0 or state.epoch in (1, config.epochs)):
            quality = evaluate_generator(unwrap(state.generator), reference, config.latent_dim,
                                         config.quality_samples, seed=config.seed)
            tracker.log_metrics(quality, state.step)
            if quality["quality/fid_domain"] < best_fid:
                best_fid = quality["quality/fid_domain"]
                _log_best_generator(tracker, state, shape, best_fid)
        metrics = {**latest, **epoch_metrics, **quality, "step": state.step}
        if rank == 0:
            tracker.log_image(sample_grid(unwrap(state.generator), state.fixed_noise), "samples", step=state.epoch)
            log.info(_progress_line(metrics, config.epochs))
        _report(state, metrics, config, rank)

    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            path = save_generator(state, Path(tmp) / GENERATOR_FILE, shape.__dict__)
            tracker.log_artifact(path, FINAL_MODEL_DIR)
    tracker.close()


def _log_best_generator(tracker: RunLogger, state: TrainState, shape: ModelShape, fid: float) -> None:
    """G as best/generator.pt, uploaded in the background; best/fid_domain follows the upload in the same queue, so
    its lowest value describes the stored file (unless that upload failed, which tracking/failed_calls counts)."""
    if not tracker.active:
        return
    directory = tempfile.mkdtemp(prefix="dcgan-best-")
    save_generator(state, Path(directory) / GENERATOR_FILE, shape.__dict__)
    tracker.log_folder_then_delete(directory, BEST_MODEL_DIR)
    tracker.log_metrics({BEST_METRIC: fid, "best/epoch": state.epoch}, state.step)


def _to_device(images: torch.Tensor, device: torch.device, memory_format: torch.memory_format) -> torch.Tensor:
    """uint8 batch -> float [-1, 1] on the device: a quarter of the bytes cross PCIe, and pinned host memory lets
    the copy overlap the previous step's kernels."""
    if device.type == "cuda":
        images = images.pin_memory()
    return normalise(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)


def failure_summary(error: BaseException) -> str:
    """One line for a failed fit(): the first failing rank's own exception, not Ray's wrapper and traceback."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, cause = min(failures.items())
        cause = getattr(cause, "cause", None) or cause  # a RayTaskError carries the user's exception as .cause
        where = f"rank {rank}: "
    else:
        cause, where = getattr(error, "controller_failure", None) or error, ""
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{where}{type(cause).__name__}: {lines[-1] if lines else ''}"


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint stays the latest one."""


def _log_window(meter: WindowMeter, tracker: RunLogger, step: int, since: float,
                images_per_step: int) -> dict[str, float]:
    """Reduce the window's statistics across ranks (a collective: every rank calls it) and log them.

    The reduced values are identical on every rank, so on a NaN/inf loss all ranks stop together (no DDP hang),
    before the broken weights can reach a checkpoint."""
    images = meter.pending * images_per_step
    metrics = meter.reduce()
    bad = sorted(name for name, value in metrics.items() if not math.isfinite(value))
    if bad:
        tracker.set_tags({"status": "diverged", "diverged_at_step": str(step)})
        tracker.close()
        raise TrainingDiverged(f"{', '.join(bad)} not finite at step {step}: the run diverged; lower --lr or "
                               f"resume from the last checkpoint with other settings")
    metrics["perf/img_per_s"] = images / max(time.perf_counter() - since, 1e-9)
    tracker.log_metrics(metrics, step)
    return metrics


def _report(state: TrainState, metrics: dict[str, float], config: TrainConfig, rank: int) -> None:
    """All ranks report; rank 0 attaches the checkpoint (Ray Train needs one report per rank per epoch).

    The checkpoint is copied to storage in the background (ASYNC) while the next epoch trains; Ray Train records
    it as the latest only once the copy is complete, so a crash mid-copy leaves the previous one in charge."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    directory = tempfile.mkdtemp(prefix="dcgan-checkpoint-")
    save_checkpoint(state, directory, {"config": to_dict(config)})
    ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory),
                     checkpoint_upload_mode=CheckpointUploadMode.ASYNC, delete_local_checkpoint_after_upload=True)


def _progress_line(metrics: dict[str, float], epochs: int) -> str:
    return (f"epoch {metrics['epoch']}/{epochs} step {metrics['step']}  loss/D {metrics.get('loss/D', float('nan')):.3f}"
            f"  loss/G {metrics.get('loss/G', float('nan')):.3f}  D(x) {metrics.get('disc/D_x', float('nan')):.2f}"
            f"  D(G(z)) {metrics.get('disc/D_G_z', float('nan')):.2f}  {metrics['perf/epoch_img_per_s']:.0f} img/s"
            + (f"  fid_domain {metrics['quality/fid_domain']:.1f}" if "quality/fid_domain" in metrics else ""))


def build_trainer(config: TrainConfig, run_id: str | None, callbacks: list | None = None,
                  start_checkpoint: Checkpoint | None = None) -> TorchTrainer:
    """A TorchTrainer for one run; same name + storage path means Ray Train resumes from its latest checkpoint.
    `callbacks` (e.g. Tune's TuneReportCallback) see every report. `start_checkpoint` is where a new run starts
    (Train V2 dropped `resume_from_checkpoint`; the loop loads it when the run has none of its own)."""
    storage.configure(config.s3_endpoint_url)
    filesystem, storage_path = storage.pyarrow_filesystem(config.storage_path)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": to_dict(config), "run_id": run_id, "start_checkpoint": start_checkpoint},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": config.cpus_per_worker}),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures),
            # Ray Train's per-report INFO lines would drown the one progress line per epoch in `ray job logs`.
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks or [],
        ),
    )
