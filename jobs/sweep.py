"""Entry point: a Ray Tune sweep over learning rate and latent size, one parent MLflow run with a child per trial
(gan/sweep/tune.py runs the trials, gan/sweep/tracking.py keeps the parent run).

    python -m jobs.sweep --shards data/digits --num-samples 8 --epochs 10
    python -m jobs.sweep --run-name my-sweep --resume          # continue an interrupted sweep
"""
from __future__ import annotations

import dataclasses
import sys

from gan.config import ConfigError, SweepConfig, TrainConfig, parse
from gan.run.launch import prepare
from gan.shards import storage
from gan.shards.manifest import ManifestError
from gan.tracking import registry


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse(SweepConfig, argv).resolved()
        facts = prepare(config, job="sweep")
    except (ConfigError, ManifestError, storage.StorageError, ValueError) as error:
        print(f"sweep: {error}", file=sys.stderr)
        return 2

    from gan.run.ray_session import start_or_join
    from gan.sweep.report import best_trial
    from gan.sweep.tracking import BEST_CONFIG, open_parent_run, record_outcome
    from gan.sweep.tune import best_config, build_tuner, restore_tuner, summarise

    start_or_join()
    train = TrainConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)})
    # Every trial trains, and its run records, the mode the sweep's checks decided on these shards (auto unless given).
    conditional = facts["conditional"] == "True"
    train = dataclasses.replace(train, conditional=conditional, mode_seeking=train.mode_seeking_weight(conditional))
    parent = open_parent_run(config, facts) if config.tracking else None
    tuner = restore_tuner(config, train) if config.resume else None
    if config.resume and tuner is None:
        print(f"sweep: nothing to resume at {storage.join(config.storage_path, config.run_name)}", file=sys.stderr)
        return 2
    print(f"sweep: {'resuming' if tuner else 'starting'} {config.run_name!r} in {config.storage_path}", flush=True)
    rows = summarise((tuner or build_tuner(config, train, parent)).fit())
    best = best_trial(rows)
    if parent:
        record_outcome(config, parent, rows, best, best_config(config, train, best) if best else None)
        if best and best.get("run_id") and "registry.name" in facts:  # once, the best trial's best generator
            registry.report_registration("sweep", config.tracking_uri, best["run_id"], facts)
    width = max(len(row["run_name"]) for row in rows)
    for row in rows:
        print(f"sweep: {row['run_name']:<{width}} {row['status']:<14} epochs {row['epochs']:>3}  "
              f"best fid_domain {row['best_fid_domain']:.1f}", flush=True)
    if best:
        print(f"sweep: best trial {best['run_name']} (fid_domain {best['best_fid_domain']:.1f})"
              + (f"; its generator: {best['model_uri']}" if best.get("model_uri") else ""), flush=True)
        if parent:
            print(f"sweep: its whole config for a longer run: mlflow artifacts download -r {parent} -a {BEST_CONFIG} "
                  f"-d . && python -m jobs.train --config {BEST_CONFIG} --kimg N", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
