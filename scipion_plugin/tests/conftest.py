"""Headless Scipion for the plugin tests, plus small maps and a small random model.

pyworkflow reads its configuration from os.environ once, when it is first imported, so the
variables are set here, at import time of this conftest, before any test module imports
pyworkflow or pwem. Everything Scipion writes (config, projects, logs) goes to one temporary
folder that is removed at the end of the session.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
from scipy import ndimage

SCIPION_TMP = Path(tempfile.mkdtemp(prefix="cryores-scipion-tests-"))


def _configure_headless_scipion(root: Path) -> None:
    """The variables and hosts.conf that a headless Scipion needs (see the shared notes)."""
    home = root / "scipion_home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "hosts.conf").write_text(
        "[localhost]\nPARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d --map-by node %_(COMMAND)s\n")
    os.environ.update({
        "SCIPION_DOMAIN": "pwem",  # else the object mapper has no domain
        "SCIPION_PYTHON": sys.executable,  # protocols run as $SCIPION_PYTHON pw_protocol_run.py
        "SCIPION_HOME": str(home),
        "SCIPION_USER_DATA": str(root / "userdata"),
        "SCIPION_TEST_NOSYNC": "1",
        "SCIPION_NOTIFY": "False",
    })


_configure_headless_scipion(SCIPION_TMP)


def pytest_configure(config) -> None:
    # Scipion's pinned matplotlib, bibtexparser and pwem use deprecated pyparsing/scipy names.
    for rule in ("ignore::pyparsing.warnings.PyparsingDeprecationWarning", "ignore::DeprecationWarning:pwem.*"):
        config.addinivalue_line("filterwarnings", rule)


def pytest_unconfigure(config) -> None:
    shutil.rmtree(SCIPION_TMP, ignore_errors=True)


# ----------------------------------------------------------------------------- maps

BOX = 48
VOXEL = 1.0


def blob(shape=(BOX, BOX, BOX), n_atoms=200, seed=0) -> np.ndarray:
    """Gaussian 'atoms' in a sphere at the box centre, normalised to a maximum of 1 (float32)."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, dtype=np.float32)
    centre = np.array(shape) / 2.0
    radius = 0.3 * min(shape)
    placed = 0
    while placed < n_atoms:
        offset = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(offset) <= radius:
            volume[tuple(np.round(centre + offset).astype(int))] += 1.0
            placed += 1
    volume = ndimage.gaussian_filter(volume, 1.2)
    return (volume / volume.max()).astype(np.float32)


def half_maps(signal: np.ndarray, noise=0.08, seed=1) -> tuple[np.ndarray, np.ndarray]:
    """Two half maps: the same signal plus independent white noise."""
    rng = np.random.default_rng(seed)
    return tuple((signal + rng.normal(0, noise, signal.shape)).astype(np.float32) for _ in range(2))


def sphere_mask(shape=(BOX, BOX, BOX), radius=14.0) -> np.ndarray:
    """1 inside a sphere at the box centre, 0 outside (float32)."""
    grid = np.indices(shape, dtype=np.float32) - (np.array(shape, dtype=np.float32)[:, None, None, None] / 2.0)
    return (np.sqrt((grid ** 2).sum(axis=0)) <= radius).astype(np.float32)


def write_mrc(path: str | Path, data: np.ndarray, voxel_size=VOXEL) -> str:
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.float32))
        mrc.voxel_size = voxel_size
    return str(path)


def header_origin(path: str) -> tuple[float, float, float]:
    """The origin (Å) written in an MRC header."""
    with mrcfile.open(path.replace(":mrc", ""), header_only=True, permissive=True) as mrc:
        origin = mrc.header.origin
        return (float(origin.x), float(origin.y), float(origin.z))


def read_mrc(path: str) -> np.ndarray:
    with mrcfile.open(path.replace(":mrc", ""), permissive=True) as mrc:
        return np.array(mrc.data, dtype=np.float32)


# ----------------------------------------------------------------------------- model

MODEL_MAX_RESOLUTION = 20.0


def make_random_model(folder: Path, seed: int = 0) -> str:
    """A randomly initialised U-Net with a complete model card (as the core tests make one).

    It exercises the engine and the plugin, not accuracy: the weights are not trained.
    """
    import torch

    from cryores.model_card import save_model
    from cryores.unet import UNet3D

    torch.manual_seed(seed)
    network = UNet3D((4, 8, 16), dropout=0.2, output_stride=2)
    card = {
        "name": f"random-test-{seed}",
        "voxel_size": VOXEL,
        "patch_size": 48,
        "normalisation": "masked-zscore",
        "target": {"transform": "log", "mean": math.log(5.0), "std": 0.3},
        "resolution_range": [1.0, MODEL_MAX_RESOLUTION],
        "training": {"note": "random weights for tests; not trained"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    return str(save_model(network, card, folder / "card.json"))


def make_random_spectral_model(folder: Path, seed: int = 0) -> str:
    """A randomly initialised v3 SpectralNet with a complete model card (fast on any voxel size)."""
    import torch

    from cryores.model_card import save_model
    from cryores.spectral import FEATURE_VOXEL_A, N_FEATURES
    from cryores.spectral_net import SpectralNet

    torch.manual_seed(seed)
    card = {"name": f"random-spectral-{seed}", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0,
            "normalisation": "spectral", "target": {"transform": "log", "mean": 0.0, "std": 1.0},
            "resolution_range": [1.0, MODEL_MAX_RESOLUTION], "training": {"note": "random weights for tests"}}
    folder.mkdir(parents=True, exist_ok=True)
    return str(save_model(SpectralNet(N_FEATURES, (16,)), card, folder / "card.json"))
