"""Maps whose molecule the box cuts (cryores.box_faces): band powers without the wrap-around jump."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cryores.spectral as spectral
from cryores.box_faces import MIRROR_PAD_A, back_on_grid, cut_by_box, mirror_pads, mirrored
from cryores.masking import automatic_mask
from cryores.mrc_io import read_map
from cryores.predict import predict
from cryores.spectral import BANDS_A, compute_features, feature_grid, local_band_power

VOXEL = (1.5, 1.5, 1.5)


def long_rod(shape=(192, 40, 40), seed=0) -> np.ndarray:
    """A rod along the first axis, periodic in its box (no jump anywhere), smooth at ~6 Å, its
    density rising and falling by a factor of 2 along its length: a filament."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    centre = np.array(shape[1:]) / 2
    radius = np.hypot(y - centre[0], x - centre[1]) * VOXEL[1]
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 6.0 / VOXEL[0] / 2.355,
                                      mode="wrap")
    amplitude = 1.5 + 0.5 * np.cos(2 * np.pi * z / shape[0])
    density = (radius < 18.0) * amplitude * (1.0 + 0.3 * texture / texture.std())
    return ndimage.gaussian_filter(density.astype(np.float32), 2.0 / VOXEL[0], mode="wrap")


CUT = slice(32, 96)  # a third of the long rod: its ends differ by 1.5x, a jump once wrapped


def blob(shape=(48, 48, 48)) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) - n / 2 for n in shape), indexing="ij")
    return (np.sqrt(z * z + y * y + x * x) < 10).astype(np.float32)


def test_a_molecule_the_box_cuts_is_told_from_one_inside_it():
    cut = long_rod()[CUT]
    assert cut_by_box(cut > 0.5 * cut.max())
    assert not cut_by_box(blob() > 0.5)
    touching = blob() > 0.5
    touching[0, 24, 24] = True  # one voxel on a face is not a cut molecule
    assert not cut_by_box(touching)


def test_mirror_pads_reach_past_the_finer_windows_but_never_past_the_box():
    assert mirror_pads((100, 100, 100), (2.0, 2.0, 2.0)) == (int(np.ceil(MIRROR_PAD_A / 2.0)),) * 3
    assert mirror_pads((10, 200, 200), (1.0, 1.0, 1.0))[0] == 9
    padded = mirrored(np.arange(27, dtype=np.float32).reshape(3, 3, 3), (2, 1, 1))
    assert padded.shape == (7, 5, 5)
    assert np.array_equal(padded[2:5, 1:4, 1:4], np.arange(27).reshape(3, 3, 3))
    assert np.array_equal(padded[1], padded[2]) and np.array_equal(padded[0], padded[3])  # no jump


def test_back_on_grid_reads_the_original_points_of_a_padded_field():
    shape, voxel = (40, 36, 30), (1.0, 1.0, 1.0)
    grid, grid_voxel = feature_grid(shape, voxel)
    pads = mirror_pads(shape, voxel)
    padded_shape = tuple(n + 2 * p for n, p in zip(shape, pads))
    padded_grid, padded_voxel = feature_grid(padded_shape, voxel)
    # a linear field in Å is read back exactly by trilinear interpolation
    axes = [np.arange(g) * gv - p * v for g, gv, p, v in zip(padded_grid, padded_voxel, pads, voxel)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    field = (0.5 * z + 0.25 * y - 0.1 * x).astype(np.float32)
    back = back_on_grid(field, padded_voxel, pads, voxel, grid, grid_voxel)
    z, y, x = np.meshgrid(*(np.arange(g) * gv for g, gv in zip(grid, grid_voxel)), indexing="ij")
    assert back.shape == grid
    assert np.allclose(back, 0.5 * z + 0.25 * y - 0.1 * x, atol=1e-3)


def test_a_cut_rod_reads_its_faces_near_the_uncut_rods_power_once_mirrored():
    """A third of a long rod, read as its own box, against the long rod (periodic, no jump): the
    fine bands' power along the axis, wrapped around the cut box, is orders of magnitude off at its
    faces (the check that this test could fail); mirrored past the faces, it stays near the long
    rod's everywhere."""
    whole = long_rod()
    cut = np.ascontiguousarray(whole[CUT])
    whole_grid, whole_voxel = feature_grid(whole.shape, VOXEL)
    truth, present = local_band_power(whole, VOXEL, whole_grid)
    grid, grid_voxel = feature_grid(cut.shape, VOXEL)
    wrapped, _ = local_band_power(cut, VOXEL, grid)
    mended, _ = spectral.band_power_past_faces(cut, VOXEL, grid, grid_voxel)
    fine = [j for j, d in enumerate(BANDS_A) if present[j] and d < 6.0]
    start = int(round(CUT.start * VOXEL[0] / whole_voxel[0]))

    def along_axis(power: np.ndarray) -> np.ndarray:
        return power[fine][:, :, power.shape[2] // 2, power.shape[3] // 2]

    reference = along_axis(truth)[:, start:start + grid[0]]
    wrapped_error = np.abs(np.log10(along_axis(wrapped) / reference)).mean(axis=0)  # decades, per position
    mended_error = np.abs(np.log10(along_axis(mended) / reference)).mean(axis=0)
    faces = np.r_[0:3, grid[0] - 3:grid[0]]
    assert wrapped_error[faces].min() > 2.0  # orders of magnitude: the jump
    assert np.all(mended_error[faces] < 0.5 * wrapped_error[faces])  # what is left: the mirror is not the rod
    assert np.median(mended_error) < 0.5 * np.median(wrapped_error)
    assert np.median(mended_error) < 0.3
    features = compute_features(cut, VOXEL, cut > 0.5 * cut.max())
    assert features.features.shape[1:] == grid


def test_a_map_clear_of_its_faces_gets_the_features_it_always_got(monkeypatch):
    density = blob() + 0.01 * np.random.default_rng(1).standard_normal((48, 48, 48)).astype(np.float32)
    mask = automatic_mask(density, VOXEL)
    calls = []
    monkeypatch.setattr(spectral, "band_power_past_faces", lambda *a: calls.append(a))
    compute_features(density, VOXEL, mask)
    assert calls == []


@pytest.mark.parametrize("name", ["emd_5168.map"])
def test_emd_5168_reads_its_filament_ends_nearer_its_inside(shared, monkeypatch, name):
    """EMD-5168 is a filament the box cuts at two faces: read with the band powers mirrored past
    them, its ends read nearer the inside than with the wrapped map (5.5 against 10.3 Å before)."""
    m = read_map(shared / "data" / "maps" / name)
    mask = automatic_mask(m.data, m.voxel_size)
    k = int(np.ceil(10.0 / m.voxel_size[0]))
    ends = np.zeros(mask.shape, bool)
    ends[:k] = ends[-k:] = True
    ends[:, :k] = ends[:, -k:] = True
    ends[:, :, :k] = ends[:, :, -k:] = True

    def ratio() -> float:
        r = predict(m.data, m.voxel_size, mask).resolution
        return float(np.median(r[mask & ends]) / np.median(r[mask & ~ends]))

    mended = ratio()
    monkeypatch.setattr(spectral, "read_past_faces", lambda mask, reference: False)
    wrapped = ratio()
    assert mended > wrapped + 0.1


def test_the_switch_keeps_the_band_powers_wrapped_around_the_box():
    """What the shipped card's training rows and calibration read (``mirror_cut_faces=False``)."""
    cut = np.ascontiguousarray(long_rod()[CUT])
    mask = cut > 0.5 * cut.max()
    wrapped = compute_features(cut, VOXEL, mask, mirror_cut_faces=False).features
    mended = compute_features(cut, VOXEL, mask).features
    grid, _ = feature_grid(cut.shape, VOXEL)
    power, present = local_band_power(cut, VOXEL, grid)
    scale = compute_features(cut, VOXEL, mask, mirror_cut_faces=False).scale
    j = int(np.flatnonzero(present)[0])
    assert np.allclose(wrapped[j], np.log10(power[j] / scale + spectral.EPS), atol=1e-4)
    assert not np.allclose(wrapped[j], mended[j], atol=0.1)


def test_a_cut_map_is_refused_for_the_memory_its_mirrored_box_needs(spectral_model_card):
    """The memory check counts the mirrored box of a map the box cuts, not only the map's."""
    from cryores.errors import CryoResError
    from cryores.memory import estimated_peak

    cut = np.ascontiguousarray(long_rod()[CUT])
    mask = cut > 0.5 * cut.max()
    own = estimated_peak(cut.size, int(np.prod(feature_grid(cut.shape, VOXEL)[0])), False)
    with pytest.raises(CryoResError, match="memory"):
        predict(cut, VOXEL, mask, model=spectral_model_card, memory_limit=own + 1)
    clear = blob() + 0.01 * np.random.default_rng(1).standard_normal((48, 48, 48)).astype(np.float32)
    blob_mask = automatic_mask(clear, VOXEL)
    need = estimated_peak(clear.size, int(np.prod(feature_grid(clear.shape, VOXEL)[0])), False)
    result = predict(clear, VOXEL, blob_mask, model=spectral_model_card, memory_limit=need + 1)
    assert result.resolution.shape == clear.shape


def test_the_memory_check_counts_the_mirrored_box_when_only_the_reference_reaches_the_faces(
        spectral_model_card):
    """A user's mask inside a cut filament stays clear of the faces, but the automatic mask (the
    features' reference region) reaches them, so the band powers are taken mirrored: the memory
    check must decide the same way (it once looked at the user's mask alone)."""
    from cryores.box_faces import read_past_faces
    from cryores.errors import CryoResError
    from cryores.memory import estimated_peak

    rng = np.random.default_rng(2)
    cut = np.ascontiguousarray(long_rod()[CUT])
    cut = cut + 0.02 * float(cut.max()) * rng.standard_normal(cut.shape).astype(np.float32)
    inside = np.zeros(cut.shape, bool)
    inside[24:40, 14:26, 14:26] = True  # the rod's middle, far from every face
    reference = spectral.reference_region(cut, VOXEL, inside)
    assert not cut_by_box(inside)
    assert read_past_faces(inside, reference)
    own = estimated_peak(cut.size, int(np.prod(feature_grid(cut.shape, VOXEL)[0])), False)
    with pytest.raises(CryoResError, match="memory"):
        predict(cut, VOXEL, inside, model=spectral_model_card, memory_limit=own + 1)
