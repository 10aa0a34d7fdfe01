"""Step statistics -> one reduced value per log window: summed on the device, all-reduced across ranks once."""
from __future__ import annotations

import contextlib
import time

import torch
import torch.distributed as dist


class WindowMeter:
    """Accumulates a stats vector per step without host syncs; `reduce()` gives the mean over all ranks."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self._sum: torch.Tensor | None = None
        self._count = 0

    def add(self, values: torch.Tensor) -> None:
        self._sum = values.clone() if self._sum is None else self._sum.add_(values)
        self._count += 1

    @property
    def pending(self) -> int:
        """Steps added since the last reduce."""
        return self._count

    def reduce(self) -> dict[str, float]:
        """Mean over the window and over every rank. Every rank must call it at the same step (a collective)."""
        if self._sum is None:
            return {}
        total = _summed_over_ranks(torch.cat([self._sum.float(),
                                              torch.tensor([float(self._count)], device=self._sum.device)]))
        values = (total[:-1] / total[-1]).tolist()
        self._sum, self._count = None, 0
        return dict(zip(self.names, values))


def sum_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Element-wise sum over all ranks (a collective: every rank calls it with the same keys)."""
    total = _summed_over_ranks(torch.tensor([float(v) for v in values.values()], dtype=torch.float64))
    return dict(zip(values, total.tolist()))


def _summed_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """In-place all-reduce (sum) when running distributed; the tensor as it is in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class TickTimer:
    """The clocks of one report cycle. A cycle runs from one report to the next, so a tick's time includes the
    previous tick's quality measurement, grid, checkpoint and report; its loop time is the steps with their data
    loading and logging only (the steady rate)."""

    def __init__(self, cpu_seconds):
        self._cpu_seconds = cpu_seconds  # the tracking thread's CPU clock (RunLogger.cpu_seconds)
        self._cycle_start = self._run_start = time.perf_counter()
        self._cycle_cpu = cpu_seconds()
        self._loop_start, self.step_seconds = self._cycle_start, 0.0

    def start_loop(self) -> None:
        self._loop_start, self.step_seconds = time.perf_counter(), 0.0

    @contextlib.contextmanager
    def step(self):
        """Times one training step (perf/step_fraction)."""
        start = time.perf_counter()
        yield
        self.step_seconds += time.perf_counter() - start

    def finish(self, images: int) -> dict[str, float]:
        """The cycle's perf/* metrics; the next cycle starts now."""
        now, cpu = time.perf_counter(), self._cpu_seconds()
        seconds, loop_seconds = now - self._cycle_start, now - self._loop_start
        # Before this tick's first step: the previous report's quality measurement, grid, checkpoint and report
        # (for the first tick, the step-0 grid).
        report_seconds = self._loop_start - self._cycle_start
        tracking_cpu, self._cycle_start, self._cycle_cpu = cpu - self._cycle_cpu, now, cpu
        return {"perf/epoch_seconds": seconds, "perf/step_fraction": self.step_seconds / seconds,
                "perf/report_seconds": report_seconds,
                "perf/epoch_img_per_s": images / seconds, "perf/loop_img_per_s": images / loop_seconds,
                # Tracking's cost in CPU time, which a wall-clock A/B on a shared machine cannot resolve.
                "perf/tracking_cpu_share": tracking_cpu / seconds}

    def eta_seconds(self, steps_done: int, steps_left: int) -> float:
        """Time to the end at this process's average pace so far."""
        return (time.perf_counter() - self._run_start) / max(steps_done, 1) * steps_left
