"""``cryores-train ensemble``: members fit from other seeds joined into one card that cryores loads."""

from __future__ import annotations

import json

import torch
from test_v3_training import synthetic_rows, tiny_config  # row and config helpers; imports no test

from conftest import make_random_spectral_model
from cryores.model_card import load_model, save_model, sha256_of
from cryores.spectral import FEATURE_VOXEL_A, N_FEATURES, N_INPUTS
from cryores.spectral_net import SpectralEnsemble, SpectralNet
from cryores_train.cli import main
from cryores_train.ensemble import fit_members


def test_members_join_into_one_card_whose_network_is_their_ensemble(tmp_path, capsys):
    first = make_random_spectral_model(tmp_path / "seed1", seed=1)
    second = make_random_spectral_model(tmp_path / "seed2", seed=2)
    config = tmp_path / "configs" / "v3.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"name": "cryores-v3", "kind": "spectral", "seed": 1, "output": "runs/x"}))
    output = tmp_path / "joined" / "default.json"
    assert main(["ensemble", str(config), str(first), str(second), "-o", str(output)]) == 0
    assert "2 members joined" in capsys.readouterr().out
    joined = load_model(output)
    assert isinstance(joined.network, SpectralEnsemble) and joined.spectral
    card = json.loads(output.read_text())
    assert card["sha256"] == sha256_of(output.parent / card["weights"])
    assert card["uncertainty"]["interval_scale"] == 1.0 and "calibration" not in card  # the config has none
    assert [m["sha256"] for m in card["training"]["members"]] == [sha256_of(first.parent / "card.pt"),
                                                                  sha256_of(second.parent / "card.pt")]
    rows = torch.randn(20, joined.network.n_features)
    medians = torch.stack([load_model(c).network(rows)[:, 1] for c in (first, second)]).mean(dim=0)
    torch.testing.assert_close(joined.network(rows)[:, 1], medians)


def test_one_member_or_a_joined_card_is_refused_in_one_line(tmp_path, capsys):
    first = make_random_spectral_model(tmp_path / "seed1", seed=1)
    config = tmp_path / "configs" / "v3.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"name": "cryores-v3", "kind": "spectral", "seed": 1, "output": "runs/x"}))
    output = tmp_path / "joined" / "default.json"
    assert main(["ensemble", str(config), str(first), "-o", str(output)]) != 0
    assert "at least two member cards" in capsys.readouterr().err and not output.exists()
    second = make_random_spectral_model(tmp_path / "seed2", seed=2)
    assert main(["ensemble", str(config), str(first), str(second), "-o", str(output)]) == 0
    assert main(["ensemble", str(config), str(output), str(first), "-o", str(tmp_path / "again.json")]) != 0
    error = capsys.readouterr().err.strip()
    assert "not a single v3 (SpectralNet) model" in error and len(error.splitlines()) == 1


def test_members_of_other_architectures_are_refused(tmp_path, capsys):
    first = make_random_spectral_model(tmp_path / "seed1", seed=1)
    card = {"name": "narrow", "voxel_size": FEATURE_VOXEL_A, "patch_size": 0, "normalisation": "spectral",
            "target": {"transform": "log", "mean": 0.0, "std": 1.0}, "resolution_range": [1.0, 30.0]}
    (tmp_path / "narrow").mkdir()
    other = save_model(SpectralNet(N_FEATURES, (8,)), card, tmp_path / "narrow" / "card.json")
    config = tmp_path / "configs" / "v3.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"name": "cryores-v3", "kind": "spectral", "seed": 1, "output": "runs/x"}))
    output = tmp_path / "joined" / "default.json"
    assert main(["ensemble", str(config), str(first), str(other), "-o", str(output)]) != 0
    assert "share one architecture" in capsys.readouterr().err and not output.exists()


def test_a_config_with_members_fits_each_seed_resumably_then_joins_them(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    synthetic_rows(rows, width=N_INPUTS)
    config = {**tiny_config(tmp_path / "run", rows), "members": [3, 4]}
    stopped = fit_members(config, progress=False, max_steps=20)  # "killed" inside the first member
    assert stopped.name == "checkpoint.pt" and not (tmp_path / "run" / "model").exists()
    card = fit_members(config, progress=False)
    assert card == tmp_path / "run" / "model" / "default.json"
    members = [tmp_path / "run" / "members" / f"seed-{seed}" / "model" / "default.json" for seed in (3, 4)]
    seeds = [json.loads(m.read_text())["training"]["config"]["seed"] for m in members]
    assert seeds == [3, 4]
    joined = json.loads(card.read_text())
    assert [m["sha256"] for m in joined["training"]["members"]] == [json.loads(m.read_text())["sha256"]
                                                                   for m in members]
    assert joined["training"]["config"]["members"] == [3, 4] and isinstance(load_model(card).network,
                                                                              SpectralEnsemble)
    weights = {m: m.parent.joinpath("tiny-v3.pt").stat().st_mtime_ns for m in members}
    assert fit_members(config, progress=False) == card  # finished members are not fit again
    assert {m: m.parent.joinpath("tiny-v3.pt").stat().st_mtime_ns for m in members} == weights
