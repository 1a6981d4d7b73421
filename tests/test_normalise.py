from __future__ import annotations

import numpy as np
import pytest

from cryores.errors import CryoResError
from cryores.normalise import masked_zscore, normalise


def test_invariant_to_scale_and_offset(density):
    mask = density > 0.3
    np.testing.assert_allclose(masked_zscore(3.7 * density - 12.0, mask), masked_zscore(density, mask), atol=1e-4)


def test_inside_mask_has_zero_mean_unit_std(density):
    mask = density > 0.3
    z = masked_zscore(density, mask)
    assert z[mask].mean() == pytest.approx(0, abs=1e-5)
    assert z[mask].std() == pytest.approx(1, abs=1e-4)


def test_one_hot_voxel_outside_the_mask_changes_nothing_inside(density):
    mask = density > 0.3
    spiked = density.copy()
    spiked[0, 0, 0] = 1e6
    np.testing.assert_allclose(masked_zscore(spiked, mask)[mask], masked_zscore(density, mask)[mask])


def test_constant_inside_mask_and_unknown_method_fail(density):
    with pytest.raises(CryoResError, match="constant"):
        masked_zscore(np.ones_like(density), density > 0.3)
    with pytest.raises(CryoResError, match="unknown normalisation"):
        normalise(density, density > 0.3, "minmax")
