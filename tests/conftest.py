"""Shared fixtures: small synthetic maps and small randomly initialised models.

The models here are real networks with random (He-initialised) weights saved through the same
``save_model``/``load_model`` path as trained ones; they exercise the engine, not accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
from scipy import ndimage

from cryores.model_card import load_model, save_model
from cryores.unet import UNet3D

TEST_MODEL_VOXEL = 1.0


def synthetic_map(shape=(40, 40, 40), voxel_size=1.0, n_atoms=150, noise=0.05, seed=0) -> np.ndarray:
    """A blob of Gaussian 'atoms' in the centre of a solvent box, plus white noise (float32)."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, dtype=np.float32)
    centre = np.array(shape) / 2.0
    radius = 0.3 * min(shape)
    points = []
    while len(points) < n_atoms:
        p = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(p) <= radius:
            points.append(np.round(centre + p).astype(int))
    for p in points:
        volume[tuple(p)] += 1.0
    volume = ndimage.gaussian_filter(volume, 1.2 / voxel_size)
    volume /= volume.max()
    volume += rng.normal(0, noise, shape).astype(np.float32)
    return volume.astype(np.float32)


def cropped_deposit(masked: bool = True) -> tuple[np.ndarray, float]:
    """(map, voxel size Å): a deposit-like map (synthetic_map low-passed at 6 Å, soft-masked when
    ``masked``) on 60³ voxels of 1 Å, Fourier-cropped to 40³ voxels of 1.5 Å. Masked, its solvent
    is ringing from the mask's edge, far fainter than the unmasked map's noise
    (cryores.cautions.FAINT_SOLVENT)."""
    import scipy.fft

    from cryores.fourier import spatial_frequency
    from cryores.masking import automatic_mask, dilate
    from cryores.resample import fourier_resample

    density = synthetic_map((60, 60, 60), n_atoms=900, noise=0.05, seed=2)
    keep = spatial_frequency(density.shape, (1.0,) * 3) <= 1 / 6.0
    low = scipy.fft.irfftn(scipy.fft.rfftn(density) * keep, s=density.shape).astype(np.float32)
    if masked:
        low *= ndimage.gaussian_filter(dilate(automatic_mask(density, (1.0,) * 3), (3.0,) * 3).astype(np.float32), 2.0)
    return fourier_resample(low, (40, 40, 40)).astype(np.float32), 1.5


def write_mrc(path: Path, data: np.ndarray, voxel_size=1.0, origin=(0.0, 0.0, 0.0),
              nstart=(0, 0, 0), axis_order=(1, 2, 3)) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data))
        mrc.voxel_size = voxel_size
        mrc.header.origin = origin
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = nstart
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = axis_order
    return path


def make_random_model(folder: Path, seed: int = 0, channels=(4, 8, 16), patch_size=48,
                      voxel_size=TEST_MODEL_VOXEL, output_stride=2, dropout=0.2) -> Path:
    """Save a randomly initialised U-Net with a complete model card; return the card path."""
    torch.manual_seed(seed)
    network = UNet3D(channels, dropout=dropout, output_stride=output_stride)
    card = {
        "name": f"random-test-{seed}",
        "voxel_size": voxel_size,
        "patch_size": patch_size,
        "normalisation": "masked-zscore",
        "target": {"transform": "log", "mean": math.log(5.0), "std": 0.3},
        "resolution_range": [1.0, 20.0],
        "training": {"note": "random weights for tests; not trained"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    return save_model(network, card, folder / "card.json")


def make_random_spectral_model(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised v3 SpectralNet with a complete model card (engine tests, not accuracy)."""
    from cryores.spectral import FEATURE_VOXEL_A, N_FEATURES
    from cryores.spectral_net import SpectralNet

    torch.manual_seed(seed)
    card = {"name": f"random-spectral-{seed}", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0,
            "normalisation": "spectral", "target": {"transform": "log", "mean": 0.0, "std": 1.0},
            "resolution_range": [1.0, 30.0], "training": {"note": "random weights for tests; not trained"}}
    folder.mkdir(parents=True, exist_ok=True)
    return save_model(SpectralNet(N_FEATURES, (16,)), card, folder / "card.json")


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Put torch's thread count back after each test: a batch worker (``predict_one``) sets it for
    the whole process, and float sums depend on it, so a test that compares two readings bit for
    bit would otherwise pass or fail with the tests that ran before it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def spectral_model_card(tmp_path_factory) -> Path:
    return make_random_spectral_model(tmp_path_factory.mktemp("spectral-model"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only shared data folder beside the repository."""
    path = Path(__file__).resolve().parents[1].parent / "shared"
    if not path.is_dir():
        pytest.fail(f"shared data folder {path} is missing (CI puts it beside the clone)")
    return path


@pytest.fixture(scope="session")
def model_card(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def model(model_card):
    return load_model(model_card)


@pytest.fixture(scope="session")
def density() -> np.ndarray:
    return synthetic_map()


@pytest.fixture
def map_file(tmp_path, density) -> Path:
    return write_mrc(tmp_path / "map.mrc", density, voxel_size=1.0, origin=(10.0, -5.0, 2.5), nstart=(-20, -20, -20))
