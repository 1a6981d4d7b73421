"""Summary statistics of a local-resolution map inside its mask."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import CryoResError


@dataclass(frozen=True)
class ResolutionSummary:
    """Median and 5-95 % range (Å) of the resolution inside the mask."""

    median: float
    p5: float
    p95: float
    n_voxels: int
    mask_fraction: float

    def line(self) -> str:
        return (f"local resolution inside mask: median {self.median:.2f} Å, "
                f"5-95 % {self.p5:.2f}-{self.p95:.2f} Å "
                f"({self.n_voxels} voxels, {100 * self.mask_fraction:.1f} % of the box)")

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(resolution: np.ndarray, mask: np.ndarray) -> ResolutionSummary:
    """Summary of ``resolution`` over ``mask``. Raises CryoResError for an empty mask."""
    values = resolution[mask]
    if values.size == 0:
        raise CryoResError("the mask contains no voxel")
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return ResolutionSummary(float(median), float(p5), float(p95), int(values.size),
                             float(values.size / resolution.size))
