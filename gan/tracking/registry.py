"""The generator as an MLflow Model: logged at each quality measurement (an MLflow 3 LoggedModel linked to that
measurement's metrics), bounded per run, and a run's best registered under a name whose `champion` alias moves only
to a better generator trained on the same shards.

Saved with torch.export (MLflow's serialization_format="pt2"): the archive holds the traced graph and the weights,
no pickled Python and no reference to this package. So `mlflow.pytorch.load_model(uri)` and
`mlflow.pyfunc.load_model(uri).predict(z)` work where only `pip install mlflow torch` was run, and MLflow checks the
archive is pickle-free before it loads it. (The pickle format would need `gan` importable and runs code on load;
TorchScript is deprecated in torch 2.x; `code_paths` would ship our modules with every model.)
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from gan.config_fields import ConfigError
from gan.tracking.global_uri import global_tracking_uri
from gan.training.models import ModelShape, PackedClassInput

log = logging.getLogger(__name__)

LOGGED_MODEL_NAME = "generator"
CHAMPION = "champion"
RANK_METRIC = "quality/fid_domain"  # lower is better
# What a version carries from its run and measurement, for the registry page and for comparing champions.
VERSION_METRICS = ("quality/fid_domain", "quality/fid_domain_floor", "quality/kid", "quality/precision",
                   "quality/recall")


# What a conditional generator's one input holds (PackedClassInput), recorded in its MLmodel metadata. The tensor
# stays unnamed: MLflow's PyTorch flavour hands a model one array, and a named input would arrive as a dict.
CONDITIONAL_INPUT = "z, then the class index (0-based, as a float) in the last column"


def signature(shape: ModelShape) -> ModelSignature:
    """Input: latent vectors z (float32, (-1, latent_dim)), or for a conditional generator z with the class index
    appended ((-1, latent_dim + 1)); output: images (float32 in [-1, 1], (-1, C, H, W))."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, shape.latent_dim + (shape.num_classes > 0)))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, shape.channels, shape.resolution, shape.resolution))]))


def _requirements() -> list[str]:
    """What loading the model needs: given, so MLflow skips inferring them (6 s of imports in a subprocess)."""
    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy"]


def save_local(generator: torch.nn.Module, shape: ModelShape) -> Path:
    """The generator as an MLflow Model folder (torch.export inside), written to a new temporary folder.

    Call it from the training thread, never from a background one: torch.export sets process-wide state under
    which a concurrent DDP forward fails ("Non-recursive torch.compiler.disable is not supported with
    torch.export"). It touches no server, so a tracking outage cannot stall training here."""
    directory = Path(tempfile.mkdtemp(prefix="dcgan-model-")) / "model"
    example = torch.randn(2, shape.latent_dim, generator=torch.Generator().manual_seed(0))
    portable = copy.deepcopy(generator).cpu().eval().requires_grad_(False)
    if shape.num_classes:
        example = PackedClassInput.pack(example, torch.tensor([0, shape.num_classes - 1]))
        portable = PackedClassInput(portable)
    mlflow.pytorch.save_model(portable, str(directory), signature=signature(shape), input_example=example.numpy(),
                              serialization_format="pt2", pip_requirements=_requirements(),
                              metadata={"num_classes": shape.num_classes,
                                        **({"input": CONDITIONAL_INPUT} if shape.num_classes else {})})
    return directory


def upload(tracking_uri: str, run_id: str, directory: Path, step: int, tags: dict[str, str],
           metrics: dict[str, float]) -> str:
    """A folder from `save_local` as a LoggedModel of the run at `step`, with `metrics` (the measurement's) logged
    to the run linked to it; the folder is deleted after. Returns the model id. What mlflow.pytorch.log_model does,
    split so that the export stays in the training thread and the network calls go to the logger thread. If the
    model cannot be stored, the metrics are still logged (unlinked) before the error is raised."""
    client = MlflowClient(tracking_uri)
    model, linked = None, False
    try:
        run = client.get_run(run_id)
        model = client.create_logged_model(run.info.experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id,
                                           tags=tags, params=run.data.params, model_type="dcgan-generator")
        described = Model.load(str(directory))  # its MLmodel names the model and the run it belongs to
        described.model_id, described.run_id, described.artifact_path = (model.model_id, run_id,
                                                                          model.artifact_location)
        described.save(str(directory / "MLmodel"))
        client.log_model_artifacts(model.model_id, str(directory))
        # Linked before it is READY: a process killed in between (a trial ASHA stops) leaves the model PENDING,
        # which run_models never hands out, instead of READY without the measurement it was logged for.
        _log_measurement(client, run_id, metrics, step, model.model_id)
        linked = True
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=step)])
    except Exception:
        if model is not None:
            with contextlib.suppress(Exception):
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        if not linked:
            _log_measurement(client, run_id, metrics, step, None)
        raise
    finally:
        shutil.rmtree(directory.parent, ignore_errors=True)
    return model.model_id


def _log_measurement(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int,
                     model_id: str | None) -> None:
    if metrics:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, float(value), now, step, model_id=model_id)
                                          for key, value in metrics.items()])


def run_models(client: MlflowClient, run_id: str, unfinished: bool = False) -> list:
    """The run's logged generators, best first (lowest quality/fid_domain; unmeasured ones last, newest first).

    Only READY ones, unless `unfinished`: a model stays PENDING when its process dies between creating it and
    finalising it (a trial ASHA stops, a killed worker), and such a model may have no files to load."""
    experiment_id = client.get_run(run_id).info.experiment_id
    models, token = [], None
    while True:
        page = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                           page_token=token)
        models += list(page)
        if not (token := page.token):
            break
    if not unfinished:
        models = [m for m in models if _ready(m)]
    return sorted(models, key=lambda m: (model_metric(m, RANK_METRIC), -m.creation_timestamp))


def _ready(model) -> bool:
    return model.status == LoggedModelStatus.READY


def model_metric(model, key: str) -> float:
    """A LoggedModel's linked metric (its latest value), inf if it has none."""
    values = [m for m in model.metrics or [] if m.key == key]
    return max(values, key=lambda m: m.step).value if values else math.inf


def prune(tracking_uri: str, run_id: str, keep: int) -> int:
    """Keep `keep` of the run's generators: the newest and the best of the others (so the best always stays),
    plus any a registry version points at; delete the rest (the LoggedModel and its files), and any model an
    earlier, killed attempt left unfinished. Returns how many were deleted."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = MlflowClient(tracking_uri)
    everything = run_models(client, run_id, unfinished=True)
    models = [m for m in everything if _ready(m)]
    newest = max(models, key=lambda m: m.creation_timestamp, default=None)
    kept = {newest.model_id} if newest else set()
    for model in models:  # best first
        if len(kept) >= keep:
            break
        kept.add(model.model_id)
    # (A version's model_id is not kept by every registry store; its source, models:/<model id>, is.)
    kept |= {v.source.removeprefix("models:/") for v in client.search_model_versions(f"run_id = '{run_id}'")}
    doomed = [m for m in everything if m.model_id not in kept]
    for model in doomed:
        try:
            get_artifact_repository(model.artifact_location).delete_artifacts()
        except Exception as error:  # noqa: BLE001 - a store that refuses deletes keeps the files; `mlflow gc` can
            log.warning("could not delete the files of logged model %s (%s): %s", model.model_id,
                        model.artifact_location, error)
        client.delete_logged_model(model.model_id)
    return len(doomed)


def default_name(source: str) -> str:
    """dcgan-<data set>: dcgan-mnist, dcgan-digits, dcgan-<folder name> (a subset adds its size: dcgan-mnist-5000)."""
    if source.startswith("sklearn.datasets.load_digits"):
        base = "digits"
    elif source.startswith("folder:"):
        base = source.removeprefix("folder:").rstrip("/").rsplit("/", 1)[-1]
    else:
        base = source.split()[0]
    subset = re.search(r", (\d+) train", source)
    name = f"dcgan-{base}" + (f"-{subset.group(1)}" if subset else "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).lower()


def champion(client: MlflowClient, name: str):
    """The version the `champion` alias points at, or None."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def choose_name(tracking_uri: str, register_as: str, source: str, dataset_hash: str, conditional: bool = False) -> str:
    """The registered model a run's best generator joins: `register_as`, else `default_name(source)`. A name
    already holding another shard set's generators, or generators of the other mode (conditional ones take a class,
    so the champion's callers would break), is refused when given (ConfigError); the default name then adds the
    mode (-conditional, -unconditional) or the shards' hash."""
    name = register_as or default_name(source)
    conflict = registry_conflict(tracking_uri, name, dataset_hash, conditional)
    if conflict and register_as:
        raise ConfigError(f"--register-as {conflict}")
    if not conflict:
        return name
    mode, data = "conditional" if conditional else "unconditional", dataset_hash[:8]
    other_data = _champion_tag(tracking_uri, name, "dataset_hash") not in (None, dataset_hash)
    candidates = [f"{name}-{data}" if other_data else f"{name}-{mode}", f"{name}-{data}-{mode}"]
    return next((c for c in candidates if not registry_conflict(tracking_uri, c, dataset_hash, conditional)),
                candidates[-1])


def _champion_tag(tracking_uri: str, name: str, tag: str) -> str | None:
    current = champion(MlflowClient(tracking_uri), name)
    return current.tags.get(tag) if current else None


def registry_conflict(tracking_uri: str, name: str, dataset_hash: str, conditional: bool = False) -> str:
    """Why `name` cannot take this run's generator ('' if it can): its champion was trained on other shards, and
    fid_domain on different data is not comparable; or it is of the other mode (versions registered before the mode
    was tagged are taken as either)."""
    theirs = _champion_tag(tracking_uri, name, "dataset_hash")
    if theirs and theirs != dataset_hash:
        return (f"registered model {name!r} holds generators of shard set {theirs}, these shards are {dataset_hash}: "
                f"pass another --register-as (or --no-register)")
    their_mode = _champion_tag(tracking_uri, name, "conditional")
    if their_mode and their_mode != str(conditional).lower():
        return (f"registered model {name!r} holds {_mode(their_mode == 'true')} generators and this run trains "
                f"{_mode(conditional)} ones, which its champion's callers could not use: pass another --register-as "
                f"(or --no-register)")
    return ""


def _mode(conditional: bool) -> str:
    return "class-conditional (input z and a class)" if conditional else "unconditional (input z)"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    fid: float  # inf: the version was never measured (a run with --quality-every 0)
    champion_version: str | None  # None: no version of the name was ever measured, so none is the champion
    champion_fid: float

    @property
    def is_champion(self) -> bool:
        return self.version == self.champion_version

    def describe(self) -> str:
        measured = f"fid_domain {self.fid:.2f}" if math.isfinite(self.fid) else "not measured: --quality-every 0"
        head = f"registered {self.name} version {self.version} ({measured})"
        if self.champion_version is None:
            return f"{head}; no version of {self.name} was measured, so none is {CHAMPION}"
        if self.is_champion:
            return f"{head}; it is now models:/{self.name}@{CHAMPION}"
        return (f"{head}; {CHAMPION} stays version {self.champion_version} (fid_domain {self.champion_fid:.2f} on "
                f"the same shards)")


def register_best(tracking_uri: str, run_id: str, name: str, dataset_hash: str,
                  conditional: bool = False) -> Registration | None:
    """Register the run's best generator as a new version of `name`; move `champion` to it only if it beats the
    current champion's fid_domain on the same shard set, in the same mode. None when the run logged no generator."""
    client = MlflowClient(tracking_uri)
    models = run_models(client, run_id)
    if not models:
        return None
    best = models[0]
    fid = model_metric(best, RANK_METRIC)
    measured = {key.split("/")[-1]: model_metric(best, key) for key in VERSION_METRICS}
    tags = {"run_id": run_id, "model_id": best.model_id, "dataset_hash": dataset_hash,
            "conditional": str(conditional).lower(),
            "step": best.tags.get("step", ""), "epoch": best.tags.get("epoch", ""),
            **{name: f"{value:.6g}" for name, value in measured.items() if math.isfinite(value)}}
    try:
        client.create_registered_model(name, description="DCGAN generators (dcgan-ray). Input: latent vectors z "
                                                         "(conditional: and a class); output: images in [-1, 1]. "
                                                         "Alias champion = the best.")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with global_tracking_uri(tracking_uri):  # a local store resolves a models:/ source through the global one
        version = client.create_model_version(name, source=f"models:/{best.model_id}", run_id=run_id, tags=tags,
                                              model_id=best.model_id)
    current = champion(client, name)
    current_fid = float(current.tags.get("fid_domain", "inf")) if current else math.inf
    same_data = current is None or (current.tags.get("dataset_hash") == dataset_hash
                                    and current.tags.get("conditional", tags["conditional"]) == tags["conditional"])
    if same_data and fid < current_fid:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        current, current_fid = version, fid
    return Registration(name, str(version.version), fid, str(current.version) if current else None, current_fid)


def report_registration(job: str, tracking_uri: str, run_id: str, data_facts: dict[str, str]) -> None:
    """Register the run's best generator under data_facts["registry.name"] and say on the console what happened.
    A registry that fails now leaves the logged models in place, and the line says so (on stderr)."""
    import sys

    name = data_facts["registry.name"]
    try:
        registration = register_best(tracking_uri, run_id, name, data_facts["data.dataset_hash"],
                                     data_facts.get("conditional") == "True")
    except Exception as error:  # noqa: BLE001 - the run's generators are logged; only the registry entry is missing
        print(f"{job}: could not register the best generator as {name!r} ({type(error).__name__}: {error}); it is "
              f"logged in run {run_id}: register it from the run's Models tab", file=sys.stderr, flush=True)
        return
    print(f"{job}: {registration.describe()}" if registration else
          f"{job}: no generator was logged (quality off and no final model?); nothing registered", flush=True)
