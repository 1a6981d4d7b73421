"""Cautions about one prediction: where it reaches beyond what its model was trained on.

A model reads maps like those it learned from; outside that range its numbers are
extrapolations. Real 4-6 Å/px maps, for instance, read at the 30 Å ceiling with models that
differed from the shipped one only in their training rows (``training/README.md``), and
regions coarser than the coarsest training label can only be read as "about that or coarser".
A v3 model also says when a map had no noise reference, where its absolute values are least
certain, and when the solvent it read as one is so faint that it may be a masked map's ringing.
The prediction is still written: these are said beside it (one line each on the command line,
:attr:`Prediction.cautions` in Python, a column of the batch summary), never raised as errors.

The ranges come from the model card's ``trained_on`` block (written by the fit and checked by
:mod:`cryores.model_card` when the card loads); a card without it (older or test models) gives
no range cautions.
"""

from __future__ import annotations

import numpy as np

SHARE = 0.05  # a caution when at least this share of the mask reads beyond a trained end
TOLERANCE = 1e-3  # relative: a header's 4.0000005 Å is 4 Å


def trained_ranges(card: dict) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((voxel size low, high) in Å/px, (resolution low, high) in Å) the model was trained on, or
    None when the card does not record them."""
    trained = card.get("trained_on")
    if not trained:
        return None
    voxel, resolution = trained["voxel_size_A"], trained["resolution_A"]
    return (float(voxel[0]), float(voxel[1])), (float(resolution[0]), float(resolution[1]))


def _voxel_text(voxel_size: tuple[float, float, float]) -> str:
    if max(voxel_size) - min(voxel_size) <= TOLERANCE * max(voxel_size):
        return f"{voxel_size[0]:.3g}"
    return " x ".join(f"{v:.3g}" for v in voxel_size)


# the same simulated deposits read twice as far off masked as with their solvent's noise kept, and
# their unmasked half maps' average reads them about as well as the unmasked map (benchmarks/
# reference_twins.py, 26 test maps, all floored at the deposit's cut: masked 0.75 Å, unmasked
# 0.36 Å, the half maps' average 0.39 Å, half-map local FSC 0.60 Å), hence the advice
_HALF_MAP_ADVICE = ("if you hold the unmasked map or its unmasked half maps, read that map or the half maps' average "
                    "instead (the half-map option of cryores predict, ChimeraX and Scipion)")
_READ_WITHOUT_REFERENCE = ("the map's solvent holds no noise (a masked, flattened or zoned map), so it is read "
                           "without a noise reference")
NO_REFERENCE_GIVEN_CUT = (_READ_WITHOUT_REFERENCE + ": the map as a whole may read too fine or too coarse; compare "
                          "regions within it rather than its absolute values with other maps, and " + _HALF_MAP_ADVICE)
NO_REFERENCE = (NO_REFERENCE_GIVEN_CUT + "; where the map was low-passed at its global resolution X Å, give X (the "
                "low-pass-cut option): the map's scale is then set from it")
# the cut given and taken as the map's scale (cryores.cut_scale)
NO_REFERENCE_SCALED_TO_CUT = (_READ_WITHOUT_REFERENCE + "; its overall scale was set from the low-pass cut you gave, "
                              "taken as its global resolution (its best-resolved fifth reads the cut), so a cut that "
                              "is not the map's global resolution moves every value with it; " + _HALF_MAP_ADVICE)
# the cut found in the map's spectrum and taken as its scale (cryores.cut_finding)
NO_REFERENCE_SCALED_TO_FOUND_CUT = (_READ_WITHOUT_REFERENCE + "; its overall scale was set from the low-pass cut "
                                    "found in its spectrum, {cut:.2f} Å, taken as its global resolution (its "
                                    "best-resolved fifth reads the cut); if the map was filtered at another "
                                    "resolution, give that (the low-pass-cut option); " + _HALF_MAP_ADVICE)

# How far a map's solvent spreads (cryores.spectral.solvent_spread: median absolute deviation over
# the map's standard deviation inside its automatic mask) below which it is called faint. Maps
# whose solvent holds noise spread more: real raw maps 0.01-0.15, 54 simulated validation maps
# (raw, and deposits that keep their solvent) 0.0017-0.66. A masked map's edge, once the map is
# Fourier-cropped by 1.5, rings at 3e-7 to 1.3e-3 in simulated masked deposits (32 of 33 below this
# threshold), but at 6e-4 to 2e-2 in real masked and zoned maps, where hard zone edges and small
# boxes ring more (docs/benchmarks.md, resampled real maps). Nothing tells ringing from noise on
# every map, so a faint solvent is still read as noise, with this caution (which many real rings escape).
FAINT_SOLVENT = 1e-3
FAINT_SOLVENT_TEXT = ("the map's solvent is faint (its values spread {spread:.1e} of the molecule's) and was read as "
                      "its noise; a masked map leaves such a solvent once it is resampled or filtered in Fourier "
                      "space (ringing from the mask's edge), or where its mask's soft edge reaches far, and then "
                      "reads up to twice too coarse: if so, read the map at the sampling it was deposited at, or "
                      "its unmasked half maps' average")


def faint_solvent(noise_reference: bool | None, solvent_spread: float | None) -> bool:
    """Whether a map was read against a solvent spreading less than :data:`FAINT_SOLVENT`: the one
    test behind the caution, the output's label and the report's line."""
    return noise_reference is True and solvent_spread is not None and solvent_spread < FAINT_SOLVENT


def prediction_cautions(resolution: np.ndarray, mask: np.ndarray, voxel_size: tuple[float, float, float],
                        card: dict, noise_reference: bool | None = None,
                        lowpass_cut_given: bool = False, scaled_to_cut: bool = False,
                        solvent_spread: float | None = None, found_cut: float | None = None) -> tuple[str, ...]:
    """Plain-language cautions for ``resolution`` (Å, on the map's grid) over ``mask``, read by
    the model of ``card`` from a map of ``voxel_size`` (Å per axis):

    * the map had no noise reference (``noise_reference`` False; None: the model uses none):
      the v3 model's largest errors are whole maps read too fine or too coarse, and most of
      them are on such maps (``docs/evaluation.md``, maps with and without a noise reference);
      without the advice to give the map's low-pass cut when ``lowpass_cut_given``, and saying
      that the cut set the map's scale when ``scaled_to_cut`` (:mod:`cryores.cut_scale`), and
      which cut when it was ``found_cut`` in the map's spectrum (:mod:`cryores.cut_finding`);
    * the map was read against a solvent whose values spread less than :data:`FAINT_SOLVENT`
      (``solvent_spread``; None: not measured), which may be a masked map's ringing;
    * a voxel size outside the trained range (any axis, beyond :data:`TOLERANCE`);
    * at least :data:`SHARE` of the mask reading coarser than the coarsest trained resolution
      (unless Nyquist itself is coarser: then the clip, not the model, sets those values, and
      the voxel-size caution has said why);
    * at least :data:`SHARE` of the mask reading finer than the finest trained resolution.
    """
    no_reference = (NO_REFERENCE_SCALED_TO_FOUND_CUT.format(cut=found_cut) if scaled_to_cut and found_cut is not None
                    else NO_REFERENCE_SCALED_TO_CUT if scaled_to_cut else NO_REFERENCE_GIVEN_CUT if lowpass_cut_given
                    else NO_REFERENCE)  # no advice already taken
    cautions = [no_reference] if noise_reference is False else []
    if faint_solvent(noise_reference, solvent_spread):
        cautions.append(FAINT_SOLVENT_TEXT.format(spread=solvent_spread))
    ranges = trained_ranges(card)
    if ranges is None:
        return tuple(cautions)
    (voxel_low, voxel_high), (finest, coarsest) = ranges
    if max(voxel_size) > voxel_high * (1 + TOLERANCE) or min(voxel_size) < voxel_low * (1 - TOLERANCE):
        cautions.append(f"voxel size {_voxel_text(voxel_size)} Å/px is outside the {voxel_low:g}–{voxel_high:g} Å/px "
                        "the model was trained on: its values are extrapolated, read them with care")
    values = resolution[mask]
    if values.size == 0:
        return tuple(cautions)
    coarse = float(np.mean(values > coarsest * (1 + TOLERANCE)))
    if coarse >= SHARE and 2.0 * max(voxel_size) <= coarsest:
        cautions.append(f"{100 * coarse:.0f} % of the mask reads coarser than {coarsest:g} Å, the coarsest the model "
                        f"was trained on: read those values as '{coarsest:g} Å or coarser', not as measurements")
    fine = float(np.mean(values < finest * (1 - TOLERANCE)))
    if fine >= SHARE:
        cautions.append(f"{100 * fine:.0f} % of the mask reads finer than {finest:g} Å, the finest the model was "
                        f"trained on: read those values as '{finest:g} Å or finer', not as measurements")
    return tuple(cautions)
