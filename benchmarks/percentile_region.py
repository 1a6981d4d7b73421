"""Does it matter over which voxels a map's band percentiles are taken?

Maps without a noise reference feed the network each band's power percentiles over the
molecule (``cryores.spectral.band_percentiles``). Inference takes them over the automatic mask;
the training rows, over the voxels drawn inside the simulation's labelled region
(``cryores_train.fit_spectral.with_percentiles``). If that difference mattered, the rows would
have to be made again with the inference region.

For each validation structure (never the test split; sample 0, its raw and deposited-style
variants, mask given) whose map has no noise reference, this predicts the map twice with one
card: with the percentiles as inference takes them, and with those of the labelled region, and
prints each map's MAE and whole-map offset (median ln(estimate / truth)) both ways, then the
mean MAE over maps. Both readings share the card's shift; only the percentiles differ.

Usage: python benchmarks/percentile_region.py CARD [--structures 60]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

import cryores
import cryores.spectral_inference as spectral_inference
from cryores import spectral
from cryores.model_card import load_model
from cryores.resample import linear_resample
from cryores_train.evaluate_v3 import STRUCTURES, whole_map_offsets
from cryores_train.rows import scored_maps, structures_in_splits

SALT = 11  # variants' draws apart from the calibration's (3) and the evaluation's (5)


def labelled_percentiles(features: spectral.SpectralFeatures, label: np.ndarray) -> np.ndarray:
    """The band percentiles over the labelled voxels on the feature grid (the rows' region)."""
    grid = features.mask.shape
    keep = (linear_resample((label > 0).astype(np.float32), grid) >= 0.99 if grid != label.shape
            else label > 0)
    return spectral.band_percentiles(features.features[:spectral.N_BANDS, keep].T)


def read(density: np.ndarray, label: np.ndarray, voxel: float, model, labelled: bool) -> np.ndarray | None:
    """What ``cryores.predict`` reads on the labelled voxels (mask given), the percentiles taken
    over the labelled region where ``labelled``; None when the map has a noise reference."""
    plain = spectral.compute_features

    def features_with_region(density, voxel_size, mask, reference=None):
        features = plain(density, voxel_size, mask, reference)
        if labelled and not features.has_reference:
            features = dataclasses.replace(features, percentiles=labelled_percentiles(features, label))
        return features

    region = label > 0
    spectral_inference.compute_features = features_with_region  # what spectral_parts calls
    try:
        reading = cryores.predict(density, voxel, region, model=model)
    finally:
        spectral_inference.compute_features = plain
    return None if reading.noise_reference else reading.resolution[region]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path)
    parser.add_argument("--structures", type=int, default=60)
    args = parser.parse_args()
    model = load_model(args.card)
    groups, ids = structures_in_splits(STRUCTURES, ("val",), args.structures)
    errors = {False: [], True: []}
    print("structure  Å/px  true median  MAE, offset (inference region)  MAE, offset (labelled region)")
    for sid in ids:
        _, _, voxel, variants = scored_maps(sid, groups[sid], "bfactor", 0, 0, salt=SALT)
        for variant in variants:
            truth = variant.label[variant.label > 0]
            readings = {labelled: read(variant.density, variant.label, voxel, model, labelled)
                        for labelled in (False, True)}
            if readings[False] is None:
                continue
            cells = []
            for labelled, estimate in readings.items():
                errors[labelled].append(float(np.mean(np.abs(estimate - truth))))
                cells.append(f"{errors[labelled][-1]:.3f}, {whole_map_offsets([truth], [estimate])[0]:+.3f}")
            print(f"{sid:10s} {voxel:5.2f} {float(np.median(truth)):8.2f}     {cells[0]:>24s}  {cells[1]:>24s}",
                  flush=True)
    print(f"{len(errors[False])} maps without a noise reference: mean MAE {np.mean(errors[False]):.3f} Å "
          f"(inference region), {np.mean(errors[True]):.3f} Å (labelled region)")


if __name__ == "__main__":
    main()
