"""A one-page picture of a local-resolution map: slices, colour bar in Å, histogram, facts.

Central slices in the three orientations show the density in grey with the local resolution
overlaid inside the mask (perceptually uniform colour map, best = dark), on physical axes in Å;
a histogram of the masked values marks the median and quartiles; a text block gives voxel
size, box and mask fraction. Needs matplotlib (an optional dependency: ``pip install
matplotlib``); raises CryoResError when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .cautions import faint_solvent
from .errors import CryoResError
from .mrc_io import DensityMap, atomic_path, check_output_path, header_labels
from .predict import Prediction, read_resolution_labels
from .summary import summarise

COLOUR_MAP = "viridis"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise CryoResError("the report needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report_png(path: str | os.PathLike, density: DensityMap, result: Prediction, *,
                     force: bool = True, title: str | None = None) -> Path:
    """Draw the report for ``result`` (on ``density``'s grid) into a PNG, atomically."""
    plt = _pyplot()
    path = check_output_path(path, force=force, role="report")
    data, resolution, mask = density.data, result.resolution, result.mask
    values = resolution[mask]
    low, high = np.percentile(values, [1, 99])
    voxel = density.voxel_size
    centre = [int(c) for c in np.round(np.argwhere(mask).mean(axis=0))]
    views = [("XY (z = %.0f Å)" % (centre[0] * voxel[0]), data[centre[0]], resolution[centre[0]], mask[centre[0]],
              (voxel[2], voxel[1]), ("x (Å)", "y (Å)")),
             ("XZ (y = %.0f Å)" % (centre[1] * voxel[1]), data[:, centre[1]], resolution[:, centre[1]],
              mask[:, centre[1]], (voxel[2], voxel[0]), ("x (Å)", "z (Å)")),
             ("YZ (x = %.0f Å)" % (centre[2] * voxel[2]), data[:, :, centre[2]], resolution[:, :, centre[2]],
              mask[:, :, centre[2]], (voxel[1], voxel[0]), ("y (Å)", "z (Å)"))]
    fig = plt.figure(figsize=(13, 7.5))
    grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 0.06], height_ratios=[1, 0.8])
    image = None
    for i, (name, dens, res, inside, (step_x, step_y), (label_x, label_y)) in enumerate(views):
        ax = fig.add_subplot(grid[0, i])
        extent = (0, dens.shape[1] * step_x, 0, dens.shape[0] * step_y)
        lo, hi = np.percentile(dens, [1, 99.5])
        ax.imshow(dens, cmap="gray", origin="lower", extent=extent, vmin=lo, vmax=hi)
        image = ax.imshow(np.ma.masked_where(~inside, res), cmap=COLOUR_MAP, origin="lower", extent=extent,
                          vmin=low, vmax=high, alpha=0.85)
        ax.set(title=name, xlabel=label_x, ylabel=label_y)
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[0, 3]))
    bar.set_label("local resolution (Å)")
    hist = fig.add_subplot(grid[1, :2])
    span = (float(values.min()), float(values.max()))
    if span[1] - span[0] < 1e-3 * max(abs(span[1]), 1.0):  # one value everywhere: one bar, not 60 empty ones
        span = (span[0] - 0.5, span[1] + 0.5)
    hist.hist(values, bins=60, range=span, color="0.4")
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    for q, style in ((q1, ":"), (median, "-"), (q3, ":")):
        hist.axvline(q, color="C1", ls=style)
    hist.set(xlabel="local resolution inside the mask (Å)", ylabel="voxels",
             title=f"median {median:.2f} Å, quartiles {q1:.2f}-{q3:.2f} Å")
    text = fig.add_subplot(grid[1, 2:])
    text.axis("off")
    text.text(0.0, 0.95, "\n".join(report_facts(density, result, title)), va="top", family="monospace",
              fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def report_facts(density: DensityMap, result: Prediction, title: str | None = None) -> list[str]:
    """The report's text block, one line each. It says whether the map was read against a noise
    reference, because a picture shown on its own must carry that its absolute values are less
    certain without one (:data:`cryores.cautions.NO_REFERENCE`)."""
    s, voxel, shape = result.summary, density.voxel_size, density.data.shape
    facts = [title or (density.path.name if density.path else "map"),
             f"voxel size {voxel[2]:.3f} x {voxel[1]:.3f} x {voxel[0]:.3f} Å",
             f"box {shape[2]} x {shape[1]} x {shape[0]} voxels",
             f"mask {100 * s.mask_fraction:.1f} % of the box ({s.n_voxels} voxels)",
             f"median {s.median:.2f} Å, 5-95 % {s.p5:.2f}-{s.p95:.2f} Å",
             f"estimator: {result.model_name}"]
    if result.noise_reference is True:
        facts.append("noise reference: the map's solvent")
        if faint_solvent(result.noise_reference, result.solvent_spread):
            facts += [f"  faint (spread {result.solvent_spread:.1e}): if the map was masked,",
                      "  then resampled, it is ringing, not noise"]
    elif result.noise_reference is False:
        facts += ["no noise reference (masked or flattened map):",
                  "  the whole map may read too fine or too coarse;",
                  "  compare regions within it"]
    if result.lowpass_cut is not None:
        facts.append(f"low-pass cut given: {result.lowpass_cut:g} Å (nothing reads finer)")
    if result.found_cut is not None:
        facts.append(f"low-pass cut found in its spectrum: {result.found_cut:.2f} Å")
    if result.cut_scale is not None:
        facts.append(f"  scaled x{result.cut_scale:.3f}: its best fifth reads the cut")
    if result.uncertainty is not None:
        facts.append(f"uncertainty σ: median {np.median(result.uncertainty[result.mask]):.2f} Å")
    return facts


def prediction_from_files(density: DensityMap, locres: DensityMap,
                          uncertainty: DensityMap | None = None) -> Prediction:
    """A local-resolution map from any tool as a Prediction (voxels > 0 are inside its mask); what
    cryores' own labels say (model, no noise reference or a faint solvent's spread, low-pass cut
    given or found, the scale the cut set) is carried over.

    Raises CryoResError when the maps differ in shape or the resolution map has no value > 0.
    """
    for other, role in ((locres, "local-resolution map"), (uncertainty, "uncertainty map")):
        if other is not None and other.data.shape != density.data.shape:
            raise CryoResError(f"{role} has shape {other.data.shape} but the map has {density.data.shape}")
    mask = locres.data > 0
    if not mask.any():
        raise CryoResError("the local-resolution map has no value above 0")
    name = locres.path.name if locres.path else "local resolution"
    made = read_resolution_labels(header_labels(locres.header))  # all None unless cryores wrote it
    estimator = name if made.model_name is None else f"{made.model_name} ({name})"
    return Prediction(locres.data, mask, uncertainty.data if uncertainty is not None else None,
                      summarise(locres.data, mask), estimator, density.voxel_size,
                      noise_reference=made.noise_reference, lowpass_cut=made.lowpass_cut,
                      cut_scale=made.cut_scale, solvent_spread=made.solvent_spread, found_cut=made.found_cut)


def report_for_files(density: DensityMap, locres: DensityMap, output: str | os.PathLike, *,
                     uncertainty: DensityMap | None = None, force: bool = False) -> Path:
    """Report for a local-resolution map from any tool (:func:`prediction_from_files`).

    Raises CryoResError when the maps differ in shape, the resolution map has no value > 0 or
    ``output`` exists without ``force``; nothing is written then.
    """
    result = prediction_from_files(density, locres, uncertainty)
    check_output_path(output, force=force, role="report")
    return write_report_png(output, density, result, force=force)
