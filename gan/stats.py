"""Step statistics -> one reduced value per log window: summed on the device, all-reduced across ranks once."""
from __future__ import annotations

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
