"""The per-report clocks: a tick's time splits into the previous report's work, the loop, and inside the loop the
steps; with real sleeps standing in for each part."""
import time

import pytest

from gan.training.stats import TickTimer


def test_a_tick_splits_into_the_previous_report_the_loop_and_its_steps():
    timer = TickTimer(lambda: 0.0)
    for _ in range(2):
        time.sleep(0.05)  # the previous report: grid, checkpoint, ray.train.report
        timer.start_loop()
        with timer.step():
            time.sleep(0.1)
        time.sleep(0.02)  # the loop's own work between steps (data, logging)
        metrics = timer.finish(images=64)
    assert metrics["perf/report_seconds"] == pytest.approx(0.05, abs=0.03)
    assert metrics["perf/epoch_seconds"] == pytest.approx(0.17, abs=0.05)
    assert metrics["perf/step_fraction"] == pytest.approx(0.1 / metrics["perf/epoch_seconds"], rel=0.05)
    assert metrics["perf/loop_img_per_s"] == pytest.approx(64 / 0.12, rel=0.3)
    assert metrics["perf/report_seconds"] + 64 / metrics["perf/loop_img_per_s"] == pytest.approx(
        metrics["perf/epoch_seconds"], rel=1e-6)
