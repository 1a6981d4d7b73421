"""The installed model on real maps, checked by physics (the fast cases of docs/evaluation.md).

A real map low-pass filtered at X Å holds nothing finer than X, so its local resolution is at
least X everywhere: at most 10 % of the mask may read finer than 0.85 X and the median must
reach 0.9 X, rising with X. White noise as strong as the map must never make it finer. The
full set (10 maps) runs in ``cryores-train evaluate-v3``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

import cryores
from cryores.fourier import spatial_frequency
from cryores.model_card import installed_card_path, load_model
from cryores.mrc_io import read_map

CARD = installed_card_path()
pytestmark = pytest.mark.skipif(CARD is None or load_model(CARD).card["architecture"]["type"] != "SpectralNet",
                                reason="no v3 model is installed")


def brick_wall(density: np.ndarray, voxel, resolution: float) -> np.ndarray:
    keep = spatial_frequency(density.shape, voxel) <= 1.0 / resolution
    return scipy.fft.irfftn(scipy.fft.rfftn(density) * keep, s=density.shape).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.mark.parametrize("name", ["emd_3488.mrc", "emd_5168.map"])
def test_low_passed_real_map_reads_at_least_its_cut_off(shared, model, name):
    density = read_map(shared / "data" / "maps" / name)
    base = cryores.predict(density.data, density.voxel_size, model=model)
    medians = []
    for cut in (6.0, 9.0, 12.0):
        values = cryores.predict(brick_wall(density.data, density.voxel_size, cut), density.voxel_size, base.mask,
                                 model=model).resolution[base.mask]
        assert (values < 0.85 * cut).mean() <= 0.10, cut
        assert np.median(values) >= 0.9 * cut, cut
        medians.append(np.median(values))
    assert medians == sorted(medians)


@pytest.mark.parametrize("name", ["emd_3488.mrc", "emd_5168.map"])
def test_added_noise_never_makes_a_real_map_finer(shared, model, name):
    density = read_map(shared / "data" / "maps" / name)
    base = cryores.predict(density.data, density.voxel_size, model=model)
    spread = float(density.data[base.mask].std())
    noisy = density.data + np.random.default_rng(0).normal(0, spread, density.data.shape).astype(np.float32)
    worse = cryores.predict(noisy, density.voxel_size, base.mask, model=model)
    assert worse.summary.median >= base.summary.median - 1e-3
