"""The model shipped in the package: its card, its weights' checksum, and a real prediction.

These run only when a model is installed (the shipped state of the repository); the card must
describe a training run (command, data, steps, metrics), never hand-made or random weights.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cryores.model_card import installed_card_path, load_model, sha256_of
from cryores.mrc_io import read_map

CARD = installed_card_path()
pytestmark = pytest.mark.skipif(CARD is None, reason="no trained model is installed")


def test_card_describes_a_training_run_and_the_weights_match():
    card = json.loads(CARD.read_text())
    assert sha256_of(CARD.parent / card["weights"]) == card["sha256"]
    training = card["training"]
    assert "make model" in training["command"] and training["steps"] == training["config"]["steps"] > 0
    assert card["metrics"]["test_split"]["mae"] > 0 and card["metrics"]["held_out_family"]["mae"] > 0
    assert 0.5 < card["uncertainty"]["interval_scale"] < 5
    assert (CARD.parent / card["weights"]).stat().st_size < 10 * 2**20


def test_real_map_gives_plausible_angstrom_values(shared, tmp_path):
    """EMD-5168 (1.742 Å voxels): values in Å between Nyquist and the card's bound, not constant."""
    density = read_map(shared / "data" / "maps" / "emd_5168.map")
    out = tmp_path / "locres.mrc"
    proc = subprocess.run([sys.executable, "-m", "cryores", "predict", str(shared / "data" / "maps" / "emd_5168.map"),
                           "-o", str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout
    result = read_map(out)
    assert result.voxel_size == pytest.approx(density.voxel_size)
    inside = result.data[result.data > 0]
    model = load_model()
    assert inside.size > 0.05 * result.data.size
    assert inside.min() >= 2 * 1.742 - 1e-3 and inside.max() <= model.max_resolution + 1e-3
    assert np.percentile(inside, 95) - np.percentile(inside, 5) > 0.3
