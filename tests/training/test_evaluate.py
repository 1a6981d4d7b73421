"""Evaluation helpers: error tables by resolution bin, and installing only intact models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_random_model
from cryores.errors import CryoResError
from cryores_train.evaluate import error_table, install


def test_error_table_pools_and_bins():
    truth = np.array([2.5, 2.5, 4.5, 4.5, 9.0] * 20)
    estimate = truth + np.array([0.5, -0.5, 1.0, 1.0, -2.0] * 20)
    table = error_table(truth, estimate)
    assert table["mae"] == pytest.approx(1.0) and table["bias"] == pytest.approx(0.0)
    assert table["bins"]["2-3"]["mae"] == pytest.approx(0.5) and table["bins"]["2-3"]["bias"] == pytest.approx(0.0)
    assert table["bins"]["4-5"]["bias"] == pytest.approx(1.0) and table["bins"]["8-10"]["bias"] == pytest.approx(-2.0)
    assert "5-6" not in table["bins"]


def test_install_refuses_weights_that_do_not_match_the_card(tmp_path):
    card = make_random_model(tmp_path)
    weights = tmp_path / json.loads(card.read_text())["weights"]
    weights.write_bytes(weights.read_bytes() + b"x")
    with pytest.raises(CryoResError, match="sha256"):
        install(card)


def test_per_map_pearson_is_also_given_over_the_maps_whose_truth_varies():
    from cryores_train.evaluate_v3 import Collector

    rng = np.random.default_rng(1)
    collector = Collector()
    varied = np.linspace(4.0, 8.0, 500)
    collector.add(varied, varied + 0.1 * rng.standard_normal(500), 0.1)  # well ranked, spans 2x
    flat = np.full(500, 6.0) + 0.01 * rng.standard_normal(500)  # nearly uniform truth: nothing to rank
    collector.add(flat, rng.standard_normal(500), 0.1)
    collector.add(flat, rng.standard_normal(500), 0.1)
    summary = collector.summary()
    assert summary["maps"] == 3 and summary["varied_maps"] == 1
    assert summary["pearson_varied"] > 0.95
    assert summary["pearson"] < 0.5  # the median over all maps is a flat map's noise


def test_interval_coverage_is_given_pooled_over_voxels_and_map_by_map():
    """A large map inside its interval and a small one offset outside it: pooled over voxels the
    interval looks fine, map by map it misses half the maps, and says whether a miss is an offset."""
    from cryores_train.evaluate_v3 import interval_coverage

    truth = [np.full(900, 5.0), np.full(100, 8.0)]
    estimate = [np.full(900, 5.5), np.full(100, 11.0)]  # 0.5 Å and 3 Å off
    sigma = [np.full(900, 1.0), np.full(100, 1.2)]  # 90 % half-widths 1.6 and 2.0 Å
    result = interval_coverage(truth, estimate, sigma, [True, False])
    assert result["coverage_90"] == pytest.approx(0.9)
    assert result["coverage_90_by_reference"] == {"with": 1.0, "without": 0.0}
    assert interval_coverage(truth, estimate, sigma)["coverage_90_by_reference"] == {}
    assert result["coverage_90_per_map"] == {"mean": 0.5, "median": 0.5, "under_80": 1, "offset_10": 1, "maps": 2}
    # the small map 7.5 % off, outside a narrow interval (half-width 0.49 Å): not counted as an offset
    narrow = interval_coverage(truth, [np.full(900, 5.5), np.full(100, 8.6)], [np.full(900, 1.0), np.full(100, 0.3)])
    assert narrow["coverage_90_per_map"]["under_80"] == 1 and narrow["coverage_90_per_map"]["offset_10"] == 0


def test_map_offsets_split_a_whole_map_scale_from_the_error_inside_maps():
    """A map read 20 % too coarse everywhere has offset ln 1.2 and no error once that is removed;
    a map read right on average but scattered keeps its scatter; the summary carries both."""
    from cryores_train.evaluate_v3 import Collector, map_offsets

    truth = [np.linspace(4.0, 8.0, 101), np.linspace(4.0, 8.0, 101)]
    scattered = truth[1] * np.where(np.arange(101) % 2 == 0, 1.1, 1 / 1.1)
    scattered[50] = truth[1][50]  # the median ratio stays exactly 1
    result = map_offsets(truth, [1.2 * truth[0], scattered])
    assert result["offset_rms"] == pytest.approx(np.sqrt(0.5) * np.log(1.2), rel=1e-4)
    inside = np.abs(scattered - truth[1]).sum() / 202
    assert result["mae_without_offset"] == pytest.approx(inside, rel=1e-4)
    plain = np.abs(np.concatenate([1.2 * truth[0], scattered]) - np.concatenate(truth)).mean()
    assert result["mae_without_offset"] < plain
    collector = Collector()
    collector.add(truth[0], 1.2 * truth[0], 0.1)
    summary = collector.summary()
    assert summary["offset_rms"] == pytest.approx(np.log(1.2), rel=1e-4) and summary["mae_without_offset"] < 1e-5


def test_benchmarks_compare_cards_on_validation_structures_only(tmp_path, shared):
    from cryores_train.evaluate_v3 import STRUCTURES, validation_side_by_side
    from cryores_train.rows import split_of

    assert STRUCTURES[0] == shared / "data" / "structures" / "bm5"
    cards = [make_random_model(tmp_path / name, seed=i) for i, name in enumerate(("a", "b"))]
    groups, ids, models, labels = validation_side_by_side(cards, 3)
    assert len(ids) == 3 and all(split_of(sid) == "val" and sid in groups for sid in ids)
    assert [m.card["name"] for m in models] == ["random-test-0", "random-test-1"]
    assert len(set(labels)) == 2


def test_a_real_map_with_a_reported_resolution_is_also_read_given_it_as_its_cut(shared):
    from cryores.model_card import installed_card_path, load_model
    from cryores_train.evaluate_v3 import REAL_MAPS, real_map_checks

    card = installed_card_path()
    if card is None or load_model(card).card["architecture"]["type"] != "SpectralNet":
        pytest.skip("no v3 model is installed")
    emd_3488 = [m for m in REAL_MAPS if m[0] == "EMD-3488"]
    assert emd_3488 and emd_3488[0][2] == 3.2 and emd_3488[0][1] == shared / "data" / "maps" / "emd_3488.mrc"
    row = real_map_checks(load_model(card), emd_3488)[0]
    given = row["given_reported"]
    assert row["over_reported"] > 0 and given["median"] >= 3.2 - 1e-4
    assert given["p5"] >= 3.2 - 1e-4  # nothing finer than the cut
    if given["cut_scale"] is not None:  # a masked deposit: scaled towards the cut, never coarser than alone
        assert given["median"] < row["median"]
