from __future__ import annotations

import numpy as np
import pytest

from conftest import synthetic_map
from cryores.errors import CryoResError
from cryores.masking import automatic_mask, dilate, mask_from_array
from cryores.mrc_io import read_map
from cryores.resample import fourier_resample, linear_resample


def test_automatic_mask_covers_the_molecule_and_not_the_solvent(density):
    mask = automatic_mask(density, (1.0,) * 3)
    clean = synthetic_map(noise=0.0)
    molecule = clean > 0.2
    assert mask[molecule].mean() > 0.99  # all clear density is inside
    assert 0.05 < mask.mean() < 0.5  # but not the whole box
    assert not mask[0].any() and not mask[-1].any()  # box faces are solvent


def test_automatic_mask_invariant_to_scale_and_offset(density):
    a = automatic_mask(density, (1.0,) * 3)
    b = automatic_mask(250.0 * density + 40.0, (1.0,) * 3)
    assert (a == b).mean() > 0.999


def test_automatic_mask_is_consistent_across_voxel_sizes(density):
    fine = fourier_resample(density, (60, 60, 60))  # 1.0 Å -> 0.667 Å voxels
    coarse_mask = automatic_mask(density, (1.0,) * 3)
    fine_mask = automatic_mask(fine, (40 / 60,) * 3)
    back = linear_resample(fine_mask, density.shape) >= 0.5
    iou = (back & coarse_mask).sum() / (back | coarse_mask).sum()
    assert iou > 0.9


def test_automatic_mask_on_the_real_map_holds_its_fitted_model(shared):
    emd = read_map(shared / "data/maps/emd_5168.map")
    mask = automatic_mask(emd.data, emd.voxel_size)
    assert 0.05 < mask.mean() < 0.6
    h = emd.header
    pdb = (shared / "data/maps/emd_5168_model_3mfp.pdb").read_text().splitlines()
    xyz = np.array([[float(line[30:38]), float(line[38:46]), float(line[46:54])]
                    for line in pdb if line.startswith("ATOM")])
    ijk = np.round(xyz / np.array(emd.voxel_size)[::-1] - [h.nxstart, h.nystart, h.nzstart]).astype(int)
    inside_box = ((ijk >= 0) & (ijk < 100)).all(axis=1)
    assert inside_box.mean() > 0.95
    assert mask[ijk[inside_box, 2], ijk[inside_box, 1], ijk[inside_box, 0]].mean() > 0.98


def test_pure_noise_has_no_molecule():
    noise = np.random.default_rng(1).normal(size=(32, 32, 32)).astype(np.float32)
    with pytest.raises(CryoResError, match="stand out of the solvent"):
        automatic_mask(noise, (1.0,) * 3)


def test_dilate_grows_by_about_the_radius():
    half_space = np.zeros((41, 41, 41), bool)
    half_space[:, :, 20:] = True  # a flat surface at 20 along the last axis
    grown = dilate(half_space, (4.0, 4.0, 4.0))
    assert grown[20, 20, 17] and not grown[20, 20, 15]


def test_user_mask_threshold_and_shape():
    soft = np.zeros((10, 10, 10), np.float32)
    soft[3:7, 3:7, 3:7] = 0.8
    soft[0, 0, 0] = 0.4
    mask = mask_from_array(soft, (10, 10, 10))
    assert mask.sum() == 64
    with pytest.raises(CryoResError, match="shape"):
        mask_from_array(soft, (10, 10, 11))
    with pytest.raises(CryoResError, match="no voxel"):
        mask_from_array(np.zeros((10, 10, 10)), (10, 10, 10))
