"""The low-pass cut a user gives: nothing finer than it is left in the map, so nothing reads finer.

Why it exists: deposits are low-passed at their global resolution, and a masked one cannot show
where (``training/README.md``: the cut is not plain in its spectrum); read against the deposit's
label, flooring at the cut lowered the masked twins' MAE (``benchmarks/reference_twins.py``).
"""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from conftest import write_mrc
from cryores import CryoResError, cli, predict, predict_file
from cryores.batch import BatchOptions, predict_one
from cryores.mrc_io import header_labels


@pytest.fixture(params=["spectral", "unet"])
def card(request, spectral_model_card, model_card):
    return spectral_model_card if request.param == "spectral" else model_card


def test_values_finer_than_the_cut_read_as_the_cut_and_the_rest_is_unchanged(density, card):
    plain = predict(density, 1.0, model=card)
    inside = plain.mask
    cut = float(np.percentile(plain.resolution[inside], 60))
    floored = predict(density, 1.0, model=card, lowpass_cut=cut)
    np.testing.assert_array_equal(floored.mask, inside)
    assert floored.resolution[inside].min() == pytest.approx(cut)
    coarser = plain.resolution > cut
    assert 0.2 < coarser[inside].mean() < 0.6  # both kinds of voxel are there
    np.testing.assert_array_equal(floored.resolution[coarser], plain.resolution[coarser])
    np.testing.assert_allclose(floored.resolution[inside & ~coarser], cut, rtol=1e-6)
    assert np.all(floored.resolution[~inside] == 0)
    if plain.uncertainty is not None:
        np.testing.assert_array_equal(floored.uncertainty, plain.uncertainty)
    assert floored.summary.median >= plain.summary.median


def test_a_cut_finer_than_nyquist_changes_nothing(density, spectral_model_card):
    plain = predict(density, 1.0, model=spectral_model_card)
    np.testing.assert_array_equal(predict(density, 1.0, model=spectral_model_card, lowpass_cut=1.5).resolution,
                                  plain.resolution)


@pytest.mark.parametrize("cut, words", [(0.0, "positive"), (-3.0, "positive"), (float("nan"), "positive"),
                                        (float("inf"), "finite"),
                                        ("six", "a number"), (30.0, "beyond the model's range")])
def test_bad_cuts_are_refused(density, spectral_model_card, cut, words):
    with pytest.raises(CryoResError, match=words):
        predict(density, 1.0, model=spectral_model_card, lowpass_cut=cut)


def test_the_file_api_and_the_batch_worker_floor_alike(tmp_path, map_file, spectral_model_card):
    plain, _ = predict_file(map_file, tmp_path / "plain.mrc", model=spectral_model_card)
    cut = float(np.percentile(plain.resolution[plain.mask], 50))
    floored, output = predict_file(map_file, tmp_path / "cut.mrc", model=spectral_model_card, lowpass_cut=cut)
    row = predict_one(str(map_file), str(tmp_path / "batch.mrc"),
                      BatchOptions(model=str(spectral_model_card), predict_options={"lowpass_cut": cut}))
    assert row.status == "done", row.error
    with mrcfile.open(output) as mrc, mrcfile.open(tmp_path / "batch.mrc") as batch:
        np.testing.assert_array_equal(mrc.data, floored.resolution)
        np.testing.assert_array_equal(batch.data, floored.resolution)
    assert floored.resolution[floored.mask].min() == pytest.approx(cut)


def test_cli_floors_and_refuses_a_bad_cut_in_one_line(tmp_path, map_file, spectral_model_card, capsys):
    out = tmp_path / "out.mrc"
    args = ["predict", str(map_file), "-o", str(out), "--model", str(spectral_model_card), "--quiet"]
    assert cli.main([*args, "--lowpass-cut", "31"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "beyond the model's range" in err[0] and not out.exists()
    for bad in ("-2", "inf", "nan"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*args, "--lowpass-cut", bad])
        assert exit_info.value.code == 2 and "--lowpass-cut must be a finite positive" in capsys.readouterr().err
    assert cli.main([*args, "--lowpass-cut", "7.5"]) == 0
    with mrcfile.open(out) as mrc:
        inside = mrc.data > 0
        assert inside.any() and mrc.data[inside].min() == pytest.approx(7.5)


def test_cli_hands_the_cut_to_every_map_of_a_batch(tmp_path, map_file, spectral_model_card, monkeypatch):
    import cryores.batch

    seen = []

    def run_batch(maps, out_dir, options, **kwargs):
        seen.append(options.predict_options)
        return []

    monkeypatch.setattr(cryores.batch, "run_batch", run_batch)
    cli.main(["predict", str(map_file), str(map_file.with_name("other.mrc")), "--lowpass-cut", "6",
              "--out-dir", str(tmp_path), "--model", str(spectral_model_card)])
    assert seen == [{"lowpass_cut": 6.0}]


def mrc_labels(path) -> list[str]:
    with mrcfile.open(path) as mrc:
        return header_labels(mrc.header)


def test_the_output_records_its_cut_and_a_batch_rerun_keeps_only_a_file_of_the_same_cut(tmp_path, map_file,
                                                                                        spectral_model_card):
    """A kept file must have been read as asked: the cut is an MRC label, compared on a rerun."""
    output = str(tmp_path / "out.mrc")

    def batch(cut, force=False):
        options = {} if cut is None else {"lowpass_cut": cut}
        return predict_one(str(map_file), output, BatchOptions(model=str(spectral_model_card), force=force,
                                                              predict_options=options))

    assert batch(None).status == "done"
    assert not any("low-pass cut" in label for label in mrc_labels(output))
    assert batch(None).status == "skipped"
    refused = batch(7.25)  # the file was read without a cut: not kept, and not overwritten without --force
    assert refused.status == "failed" and "--force" in refused.error
    assert batch(7.25, force=True).status == "done"
    assert "cryores low-pass cut 7.25 A" in mrc_labels(output)
    assert batch(7.25).status == "skipped"
    assert batch(8.0).status == "failed" and batch(None).status == "failed"
    with mrcfile.open(output) as mrc:
        assert mrc.data[mrc.data > 0].min() == pytest.approx(7.25)


def test_a_batch_rerun_does_not_keep_a_file_whose_cut_label_is_no_number(tmp_path, map_file, spectral_model_card):
    """An edited header ("cryores low-pass cut six A") once read as "no cut", so a rerun without a
    cut kept a file that says it was read with one. Now the file is not trusted: not kept, and
    not overwritten without --force."""
    output = tmp_path / "out.mrc"
    options = BatchOptions(model=str(spectral_model_card))
    assert predict_one(str(map_file), str(output), options).status == "done"
    assert predict_one(str(map_file), str(output), options).status == "skipped"
    with mrcfile.open(output, mode="r+") as mrc:
        mrc.add_label("cryores low-pass cut six A")
    again = predict_one(str(map_file), str(output), options)
    assert again.status == "failed" and "--force" in again.error


def test_half_maps_with_a_cut_on_the_command_line(tmp_path, spectral_model_card, density):
    rng = np.random.default_rng(3)
    halves = [write_mrc(tmp_path / f"h{i}.mrc", density + rng.normal(0, 0.05, density.shape).astype(np.float32))
              for i in (1, 2)]
    out = tmp_path / "halves.mrc"
    args = ["predict", "--half-maps", *map(str, halves), "--model", str(spectral_model_card), "--quiet"]
    assert cli.main([*args, "-o", str(out)]) == 0
    with mrcfile.open(out) as mrc:
        plain = mrc.data.copy()
    cut = float(np.percentile(plain[plain > 0], 50))
    assert cli.main([*args, "-o", str(tmp_path / "cut.mrc"), "--lowpass-cut", repr(cut)]) == 0
    with mrcfile.open(tmp_path / "cut.mrc") as mrc:
        np.testing.assert_array_equal(mrc.data, np.where(plain > 0, np.maximum(plain, np.float32(cut)), 0))


# --- a map without a noise reference: the cut sets its scale (cryores.cut_scale) ---------------

FINE = 0.5  # Å/px: the random model reads the test map at about 4.2 Å there, far above Nyquist

@pytest.fixture(scope="module")
def flattened(density) -> np.ndarray:
    """The test map with its solvent set to 0, as deposits are: no noise reference."""
    from cryores.masking import automatic_mask

    return np.where(automatic_mask(density, (1.0,) * 3), density, 0.0).astype(np.float32)


def test_cut_scale_puts_the_best_fifth_at_the_cut_unless_the_cut_is_far_finer():
    from cryores.cut_scale import FAR_FINER, PINNED_PERCENTILE, scale_for_cut

    rng = np.random.default_rng(0)
    resolution = rng.uniform(4.0, 12.0, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(resolution.shape, bool)
    mask[2:18, 2:18, 2:18] = True
    fine = (0.1,) * 3  # Nyquist 0.2 Å: the cut, not Nyquist, is the target here
    best = np.percentile(resolution[mask], PINNED_PERCENTILE)
    for cut in (0.8 * best, best, 1.5 * best):
        factor, caution = scale_for_cut(resolution, mask, cut, fine)
        assert caution is None
        assert np.percentile(resolution[mask] * factor, PINNED_PERCENTILE) == pytest.approx(cut, rel=1e-5)
    assert scale_for_cut(resolution, mask, best / FAR_FINER * 1.01, fine)[0] is not None
    factor, caution = scale_for_cut(resolution, mask, best / FAR_FINER * 0.99, fine)
    assert factor is None and "far finer" in caution
    assert scale_for_cut(resolution, np.zeros_like(mask), best, fine) == (None, None)


def test_a_map_without_a_noise_reference_is_scaled_to_the_cut(flattened, spectral_model_card):
    plain = predict(flattened, 1.0, model=spectral_model_card)
    assert plain.noise_reference is False and plain.cut_scale is None
    inside = plain.mask
    cut = float(np.percentile(plain.resolution[inside], 20)) * 1.25  # the network read the map 20 % too fine
    scaled = predict(flattened, 1.0, model=spectral_model_card, lowpass_cut=cut)
    assert scaled.cut_scale == pytest.approx(1.25, rel=1e-4)
    np.testing.assert_array_equal(scaled.mask, inside)
    assert np.percentile(scaled.resolution[inside], 20) == pytest.approx(cut, rel=1e-4)
    np.testing.assert_allclose(scaled.resolution[inside],
                               np.clip(plain.resolution[inside] * scaled.cut_scale, cut, 30.0), rtol=1e-5)
    np.testing.assert_allclose(scaled.uncertainty[inside], plain.uncertainty[inside] * scaled.cut_scale, rtol=1e-5)
    from cryores.cautions import NO_REFERENCE_SCALED_TO_CUT

    assert NO_REFERENCE_SCALED_TO_CUT in scaled.cautions


def test_a_cut_far_finer_than_the_map_only_floors_it_and_says_so(flattened, spectral_model_card):
    plain = predict(flattened, FINE, model=spectral_model_card)  # Nyquist 1 Å
    best = float(np.percentile(plain.resolution[plain.mask], 20))
    cut = best / 2.5
    assert cut >= 2 * FINE, "the random model reads this map too fine for a far finer cut above Nyquist"
    floored = predict(flattened, FINE, model=spectral_model_card, lowpass_cut=cut)
    assert floored.cut_scale is None
    np.testing.assert_allclose(floored.resolution, np.where(plain.mask, np.maximum(plain.resolution, cut), 0),
                               rtol=1e-6)
    assert any("far finer than the map's best-resolved fifth" in c for c in floored.cautions)


def test_a_map_with_a_noise_reference_is_only_floored(density, spectral_model_card):
    plain = predict(density, 1.0, model=spectral_model_card)
    assert plain.noise_reference is True
    cut = float(np.percentile(plain.resolution[plain.mask], 20)) * 1.25
    floored = predict(density, 1.0, model=spectral_model_card, lowpass_cut=cut)
    assert floored.cut_scale is None
    np.testing.assert_allclose(floored.resolution, np.where(plain.mask, np.maximum(plain.resolution, cut), 0),
                               rtol=1e-6)


def test_the_cut_of_a_deposit_read_from_its_half_maps_only_floors_their_average(tmp_path, flattened,
                                                                                 spectral_model_card):
    """The average of two half maps was not filtered at the deposit's cut, so the cut must not set
    its scale, even where the average holds no noise reference (here two flattened halves)."""
    plain = predict(flattened, 1.0, model=spectral_model_card)
    assert plain.noise_reference is False
    cut = 1.2 * float(np.percentile(plain.resolution[plain.mask], 20))
    expected = np.where(plain.mask, np.maximum(plain.resolution, cut), 0)
    kept = predict(flattened, 1.0, model=spectral_model_card, lowpass_cut=cut, scale_to_cut=False)
    assert kept.cut_scale is None
    np.testing.assert_allclose(kept.resolution, expected, rtol=1e-6)
    halves = [write_mrc(tmp_path / f"half{i}.mrc", flattened) for i in (1, 2)]
    read, _ = predict_file(halves[0], half_map2=halves[1], model=spectral_model_card, lowpass_cut=cut)
    assert read.noise_reference is False and read.cut_scale is None
    np.testing.assert_allclose(read.resolution, expected, rtol=1e-5, atol=1e-5)


def test_a_cut_finer_than_nyquist_scales_the_best_fifth_to_nyquist(flattened, spectral_model_card):
    """A binned deposit given its reported resolution: nothing reads finer than Nyquist (2 Å here),
    so the best-resolved fifth is put there, not below it where the clip would pile it up."""
    plain = predict(flattened, 1.0, model=spectral_model_card)
    assert np.percentile(plain.resolution[plain.mask], 20) <= 2 * 2.0, "too coarse for the Nyquist target"
    scaled = predict(flattened, 1.0, model=spectral_model_card, lowpass_cut=1.5)
    assert scaled.cut_scale is not None
    assert np.percentile(scaled.resolution[scaled.mask], 20) == pytest.approx(2.0, rel=1e-4)


def test_a_batch_rerun_repeats_a_refused_cut_and_remakes_a_file_read_before_scaling(tmp_path, flattened,
                                                                                   spectral_model_card):
    from cryores.predict import resolution_label

    path = write_mrc(tmp_path / "deposit.mrc", flattened, voxel_size=FINE)
    plain = predict(flattened, FINE, model=spectral_model_card)
    far = float(np.percentile(plain.resolution[plain.mask], 20)) / 2.5
    options = BatchOptions(model=str(spectral_model_card), predict_options={"lowpass_cut": far})
    first = predict_one(str(path), str(tmp_path / "far.mrc"), options)
    assert first.status == "done" and "far finer" in first.cautions
    again = predict_one(str(path), str(tmp_path / "far.mrc"), options)
    assert again.status == "skipped" and again.cautions == first.cautions
    # an output floored only (as before a cut set a masked map's scale) is not kept as this cut's reading
    cut = 1.2 * float(np.percentile(plain.resolution[plain.mask], 20))
    floored = plain.__class__(**{**plain.__dict__, "resolution": np.where(plain.mask, np.maximum(plain.resolution,
                                                                                                   cut), 0.0),
                                 "lowpass_cut": cut})
    old = tmp_path / "old.mrc"
    with mrcfile.new(old) as mrc:
        mrc.set_data(floored.resolution.astype(np.float32))
        mrc.voxel_size = FINE
        for line in resolution_label(floored).split("\n"):
            mrc.add_label(line)
    assert "scaled" not in resolution_label(floored)
    rerun = predict_one(str(path), str(old), BatchOptions(model=str(spectral_model_card),
                                                          predict_options={"lowpass_cut": cut}))
    assert rerun.status != "skipped"
