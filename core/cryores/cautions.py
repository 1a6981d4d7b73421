"""Cautions about one prediction: where it reaches beyond what its model was trained on.

A model reads maps like those it learned from; outside that range its numbers are
extrapolations. Real 4-6 Å/px maps, for instance, once read at the 30 Å ceiling
(``training/README.md``, ``training/real_maps/README.md``), and regions coarser than the
coarsest training label can only be read as "coarse". The prediction is still written: these
are said beside it (one line each on the command line, :attr:`Prediction.cautions` in
Python), never raised as errors.

The ranges come from the model card's ``trained_on`` block (written by the fit); a card without
it (older or test models) gives no cautions.
"""

from __future__ import annotations

import numpy as np

COARSE_SHARE = 0.05  # a caution when at least this share of the mask reads coarser than trained


def trained_ranges(card: dict) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((voxel size low, high), (resolution low, high)) in Å the model was trained on, or None
    when the card does not record them."""
    trained = card.get("trained_on")
    if not trained:
        return None
    voxel, resolution = trained["voxel_size_A"], trained["resolution_A"]
    return (float(voxel[0]), float(voxel[1])), (float(resolution[0]), float(resolution[1]))


def prediction_cautions(resolution: np.ndarray, mask: np.ndarray, voxel_size: tuple[float, float, float],
                        card: dict) -> tuple[str, ...]:
    """Plain-language cautions for ``resolution`` (Å, on the map's grid) over ``mask``, read by
    the model of ``card`` from a map of ``voxel_size`` (Å per axis): a voxel size outside the
    trained range (any axis), and a share of the mask of at least :data:`COARSE_SHARE` reading
    coarser than the coarsest trained resolution."""
    ranges = trained_ranges(card)
    if ranges is None:
        return ()
    (voxel_low, voxel_high), (_, coarsest) = ranges
    cautions = []
    finest_axis, coarsest_axis = min(voxel_size), max(voxel_size)
    if coarsest_axis > voxel_high or finest_axis < voxel_low:
        outside = coarsest_axis if coarsest_axis > voxel_high else finest_axis
        cautions.append(f"voxel size {outside:.3g} Å is outside the {voxel_low:g}-{voxel_high:g} Å the model was "
                        "trained on: its values are extrapolated, read them with care")
    values = resolution[mask]
    share = float(np.mean(values > coarsest)) if values.size else 0.0
    if share >= COARSE_SHARE:
        cautions.append(f"{100 * share:.0f} % of the mask reads coarser than {coarsest:g} Å, the coarsest the model "
                        "was trained on: there it says only that the map is at least that coarse")
    return tuple(cautions)
