"""A divergence drill for sweep tests, loaded into every Ray worker process of a submitted job by the runtime env's
`worker_process_setup_hook`. This DCGAN's losses stay finite even at absurd learning rates (BCE on logits, Adam's
bounded steps), so to see a trial diverge inside a sweep, the drill makes one chosen trial's loss/G NaN.

The victim is the trial whose generator learning rate is $NAN_DRILL_LR, at its step 3 only: a PBT clone that later
inherits that rate starts past step 3 and trains on normally.
"""
import math
import os

DRILL_STEP = 3


def install() -> None:
    rate = os.environ.get("NAN_DRILL_LR")
    if not rate:
        return
    import gan.run.worker
    from gan.training.step import STEP_STATS

    real_step = gan.run.worker.train_step

    def drilled_step(state, images, bf16=False, classes=None):
        stats = real_step(state, images, bf16=bf16, classes=classes)
        if state.step == DRILL_STEP and math.isclose(state.opt_g.param_groups[0]["lr"], float(rate)):
            stats = stats.clone()
            stats[STEP_STATS.index("loss/G")] = float("nan")
        return stats

    gan.run.worker.train_step = drilled_step
