"""Training: a few real optimisation steps on a tiny dataset; resume is exact; export loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_dataset import make_sample  # a sample-folder helper; imports no test

from cryores import load_model, predict
from cryores_train.dataset import build_dataset
from cryores_train.fit import learning_rate, random_orientation, train
from cryores_train.labels import entries_from_samples


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit_samples")
    for i, structure in enumerate(["AAAA", "BBBB", "CCCC", "DDDD", "EEEE", "FFFF"]):
        make_sample(root, f"s{i}", structure, seed=i)
    output = root / "patches.h5"
    build_dataset(entries_from_samples(root), output, patch_size=16, seed=0)
    return output


def _config(dataset, output, steps=6):
    return {"name": "tiny", "dataset": str(dataset), "output": str(output), "seed": 0,
            "architecture": {"channels": [4, 8], "dropout": 0.1, "output_stride": 2},
            "batch_size": 2, "steps": steps, "learning_rate": 0.01, "weight_decay": 0.0, "warmup_steps": 2,
            "loss": "huber", "huber_delta": 0.5, "augment": {"crop": 8, "rotate": True, "norm_jitter": 0.05},
            "validate_every": 3, "validation_patches": 4, "checkpoint_every": 1,
            "inference": {"patch_size": 16, "overlap": 0.5}, "resolution_range": [2.0, 15.0]}


def test_training_exports_a_loadable_model_card(dataset, tmp_path):
    card_path = train(_config(dataset, tmp_path / "run"), progress=False)
    card = json.loads(card_path.read_text())
    assert card["target"]["transform"] == "log" and 1.0 < np.exp(card["target"]["mean"]) < 10.0
    assert card["training"]["patches"]["train"] > 0 and card["training"]["test_structures"]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    model = load_model(card_path)
    volume = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[6:18, 6:18, 6:18] = True
    result = predict(volume, 1.0, mask, model=model)
    assert result.resolution[mask].min() >= 2.0


def test_resuming_gives_the_same_weights_as_running_through(dataset, tmp_path):
    straight = train(_config(dataset, tmp_path / "a"), progress=False)
    train(_config(dataset, tmp_path / "b"), progress=False, max_steps=3)  # interrupted after 3 steps
    resumed = train(_config(dataset, tmp_path / "b"), progress=False)
    a = torch.load(straight.parent / "tiny.pt", weights_only=True)
    b = torch.load(resumed.parent / "tiny.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_schedule_and_orientations():
    config = {"warmup_steps": 10, "steps": 100, "learning_rate": 1.0}
    assert learning_rate(0, config) == pytest.approx(0.1) and learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(99, config) < 0.01
    cube = np.arange(27).reshape(3, 3, 3)
    a, b = random_orientation([cube, cube * 2], np.random.default_rng(3))
    np.testing.assert_array_equal(b, a * 2)  # one orientation for all arrays of a sample
    assert sorted(a.ravel()) == list(range(27))


def test_export_now_records_where_training_stopped(dataset, tmp_path):
    config = _config(dataset, tmp_path / "c")
    train(config, progress=False, max_steps=2)
    card = json.loads(train(config, progress=False, export_now=True).read_text())
    assert card["training"]["steps"] == 2 and card["training"]["scheduled_steps"] == 6
