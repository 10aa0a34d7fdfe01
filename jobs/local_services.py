"""Start a local S3 store (SeaweedFS) and an `mlflow server` that keeps its artifacts in it, for a laptop run that
looks like the cluster: shards, checkpoints and artifacts all in S3. Ctrl+C stops both.

    python -m jobs.local_services --dir data/services
    # then, in another shell, paste the printed exports and run e.g.
    python -m jobs.make_shards --out s3://dcgan/digits
    python -m jobs.train --shards s3://dcgan/digits --storage-path s3://dcgan/ray --tracking-uri http://127.0.0.1:5000
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from pathlib import Path

from gan.local_services import start_mlflow_server, start_seaweedfs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="data/services", help="where SeaweedFS and MLflow keep their data")
    parser.add_argument("--bucket", default="dcgan", help="bucket to create")
    parser.add_argument("--s3-port", type=int, default=8333, help="S3 port on 127.0.0.1")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="MLflow port on 127.0.0.1")
    args = parser.parse_args(argv)

    root = Path(args.dir).resolve()
    # The store takes whatever key pair is in the environment, else a fresh random one for this session.
    access_key = os.environ.get("AWS_ACCESS_KEY_ID") or "dcgan-local"
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY") or secrets.token_urlsafe(24)
    s3 = start_seaweedfs(root / "seaweedfs", access_key, secret_key, buckets=(args.bucket,), s3_port=args.s3_port)
    mlflow = start_mlflow_server(f"sqlite:///{root / 'mlflow.db'}", f"s3://{args.bucket}/mlartifacts",
                                 root / "mlflow.log", env=s3.env, port=args.mlflow_port)
    print(f"S3 (SeaweedFS) at {s3.url}, bucket {args.bucket}; MLflow at {mlflow.url}. In the shell that runs jobs:")
    for name, value in {**s3.env, "MLFLOW_TRACKING_URI": mlflow.url}.items():
        print(f"export {name}={value}")
    print("Ctrl+C stops both.", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop both on SIGTERM as on Ctrl+C
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        mlflow.stop()
        s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
