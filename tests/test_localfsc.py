"""Half-map local FSC: known resolutions are recovered, regions are ranked, files and CLI work."""

from __future__ import annotations

import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import scipy.fft

from conftest import write_mrc
from cryores import CryoResError, local_fsc, local_fsc_file
from cryores.localfsc import fsc_crossing


def _filter(volume: np.ndarray, gain) -> np.ndarray:
    """Apply a radial gain(frequency in 1/Å) at 1 Å voxels."""
    freqs = [np.fft.fftfreq(n) for n in volume.shape[:2]] + [np.fft.rfftfreq(volume.shape[2])]
    grids = np.meshgrid(*freqs, indexing="ij", sparse=True)
    radius = np.sqrt(sum(g ** 2 for g in grids))
    return scipy.fft.irfftn(scipy.fft.rfftn(volume) * gain(radius), s=volume.shape).astype(np.float32)


def designed_halves(n: int, resolution: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half maps whose per-shell SNR falls as (k0/k)^4 and crosses FSC 0.143 at ``resolution``.

    FSC = SNR / (1 + SNR) for two halves with independent noise, so FSC(1/resolution) = 0.143
    when SNR = 0.1667 there. Signal and noise share a B-factor-like envelope, as in real maps.
    """
    rng = np.random.default_rng(seed)
    k0 = 1.0 / resolution

    def envelope(k):
        return np.exp(-30 * k ** 2)

    def noise_gain(k):
        return envelope(k) / np.sqrt(0.1667 * (k0 / np.maximum(k, 1e-3)) ** 4)

    signal = _filter(rng.normal(size=(n, n, n)), envelope)
    return tuple(signal + _filter(rng.normal(size=(n, n, n)), noise_gain) for _ in range(2))


@pytest.fixture(scope="module")
def central_mask():
    mask = np.zeros((64, 64, 64), bool)
    mask[16:48, 16:48, 16:48] = True
    return mask


@pytest.mark.parametrize("resolution, window", [(3.0, 24), (5.0, 24), (8.0, 32)])
def test_recovers_the_designed_resolution(resolution, window, central_mask):
    half1, half2 = designed_halves(64, resolution, seed=int(resolution))
    result = local_fsc(half1, half2, 1.0, central_mask, window=window)
    assert result.summary.median == pytest.approx(resolution, rel=0.15)
    assert result.summary.p95 - result.summary.p5 < 0.5 * resolution


def test_ranks_a_sharp_and_a_blurred_region(central_mask):
    sharp = designed_halves(64, 3.5, seed=1)
    blurred = designed_halves(64, 8.0, seed=2)
    ramp = np.clip((np.arange(64) - 26) / 12.0, 0, 1)[None, None, :]  # left sharp, right blurred
    half1, half2 = ((1 - ramp) * s + ramp * b for s, b in zip(sharp, blurred))
    result = local_fsc(half1, half2, 1.0, central_mask, window=24)
    left = result.resolution[16:48, 16:48, 16:24]
    right = result.resolution[16:48, 16:48, 40:48]
    assert np.median(left) < 5.0 < 6.0 < np.median(right)


def test_output_conventions_and_no_mask_given():
    half1, half2 = designed_halves(64, 4.0)
    blob = np.zeros((64, 64, 64), np.float32)
    blob[20:44, 20:44, 20:44] = 3.0  # something for the automatic mask to find
    result = local_fsc(half1 + blob, half2 + blob, 1.0, window=24, max_resolution=25.0)
    res, mask = result.resolution, result.mask
    assert res.dtype == np.float32 and res.shape == (64, 64, 64)
    assert (res[~mask] == 0).all() and res[mask].min() >= 2.0 and res[mask].max() <= 25.0
    assert result.uncertainty is None and "local FSC" in result.model_name


def test_fsc_crossing_interpolates_and_handles_the_ends():
    freq = np.array([0.0, 0.1, 0.2, 0.3])
    fsc = np.array([[1.0, 0.9, 0.043, 0.0],   # crosses 0.143 between shells 1 and 2
                    [1.0, 0.9, 0.8, 0.7],     # never: resolved to the last shell
                    [1.0, 0.1, 0.0, 0.0]])    # below at shell 1: nothing resolved
    crossing = fsc_crossing(fsc, freq)
    assert crossing[0] == pytest.approx(0.1 + 0.1 * (0.9 - 0.143) / (0.9 - 0.043))
    assert crossing[1] == 0.3 and crossing[2] == 0.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(half2=np.random.default_rng(0).normal(size=(32, 32, 30))), "differ in shape"),
    (dict(same=True), "identical"),
    (dict(window=200.0), "does not fit"),
    (dict(whiten="magic"), "whiten"),
    (dict(window=-1.0), "window"),
])
def test_bad_input_fails_clearly(kwargs, match):
    half1, half2 = designed_halves(32, 4.0)
    if kwargs.pop("same", False):
        half2 = half1
    half2 = kwargs.pop("half2", half2)
    with pytest.raises(CryoResError, match=match):
        local_fsc(half1, half2, 1.0, np.ones((32, 32, 32)), **kwargs)


def test_file_api_and_cli(tmp_path, central_mask):
    half1, half2 = designed_halves(64, 5.0)
    p1 = write_mrc(tmp_path / "run_half1.mrc", half1, origin=(3.0, 4.0, 5.0), nstart=(-32, -32, -32))
    p2 = write_mrc(tmp_path / "run_half2.mrc", half2, origin=(3.0, 4.0, 5.0), nstart=(-32, -32, -32))
    mask = write_mrc(tmp_path / "mask.mrc", central_mask.astype(np.float32))
    result, out = local_fsc_file(p1, p2, mask=mask, window=24)
    assert out == tmp_path / "run_half1_localfsc.mrc"
    with mrcfile.open(out) as mrc:
        np.testing.assert_array_equal(mrc.data, result.resolution)
        assert int(mrc.header.nxstart) == -32 and float(mrc.header.origin.x) == pytest.approx(3.0)
    with pytest.raises(CryoResError, match="--force"):
        local_fsc_file(p1, p2, mask=mask, window=24)

    proc = subprocess.run([sys.executable, "-m", "cryores", "localfsc", str(p1), str(p2), "--mask", str(mask),
                           "--window", "24", "-o", str(tmp_path / "cli.mrc"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout and (tmp_path / "cli.mrc").is_file()

    odd = write_mrc(tmp_path / "odd.mrc", half2[:, :, :-2])
    proc = subprocess.run([sys.executable, "-m", "cryores", "localfsc", str(p1), str(odd), "-o",
                           str(tmp_path / "bad.mrc")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.startswith("cryores: error: half map 2")
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad.mrc").exists()
