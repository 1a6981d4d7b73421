from __future__ import annotations

import json

import pytest
import torch

from conftest import make_random_model
from cryores.errors import CryoResError, ModelIntegrityError, NoModelInstalledError
from cryores.model_card import load_model


def test_saved_model_loads_with_identical_weights(tmp_path):
    card_path = make_random_model(tmp_path, seed=3)
    loaded = load_model(card_path)
    again = load_model(card_path)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), again.network(x))
    card = json.loads(card_path.read_text())
    assert len(card["sha256"]) == 64 and card["architecture"]["channels"] == [4, 8, 16]
    assert loaded.voxel_size == 1.0 and loaded.patch_size == 48 and loaded.max_resolution == 20.0


def test_to_angstrom_inverts_the_log_target(model):
    assert float(model.to_angstrom(torch.tensor(0.0))) == pytest.approx(5.0)


def test_tampered_weights_fail_the_sha256_check(tmp_path):
    card_path = make_random_model(tmp_path)
    weights = tmp_path / json.loads(card_path.read_text())["weights"]
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_model(card_path)


def test_incomplete_card_and_missing_weights(tmp_path):
    card_path = make_random_model(tmp_path)
    card = json.loads(card_path.read_text())
    del card["voxel_size"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(card))
    with pytest.raises(CryoResError, match="missing field"):
        load_model(bad)
    (tmp_path / card["weights"]).unlink()
    with pytest.raises(CryoResError, match="missing"):
        load_model(card_path)
    with pytest.raises(CryoResError, match="no such file"):
        load_model(tmp_path / "absent.json")


def test_without_installed_model_the_error_says_so(monkeypatch):
    from cryores import model_card

    monkeypatch.setattr(model_card, "installed_card_path", lambda: None)
    with pytest.raises(NoModelInstalledError, match="no trained model is installed"):
        load_model()
