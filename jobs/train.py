"""Entry point: parse the config, check it against its inputs, run the TorchTrainer (gan/run/launch.py).

    python -m jobs.train                                         # data/mnist, 120 kimg (2 to 5 minutes on 2 cores)
    python -m jobs.train --shards data/digits --epochs 40        # the digits, bounded in epochs
    ray job submit --working-dir . -- python -m jobs.train --config my.yaml
"""
from __future__ import annotations

import sys

from gan.config import ConfigError, TrainConfig, parse
from gan.run.launch import RunFailed, prepare, run
from gan.shards import storage
from gan.shards.manifest import ManifestError
from gan.shards.reader import DataError


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(TrainConfig, argv).resolved()
        facts = prepare(config)
    except (ConfigError, ManifestError, DataError, storage.StorageError, ValueError) as error:
        print(f"train: {error}", file=sys.stderr)
        return 2
    from gan.run.worker import error_line

    try:
        result = run(config, facts)
    except Exception as error:  # RunFailed from fit(), or Ray / MLflow failing around it: one line either way
        reason = str(error) if isinstance(error, RunFailed) else error_line(error)
        print(f"train: failed: {reason}; the latest complete checkpoint is in "
              f"{storage.join(config.storage_path, config.run_name)} (rerun with the same --run-name to resume)",
              file=sys.stderr)
        return 1
    print(f"train: done; final metrics {({k: round(v, 4) for k, v in result.metrics.items()})}; "
          f"checkpoint {result.checkpoint.path if result.checkpoint else None}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
