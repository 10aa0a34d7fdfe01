"""Sweeps on a real local Ray with a real MLflow store: nested runs, ASHA early stops, summary, resume after a kill."""
import contextlib
import csv
import json
import math
import os
import re
import signal
import subprocess
import time

import pytest
import torch
from mlflow import MlflowClient

from gan.config import CONDITIONAL_MODE_SEEKING, TrainConfig, parse
from gan.run.worker import TrainingDiverged, _log_window
from gan.sweep.tune import ran_its_length
from gan.tracking.registry import model_metric
from gan.tracking.runs import RunLogger
from gan.training.stats import WindowMeter
from tests.helpers import fid_of_model, logged_models, metric_values, new_lows, sweep_command


def _runs(work):
    client = MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dcgan").experiment_id])
    parents = [r for r in runs if r.data.tags.get("job") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children


@pytest.mark.slow
def test_every_trial_is_a_child_run_with_its_own_settings_and_series(swept):
    client, (parent,), children = _runs(swept)
    assert len(children) == 4 and all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    settings = sorted((float(c.data.params["lr"]), float(c.data.params["beta1"])) for c in children)
    assert settings == [(1e-6, 0.5), (1e-6, 0.7), (2e-3, 0.5), (2e-3, 0.7)]  # --grid over lr=1e-6,2e-3 x beta1=0.5,0.7
    for child in children:
        assert child.info.run_name == f"lr={float(child.data.params['lr']):.1e} nz=16 beta1={child.data.params['beta1']}"
    assert "beta1" not in parent.data.params and "beta1 (0.5,0.7)" in parent.data.tags["mlflow.note.content"]
    for child in children:
        assert client.get_metric_history(child.info.run_id, "quality/fid_domain")
        assert client.get_metric_history(child.info.run_id, "loss/G")
        # The digits are labelled: the parent's checks decided conditional (auto), and every trial records what it took.
        params = child.data.params
        assert (params["conditional"], params["mode_seeking"]) == ("True", str(CONDITIONAL_MODE_SEEKING))
        assert client.get_metric_history(child.info.run_id, "loss/mode_seeking")
    assert parent.data.params["conditional"] == "True"
    assert "Ray Tune sweep" in parent.data.tags["mlflow.note.content"]


@pytest.mark.slow
def test_asha_stops_lagging_trials_early(swept):
    client, (parent,), children = _runs(swept)
    statuses = sorted(c.data.tags["status"] for c in children)
    assert "stopped early" in statuses and "completed" in statuses
    assert all(c.info.status == "KILLED" for c in children if c.data.tags["status"] == "stopped early")
    # Tune's own record: a stopped trial reported fewer epochs than the schedule (its Train run may still have
    # logged one more epoch to MLflow before the trial actor was stopped).
    table = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "summary.csv"))))
    assert all(int(row["epochs"]) < 3 for row in table if row["status"] == "stopped early")


@pytest.mark.slow
def test_parent_holds_the_summary_and_the_best_trial_matches_the_table(swept):
    client, (parent,), _ = _runs(swept)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.png"} <= artifacts
    table = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "summary.csv"))))
    assert len(table) == 4
    best = min((row for row in table if not math.isnan(float(row["best_fid_domain"]))),
               key=lambda row: float(row["best_fid_domain"]))
    assert parent.data.tags["best.trial_id"] == best["trial_id"]
    assert float(parent.data.tags["best.lr"]) == float(best["lr"])
    assert parent.data.metrics["best/fid_domain"] == pytest.approx(float(best["best_fid_domain"]))


@pytest.mark.slow
def test_the_parent_carries_the_best_trials_whole_config_and_jobs_train_reads_it_back(swept):
    client, (parent,), children = _runs(swept)
    path = client.download_artifacts(parent.info.run_id, "best_config.yaml")
    config = parse(TrainConfig, ["--config", path])
    (trial,) = [c for c in children if c.data.tags["tune.trial_id"] == parent.data.tags["best.trial_id"]]
    for name in ("lr", "latent_dim", "beta1", "batch_size", "g_features", "ema_half_life_kimg", "shards"):
        assert str(getattr(config, name)) == trial.data.params[name], name  # what the best trial trained with
    assert (config.run_name, config.epochs, config.kimg) == ("", 0, 0.0)  # the follow-up chooses its own
    assert "python -m jobs.train --config best_config.yaml" in open(path).readline()
    # Flags still override the file, as for any --config.
    assert parse(TrainConfig, ["--config", path, "--kimg", "600"]).kimg == 600


@pytest.mark.slow
def test_the_sweep_table_shows_each_trials_measurements_and_its_best_one(swept):
    from bench.sweep_table import markdown, sweep_rows

    client, _, children = _runs(swept)
    rows = {row["trial"]: row for row in sweep_rows(client, "dcgan", "sw")}
    assert set(rows) == {child.info.run_name for child in children}
    for child in children:
        row, fids = rows[child.info.run_name], metric_values(client, child.info.run_id, "quality/fid_domain")
        assert [m["fid_domain"] for m in row["measurements"]] == fids  # every measurement, in order
        assert row["best"]["fid_domain"] == min(fids)
        assert row["best"]["x_floor"] == pytest.approx(min(fids) / child.data.metrics["quality/fid_domain_floor"])
        assert 0 <= row["best"]["quality/recall"] <= 1 and 0 < row["minutes"] < 15  # read at the best step, not NaN
    assert markdown(list(rows.values())).count("\n") == len(children) + 1  # a header, its rule, a line per trial


@pytest.mark.slow
def test_every_trial_keeps_its_best_generator_and_the_parent_points_at_the_best_one(swept):
    client, (parent,), children = _runs(swept)
    tracking = f"sqlite:///{swept / 'mlruns.db'}"
    for child in children:
        measured = metric_values(client, child.info.run_id, "quality/fid_domain")
        bests = metric_values(client, child.info.run_id, "best/fid_domain")
        assert bests and bests == new_lows(measured)[:len(bests)]  # one best per new low, in order
        if child.data.tags["status"] == "completed":  # (a stopped trial may be stopped before its last upload)
            assert bests == new_lows(measured)
        # Every measurement left a logged generator (3 epochs, all kept) linked to its own metrics, and the best
        # ranks first. A trial ASHA stopped may have been stopped during its last upload: that one has no model.
        models = logged_models(tracking, child.info.run_id)
        at_step = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "quality/fid_domain")}
        linked = {int(m.tags["step"]): model_metric(m, "quality/fid_domain") for m in models}
        unlinked = sorted(set(at_step) - set(linked))
        assert linked == {step: at_step[step] for step in linked}
        assert unlinked == [] if child.data.tags["status"] == "completed" else unlinked in ([], [max(at_step)])
        assert model_metric(models[0], "quality/fid_domain") == min(linked.values())
    best_run = parent.data.tags["best.run_id"]
    assert parent.data.tags["best.model_uri"] == f"models:/{logged_models(tracking, best_run)[0].model_id}"
    table = list(csv.DictReader(open(client.download_artifacts(parent.info.run_id, "summary.csv"))))
    assert {row["run_id"]: row["model_uri"] for row in table}[best_run] == parent.data.tags["best.model_uri"]
    # The model behind the URI is the sweep's best generator: loaded and measured again here, it scores the
    # sweep's best (--quality-samples 200, seed 0); and the sweep registered it, once, as the champion of its
    # data set's name.
    again = fid_of_model(parent.data.tags["best.model_uri"], tracking, swept / "shards", 200)
    assert again == pytest.approx(parent.data.metrics["best/fid_domain"], rel=1e-4)
    # (The store is shared with the UI test's tiny run, which does not register.)
    (version,) = client.search_model_versions("name = 'dcgan-digits'")
    assert version.source == parent.data.tags["best.model_uri"]
    assert client.get_model_version_by_alias("dcgan-digits", "champion").version == version.version


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_rerunning_completed_trials(digits_shards, tmp_path):
    two_trials = ("--search", "lr=1e-6,2e-3 latent_dim=16")  # run one at a time: kill between the first and second
    driver = subprocess.Popen(sweep_command(digits_shards, tmp_path, *two_trials), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Watch Tune's own saved state (not the MLflow store the driver is still creating) for a finished trial.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None and not _terminated_trials(tmp_path):
            time.sleep(2)
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started, mid-sweep
        driver.wait()
    done_before = _terminated_trials(tmp_path)
    assert done_before and len(done_before) < 2

    resumed = subprocess.run(sweep_command(digits_shards, tmp_path, *two_trials, "--resume"), cwd=tmp_path, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "resuming 'sw'" in resumed.stdout
    client, parents, children = _runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2  # no trial started twice
    for child in (c for c in children if c.data.tags["tune.trial_id"] in done_before):
        assert "resumes" not in child.data.tags  # a rerun trial would have re-opened its run
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss/G")]
        assert len(steps) == len(set(steps))
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)


def _terminated_trials(work) -> set[str]:
    """Trial ids that Tune's last saved experiment state records as finished (completed or stopped)."""
    finished = set()
    for state_file in (work / "ray" / "sw").glob("experiment_state-*.json"):
        with contextlib.suppress(ValueError):  # the driver may be rewriting it right now
            for trial_json, _ in json.loads(state_file.read_text())["trial_data"]:
                trial = json.loads(trial_json)
                if trial["status"] == "TERMINATED":
                    finished.add(trial["trial_id"])
    return finished


def test_a_non_finite_loss_stops_the_run_instead_of_training_on():
    meter = WindowMeter(("loss/D", "loss/G"))
    meter.add(torch.tensor([0.5, float("nan")]))
    with pytest.raises(TrainingDiverged, match="loss/G not finite at step 7"):
        _log_window(meter, RunLogger("", None, active=False), step=7, since=time.perf_counter(), images_per_step=8)


@pytest.mark.parametrize("last_report, train, ran", [
    ({"epoch": 10, "kimg": 600.0}, {"epochs": 10, "kimg": 0}, True),     # all its epochs
    ({"epoch": 2, "kimg": 120.0}, {"epochs": 10, "kimg": 120}, True),     # --kimg ended it first (a 3-trial sweep
    ({"epoch": 2, "kimg": 120.016}, {"epochs": 10, "kimg": 120}, True),   # on MNIST was once listed as stopped)
    ({"epoch": 1, "kimg": 63.0}, {"epochs": 10, "kimg": 120}, False),     # ASHA stopped it
    ({"epoch": 3, "kimg": 189.0}, {"epochs": 10, "kimg": 0}, False),
])
def test_a_trial_that_reached_its_kimg_counts_as_completed_not_stopped(last_report, train, ran):
    assert ran_its_length(last_report, train) is ran


@pytest.mark.parametrize("argv, message", [
    (["--search", "latent_dim=64,5000"], "--search latent_dim: --latent-dim=5000 is out of range: it must be <= 4096"),
    (["--search", "latent_dim=32,abc"], "--latent-dim (--search): 'abc' is not a valid int"),
    (["--search", "lr=loguniform(1e-3,1e-4)"], "LOW must be below HIGH and above 0 for loguniform"),
    (["--search", "lr=loguniform(0.1,2)"], "--search lr: --lr=2.0 is out of range"),
    (["--search", "lr=loguniform(1e-4,1e-3)", "--grid"], "--grid takes lists of values, not a distribution"),
    (["--search", "latent_dim=uniform(16,64)"], "a distribution draws floats, and latent_dim takes ints"),
    (["--search", "lr=normal(1e-4,1e-3)"], "unknown distribution; use loguniform(LOW,HIGH) or uniform(LOW,HIGH)"),
    (["--search", "lr_d_ratio=1,400"], "--search lr_d_ratio=400 is out of range"),
    (["--quality-every", "0"], "ranks trials by quality/fid_domain"),
    (["--scheduler", "pbt", "--epochs", "4", "--perturbation-interval", "4"], "or PBT never perturbs a trial"),
    (["--scheduler", "pbt", "--search", "latent_dim=32,64"], "--scheduler pbt perturbs the learning rate"),
    (["--grid", "--num-samples", "3", "--search", "lr=1e-4,2e-4"],
     "--grid --num-samples 3 would train each grid point 3 times with the same settings and --seed"),
])
def test_bad_sweep_settings_are_rejected_before_ray_starts(argv, message):
    from gan.config import ConfigError, SweepConfig, parse

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(SweepConfig, argv)


def test_a_grid_runs_each_point_once_and_repeats_it_over_a_seed_axis():
    from ray.tune.search.variant_generator import generate_variants

    from gan.config import SweepConfig, parse
    from gan.sweep.tune import search_space

    grid = parse(SweepConfig, ["--grid", "--search", "lr=1e-4,2e-4 seed=0,1,2"])
    assert grid.trial_count() == 1  # Tune's num_samples: one pass over the grid
    trials = [trial for _ in range(grid.trial_count()) for _, trial in generate_variants(search_space(grid))]
    assert sorted((t["lr"], t["seed"]) for t in trials) == [(lr, seed) for lr in (1e-4, 2e-4) for seed in (0, 1, 2)]
    assert parse(SweepConfig, []).trial_count() == 4 and parse(SweepConfig, ["--num-samples", "7"]).trial_count() == 7


def test_search_adds_any_training_field_as_an_axis_with_typed_checked_values():
    from ray.tune.search.variant_generator import generate_variants

    from gan.config import SweepConfig, TrainConfig, parse
    from gan.sweep.tune import search_space, trial_config, trial_name

    config = parse(SweepConfig, ["--grid", "--search", "lr=1e-4 latent_dim=64 beta1=0.5,0.8 batch-size=32,64"])
    assert config.search_axes() == {"lr": [1e-4], "latent_dim": [64], "beta1": [0.5, 0.8], "batch_size": [32, 64]}
    trials = [trial for _, trial in generate_variants(search_space(config))]
    assert {(t["beta1"], t["batch_size"]) for t in trials} == {(b, n) for b in (0.5, 0.8) for n in (32, 64)}
    train = trial_config(TrainConfig(), trials[-1], "t1")
    assert (train.beta1, train.batch_size, train.lr, train.latent_dim) == (0.8, 64, 1e-4, 64)
    assert trial_name(trials[-1]) == "lr=1.0e-04 nz=64 beta1=0.8 batch_size=64"


@pytest.mark.parametrize("search, message", [
    ("beta1", "write FIELD=V1,V2 or FIELD=loguniform(LOW,HIGH)"),
    ("momentum=0.9", "no such training field; searchable: batch_size, beta1"),
    ("epochs=2,4", "every trial runs the same --epochs"),
    ("lr_d=1e-4,2e-4", "search lr_d_ratio, D's learning rate as a multiple of G's"),
    ("storage_path=a,b", "the sweep's own setting"),
    ("beta1=0.5,1.5", "--beta1=1.5 is out of range: it must be < 1.0"),
    ("batch_size=32,big", "--batch-size (--search): 'big' is not a valid int"),
    ("beta1=0.5 beta1=0.8", "--search beta1: given twice"),
])
def test_bad_search_fields_are_rejected_naming_the_problem(search, message):
    from gan.config import ConfigError, SweepConfig, parse

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(SweepConfig, ["--search", search])


def test_search_draws_each_distribution_within_its_bounds_and_keeps_unsearched_settings():
    from ray.tune.search.variant_generator import generate_variants

    from gan.config import SweepConfig, parse
    from gan.sweep.tune import search_space

    config = parse(SweepConfig, ["--lr", "3e-4", "--search", "beta1=uniform(0.3, 0.6) latent_dim=16,32",
                                 "--num-samples", "50"])
    space = search_space(config)
    draws = [trial for _ in range(50) for _, trial in generate_variants(space)]
    assert all(0.3 <= t["beta1"] <= 0.6 for t in draws) and len({t["beta1"] for t in draws}) > 40
    assert {t["latent_dim"] for t in draws} == {16, 32}
    assert {t["lr"] for t in draws} == {3e-4} and {t["lr_d_ratio"] for t in draws} == {1.0}  # not searched: its flag
    default = search_space(parse(SweepConfig, []))
    lrs = [default["lr"].sample() for _ in range(200)]
    assert 2e-4 <= min(lrs) < 4e-4 and 2e-3 < max(lrs) <= 4e-3  # the default search spans 2e-4..4e-3


def test_a_yaml_search_block_declares_the_same_axes_as_the_flag(tmp_path):
    from gan.config import SweepConfig, parse

    config = tmp_path / "sweep.yaml"
    config.write_text("search:\n  lr: loguniform(5e-5, 1e-3)\n  latent_dim: [32, 64]\n  lr_d_ratio: [1, 4]\n")
    flag = "lr=loguniform(5e-5,1e-3) latent_dim=32,64 lr_d_ratio=1,4"
    assert parse(SweepConfig, ["--config", str(config)]).search_axes() == parse(SweepConfig, ["--search", flag]).search_axes()


def test_grid_search_covers_every_combination_and_a_ttur_trial_gets_its_own_d_rate():
    from ray.tune.search.variant_generator import generate_variants

    from gan.config import SweepConfig, TrainConfig, parse
    from gan.sweep.tune import search_space, trial_config, trial_name

    config = parse(SweepConfig, ["--grid", "--search", "lr=1e-4,2e-4 latent_dim=32,64 lr_d_ratio=1,4"])
    combos = [(trial["lr"], trial["latent_dim"], trial["lr_d_ratio"]) for _, trial in
              generate_variants(search_space(config))]  # what Tune's grid search expands the space to
    assert len(combos) == 8 and set(combos) == {(lr, nz, ratio) for lr in (1e-4, 2e-4) for nz in (32, 64) for ratio in (1.0, 4.0)}

    ttur = trial_config(TrainConfig(), {"lr": 1e-4, "latent_dim": 64, "lr_d_ratio": 4.0}, "t1")
    shared = trial_config(TrainConfig(), {"lr": 1e-4, "latent_dim": 64, "lr_d_ratio": 1.0}, "t2")
    assert (ttur.lr, ttur.lr_d, shared.lr_d) == (1e-4, 4e-4, 0.0)
    assert trial_name({"lr": 1e-4, "latent_dim": 64, "lr_d_ratio": 4.0}) == "lr=1.0e-04 nz=64 d/g=4"
    assert trial_name({"lr": 1e-4, "latent_dim": 64, "lr_d_ratio": 1.0}) == "lr=1.0e-04 nz=64"


def test_ttur_gives_the_discriminator_its_own_learning_rate_also_after_a_restore():
    from gan.training.models import ModelShape
    from gan.training.state import TrainState

    state = TrainState.create(ModelShape(32, 1, 8, 8, 8), 1e-4, 0.5, 0, lr_d=4e-4)
    assert (state.opt_g.param_groups[0]["lr"], state.opt_d.param_groups[0]["lr"]) == (1e-4, 4e-4)
    state.set_lr(2e-4)
    assert (state.opt_g.param_groups[0]["lr"], state.opt_d.param_groups[0]["lr"]) == (2e-4, 2e-4)


def test_pbt_perturbs_learning_rates_but_never_the_latent_size():
    from gan.config import SweepConfig, parse
    from gan.sweep.tune import pbt_mutations

    random_search = pbt_mutations(parse(SweepConfig, ["--search", "lr=loguniform(1e-5,1e-3) lr_d_ratio=1,4"]))
    assert set(random_search) == {"lr", "lr_d_ratio"} and random_search["lr_d_ratio"] == [1.0, 4.0]
    samples = [random_search["lr"].sample() for _ in range(200)]
    assert 1e-5 <= min(samples) and max(samples) <= 1e-3
    assert type(random_search["lr"].get_sampler()).__name__ == "_LogUniform"
    uniform = pbt_mutations(parse(SweepConfig, ["--search", "lr=uniform(1e-4,1e-3)"]))["lr"]
    assert type(uniform.get_sampler()).__name__ == "_Uniform"  # resampled as the search drew it
    grid = pbt_mutations(parse(SweepConfig, ["--grid", "--search", "lr=1e-4,2e-4 latent_dim=32,64"]))
    assert grid == {"lr": [1e-4, 2e-4]}  # one shared rate: no ratio to perturb; latent size fixes the weights


def test_a_pbt_checkpoint_names_the_trial_that_wrote_it():
    from gan.config import TrainConfig
    from gan.sweep.tune import _written_by, trial_config

    train = trial_config(TrainConfig(run_name="my-sweep"), {"lr": 1e-4, "latent_dim": 64}, "a85e5_00001")
    meta = {"config": {"run_name": "my-sweep-a85e5_00000-e2-bd8f3a"}, "epoch": 4, "step": 16}
    assert _written_by(meta, train, "a85e5_00001") == "a85e5_00000"
