"""A logged generator whose process died before it was finalised (a trial ASHA stopped, a killed worker) stays
PENDING in MLflow, possibly without files. Nobody is handed it as a run's generator, and the run's next prune
deletes it."""
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException

from gan.tracking import registry
from gan.training.models import ModelShape, build_models

SHAPE = ModelShape(resolution=32, channels=1, latent_dim=8, g_features=8, d_features=8)


def test_a_generator_left_unfinished_is_never_chosen_and_the_next_prune_deletes_it(tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking)
    run = client.create_run(client.create_experiment("unfinished", artifact_location=str(tmp_path / "artifacts")))
    run_id = run.info.run_id
    generator, _ = build_models(SHAPE)

    measured = registry.upload(tracking, run_id, registry.save_local(generator, SHAPE), step=5, tags={},
                               metrics={registry.RANK_METRIC: 900.0})
    # What a process killed between create_logged_model and finalize_logged_model leaves: the best score of all
    # is never linked to it, and it has no files.
    stranded = client.create_logged_model(run.info.experiment_id, name=registry.LOGGED_MODEL_NAME,
                                          source_run_id=run_id).model_id

    assert [m.model_id for m in registry.run_models(client, run_id)] == [measured]
    assert {m.model_id for m in registry.run_models(client, run_id, unfinished=True)} == {measured, stranded}

    assert registry.prune(tracking, run_id, keep=2) == 1  # room for two, but the unfinished one goes
    assert [m.model_id for m in registry.run_models(client, run_id, unfinished=True)] == [measured]


def test_a_generator_whose_measurement_cannot_be_linked_to_it_is_never_ready(tmp_path):
    """The measurement is linked before the model is marked READY, so a READY generator always carries the metrics
    it was logged for. (A name MLflow refuses stands in for a process killed between the two calls.)"""
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking)
    run = client.create_run(client.create_experiment("unlinked", artifact_location=str(tmp_path / "artifacts")))
    generator, _ = build_models(SHAPE)

    with pytest.raises(MlflowException, match="Invalid value"):
        registry.upload(tracking, run.info.run_id, registry.save_local(generator, SHAPE), step=5, tags={},
                        metrics={registry.RANK_METRIC: 900.0, "not a name?": 1.0})

    assert registry.run_models(client, run.info.run_id) == []
    (failed,) = registry.run_models(client, run.info.run_id, unfinished=True)
    assert failed.status == LoggedModelStatus.FAILED


def test_an_unmeasured_generator_is_registered_without_becoming_champion(tmp_path):
    """A run with --quality-every 0 logs its final generator without metrics; registering it must neither fail nor
    crown a generator nobody measured, and the console line says so."""
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking)
    run = client.create_run(client.create_experiment("unmeasured", artifact_location=str(tmp_path / "artifacts")))
    generator, _ = build_models(SHAPE)
    registry.upload(tracking, run.info.run_id, registry.save_local(generator, SHAPE), step=5, tags={}, metrics={})

    registration = registry.register_best(tracking, run.info.run_id, "unmeasured-test", dataset_hash="abc")

    assert registration.version == "1" and registration.champion_version is None
    assert "not measured" in registration.describe() and "none is champion" in registration.describe()
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("unmeasured-test", registry.CHAMPION)
