"""Local low-pass filtering: quality on a map of known local resolution, exactness, CLI."""

from __future__ import annotations

import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import scipy.fft
from scipy import ndimage

from conftest import write_mrc
from cryores import CryoResError, filter_map
from cryores.fourier import spatial_frequency
from cryores.local_filter import raised_cosine
from cryores.mrc_io import read_map

N = 64


def top_hat(volume: np.ndarray, resolution: float) -> np.ndarray:
    """Ideal low-pass at ``resolution`` Å (1 Å voxels): a different filter shape from cryores'."""
    spectrum = scipy.fft.rfftn(volume)
    spectrum[spatial_frequency(volume.shape, (1.0, 1.0, 1.0)) > 1.0 / resolution] = 0
    return scipy.fft.irfftn(spectrum, s=volume.shape).astype(np.float32)


def reference_filter(volume: np.ndarray, resolution: float, edge: float, bfactor: float = 0.0) -> np.ndarray:
    """Straight from the definition: spectrum x raised cosine x exp(-B s^2/4)."""
    s = spatial_frequency(volume.shape, (1.0, 1.0, 1.0)).astype(np.float64)
    gain = raised_cosine(s, 1.0 / resolution, edge).astype(np.float64) * np.exp(-bfactor * s ** 2 / 4)
    return scipy.fft.irfftn(scipy.fft.rfftn(volume.astype(np.float64)) * gain, s=volume.shape)


@pytest.fixture(scope="module")
def known():
    """A protein-like map (Gaussian 'atoms' at 1 atom / 17 Å^3) whose columns x < 32 are
    resolved to 3 Å and x >= 32 to 8 Å, plus white noise as strong as the signal inside."""
    rng = np.random.default_rng(0)
    atoms = np.zeros((N, N, N), np.float32)
    np.add.at(atoms, tuple(rng.integers(8, N - 8, size=(int(0.06 * N ** 3), 3)).T), 1.0)
    atoms = ndimage.gaussian_filter(atoms, 0.6)
    left = np.zeros((N, N, N), bool)
    left[:, :, : N // 2] = True
    truth = np.where(left, top_hat(atoms, 3.0), top_hat(atoms, 8.0))
    mask = np.zeros((N, N, N), bool)
    mask[8:-8, 8:-8, 8:-8] = True
    noisy = truth + rng.normal(0, truth[mask].std(), truth.shape).astype(np.float32)
    locres = np.where(mask, np.where(left, 3.0, 8.0), 0.0).astype(np.float32)
    return truth, noisy, locres, mask


def correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def test_local_filter_beats_the_input_and_the_best_global_filter(known):
    truth, noisy, locres, mask = known
    local = filter_map(noisy, locres, 1.0)
    cc_input = correlation(noisy, truth, mask)
    cc_global = {d: correlation(filter_map(noisy, np.full_like(locres, d), 1.0).density, truth, mask)
                 for d in np.arange(2.5, 10.01, 0.25)}
    best = max(cc_global, key=cc_global.get)
    cc_local = correlation(local.density, truth, mask)
    print(f"\ncorrelation with the truth inside the mask: input {cc_input:.3f}, best global low-pass "
          f"({best:.2f} Å) {cc_global[best]:.3f}, local filter {cc_local:.3f}")
    assert 2.5 < best < 10.0  # the scan brackets the best global filter
    assert cc_local > cc_input + 0.15
    assert cc_local > cc_global[best] + 0.01
    assert local.levels[0] == pytest.approx(3.0) and local.levels[-1] == pytest.approx(8.0)
    assert (local.mask == mask).all()


def test_each_half_is_filtered_at_its_own_resolution(known):
    truth, noisy, locres, mask = known
    local = filter_map(noisy, locres, 1.0, smooth=0.0, edge=0.02).density
    left = mask.copy()
    left[:, :, N // 2 - 4:] = False  # away from the boundary, where neighbours mix in
    right = mask.copy()
    right[:, :, : N // 2 + 12] = False  # the 8 Å filter reaches further
    for region, resolution in ((left, 3.0), (right, 8.0)):
        alone = reference_filter(noisy, resolution, edge=0.02)
        np.testing.assert_allclose(local[region], alone[region], atol=1e-3 * float(np.abs(alone).max()))


def test_constant_resolution_is_one_exact_low_pass_with_sharpening(known):
    _, noisy, _, _ = known
    flat = np.full(noisy.shape, 4.0, np.float32)
    for bfactor in (0.0, -60.0, 40.0):
        result = filter_map(noisy, flat, 1.0, bfactor=bfactor or None)
        assert len(result.levels) == 1 and result.levels[0] == pytest.approx(4.0)
        expected = reference_filter(noisy, 4.0, edge=0.02, bfactor=bfactor)
        np.testing.assert_allclose(result.density, expected, atol=2e-5 * float(np.abs(expected).max()))
    assert result.density.mean() == pytest.approx(noisy.mean(), abs=1e-4)  # the mean passes through


def test_negative_bfactor_sharpens(known):
    _, noisy, locres, _ = known
    plain = filter_map(noisy, locres, 1.0).density
    sharp = filter_map(noisy, locres, 1.0, bfactor=-100.0)
    blurred = filter_map(noisy, locres, 1.0, bfactor=100.0).density
    s = spatial_frequency(noisy.shape, (1.0, 1.0, 1.0))
    high = (s > 0.2) & (s < 0.33)

    def power(volume):
        return float((np.abs(scipy.fft.rfftn(volume)[high]) ** 2).sum())

    assert power(sharp.density) > 3 * power(plain) > 9 * power(blurred)
    assert "B-factor -100" in sharp.line()


def test_voxels_without_locres_get_the_worst_resolution():
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(48, 48, 48)).astype(np.float32)
    locres = np.zeros(volume.shape, np.float32)
    locres[4:12, 4:12, 4:12] = 3.0
    locres[30:40, 30:40, 30:40] = 6.0
    locres[20, 20, 20] = np.nan  # also "no estimate"
    result = filter_map(volume, locres, 1.0, edge=0.02)
    assert result.mask.sum() == 8 ** 3 + 10 ** 3
    far = np.zeros(volume.shape, bool)
    far[20:28, 0:4, 36:44] = True  # well away from both regions
    np.testing.assert_allclose(result.density[far], reference_filter(volume, 6.0, 0.02)[far], atol=1e-4)
    # a mask narrows the estimate: with only the 3 Å cube inside, 3 Å is also the worst
    only_best = np.zeros(volume.shape, np.float32)
    only_best[4:12, 4:12, 4:12] = 1
    narrowed = filter_map(volume, locres, 1.0, only_best)
    assert list(narrowed.levels) == [pytest.approx(3.0)]


@pytest.mark.parametrize("change, match", [
    (dict(locres=np.full((40, 40, 40), 5.0, np.float32)), "shape"),
    (dict(locres=np.zeros((48, 48, 48), np.float32)), "no value above 0"),
    (dict(locres=np.full((48, 48, 48), np.nan, np.float32)), "no value above 0"),
    (dict(mask=np.zeros((48, 48, 48))), "no voxel above 0.5"),
    (dict(mask=np.ones((8, 8, 8))), "shape"),
    (dict(bfactor=float("nan")), "B-factor"),
    (dict(bfactor=-1e5), "B-factor"),
    (dict(step=0.0), "step"),
    (dict(smooth=-1.0), "smooth"),
    (dict(voxel_size=0.0), "voxel size"),
    (dict(memory_limit=1000), "memory"),
])
def test_bad_inputs_fail_clearly(change, match):
    volume = np.random.default_rng(2).normal(size=(48, 48, 48)).astype(np.float32)
    arguments = dict(density=volume, locres=np.full(volume.shape, 5.0, np.float32), voxel_size=1.0)
    arguments.update(change)
    with pytest.raises(CryoResError, match=match):
        filter_map(**arguments)


# ------------------------------------------------------------------------------ command line


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cryores", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def assert_clean_failure(proc: subprocess.CompletedProcess, match: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("cryores: error:") and match in lines[0], lines[0]


@pytest.fixture
def files(tmp_path, known):
    _, noisy, locres, _ = known
    kwargs = dict(voxel_size=1.0, origin=(3.0, -2.0, 7.5), nstart=(-32, -30, -28), axis_order=(2, 1, 3))
    return (write_mrc(tmp_path / "emd.mrc", noisy, **kwargs), write_mrc(tmp_path / "emd_locres.mrc", locres, **kwargs))


def test_cli_writes_the_filtered_map_on_the_input_grid(files, known):
    map_path, locres_path = files
    proc = run("filter", map_path, "--locres", locres_path, "--bfactor", "-50", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = map_path.with_name("emd_locfilt.mrc")
    assert proc.stderr == "" and proc.stdout.count("\n") == 1
    assert "3.00-8.00 Å" in proc.stdout and "B-factor -50" in proc.stdout and str(out) in proc.stdout
    with mrcfile.open(map_path) as src, mrcfile.open(out) as dst:
        assert dst.data.dtype == np.float32 and dst.data.shape == src.data.shape
        for field in ("nxstart", "nystart", "nzstart", "mapc", "mapr", "maps", "mx", "my", "mz"):
            assert int(dst.header[field]) == int(src.header[field]), field
        assert dst.header.origin.tolist() == pytest.approx(src.header.origin.tolist())
        assert dst.voxel_size.tolist() == pytest.approx(src.voxel_size.tolist())
    source = read_map(map_path)
    expected = filter_map(source.data, read_map(locres_path).data, source.voxel_size, bfactor=-50.0).density
    np.testing.assert_allclose(read_map(out).data, expected, atol=1e-6)


def test_cli_refuses_to_overwrite_and_bad_inputs(files, tmp_path):
    map_path, locres_path = files
    out = tmp_path / "out.mrc"
    out.write_bytes(b"precious")
    assert_clean_failure(run("filter", map_path, "--locres", locres_path, "-o", out), "--force")
    assert out.read_bytes() == b"precious"
    assert_clean_failure(run("filter", map_path, "--locres", locres_path, "-o", locres_path, "--force"),
                         "one of the input files")
    small = write_mrc(tmp_path / "small.mrc", np.full((40, 40, 40), 4.0, np.float32))
    placed = dict(origin=(3.0, -2.0, 7.5), nstart=(-32, -30, -28), axis_order=(2, 1, 3))  # the map's placement
    zeros = write_mrc(tmp_path / "zeros.mrc", np.zeros((N, N, N), np.float32), **placed)
    other_voxel = write_mrc(tmp_path / "coarse.mrc", np.full((N, N, N), 4.0, np.float32), voxel_size=2.0)
    moved = write_mrc(tmp_path / "moved.mrc", np.full((N, N, N), 4.0, np.float32), axis_order=(2, 1, 3))
    reordered = write_mrc(tmp_path / "reordered.mrc", np.full((N, N, N), 4.0, np.float32),
                          **{**placed, "axis_order": (1, 2, 3)})
    inputs = {p.name for p in tmp_path.iterdir()}
    for locres, match in ((small, "shape"), (zeros, "no value above 0"), (other_voxel, "voxel size"),
                          (moved, "origin/nstart differ"), (reordered, "axis order")):
        assert_clean_failure(run("filter", map_path, "--locres", locres, "-o", tmp_path / "o.mrc"), match)
    assert {p.name for p in tmp_path.iterdir()} == inputs  # no output, no temporary file
    assert run("filter", map_path, "--locres", locres_path, "-o", out, "--force", "--quiet").returncode == 0
    assert read_map(out).data.shape == (N, N, N)
