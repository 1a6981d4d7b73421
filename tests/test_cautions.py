"""Cautions beside a prediction: a voxel size or a reading beyond what the model was trained on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import cropped_deposit, synthetic_map, write_mrc
from cryores.cautions import SHARE, prediction_cautions
from cryores.model_card import installed_card_path
from cryores.mrc_io import header_labels, read_map

CARD = {"trained_on": {"voxel_size_A": [0.5, 4.0], "resolution_A": [1.8, 20.0]}}


def readings(coarse_share: float, n: int = 1000, value: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    resolution = np.full(n, 6.0, np.float32)
    resolution[: int(round(coarse_share * n))] = value
    return resolution, np.ones(n, bool)


def test_a_card_without_trained_ranges_gives_no_caution():
    resolution, mask = readings(0.5)
    assert prediction_cautions(resolution, mask, (9.0, 9.0, 9.0), {}) == ()


def test_voxel_sizes_inside_the_trained_range_give_no_caution():
    resolution, mask = readings(0.0)
    for voxel in (0.5, 1.05, 4.0, 4.0000005, 0.4999999):  # header round-off is not "outside"
        assert prediction_cautions(resolution, mask, (voxel,) * 3, CARD) == ()


@pytest.mark.parametrize("voxel, named", [((5.7, 5.7, 5.7), "voxel size 5.7 Å/px"), ((0.3, 0.3, 0.3), "0.3 Å/px"),
                                          ((1.0, 1.0, 4.5), "voxel size 1 x 1 x 4.5 Å/px"),
                                          ((0.3, 0.3, 5.0), "0.3 x 0.3 x 5 Å/px")])
def test_a_voxel_size_outside_the_trained_range_is_named_in_full(voxel, named):
    resolution, mask = readings(0.0)
    (caution,) = prediction_cautions(resolution, mask, voxel, CARD)
    assert named in caution and "0.5–4 Å/px" in caution and "extrapolated" in caution


def test_a_share_of_the_mask_coarser_than_trained_is_said_with_its_size():
    resolution, mask = readings(0.12)
    (caution,) = prediction_cautions(resolution, mask, (2.0,) * 3, CARD)
    assert caution.startswith("12 % of the mask reads coarser than 20 Å") and "'20 Å or coarser'" in caution
    below = readings(SHARE - 0.01)
    assert prediction_cautions(*below, (2.0,) * 3, CARD) == ()
    outside = mask.copy()
    outside[:120] = False  # the coarse voxels lie outside the mask: nothing to say
    assert prediction_cautions(resolution, outside, (2.0,) * 3, CARD) == ()
    assert prediction_cautions(resolution, np.zeros_like(mask), (2.0,) * 3, CARD) == ()  # empty mask


def test_a_share_of_the_mask_finer_than_trained_is_said_too():
    resolution, mask = readings(0.2, value=1.2)
    (caution,) = prediction_cautions(resolution, mask, (0.6,) * 3, CARD)
    assert caution.startswith("20 % of the mask reads finer than 1.8 Å") and "'1.8 Å or finer'" in caution


def test_where_nyquist_is_coarser_than_trained_only_the_voxel_size_is_said():
    """At 12 Å/px every value is clipped to Nyquist (24 Å): the coarse share comes from the clip."""
    resolution, mask = readings(1.0, value=24.0)
    (caution,) = prediction_cautions(resolution, mask, (12.0,) * 3, CARD)
    assert caution.startswith("voxel size 12 Å/px")


@pytest.mark.parametrize("trained_on", [{"voxel_size_A": [0.5, 4.0]},
                                        {"voxel_size_A": [4.0, 0.5], "resolution_A": [1.8, 20]},
                                        {"voxel_size_A": "0.5-4", "resolution_A": [1.8, 20]}, [0.5, 4.0]])
def test_a_malformed_trained_on_block_is_refused_when_the_card_loads(tmp_path, trained_on):
    from conftest import make_random_spectral_model
    from cryores.errors import CryoResError
    from cryores.model_card import load_model

    card_path = make_random_spectral_model(tmp_path)
    card = json.loads(card_path.read_text())
    card["trained_on"] = trained_on
    card_path.write_text(json.dumps(card))
    with pytest.raises(CryoResError, match="trained_on"):
        load_model(card_path)


installed = pytest.mark.skipif(installed_card_path() is None, reason="no trained model is installed")


@installed
def test_the_shipped_card_records_what_it_was_trained_on():
    card = json.loads(installed_card_path().read_text())
    voxel, resolution = card["trained_on"]["voxel_size_A"], card["trained_on"]["resolution_A"]
    assert voxel[0] < voxel[1] and resolution[0] < resolution[1] <= card["resolution_range"][1]


@installed
def test_the_command_line_writes_the_map_and_says_the_caution_once(tmp_path):
    """A 7 Å/px map (coarser than any training map) with the shipped model: the output is
    written, the summary line is on stdout, and stderr holds only the caution line(s)."""
    path = tmp_path / "coarse.mrc"
    write_mrc(path, synthetic_map((40, 40, 40), n_atoms=150), voxel_size=7.0)
    out = tmp_path / "coarse_locres.mrc"
    proc = subprocess.run([sys.executable, "-m", "cryores", "predict", str(path), "-o", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "median" in proc.stdout and out.is_file()
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("cryores: caution: ") for line in lines), proc.stderr
    assert any("voxel size 7 Å/px is outside the 0.5–6 Å/px" in line for line in lines)
    assert "Traceback" not in proc.stderr
    assert read_map(out).voxel_size == pytest.approx((7.0, 7.0, 7.0))


@installed
def test_a_batch_row_carries_the_cautions_into_the_summary_csv(tmp_path):
    from cryores.batch import BatchOptions, predict_one, read_summary, write_summary

    coarse = write_mrc(tmp_path / "coarse.mrc", synthetic_map((40, 40, 40)), voxel_size=7.0)
    fine = write_mrc(tmp_path / "fine.mrc", synthetic_map((40, 40, 40)), voxel_size=1.0)
    rows = [predict_one(str(path), str(tmp_path / f"{path.stem}_locres.mrc"), BatchOptions(torch_threads=1))
            for path in (coarse, fine)]
    assert [row.status for row in rows] == ["done", "done"]
    summary = read_summary(write_summary(rows, tmp_path / "summary.csv"))
    assert "voxel size 7 Å/px is outside the 0.5–6 Å/px" in summary[0]["cautions"]
    assert "voxel size" not in summary[1]["cautions"]
    # a rerun skips the finished maps and reads their cautions back, as the summary is rewritten
    again = predict_one(str(coarse), str(tmp_path / "coarse_locres.mrc"), BatchOptions(torch_threads=1))
    assert again.status == "skipped" and again.cautions == rows[0].cautions


def test_a_map_without_a_noise_reference_is_cautioned_whatever_the_card():
    from cryores.cautions import NO_REFERENCE

    resolution, mask = readings(0.0)
    assert prediction_cautions(resolution, mask, (2.0,) * 3, {}, noise_reference=False) == (NO_REFERENCE,)
    assert prediction_cautions(resolution, mask, (2.0,) * 3, CARD, noise_reference=False) == (NO_REFERENCE,)
    from cryores.cautions import NO_REFERENCE_GIVEN_CUT  # the cut given: no advice to give it

    assert prediction_cautions(resolution, mask, (2.0,) * 3, CARD, noise_reference=False,
                               lowpass_cut_given=True) == (NO_REFERENCE_GIVEN_CUT,)
    assert "low-pass" in NO_REFERENCE and "low-pass" not in NO_REFERENCE_GIVEN_CUT
    from cryores.cautions import NO_REFERENCE_SCALED_TO_CUT  # the cut given and taken as the map's scale

    assert prediction_cautions(resolution, mask, (2.0,) * 3, CARD, noise_reference=False, lowpass_cut_given=True,
                               scaled_to_cut=True) == (NO_REFERENCE_SCALED_TO_CUT,)
    assert "scale was set from the low-pass cut" in NO_REFERENCE_SCALED_TO_CUT
    for said in (True, None):  # a reference, or a model that reads none
        assert prediction_cautions(resolution, mask, (2.0,) * 3, CARD, noise_reference=said) == ()


def test_a_faint_solvent_read_as_the_noise_reference_is_cautioned_with_its_spread():
    from cryores.cautions import FAINT_SOLVENT

    resolution, mask = readings(0.0)
    faint = prediction_cautions(resolution, mask, (2.0,) * 3, CARD, noise_reference=True, solvent_spread=6.3e-4)
    assert len(faint) == 1 and "faint (its values spread 6.3e-04 of the molecule's)" in faint[0]
    assert "deposited" in faint[0]  # says what to do about it
    for spread in (FAINT_SOLVENT, 0.15, None):  # at the threshold, a real raw map's noise, not measured
        assert prediction_cautions(resolution, mask, (2.0,) * 3, CARD, noise_reference=True,
                                   solvent_spread=spread) == ()
    # without a reference there is no solvent to call faint; the missing reference is cautioned instead
    from cryores.cautions import NO_REFERENCE

    assert prediction_cautions(resolution, mask, (2.0,) * 3, CARD, noise_reference=False,
                               solvent_spread=1e-5) == (NO_REFERENCE,)


@installed
def test_a_flattened_map_is_read_without_a_noise_reference_and_a_batch_rerun_says_so_again(tmp_path):
    """Noise in the solvent: a reference and no caution. The same map with its solvent set to one
    value: no reference, a caution, and the output's header label keeps that for a batch rerun."""
    import mrcfile

    from cryores import predict
    from cryores.batch import BatchOptions, predict_one
    from cryores.cautions import NO_REFERENCE
    from cryores.masking import automatic_mask

    density = synthetic_map((64, 64, 64), n_atoms=400, noise=0.05)
    noisy = predict(density, 1.5)
    assert noisy.noise_reference is True and NO_REFERENCE not in noisy.cautions
    flattened = np.where(automatic_mask(density, (1.5,) * 3), density, 0.0).astype(np.float32)
    flat = predict(flattened, 1.5)
    assert flat.noise_reference is False and NO_REFERENCE in flat.cautions
    path = write_mrc(tmp_path / "flat.mrc", flattened, voxel_size=1.5)
    out = tmp_path / "flat_locres.mrc"
    first = predict_one(str(path), str(out), BatchOptions(torch_threads=1))
    assert first.status == "done" and NO_REFERENCE in first.cautions
    with mrcfile.open(out) as mrc:
        labels = header_labels(mrc.header)
    assert "cryores: no noise reference" in labels
    again = predict_one(str(path), str(out), BatchOptions(torch_threads=1))
    assert again.status == "skipped" and again.cautions == first.cautions
    # with the map's low-pass cut given, the caution says the cut set the map's scale, on the rerun too
    from cryores.cautions import NO_REFERENCE_SCALED_TO_CUT

    cut = BatchOptions(torch_threads=1, predict_options={"lowpass_cut": 9.0})
    given = predict_one(str(path), str(tmp_path / "flat_cut.mrc"), cut)
    assert given.status == "done" and NO_REFERENCE_SCALED_TO_CUT in given.cautions
    assert NO_REFERENCE not in given.cautions
    again = predict_one(str(path), str(tmp_path / "flat_cut.mrc"), cut)
    assert again.status == "skipped" and again.cautions == given.cautions


@installed
def test_a_soft_masked_map_resampled_in_fourier_space_is_cautioned_and_a_batch_rerun_says_so_again(tmp_path):
    """A deposit-like map (low-passed at 6 Å, soft-masked) Fourier-cropped by 1.5: the mask's edge
    rings through the solvent, which is then read as the noise reference, with a caution that
    names the spread; the output's label keeps it for a batch rerun. The same map unmasked and
    cropped alike keeps real noise in its solvent: no caution."""
    import mrcfile

    from cryores import predict
    from cryores.batch import BatchOptions, predict_one
    from cryores.cautions import FAINT_SOLVENT

    ringing, voxel = cropped_deposit()
    unmasked, _ = cropped_deposit(masked=False)
    read = predict(ringing, voxel)
    assert read.noise_reference is True and read.solvent_spread < FAINT_SOLVENT
    assert sum("solvent is faint" in c for c in read.cautions) == 1
    plain = predict(unmasked, voxel)
    assert plain.noise_reference is True and plain.solvent_spread > 10 * FAINT_SOLVENT
    assert not any("faint" in c for c in plain.cautions)
    path = write_mrc(tmp_path / "ringing.mrc", ringing, voxel_size=voxel)
    out = tmp_path / "ringing_locres.mrc"
    first = predict_one(str(path), str(out), BatchOptions(torch_threads=1))
    assert first.status == "done" and "solvent is faint" in first.cautions
    with mrcfile.open(out) as mrc:
        assert any(label.startswith("cryores: faint solvent, spread ") for label in header_labels(mrc.header))
    again = predict_one(str(path), str(out), BatchOptions(torch_threads=1))
    assert again.status == "skipped" and again.cautions == first.cautions
