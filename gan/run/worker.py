"""The Ray Train side: `train_loop_per_worker` (the only caller of ray.train.report) and `build_trainer`.

Reads top to bottom: setup (config, models, DDP, restore, schedule), then per tick (gan/training/schedule.py): batches ->
steps -> metrics -> quality -> sample grid -> checkpoint + report. Every rank takes the same steps and reports once
per tick.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import ray.train
import torch
from ray.train import (Checkpoint, CheckpointConfig, CheckpointUploadMode, FailureConfig, LoggingConfig, RunConfig,
                       ScalingConfig, UserCallback)
from ray.train.torch import TorchTrainer, prepare_model

from gan.config import TrainConfig, from_dict, to_dict
from gan.metrics.classifier import load_run_reference
from gan.metrics.quality import evaluate_generator, floor
from gan.shards import storage
from gan.shards.batches import (BatchStream, joined_batches, normalise, plan_epoch, planned_ranks_of, rank_batches,
                                share_weight)
from gan.shards.loader_processes import process_batches
from gan.shards.manifest import Manifest, read_manifest
from gan.shards.reader import DataHealth, ReadPolicy
from gan.tracking.runs import CheckpointTags, RunLogger
from gan.training.augment import parse_policy
from gan.training.checkpoint import load_checkpoint, save_checkpoint
from gan.training.images import sample_grid
from gan.training.losses import Objective
from gan.training.models import ModelShape
from gan.training.schedule import Tick, build_schedule
from gan.training.state import TrainState, unwrap
from gan.training.stats import TickTimer, WindowMeter, sum_across_ranks
from gan.training.step import step_stats, train_step

log = logging.getLogger(__name__)
BEST_METRIC = "best/fid_domain"
# Reported with every checkpoint: the fid_domain measured at that report, UNMEASURED when none was. Ray Train keeps
# the checkpoints that score lowest on it, and always the newest. (Not inf: Ray's checkpoint snapshot is JSON, which
# turns inf into null, and a resumed run then fails comparing scores.)
CHECKPOINT_SCORE = "checkpoint/fid_domain"
UNMEASURED = 1e12
# How long rank 0 waits, before a report that measured quality, for that measurement's model and metrics to reach
# MLflow. Tune stops a trial right after a report and the logger thread dies with it; an outage longer than this
# only delays the upload (the logger keeps retrying), it does not stall training longer.
MEASUREMENT_FLUSH_SECONDS = 60.0
# How often Ray Train's controller polls its workers (Ray's default is 2 s). A run's start and end each wait out a
# few polls: a run of three empty reports on 2 local workers returned from fit() in 15.3 s at 2 s and 9.2 s at 0.5 s
# (bench/train_startup.py). Every sweep trial and PBT generation is such a start and end. A user's own
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S wins.
CONTROLLER_POLL_SECONDS = "0.5"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    run = _start_worker(loop_config)
    config, state, tracker = run.config, run.state, run.tracker
    # Planned for --num-workers ranks whatever the group's size, so an elastic run keeps its schedule (gan/shards/batches.py).
    schedule = build_schedule(run.manifest.shards("train"), config.num_workers, config.batch_size, config.seed,
                              config.steps_per_epoch, *config.length(), config.tick_kimg)
    judge = _QualityJudge(config, run.manifest, run.shape, tracker) if run.rank == 0 and config.quality_every else None
    batches = BatchStream(lambda epoch, health: _epoch_batches(run, epoch, health))
    windows = _LogWindows(tracker, config.log_every, schedule.images_per_step, step_stats(state.objective))
    timer = TickTimer(lambda: tracker.cpu_seconds)
    if run.rank == 0 and not run.resumed:
        tracker.log_image(sample_grid(state.sampler, state.fixed_noise), "samples", step=0)
    start_step, last, quality = state.step, schedule.ticks[-1], {}
    for tick in schedule.remaining(state.step):
        timer.start_loop()
        for images, labels in batches.take_segments(tick.segments):
            with timer.step():
                stats = train_step(state, _to_device(images, run.device, config.channels_last), bf16=config.bf16,
                                   classes=labels.to(run.device) if run.shape.num_classes else None)
            windows.add(stats, state.step, last_of_tick=state.step == tick.end_step)
        state.epoch = tick.epochs_done
        metrics = {"epoch": state.epoch, "tick": tick.index, "kimg": state.step * schedule.images_per_step / 1000,
                   "cluster/world_size": run.world_size, **timer.finish(tick.steps * schedule.images_per_step),
                   **sum_across_ranks(batches.health.unreported_metrics())}
        tracker.log_metrics(metrics, state.step)
        if state.ema is not None:  # a collective: each rank measures its share, before rank 0's grid and checkpoint
            state.ema.measure_statistics(run.rank, run.world_size)
        if judge is not None and (tick.index % config.quality_every == 0 or tick.index in (1, last.index)):
            quality = judge.measure(state, final=tick.index == last.index)
        measured = judge is not None and judge.measured_at(tick)
        metrics = {**windows.latest, **metrics, **quality, "step": state.step,
                   CHECKPOINT_SCORE: quality["quality/fid_domain"] if measured else UNMEASURED}
        if run.rank == 0:
            eta = timer.eta_seconds(state.step - start_step, schedule.total_steps - state.step)
            _show_progress(run, metrics, last.index, eta, measured)
        _report(run, metrics, sampled=judge.chosen if judge is not None else None)
    if judge is None and run.rank == 0:  # unmeasured runs still leave their final generator as a model
        tracker.log_generator(state.sampler, run.shape, state.step, _model_tags(state, run.manifest), {})
    tracker.close()


@dataclass
class _Worker:
    """One rank of one worker-group start: its config and place in the group, its state and its tracker."""
    config: TrainConfig
    rank: int
    world_size: int
    device: torch.device
    manifest: Manifest
    shape: ModelShape
    state: TrainState
    tracker: RunLogger
    resumed: bool  # started from a checkpoint (its own after a restart, or one handed over)


def _start_worker(loop_config: dict[str, Any]) -> _Worker:
    """Config, models and DDP, the checkpoint to continue from, the noise seed, the tracker and the placement."""
    config = from_dict(TrainConfig, loop_config["train"])
    rank, world_size = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    _quiet_ray_reports(config.verbose)
    device = ray.train.torch.get_device()
    manifest = read_manifest(config.shards)
    state, shape = _build_state(config, manifest, rank, world_size, device)
    restarted = ray.train.get_checkpoint()  # this run's own latest: the worker group is being restarted
    # Else a checkpoint handed over to start from (a PBT trial continuing its own or a leader's weights).
    checkpoint = restarted or loop_config.get("start_checkpoint")
    meta = {}
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            meta = load_checkpoint(state, directory)
        state.set_lr(config.lr, config.lr_d)  # the restored optimiser carries the old rates; PBT may set new ones
    torch.manual_seed(_seed(config.seed, rank, step=state.step))  # distinct noise per rank and per resume
    tracker = RunLogger(config.tracking_uri, loop_config["run_id"], active=rank == 0 and loop_config["run_id"])
    if checkpoint is not None:
        tracker.continue_history()
    if restarted is not None:
        _note_restart(tracker, state, world_size, int(meta.get("world_size", world_size)), rank)
    _record_placement(tracker, rank)
    return _Worker(config, rank, world_size, device, manifest, shape, state, tracker, checkpoint is not None)


class _LogWindows:
    """Step statistics gathered over --log-every steps, then reduced across ranks and logged once (a collective:
    every rank calls `add` at the same steps). `latest` holds the last window's values for the report."""

    def __init__(self, tracker: RunLogger, log_every: int, images_per_step: int, names: tuple[str, ...]):
        self.tracker, self.log_every, self.images_per_step = tracker, log_every, images_per_step
        self.meter, self.latest, self.start = WindowMeter(names), {}, time.perf_counter()

    def add(self, stats: torch.Tensor, step: int, last_of_tick: bool) -> None:
        self.meter.add(stats)
        if step % self.log_every == 0 or last_of_tick:
            self.latest = _log_window(self.meter, self.tracker, step, self.start, self.images_per_step)
            self.start = time.perf_counter()


def _show_progress(run: _Worker, metrics: dict[str, float], ticks: int, eta: float, measured: bool) -> None:
    """Rank 0 after each tick: the sample grid, the progress line, and, after a measurement, its delivery."""
    run.tracker.log_image(sample_grid(run.state.sampler, run.state.fixed_noise), "samples", step=metrics["tick"])
    log.info(_progress_line(metrics, ticks, eta, measured=measured))
    if measured:  # the report may be the trial's last (Tune stops trials right after one): deliver first
        run.tracker.flush(timeout=MEASUREMENT_FLUSH_SECONDS)


def _seed(seed: int, rank: int, step: int = 0, epoch: int = 0) -> int:
    """The one seed formula: distinct per rank, per resume point (`step`) and per data epoch."""
    return seed * 7919 + 1_000_003 * epoch + 1000 * step + rank


def _record_placement(tracker: RunLogger, rank: int) -> None:
    """Which Ray node each rank runs on, as run tag `cluster.nodes` (rank=node id, ...; rewritten at every start
    of the worker group, since a restart may place ranks elsewhere) and `cluster.node_count`. A collective: every
    rank calls it."""
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    nodes = [node]
    if dist.is_initialized():
        nodes = [None] * dist.get_world_size()
        dist.all_gather_object(nodes, node)
    if rank == 0:
        tracker.set_tags({"cluster.nodes": ",".join(f"{r}={n}" for r, n in enumerate(nodes)),
                          "cluster.node_count": str(len(set(nodes)))})


def _quiet_ray_reports(verbose: bool) -> None:
    """Ray Train logs every report of every rank at INFO ("Reporting training result ...") from a logger named by
    its file's path, which LoggingConfig does not reach; our progress line says the same once."""
    from ray.train.v2._internal.execution import context as ray_train_context

    logging.getLogger(ray_train_context.__file__).setLevel(logging.INFO if verbose else logging.WARNING)


def _build_state(config: TrainConfig, manifest: Manifest, rank: int, world_size: int,
                 device: torch.device) -> tuple[TrainState, ModelShape]:
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    storage.configure(config.s3_endpoint_url)
    classes = len(manifest.class_names)
    shape = ModelShape(manifest.resolution, manifest.channels, config.latent_dim, config.g_features, config.d_features,
                       num_classes=classes if config.is_conditional(classes) else 0, d_norm=config.d_norm)
    state = TrainState.create(shape, config.lr, config.beta1, config.seed, lr_d=config.lr_d,
                              ema_half_life_kimg=config.ema_half_life_kimg, ema_rampup=config.ema_rampup,
                              augment=parse_policy(config.diffaugment, manifest.channels),
                              images_per_step=config.batch_size * config.num_workers,
                              objective=Objective(config.loss, config.r1_gamma, config.r1_every,
                                                  config.mode_seeking_weight(shape.num_classes > 0)))
    state.loss_weight = share_weight(rank, world_size, config.num_workers)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    state.generator = prepare_model(state.generator.to(memory_format=memory_format))
    # D is never run in eval mode, so its BatchNorm running statistics need no per-forward broadcast.
    state.discriminator = prepare_model(state.discriminator.to(memory_format=memory_format),
                                        parallel_strategy_kwargs={"forward_sync_buffers": False})
    if state.ema is not None:  # in G's layout: the BatchNorm pass over the average runs ~1.5x slower in another
        state.ema.model.to(device, memory_format=memory_format)
    if config.compile:
        state.generator, state.discriminator = torch.compile(state.generator), torch.compile(state.discriminator)
    if config.r1_gamma:  # R1's double backward leaves D's first-layer gradient contiguous, a harmless extra copy
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return state, shape


def _epoch_batches(run: _Worker, epoch: int, health: DataHealth):
    """This rank's batches of one epoch: its planned shares of the epoch (one, unless an elastic run is short of
    ranks), each read as that planned rank would read it."""
    config, manifest = run.config, run.manifest
    plan = plan_epoch(manifest.shards("train"), config.num_workers, config.batch_size, epoch, config.seed,
                      config.steps_per_epoch)
    policy = ReadPolicy(strict=config.strict, attempts=config.read_attempts, outage_seconds=config.store_outage_seconds)

    def share(planned_rank: int):
        seed = _seed(config.seed, planned_rank, epoch=epoch)
        if config.loader_workers_per_rank:
            return process_batches(config.shards, plan, planned_rank, manifest.image_spec, config.shuffle_buffer,
                                   seed, health, policy, config.loader_workers_per_rank,
                                   pin_memory=run.device.type == "cuda")
        return rank_batches(config.shards, plan, planned_rank, manifest.image_spec, config.shuffle_buffer, seed,
                            health, policy)

    return joined_batches([share(r) for r in planned_ranks_of(run.rank, run.world_size, config.num_workers)])


def _note_restart(tracker: RunLogger, state: TrainState, world_size: int, saved_world_size: int, rank: int) -> None:
    """A restarted worker group: a fault (counted in fault/restarts), unless an elastic run grew back."""
    if world_size != saved_world_size and rank == 0:
        log.warning("the run continues on %d ranks (it had %d) from step %d; the global batch stays %d",
                    world_size, saved_world_size, state.step, state.images_per_step)
    if world_size > saved_world_size:
        tracker.set_tags({"cluster.grew_at": f"step {state.step}: {saved_world_size} -> {world_size} ranks"})
    else:
        tracker.note_restart(state.epoch, state.step)


class _QualityJudge:
    """Rank 0's quality measurements: the EMA and the raw generator's metrics, the better one's as quality/*, the
    real-vs-real floor at the same sample count, the memorisation share at the end; the better generator of each
    measurement logged as an MLflow model linked to its metrics (gan/tracking/registry.py)."""

    def __init__(self, config: TrainConfig, manifest: Manifest, shape: ModelShape, tracker: RunLogger):
        self.config, self.manifest, self.shape, self.tracker = config, manifest, shape, tracker
        self.reference = load_run_reference(config.shards, manifest)
        self.floor = floor(self.reference, config.quality_samples)
        self.conditional = shape.num_classes > 0
        if self.conditional:  # what a generator whose every image shows its class would score
            self.floor["quality/class_match_floor"] = self.reference.test_accuracy
        # The run's own best so far, over restarts, resumes and PBT generations (a leader's does not count).
        self.best_fid = tracker.lowest(BEST_METRIC)
        self.last_step = -1
        self.chosen: str | None = None  # the generator the last measurement logged: ema or raw

    def measured_at(self, tick: Tick) -> bool:
        return self.last_step == tick.end_step

    def measure(self, state: TrainState, final: bool) -> dict[str, float]:
        """Both generators (the EMA one and the raw one) are measured; the better by fid_domain is the one logged
        as this measurement's model, registered, and described by quality/* (tag `generator`: ema or raw). Early
        in a run, or with a half-life too long for its length, the raw generator can be the better one."""
        config = self.config
        candidates = {"ema": state.sampler} if state.ema is not None else {}
        candidates["raw"] = unwrap(state.generator)
        results = {name: evaluate_generator(generator, self.reference, config.latent_dim, config.quality_samples,
                                            seed=config.seed, memorisation=final, conditional=self.conditional)
                   for name, generator in candidates.items()}
        chosen = self.chosen = min(results, key=lambda name: results[name]["quality/fid_domain"])
        quality = {**results[chosen], **{f"quality_{name}/fid_domain": result["quality/fid_domain"]
                                         for name, result in results.items()}, **self.floor}
        # The measurement's metrics are logged with the model they describe, linked to it.
        self.tracker.log_generator(candidates[chosen], self.shape, state.step,
                                   {**_model_tags(state, self.manifest), "generator": chosen}, quality,
                                   keep=config.keep_models)
        self.last_step = state.step
        if quality["quality/fid_domain"] < self.best_fid:
            # Queued after the model's upload: its lowest value always describes a stored model.
            self.best_fid = quality["quality/fid_domain"]
            self.tracker.log_metrics({BEST_METRIC: self.best_fid, "best/epoch": state.epoch}, state.step)
        return quality


def _model_tags(state: TrainState, manifest: Manifest) -> dict[str, str]:
    return {"step": str(state.step), "epoch": str(state.epoch), "dataset_hash": manifest.dataset_hash,
            "ema": str(state.ema is not None).lower(),
            "conditional": str(unwrap(state.generator).shape.num_classes > 0).lower()}


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 batch -> float [-1, 1] on the device: a quarter of the bytes cross PCIe, and pinned host memory lets
    the copy overlap the previous step's kernels."""
    if device.type == "cuda":
        images = images.pin_memory()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return normalise(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format)


def failure_summary(error: BaseException) -> str:
    """One line for a failed fit(): the first failing rank's own exception, not Ray's wrapper and traceback."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, cause = min(failures.items())
        cause = getattr(cause, "cause", None) or cause  # a RayTaskError carries the user's exception as .cause
        return f"rank {rank}: {error_line(cause)}"
    return error_line(getattr(error, "controller_failure", None) or error)


def error_line(error: BaseException) -> str:
    """`Type: last line of the message`, naming what failed. An OSError that carries no path (os.getcwd() in a
    working directory someone deleted, for one) says where it was raised instead, and whether this process's working
    directory is what is gone."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[-1] if lines else ''}"
    if isinstance(error, OSError) and not error.filename:
        frames = traceback.extract_tb(error.__traceback__)
        if frames:
            text += f" (no path given; raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})"
        try:
            os.getcwd()
        except FileNotFoundError:
            text += ("; this process's working directory no longer exists: give each Ray node its own --temp-dir, "
                     "since nodes sharing one delete each other's unpacked --working-dir")
    return text


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


def _report(run: _Worker, metrics: dict[str, float], sampled: str | None = None) -> None:
    """All ranks report; rank 0 attaches the checkpoint (Ray Train needs one report per rank per epoch).

    The checkpoint is copied to storage in the background (ASYNC) while the next epoch trains; Ray Train records
    it as the latest only once the copy is complete, so a crash mid-copy leaves the previous one in charge.
    `sampled`: which generator the last measurement chose (ema or raw), so a checkpoint samples as the model logged
    at its report does (load_generator; none recorded before a run's first measurement: the EMA one if any)."""
    if run.rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    directory = tempfile.mkdtemp(prefix="dcgan-checkpoint-")
    save_checkpoint(run.state, directory, {"config": to_dict(run.config), "model_shape": run.shape.__dict__,
                                           "world_size": run.world_size,
                                           **({"sampled_generator": sampled} if sampled else {})})
    ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory),
                     checkpoint_upload_mode=CheckpointUploadMode.ASYNC, delete_local_checkpoint_after_upload=True)


def _progress_line(metrics: dict[str, float], ticks: int, eta_seconds: float, measured: bool) -> str:
    """One line per report: where the run is, its pace and losses, and quality only when it was measured."""
    minutes, seconds = divmod(int(eta_seconds), 60)
    line = (f"tick {metrics['tick']}/{ticks}  epoch {metrics['epoch']}  {metrics['kimg']:.1f} kimg  "
            f"{metrics['perf/epoch_img_per_s']:.0f} img/s  loss/D {metrics.get('loss/D', math.nan):.3f}  "
            f"loss/G {metrics.get('loss/G', math.nan):.3f}  ETA {minutes}:{seconds:02d}")
    if measured:
        line += (f"  fid_domain {metrics['quality/fid_domain']:.1f} (floor {metrics['quality/fid_domain_floor']:.1f})"
                 f"  kid {metrics['quality/kid']:.4g} (floor {metrics['quality/kid_floor']:.4g})"
                 f"  P/R {metrics['quality/precision']:.2f}/{metrics['quality/recall']:.2f}")
    return line


class _TagCheckpoints(UserCallback):
    """Ray Train's controller tells MLflow where each persisted checkpoint lives (gan/tracking/runs.py)."""

    def __init__(self, tags: CheckpointTags):
        self.tags = tags

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled where it runs: in the controller, as it starts. Connecting there, then, keeps MLflow's
        # one-time start-up cost out of the training ticks (CheckpointTags.open_in_background).
        self.__dict__.update(state)
        self.tags.open_in_background()

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        if checkpoint is not None:
            self.tags.record(checkpoint.path.rstrip("/").rsplit("/", 1)[-1],
                             float(metrics[0].get(CHECKPOINT_SCORE, UNMEASURED)))


def build_trainer(config: TrainConfig, run_id: str | None, callbacks: list | None = None,
                  start_checkpoint: Checkpoint | None = None) -> TorchTrainer:
    """A TorchTrainer for one run; same name + storage path means Ray Train resumes from its latest checkpoint.
    `callbacks` (e.g. Tune's TuneReportCallback) see every report. `start_checkpoint` is where a new run starts
    (Train V2 dropped `resume_from_checkpoint`; the loop loads it when the run has none of its own)."""
    storage.configure(config.s3_endpoint_url)
    filesystem, storage_path = storage.pyarrow_filesystem(config.storage_path)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", CONTROLLER_POLL_SECONDS)  # passed on to the controller
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": to_dict(config), "run_id": run_id, "start_checkpoint": start_checkpoint},
        # SPREAD: one rank per node where they fit, so a lost node takes as few ranks as possible with it.
        scaling_config=ScalingConfig(
            num_workers=(config.min_workers, config.num_workers) if config.elastic else config.num_workers,
            elastic_resize_monitor_interval_s=config.elastic_resize_seconds, use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker}, placement_strategy="SPREAD"),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints,
                                               checkpoint_score_attribute=CHECKPOINT_SCORE,
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=config.max_failures),
            # Ray Train's per-report INFO lines would drown the one progress line per epoch in `ray job logs`.
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=[*(callbacks or []), *([_TagCheckpoints(CheckpointTags(
                config.tracking_uri, run_id, storage.join(config.storage_path, config.run_name)))] if run_id else [])],
        ),
    )
