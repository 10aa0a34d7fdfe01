"""The run page's checkpoint tags, kept by a callback that Ray Train's controller unpickles and calls after each
report. It connects to MLflow as it is unpickled (so the store's start-up cost falls beside the workers' start,
not inside a training tick) and must still pickle again and tag correctly."""
import pickle
import threading

from mlflow import MlflowClient

from gan.run.worker import _TagCheckpoints
from gan.tracking.runs import CheckpointTags


def test_the_unpickled_callback_tags_latest_and_best_and_pickles_again(tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(tracking)
    run_id = client.create_run(client.create_experiment("tags", artifact_location=str(tmp_path / "a"))).info.run_id
    client.set_tag(run_id, "checkpoint.best_fid_domain", "50")  # a resumed run's best so far

    callback = pickle.loads(pickle.dumps(_TagCheckpoints(CheckpointTags(tracking, run_id, "s3://b/run/"))))
    (connecting,) = [t for t in threading.enumerate() if t.name == "mlflow-checkpoint-tags"]
    connecting.join(timeout=60)
    assert callback.tags.best == 50.0  # connected and read the run before any report came
    callback.after_report(None, [{"checkpoint/fid_domain": 60.0}], _Persisted("s3://b/run/checkpoint_1"))
    callback.after_report(None, [{"checkpoint/fid_domain": 40.0}], _Persisted("s3://b/run/checkpoint_2/"))
    callback.after_report(None, [{"checkpoint/fid_domain": 1e12}], _Persisted("s3://b/run/checkpoint_3"))

    tags = client.get_run(run_id).data.tags
    assert tags["checkpoint.latest"] == "s3://b/run/checkpoint_3"
    assert tags["checkpoint.best"] == "s3://b/run/checkpoint_2" and tags["checkpoint.best_fid_domain"] == "40"
    again = pickle.loads(pickle.dumps(callback))  # a connected callback still travels
    assert again.tags.best == 40.0


class _Persisted:
    def __init__(self, path: str):
        self.path = path
