"""The generator as an MLflow Model, end to end against a real `mlflow server` whose artifact store is the SeaweedFS
S3 server: logged models linked to their measurements, the registry's champion alias over three runs on the same
shards, loading where this package cannot be imported, `jobs.sample`, and `mlflow models serve`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from gan.shards.sources import load_digits
from gan.shards.writer import write_shards
from gan.tracking import registry as registry_module
from gan.tracking.registry import CHAMPION, model_metric
from jobs import train
from tests.helpers import REPO, clean_env, logged_models, metric_values
from tests.services import Server, _http_ok, free_port

pytestmark = pytest.mark.slow

NAME = "dcgan-registry-test"  # not the default dcgan-digits: other tests' runs on the same server register under that
# Unconditional (the digits are labelled, so the default would be conditional): this module checks the z-only
# contract; tests/test_conditional.py checks the conditional one.
# Width 32 learns fast enough on the digits that more epochs mean a clearly lower fid_domain (measured: 2910 after
# 5 steps, 873 after 4 epochs, 260 after 6), so "worse" and "better" below are by construction, not by luck.
RUN_FLAGS = ["--no-conditional", "--num-workers", "1", "--batch-size", "32", "--g-features", "32", "--d-features", "32",
             "--latent-dim", "64", "--quality-every", "1", "--quality-samples", "300", "--keep-models", "3",
             "--experiment", "registry", "--register-as", NAME]
LENGTHS = {"first": ["--epochs", "4"], "worse": ["--epochs", "1", "--steps-per-epoch", "5"], "better": ["--epochs", "6"]}


@pytest.fixture(scope="module")
def registry(digits_shards, local_ray, mlflow_server, tmp_path_factory):
    """Three runs in order, with where the champion alias stood after each."""
    import mlflow

    work = tmp_path_factory.mktemp("registry")
    client = MlflowClient(mlflow_server.url)
    runs, champions = {}, {}
    mlflow.set_tracking_uri(None)  # MLflow's global URI unset, as in a fresh process (another test may have set it)
    for name, length in LENGTHS.items():
        assert train.main(["--shards", str(digits_shards), "--tracking-uri", mlflow_server.url, "--run-name", name,
                           "--storage-path", str(work / "ray"), *RUN_FLAGS, *length]) == 0
        experiment_id = client.get_experiment_by_name("registry").experiment_id
        (runs[name],) = client.search_runs([experiment_id], f"tags.`ray.run_name` = '{name}'")
        champions[name] = client.get_model_version_by_alias(NAME, CHAMPION)
    return {"client": client, "url": mlflow_server.url, "runs": runs, "champions": champions, "work": work,
            "global_uri_left_set": mlflow.is_tracking_uri_set()}


def test_each_measurement_is_a_logged_model_with_its_metrics_and_the_search_ranks_the_best_first(registry):
    client, run = registry["client"], registry["runs"]["first"]
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "quality/fid_domain")}
    assert len(history) == 4  # one per epoch
    ranked = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'",
                                         order_by=[{"field_name": "metrics.quality/fid_domain", "ascending": True}])
    # 4 measured, --keep-models 3: the worst one went; the best and the newest always stay.
    assert len(ranked) == 3 and min(history, key=history.get) == int(ranked[0].tags["step"])
    assert max(history) in {int(m.tags["step"]) for m in ranked}
    for model in ranked:
        step = int(model.tags["step"])
        assert model_metric(model, "quality/fid_domain") == history[step]  # linked to its own measurement
        assert {"quality/kid", "quality/precision", "quality/fid_domain_floor"} <= {m.key for m in model.metrics}
    assert {o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs} >= {m.model_id for m in ranked}


def test_champion_moves_only_to_a_better_generator_on_the_same_shards(registry):
    client, runs, champions = registry["client"], registry["runs"], registry["champions"]
    fids = {name: min(metric_values(client, run.info.run_id, "quality/fid_domain")) for name, run in runs.items()}
    assert fids["worse"] > fids["first"] > fids["better"]
    versions = {v.tags["run_id"]: v for v in client.search_model_versions(f"name = '{NAME}'")}
    assert len(versions) == 3  # every run registered its best
    first = versions[runs["first"].info.run_id]
    assert champions["first"].version == first.version
    assert champions["worse"].version == first.version  # a worse rerun never demotes the champion
    assert champions["better"].version == versions[runs["better"].info.run_id].version
    best = logged_models(registry["url"], runs["better"].info.run_id)[0]
    assert champions["better"].source == f"models:/{best.model_id}"
    assert float(champions["better"].tags["fid_domain"]) == pytest.approx(fids["better"], rel=1e-5)
    assert champions["better"].tags["dataset_hash"] == runs["better"].data.params["data.dataset_hash"]


def test_registering_and_loading_leave_mlflows_global_tracking_uri_as_they_found_it(registry):
    """Both go through MLflow's global tracking URI. Left set, it also sits in MLFLOW_TRACKING_URI, which every later
    job of the process and every subprocess takes as its default; left at MLflow's own default, that is an mlflow.db
    in the working directory (one ended up committed)."""
    import mlflow

    from gan.tracking.sampling import load

    assert registry["global_uri_left_set"] is False  # three runs registered in this process, which started unset
    mlflow.set_tracking_uri(None)
    assert load(f"models:/{NAME}@{CHAMPION}", registry["url"]).latent_dim == 64
    assert not mlflow.is_tracking_uri_set() and "MLFLOW_TRACKING_URI" not in os.environ
    mlflow.set_tracking_uri("sqlite:///a-callers-own.db")  # a caller's own setting is put back, not cleared
    try:
        load(f"models:/{NAME}@{CHAMPION}", registry["url"])
        assert mlflow.get_tracking_uri() == "sqlite:///a-callers-own.db"
    finally:
        mlflow.set_tracking_uri(None)


def test_a_name_holding_another_shard_set_is_refused_before_training(registry, tmp_path, capsys):
    other = tmp_path / "other"
    write_shards(load_digits(32, 1), str(other), samples_per_shard=300, holdout_fraction=0.1, seed=1)
    before = len(registry["client"].search_runs([registry["runs"]["first"].info.experiment_id]))
    assert train.main(["--shards", str(other), "--tracking-uri", registry["url"], *RUN_FLAGS]) == 2
    assert f"--register-as registered model {NAME!r} holds generators of shard set" in capsys.readouterr().err
    assert len(registry["client"].search_runs([registry["runs"]["first"].info.experiment_id])) == before


def test_a_name_holding_the_other_mode_is_refused_and_the_default_name_adds_the_mode(registry, digits_shards, capsys):
    client, experiment_id = registry["client"], registry["runs"]["first"].info.experiment_id
    before = len(client.search_runs([experiment_id]))
    assert train.main(["--shards", str(digits_shards), "--tracking-uri", registry["url"], *RUN_FLAGS,
                       "--conditional"]) == 2
    assert (f"--register-as registered model {NAME!r} holds unconditional (input z) generators and this run trains "
            f"class-conditional (input z and a class) ones") in capsys.readouterr().err
    assert len(client.search_runs([experiment_id])) == before  # refused before any run began
    # Without --register-as a run goes on under the name plus its mode; the same mode keeps the name.
    dataset_hash = registry["runs"]["first"].data.params["data.dataset_hash"]
    assert {v.tags["conditional"] for v in client.search_model_versions(f"name = '{NAME}'")} == {"false"}
    source = "folder:/data/registry-test"  # whose default name is NAME
    def named(conditional: bool) -> str:
        return registry_module.choose_name(registry["url"], "", source, dataset_hash, conditional)

    assert named(True) == f"{NAME}-conditional" and named(False) == NAME


def test_the_champion_loads_and_predicts_where_this_package_cannot_be_imported(registry, tmp_path):
    script = f"""
import sys
sys.modules["gan"] = None  # `import gan` raises ImportError from here on, as on a laptop without this project
try:
    import gan
    raise SystemExit("gan is importable")
except ImportError:
    pass
import json, mlflow, numpy as np, torch
uri = "models:/{NAME}@{CHAMPION}"
images = mlflow.pytorch.load_model(uri)(torch.randn(5, 64))
predicted = mlflow.pyfunc.load_model(uri).predict(np.random.default_rng(0).standard_normal((3, 64), np.float32))
print(json.dumps([list(images.shape), float(images.min()), float(images.max()), list(predicted.shape)]))
"""
    env = {**clean_env(), "MLFLOW_TRACKING_URI": registry["url"], "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shape, low, high, predicted = json.loads(result.stdout.strip().splitlines()[-1])
    assert shape == [5, 1, 32, 32] and -1 <= low < high <= 1 and predicted == [3, 1, 32, 32]


def _sample(registry, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.sample", "--tracking-uri", registry["url"], "--out", str(out),
                           *flags], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)


def test_sample_job_draws_repeatable_pictures_from_a_name_an_id_a_run_and_a_checkpoint(registry, tmp_path):
    champion = f"models:/{NAME}@{CHAMPION}"
    pictures = {}
    for key, flags in {"champion": ["--model", champion, "--num-images", "16"],
                       "again": ["--model", champion, "--num-images", "16"],
                       "seed 1": ["--model", champion, "--num-images", "16", "--seed", "1"],
                       "by id": ["--model", registry['champions']['better'].source, "--num-images", "16"],
                       "checkpoint": ["--model", registry["runs"]["better"].data.tags["checkpoint.best"],
                                      "--num-images", "16"],
                       "walk": ["--model", champion, "--num-images", "32", "--interpolate", "8"],
                       "run": ["--model", f"runs:/{registry['runs']['better'].info.run_id}/generator"]}.items():
        result = _sample(registry, tmp_path / f"{key}.png", *flags)
        assert result.returncode == 0, result.stderr[-2000:]
        pictures[key] = np.asarray(Image.open(tmp_path / f"{key}.png"))
    assert pictures["champion"].shape == (2 + 2 * 34, 2 + 8 * 34)  # 16 digits of 32 px, 8 to a row, 2 px apart
    # The same seed draws the same picture, to within one grey level: two processes on a loaded CPU may round a
    # pixel differently (seen once in a full-suite run: CPU kernels do not promise bit-identical sums across runs).
    assert _levels_apart(pictures["champion"], pictures["again"]) <= 1
    assert _levels_apart(pictures["champion"], pictures["seed 1"]) > 100  # another seed, other digits
    assert _levels_apart(pictures["champion"], pictures["by id"]) <= 1
    # The best checkpoint (the run's tag) holds the same generator the registry's champion is.
    assert _levels_apart(pictures["champion"], pictures["checkpoint"]) <= 1  # exported vs eager: ±1 level
    assert pictures["walk"].shape == (2 + 4 * 34, 2 + 8 * 34)  # 4 rows of 8 interpolation steps
    assert pictures["run"].shape == (2 + 8 * 34, 2 + 8 * 34)  # the run's newest generator, 64 by default
    bad = _sample(registry, tmp_path / "x.png", "--model", f"models:/{NAME}@no-such-alias")
    assert bad.returncode == 2 and "no-such-alias" in bad.stderr and not (tmp_path / "x.png").exists()


def _levels_apart(picture: np.ndarray, other: np.ndarray) -> int:
    return int(np.abs(picture.astype(int) - other.astype(int)).max())


def test_mlflow_models_serve_answers_invocations_with_images(registry, tmp_path):
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # `mlflow models serve` runs uvicorn from PATH
    env = {**clean_env(), "MLFLOW_TRACKING_URI": registry["url"], "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    url = f"http://127.0.0.1:{port}"
    server = Server("mlflow models serve", url, None, tmp_path / "serve.log",
                    command=[str(Path(venv_bin) / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@{CHAMPION}",
                             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                    process_env=env, ready=lambda: _http_ok(f"{url}/ping")).start(timeout=180)
    try:
        z = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
        reply = subprocess.run(["curl", "-sf", "-X", "POST", f"{url}/invocations", "-H",
                                "Content-Type: application/json", "-d", json.dumps({"inputs": z.tolist()})],
                               capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert reply.returncode == 0, server.log_tail()
    images = np.asarray(json.loads(reply.stdout)["predictions"], dtype=np.float32)
    assert images.shape == (4, 1, 32, 32) and images.min() >= -1 and images.max() <= 1
    import mlflow

    mlflow.set_tracking_uri(registry["url"])
    try:
        local = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}").predict(z)
    finally:
        mlflow.set_tracking_uri(None)  # the later tests' subprocesses would inherit it as MLFLOW_TRACKING_URI
    np.testing.assert_allclose(images, local, atol=1e-5)  # the server answers what the model computes


def test_the_run_page_says_where_its_latest_and_best_checkpoints_are(registry):
    client, run = registry["client"], registry["runs"]["better"]
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "quality/fid_domain")}
    tags = run.data.tags
    latest, best = Path(tags["checkpoint.latest"]), Path(tags["checkpoint.best"])
    assert latest.parent == best.parent == registry["work"] / "ray" / "better"
    assert json.loads((latest / "meta.json").read_text())["step"] == max(history)
    assert json.loads((best / "meta.json").read_text())["step"] == min(history, key=history.get)
    assert float(tags["checkpoint.best_fid_domain"]) == pytest.approx(min(history.values()), rel=1e-5)
