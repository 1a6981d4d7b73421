"""The picture report's text and what a resolution map's labels carry into it.

Why it exists: a report is often shown on its own (a slide, a supplement), so it must say what
the command line said beside it: whether the map was read against a noise reference, and the
low-pass cut given. The `report` command reads those back from the labels cryores wrote.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import cropped_deposit, synthetic_map, write_mrc
from cryores import predict, predict_file
from cryores.masking import automatic_mask
from cryores.mrc_io import header_labels, read_map
from cryores.predict import Prediction, read_resolution_labels, resolution_label
from cryores.report import prediction_from_files, report_facts
from cryores.summary import summarise

VOXEL = 1.5


@pytest.fixture(scope="module")
def raw_map() -> np.ndarray:
    """A molecule with noise in and around it: its solvent is a noise reference."""
    return synthetic_map((48, 48, 48), n_atoms=300, noise=0.08, seed=3)


@pytest.fixture(scope="module")
def masked_map(raw_map) -> np.ndarray:
    """The same map with its solvent set to zero, as deposits are: no noise reference."""
    return np.where(automatic_mask(raw_map, (VOXEL,) * 3), raw_map, 0.0).astype(np.float32)


def _prediction(noise_reference: bool | None, lowpass_cut: float | None = None,
                cut_scale: float | None = None) -> Prediction:
    resolution = np.full((4, 4, 4), 5.0, np.float32)
    mask = np.ones(resolution.shape, bool)
    return Prediction(resolution, mask, None, summarise(resolution, mask), "cryores-v3", (1.0,) * 3,
                      noise_reference=noise_reference, lowpass_cut=lowpass_cut, cut_scale=cut_scale)


@pytest.mark.parametrize("noise_reference", [True, False, None])
@pytest.mark.parametrize("lowpass_cut", [None, 6.5, 3.0000000000000004])
def test_the_labels_read_back_what_they_were_written_from(noise_reference, lowpass_cut):
    scale = 0.8734 if noise_reference is False and lowpass_cut is not None else None
    written = _prediction(noise_reference, lowpass_cut, scale)
    facts = read_resolution_labels(resolution_label(written).split("\n"))
    assert facts.model_name == "cryores-v3"
    assert facts.noise_reference == (False if noise_reference is False else None)  # True only with a faint solvent
    assert facts.lowpass_cut == lowpass_cut
    assert facts.cut_scale == scale


@pytest.mark.parametrize("spread, written_down", [(4.9e-05, True), (0.0009999, True), (0.001, False), (0.15, False)])
def test_a_faint_solvent_is_written_down_so_that_a_rerun_can_caution_again(spread, written_down):
    written = dataclasses.replace(_prediction(True), solvent_spread=spread)
    facts = read_resolution_labels(resolution_label(written).split("\n"))
    assert (facts.noise_reference, facts.solvent_spread) == ((True, spread) if written_down else (None, None))
    # a map without a reference has no solvent spread to write, whatever the caller put there
    without = dataclasses.replace(_prediction(False), solvent_spread=spread)
    assert read_resolution_labels(resolution_label(without).split("\n")).solvent_spread is None


def test_a_long_model_name_cuts_no_other_fact_from_the_labels():
    long_name = "cryores-v3-" + "x" * 80
    written = dataclasses.replace(_prediction(False, 6.5, 0.9), model_name=long_name)
    lines = [line[:80] for line in resolution_label(written).split("\n")]  # as the MRC header keeps them
    facts = read_resolution_labels(lines)
    assert (facts.noise_reference, facts.lowpass_cut, facts.cut_scale) == (False, 6.5, 0.9)
    assert facts.model_name != long_name  # cut: a batch rerun does not keep the file (it asks for --force)


def test_labels_written_before_the_flag_had_its_own_line_still_read():
    facts = read_resolution_labels(["cryores local resolution (A), model cryores-v3, no noise reference",
                                    "cryores low-pass cut 3.2 A"])
    assert (facts.model_name, facts.noise_reference, facts.lowpass_cut) == ("cryores-v3", False, 3.2)


def test_other_tools_labels_and_a_cut_that_is_no_number_say_nothing():
    facts = read_resolution_labels(["ResMap local resolution", "cryores low-pass cut six A", ""])
    assert (facts.model_name, facts.noise_reference, facts.lowpass_cut) == (None, None, None)
    assert facts.garbled
    assert not read_resolution_labels(["ResMap local resolution", "cryores low-pass cut 6 A"]).garbled


def test_the_report_says_whether_the_map_had_a_noise_reference(tmp_path, raw_map, masked_map,
                                                                spectral_model_card):
    density = read_map(write_mrc(tmp_path / "map.mrc", raw_map, voxel_size=VOXEL))
    raw = report_facts(density, predict(raw_map, VOXEL, model=spectral_model_card))
    masked = report_facts(density, predict(masked_map, VOXEL, model=spectral_model_card, lowpass_cut=6.0))
    assert "noise reference: the map's solvent" in raw and not any("no noise reference" in f for f in raw)
    assert any(f.startswith("no noise reference") for f in masked)
    assert "low-pass cut given: 6 Å (nothing reads finer)" in masked
    assert not any("low-pass cut" in f for f in raw)
    faint = report_facts(density, dataclasses.replace(predict(raw_map, VOXEL, model=spectral_model_card),
                                                      solvent_spread=5e-5))
    assert faint[faint.index("noise reference: the map's solvent") + 1].startswith("  faint (spread 5.0e-05)")
    assert not any("faint" in f for f in raw)


def test_the_report_reads_a_faint_solvent_back_from_the_labels_exactly(tmp_path, spectral_model_card):
    """The spread goes to the label unrounded, so the report (and a batch rerun) compares the
    same number with the threshold as the prediction did."""
    from cryores.cautions import FAINT_SOLVENT

    ringing, voxel = cropped_deposit()
    source = write_mrc(tmp_path / "cropped.mrc", ringing, voxel_size=voxel)
    result, output = predict_file(source, model=spectral_model_card)
    assert result.noise_reference is True and result.solvent_spread < FAINT_SOLVENT
    again = prediction_from_files(read_map(source), read_map(output))
    assert (again.noise_reference, again.solvent_spread) == (True, result.solvent_spread)
    facts = report_facts(read_map(source), again)
    assert any(f.startswith(f"  faint (spread {result.solvent_spread:.1e})") for f in facts)
    # a spread that rounds to the threshold at six digits still reads back below it
    just_below = dataclasses.replace(result, solvent_spread=float(np.nextafter(FAINT_SOLVENT, 0)))
    assert read_resolution_labels(resolution_label(just_below).split("\n")).solvent_spread < FAINT_SOLVENT


def test_the_report_command_reads_the_model_reference_and_cut_from_cryores_labels(tmp_path, masked_map,
                                                                                    spectral_model_card):
    source = write_mrc(tmp_path / "deposit.mrc", masked_map, voxel_size=VOXEL)
    result, output = predict_file(source, model=spectral_model_card, lowpass_cut=6.0)
    density, locres = read_map(source), read_map(output)
    assert any("no noise reference" in label for label in header_labels(locres.header))
    again = prediction_from_files(density, locres)
    assert again.noise_reference is False and again.lowpass_cut == 6.0
    assert again.model_name == f"{result.model_name} (deposit_locres.mrc)"
    facts = report_facts(density, again)
    assert any(f.startswith("no noise reference") for f in facts)
    assert result.cut_scale is not None and again.cut_scale == pytest.approx(result.cut_scale, rel=1e-5)
    assert facts[-2:] == ["low-pass cut given: 6 Å (nothing reads finer)",
                          f"  scaled x{result.cut_scale:.3f}: its best fifth reads the cut"]
    plain = write_mrc(tmp_path / "other_tool.mrc", locres.data, voxel_size=VOXEL)  # labels of no cryores run
    other = prediction_from_files(density, read_map(plain))
    assert (other.model_name, other.noise_reference, other.lowpass_cut) == ("other_tool.mrc", None, None)
    assert not any("noise reference" in f or "low-pass" in f for f in report_facts(density, other))

