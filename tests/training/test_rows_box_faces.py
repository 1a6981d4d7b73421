"""Training rows keep the band powers the shipped card was trained on (wrapped around the box)."""

from __future__ import annotations

import numpy as np

from cryores.masking import automatic_mask
from cryores.spectral import compute_features, network_inputs
from cryores_train import rows


def test_rows_of_a_map_cut_by_its_box_are_made_from_wrapped_band_powers():
    """`make model` remakes the shipped card only if its rows do not change: a map whose mask
    reaches the box's faces gets the same rows as before cryores.box_faces."""
    rng = np.random.default_rng(3)
    density = np.zeros((40, 32, 32), np.float32)
    z, y, x = np.meshgrid(*(np.arange(n) for n in density.shape), indexing="ij")
    density += ((y - 16) ** 2 + (x - 16) ** 2 < 36) * (1.0 + z / 40.0)  # a rod through two faces
    density += 0.05 * rng.standard_normal(density.shape).astype(np.float32)
    label = np.where(density > 0.5, 6.0, 0.0).astype(np.float32)
    assert rows.MIRROR_CUT_FACES is False
    x_rows, y_rows = rows.feature_rows(density, label, 2.0, label > 0, 200, np.random.default_rng(0), "neighbourhood")
    mask = automatic_mask(density, (2.0,) * 3)
    for mirror, same in ((False, True), (True, False)):
        features = compute_features(density, (2.0,) * 3, mask, reference=mask, mirror_cut_faces=mirror)
        index = np.flatnonzero(label.ravel() > 0) if features.mask.shape == label.shape else None
        assert index is not None  # 2 Å voxels: the feature grid is the map's own
        chosen = np.random.default_rng(0).choice(index, 200, replace=False)
        expected = network_inputs(features, chosen, "neighbourhood").astype(np.float16)
        assert np.array_equal(x_rows, expected) is same
    assert np.all(y_rows == 6.0)
