"""`scripts/local_services.sh`, the laptop stand-in for the cluster's S3 and MLflow: it prints exports that work, the
MLflow server keeps artifacts in the bucket, and SIGTERM stops both servers."""
import os
import re
import signal
import socket
import subprocess
import time

import boto3
import mlflow
import pytest

from tests.helpers import REPO, clean_env
from tests.services import free_port


@pytest.mark.slow
def test_local_services_prints_working_exports_and_stops_both_servers(tmp_path):
    s3_port, mlflow_port = free_port(), free_port()
    script = subprocess.Popen(["bash", str(REPO / "scripts" / "local_services.sh"), str(tmp_path / "services")],
                              env={**clean_env(), "S3_PORT": str(s3_port), "MLFLOW_PORT": str(mlflow_port),
                                   "BUCKET": "laptop"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        while not lines or not lines[-1].startswith("Ctrl+C"):
            line = script.stdout.readline()
            assert line, "the script ended before it was ready:\n" + "".join(lines)
            lines.append(line)
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", "".join(lines), re.M))
        assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{s3_port}"
        assert exports["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{mlflow_port}"

        s3 = boto3.client("s3", endpoint_url=exports["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"])
        s3.put_object(Bucket="laptop", Key="hello.txt", Body=b"hi")
        assert s3.get_object(Bucket="laptop", Key="hello.txt")["Body"].read() == b"hi"

        (tmp_path / "note.txt").write_text("an artifact")
        client = mlflow.MlflowClient(exports["MLFLOW_TRACKING_URI"])
        run = client.create_run(client.create_experiment("laptop"))
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        stored = [o["Key"] for o in s3.list_objects_v2(Bucket="laptop", Prefix="mlartifacts/")["Contents"]]
        assert any(key.endswith(f"{run.info.run_id}/artifacts/note.txt") for key in stored), stored
    finally:
        os.kill(script.pid, signal.SIGTERM)
        script.wait(30)
    assert script.returncode == 0
    deadline = time.monotonic() + 20
    while _answers(s3_port) or _answers(mlflow_port):
        assert time.monotonic() < deadline, "a server outlived the script's SIGTERM"
        time.sleep(0.3)


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
