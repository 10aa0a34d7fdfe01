"""How the jobs join Ray: the cluster a submitted job belongs to, else a local Ray of their own.

A local Ray on a machine that already runs another (a second job, a test's Ray) needs one fix: Ray Train's placement
group cleaner, which frees the worker CPUs of a run whose controller was killed (as Tune kills a trial that ASHA
stops), asks Ray's state API for "the" cluster, finds two, and gives up; the CPUs stay reserved and the next trial
waits forever. Every worker process of our local Ray is therefore told its own cluster's address.
"""
from __future__ import annotations

import os


def start_or_join() -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):  # `ray job submit` set it: the job's own runtime env applies
        ray.init()
    else:  # a `ray start` cluster on this machine, else a new local Ray
        ray.init(runtime_env={"worker_process_setup_hook": "gan.run.ray_session.address_this_cluster"})


def address_this_cluster() -> None:
    """Worker process setup hook: RAY_ADDRESS = the cluster this worker runs in (Ray's state API reads it)."""
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
