"""The training job end to end on a real local Ray (2 DDP workers) and a real MLflow sqlite store."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from gan.config import CONDITIONAL_MODE_SEEKING
from gan.tracking.registry import CHAMPION, model_metric
from gan.tracking.runs import RUN_NAME_TAG
from jobs import train
from tests.helpers import REPO, fid_of_model, logged_models, metric_values, new_lows

EXPECTED_METRICS = {"loss/D", "loss/D_real", "loss/D_fake", "loss/G", "disc/D_x", "disc/D_G_z", "perf/img_per_s",
                    "quality/fid_domain", "quality/precision", "quality/recall", "data/bad_shards",
                    "quality/fid_domain_floor", "quality/kid", "quality/kid_floor", "quality_raw/fid_domain",
                    "quality/precision_floor", "quality/recall_floor", "quality/memorised_share",
                    "quality/memorised_share_floor", "tick", "kimg"}


def _job_args(shards: Path, work: Path, epochs: int) -> list[str]:
    return ["--shards", str(shards), "--epochs", str(epochs), "--steps-per-epoch", "3", "--num-workers", "2",
            "--batch-size", "16", "--g-features", "8", "--d-features", "8", "--latent-dim", "16", "--log-every", "2",
            "--tracking-uri", f"sqlite:///{work / 'mlruns.db'}", "--artifact-root", str(work / "mlartifacts"),
            "--storage-path", str(work / "ray_results"), "--run-name", "smoke", "--experiment", "test"]


def _run(client: MlflowClient):
    experiment = client.get_experiment_by_name("test")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = 'smoke'")


def _latest_checkpoint_meta(work: Path) -> dict:
    checkpoints = sorted(p for p in (work / "ray_results" / "smoke").glob("checkpoint_*") if p.is_dir())
    return json.loads((checkpoints[-1] / "meta.json").read_text())


@pytest.fixture(scope="module")
def trained(digits_shards, local_ray, tmp_path_factory):
    work = tmp_path_factory.mktemp("job")
    assert train.main(_job_args(digits_shards, work, epochs=2)) == 0
    return work


@pytest.mark.slow
def test_two_worker_run_leaves_a_checkpoint(trained):
    meta = _latest_checkpoint_meta(trained)
    assert (meta["epoch"], meta["step"]) == (2, 6)
    checkpoint_dir = sorted(p for p in (trained / "ray_results" / "smoke").glob("checkpoint_*") if p.is_dir())[-1]
    state = torch.load(checkpoint_dir / "train_state.pt", weights_only=True)
    assert {"generator", "discriminator", "opt_g", "opt_d", "fixed_noise", "epoch", "step"} <= set(state)


@pytest.mark.slow
def test_two_worker_run_is_tracked_in_mlflow(trained):
    client = MlflowClient(f"sqlite:///{trained / 'mlruns.db'}")
    (run,) = _run(client)
    assert run.info.status == "FINISHED"
    assert EXPECTED_METRICS <= set(run.data.metrics)
    assert run.data.params["lr"] == "0.0016" and run.data.params["num_workers"] == "2"
    # auto, on the labelled digits
    assert run.data.params["conditional"] == "True"
    assert run.data.params["mode_seeking"] == str(CONDITIONAL_MODE_SEEKING)
    assert run.data.params["data.image_format"] == "npy"  # make_shards' default
    assert float(run.data.params["quality.classifier_test_accuracy"]) > 0.9
    # The memorisation share is measured once, at the end; the floor beside every quality measurement.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "quality/memorised_share")] == [6]
    assert len(client.get_metric_history(run.info.run_id, "quality/fid_domain_floor")) == 2
    # The logger thread made calls (grids, metric batches) and cannot have used more than a core. A call counts in the
    # tick in which it finished, so on a loaded machine the first tick's may all land in the second (measured: 0.0,
    # 0.049 with the whole suite running beside it).
    shares = [m.value for m in client.get_metric_history(run.info.run_id, "perf/tracking_cpu_share")]
    assert len(shares) == 2 and all(0 <= share < 1 for share in shares) and sum(shares) > 0, shares
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/G")] == [2, 3, 4, 6]  # every 2 steps and at each epoch end
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert sum(".png" in path for path in images) == 3  # before training, after epoch 1 and 2
    # Each quality measurement (epochs 1 and 2) left a logged generator with that measurement's metrics linked.
    models = logged_models(f"sqlite:///{trained / 'mlruns.db'}", run.info.run_id)
    fids = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "quality/fid_domain")}
    assert sorted(int(m.tags["step"]) for m in models) == sorted(fids) == [3, 6]
    assert all(model_metric(m, "quality/fid_domain") == fids[int(m.tags["step"])] for m in models)
    # Each measurement's model is the better of the EMA and the raw generator, and its tag says which.
    series = {name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"quality_{name}/fid_domain")}
              for name in ("ema", "raw")}
    for model in models:
        both = {name: values[int(model.tags["step"])] for name, values in series.items()}
        assert model.tags["generator"] == min(both, key=both.get)
        assert model_metric(model, "quality/fid_domain") == min(both.values())
    # The best of them is registered under the name the data set gives, as the first champion.
    version = client.get_model_version_by_alias("dcgan-digits", CHAMPION)
    assert (version.source, version.tags["run_id"]) == (f"models:/{models[0].model_id}", run.info.run_id)
    assert version.tags["dataset_hash"] == run.data.params["data.dataset_hash"]
    # The run page says where its checkpoints are: the newest, and the one at the lowest fid_domain.
    latest, best = Path(run.data.tags["checkpoint.latest"]), Path(run.data.tags["checkpoint.best"])
    assert json.loads((latest / "meta.json").read_text())["step"] == 6
    assert json.loads((best / "meta.json").read_text())["step"] == min(fids, key=fids.get)


@pytest.mark.slow
def test_the_run_logs_every_series_at_the_same_steps_as_before_the_tracking_rework(trained):
    """Issue #28 moved tracking work off the training thread's path. The same run, logged before that change
    (tests/data/logged_series.json), and now: every metric at the same steps, each step once; the same grids and
    models. A series that is new may be added; none may go."""
    before = json.loads((REPO / "tests" / "data" / "logged_series.json").read_text())
    client = MlflowClient(f"sqlite:///{trained / 'mlruns.db'}")
    (run,) = _run(client)
    now = {key: [m.step for m in client.get_metric_history(run.info.run_id, key)] for key in run.data.metrics}
    assert set(before["metrics"]) <= set(now)
    for key, steps in before["metrics"].items():
        if key.startswith("best/"):  # logged at each new low, so where depends on the measured values
            assert now[key] and set(now[key]) <= set(now["quality/fid_domain"]), key
        else:
            assert sorted(now[key]) == steps, key
    assert all(len(steps) == len(set(steps)) for steps in now.values()), now  # no step logged twice
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
    assert sorted(int(path.split("+step+")[1].split("+")[0]) for path in grids) == before["image_steps"]
    models = logged_models(f"sqlite:///{trained / 'mlruns.db'}", run.info.run_id)
    assert sorted(int(m.tags["step"]) for m in models) == before["model_steps"]


@pytest.mark.slow
def test_resume_continues_the_step_counter_in_the_same_mlflow_run(trained, digits_shards):
    # The resumed epoch decodes in two loader processes per worker: forked inside Ray's worker actors, and still
    # exactly as many steps on both ranks (else DDP would hang at the epoch end).
    assert train.main(_job_args(digits_shards, trained, epochs=3) + ["--loader-workers-per-rank", "2"]) == 0
    meta = _latest_checkpoint_meta(trained)
    assert (meta["epoch"], meta["step"]) == (3, 9)
    client = MlflowClient(f"sqlite:///{trained / 'mlruns.db'}")
    (run,) = _run(client)
    assert run.data.tags["resumes"] == "1"
    assert max(m.step for m in client.get_metric_history(run.info.run_id, "loss/G")) == 9


def test_bad_config_fails_before_ray_starts_naming_the_field(tmp_path):
    result = subprocess.run([sys.executable, "-m", "jobs.train", "--latent-dim", "-3"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--latent-dim=-3 is out of range: it must be >= 1" in result.stderr
    assert "Started a local Ray instance" not in result.stderr + result.stdout


def test_resolution_mismatch_with_the_shards_is_rejected(digits_shards, tmp_path):
    result = subprocess.run([sys.executable, "-m", "jobs.train", "--shards", str(digits_shards), "--resolution", "64"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--resolution=64 but the shards" in result.stderr


@pytest.mark.slow
def test_the_run_keeps_its_best_generator_across_a_resume(trained, digits_shards):
    client = MlflowClient(f"sqlite:///{trained / 'mlruns.db'}")
    (run,) = _run(client)
    measured = metric_values(client, run.info.run_id, "quality/fid_domain")
    assert len(measured) == 3  # epochs 1 and 2, then 3 in the resume test above (pytest runs a module in order)
    # One best per new low, the resumed epoch compared with the run's earlier best, not started afresh.
    assert metric_values(client, run.info.run_id, "best/fid_domain") == new_lows(measured)
    # The run's best logged model is that best generator: loaded by its URI and measured again here, it scores
    # what the run logged for it.
    tracking = f"sqlite:///{trained / 'mlruns.db'}"
    best = logged_models(tracking, run.info.run_id)[0]
    assert model_metric(best, "quality/fid_domain") == min(measured)
    again = fid_of_model(f"models:/{best.model_id}", tracking, digits_shards, int(run.data.params["quality_samples"]),
                         int(run.data.params["seed"]))
    assert again == pytest.approx(min(measured), rel=1e-4)

