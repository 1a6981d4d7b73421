"""Local spectral evidence: how much signal a map holds, band by band, around every voxel.

This is what the v3 model reads instead of how a map looks. Everything is computed on the
map's own grid: a band finer than the map's Nyquist frequency does not exist and is never
invented by resampling (v2 upsampled coarse maps to 1 Å first, so its fine bands held
interpolation artefacts instead of "no information here").

* **Bands.** Centres ``BANDS_A`` (Å), log-spaced by ``RATIO`` from 1.8 to 26 Å. Each band is a
  cos² window in log-frequency spanning one step either side of its centre; neighbouring windows
  add up to 1. A band exists when its centre is at least ``NYQUIST_MARGIN`` x 2 voxels (the
  coarsest axis); the others are marked absent.
* **Local power.** The band-passed map, squared, averaged in a Gaussian window of sigma
  ``max(WINDOW_MIN_A, WINDOW_FACTOR * d)`` Å, sampled on the *feature grid* (voxels of
  ``max(voxel, FEATURE_VOXEL_A)`` Å: the averaged power is smooth, so nothing is lost). Each band
  is computed on the smallest grid that holds twice its highest frequency (squaring doubles it),
  so coarse bands cost little. Where the mask reaches the box's faces (a filament, a crop), the
  powers are taken on the map mirrored past them (:mod:`cryores.box_faces`), so the jump between
  opposite faces of a periodic box is not read as detail.
* **Scale.** Powers are divided by ``E``, the median over the mask of the power in bands of
  6 Å and coarser, which every map has: the features are invariant to ``a * map + b``.
* **Noise reference.** Where the solvent (outside the mask extended by ``SOLVENT_GAP_A``) holds
  noise, its median power per band is the noise spectrum ``N``. Masked, flattened or zoned
  deposits (solvent mostly one constant) have none, and the features say so.

* **Content edge.** The finest Fourier shell of the whole map whose mean power is at least
  ``EVIDENCE_RELATIVE`` of the mean power of its 6-26 Å shells: a map low-passed at X Å holds
  nothing finer than X anywhere. Shells are one box-frequency wide, so the edge is exact where the
  bands (1.25 apart) are not; it is the map's Nyquist on any map that was not low-passed.

Features per feature-grid voxel (:data:`N_FEATURES` channels): ``log10(P/E)`` per band,
``log10(P/N)`` per band (0 without a reference), band present (0/1), and has-reference (0/1).
Beside them the network reads the map's own profile (:data:`N_CONTEXT` values, the same at every
voxel; :func:`network_inputs`): the median over the automatic mask of the first two groups (not
over the user's mask, which may be a zone of the molecule), so a voxel is
read against its own map (how it was sharpened, its noise colour) and not against the average
training map. Models of the ``"neighbourhood"`` layout (:func:`input_layout`) also read, per band,
the gap between the voxel's power and the strongest within ~8 Å (:func:`neighbourhood_gap`), so
power that leaked from a better-resolved neighbour is not read as the voxel's own; those of the
``"wide_neighbourhood"`` layout read the gap within ~16 Å too, as far as the coarse bands' windows
gather power. Those of the ``"percentiles"`` layout read, beside the neighbourhood layout and
only where the map has no noise reference (:func:`percentile_inputs`), the distribution of each
band's power over the molecule (:func:`band_percentiles`): where a band holds only noise
somewhere in the molecule, its low percentiles are that noise's level, the reference a masked
deposit's solvent no longer gives.
:func:`evidence_floor` gives the finest resolution the evidence allows at each voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import torch
from scipy import ndimage

from .box_faces import back_on_grid, mirror_pads, mirrored, read_past_faces
from .errors import CryoResError
from .fourier import shell_means, shell_width, spatial_frequency
from .masking import automatic_mask, dilate
from .resample import linear_resample, resize_spectrum, shape_for_voxel_size

RATIO = 1.25
BANDS_A = tuple(round(1.8 * RATIO ** k, 3) for k in range(13))  # 1.8 ... 26.2 Å
NYQUIST_MARGIN = 1.05
FEATURE_VOXEL_A = 2.0
WINDOW_MIN_A = 3.0
WINDOW_FACTOR = 0.8
SCALE_BANDS_FROM_A = 6.0
SOLVENT_GAP_A = 6.0
MIN_SOLVENT_VOXELS = 1000
MAX_CONSTANT_SOLVENT = 0.5
ABSENT = -7.0  # log10 relative power of a band that does not exist (or holds nothing)
EPS = 1e-7
N_BANDS = len(BANDS_A)
HAS_REFERENCE = 3 * N_BANDS  # the feature channel that says whether the map has a noise reference (0/1)
N_FEATURES = HAS_REFERENCE + 1
N_CONTEXT = 2 * N_BANDS  # the map's median relative power and SNR per band
N_INPUTS = N_FEATURES + N_CONTEXT  # what a network with context reads per voxel
N_INPUTS_NEIGHBOURHOOD = N_INPUTS + N_BANDS  # and the gap to the strongest band power nearby
N_INPUTS_WIDE = N_INPUTS_NEIGHBOURHOOD + N_BANDS  # and the gap to the strongest within WIDE_NEIGHBOURHOOD_A
PERCENTILES = (2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 98.0)  # of each band's relative power over the core
N_PERCENTILES = len(PERCENTILES) * N_BANDS
N_INPUTS_PERCENTILES = N_INPUTS_NEIGHBOURHOOD + N_PERCENTILES  # the neighbourhood layout and the map's percentiles
LAYOUTS = {"features": N_FEATURES, "context": N_INPUTS, "neighbourhood": N_INPUTS_NEIGHBOURHOOD,
           "wide_neighbourhood": N_INPUTS_WIDE, "percentiles": N_INPUTS_PERCENTILES}
CORE_RELATIVE = 0.5  # a core voxel holds at least this share of E in its coarse bands (band_percentiles)
MIN_CORE_VOXELS = 50  # fewer core voxels than this: band_percentiles reads all the voxels it is given
NEIGHBOURHOOD_A = 8.0  # reach (Å) of neighbourhood_gap: about the widest fine-band window's 2 sigma
NEIGHBOURHOOD_BIN_A = 4.0  # its maximum is taken on the feature grid binned to about this (Å)
WIDE_NEIGHBOURHOOD_A = 16.0  # the second reach: about the coarse bands' window (0.8 x 20 Å)
WIDE_NEIGHBOURHOOD_BIN_A = 8.0  # binned coarser, so the second maximum costs no more than the first
EVIDENCE_RELATIVE = 1e-5  # band power below this fraction of E carries no information
EVIDENCE_SNR = 1.5  # with a noise reference, band power must exceed noise by this factor


@dataclass
class SpectralFeatures:
    """Features on the feature grid, with what is needed to map results back.

    ``features``: float32 (N_FEATURES, *grid_shape). ``mask``: the molecular mask on the feature
    grid. ``present``: which bands exist. ``has_reference``: whether the solvent gave a noise
    spectrum. ``voxel_size``: of the feature grid (Å per array axis). ``content_edge``: the finest
    resolution (Å) the map holds anywhere (:func:`content_edge`). ``context``: the map's profile
    (:data:`N_CONTEXT` values), the median of the relative powers and SNRs over the reference
    region (the automatic mask by default), whatever ``mask`` is. ``percentiles``: the
    :func:`band_percentiles` of the same region where the map has no noise reference, else 0
    (never read there, :func:`percentile_inputs`). ``solvent_spread``: where the map has a noise
    reference, the median absolute deviation of the solvent's values over the standard deviation
    of the map inside the reference region (:data:`cryores.cautions.FAINT_SOLVENT`); None without one.
    """

    features: np.ndarray
    mask: np.ndarray
    present: np.ndarray
    has_reference: bool
    voxel_size: tuple[float, float, float]
    scale: float
    noise: np.ndarray | None
    content_edge: float
    context: np.ndarray
    percentiles: np.ndarray
    solvent_spread: float | None = None


def band_weight(frequency: np.ndarray, centre_a: float, log_frequency: np.ndarray | None = None) -> np.ndarray:
    """cos² window in log-frequency around 1/centre, one RATIO step wide on each side.

    ``log_frequency`` (log of ``frequency`` in RATIO steps) may be passed to save recomputing it.
    """
    if log_frequency is None:
        log_frequency = _log_steps(frequency)
    x = log_frequency + np.float32(np.log(centre_a) / np.log(RATIO))
    np.clip(x, -1.0, 1.0, out=x)
    weight = np.cos(np.float32(0.5 * np.pi) * x)
    np.square(weight, out=weight)
    return weight


def _log_steps(frequency: np.ndarray) -> np.ndarray:
    """log(frequency) in units of log(RATIO), float32 (frequency 0 -> very negative)."""
    return (np.log(np.maximum(frequency, 1e-12)) / np.float32(np.log(RATIO))).astype(np.float32)


def bands_present(voxel_size: tuple[float, float, float]) -> np.ndarray:
    """Which bands the grid holds: centre >= NYQUIST_MARGIN x Nyquist of the coarsest axis."""
    nyquist = 2.0 * max(voxel_size)
    return np.array([d >= NYQUIST_MARGIN * nyquist for d in BANDS_A])


def feature_grid(shape: tuple[int, ...], voxel_size: tuple[float, ...]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Shape and voxel size of the feature grid: the map's own grid, or ~2 Å when it is finer."""
    if min(voxel_size) >= FEATURE_VOXEL_A:
        return tuple(shape), tuple(voxel_size)
    wanted = shape_for_voxel_size(shape, voxel_size, FEATURE_VOXEL_A)
    grid = tuple(min(n, scipy.fft.next_fast_len(max(8, g), real=True)) for n, g in zip(shape, wanted))
    return grid, tuple(n * v / g for n, v, g in zip(shape, voxel_size, grid))


def _grid_for_band(shape: tuple[int, ...], voxel_size: tuple[float, ...], top_frequency: float) -> tuple[int, ...]:
    """Smallest fast grid (per axis, never above the map's) whose Nyquist holds ``top_frequency``.

    A grid of m voxels over a box of L Å has its Nyquist at m / (2 L), so m >= 2 L f. Any grid
    that holds the band's square gives the same Fourier coefficients (no aliasing), so the
    smallest one is exact and cheapest.
    """
    out = []
    for n, v in zip(shape, voxel_size):
        need = scipy.fft.next_fast_len(max(int(np.ceil(2.0 * n * v * top_frequency)), 8), real=True)
        out.append(n if need >= n else need)
    return tuple(out)


def _rfftn(volume: np.ndarray) -> np.ndarray:
    """Real 3-D FFT in complex64 (torch's pocketfft/MKL threads: faster than scipy's here)."""
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    if not volume.flags.writeable:  # a read-only map (mrcfile.read): torch wants a writable buffer
        volume = volume.copy()
    return torch.fft.rfftn(torch.from_numpy(volume)).numpy()


def _irfftn(spectrum: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return torch.fft.irfftn(torch.from_numpy(spectrum), s=shape).numpy()


def map_spectrum(density: np.ndarray) -> np.ndarray:
    """The map's ``rfftn`` with the mean (the 0 coefficient) removed: computed once per map."""
    spectrum = _rfftn(density)
    spectrum[0, 0, 0] = 0.0
    return spectrum


def content_edge(spectrum: np.ndarray, shape: tuple[int, ...], voxel_size: tuple[float, float, float]) -> float:
    """Finest resolution (Å) at which the map holds any content: the finest shell whose mean power
    is at least EVIDENCE_RELATIVE of the mean over the 6-26 Å shells.

    Shells are 1/(largest box edge in Å) wide, up to the coarsest axis's Nyquist, which is returned
    when the content reaches it (or when the box is too small to hold a 6-26 Å shell).
    """
    nyquist = 2.0 * max(voxel_size)
    width = shell_width(shape, voxel_size)
    last = int(np.floor(1.0 / (nyquist * width)))
    counts, mean = shell_means(spectrum, shape, voxel_size, last)
    frequency = np.arange(last + 1) * width
    reference = (counts > 0) & (frequency >= 1.0 / BANDS_A[-1]) & (frequency <= 1.0 / SCALE_BANDS_FROM_A)
    if not reference.any() or mean[reference].mean() <= 0:
        return nyquist
    holding = np.flatnonzero((counts > 0) & (mean >= EVIDENCE_RELATIVE * mean[reference].mean()))
    finest = int(holding.max()) if holding.size else last
    return nyquist if finest >= last else float(1.0 / frequency[finest])


def local_band_power(density: np.ndarray, voxel_size: tuple[float, float, float],
                     grid: tuple[int, ...], spectrum: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(power per band on the feature grid, bands present); absent bands are 0.

    The map's spectrum (:func:`map_spectrum`, computed here unless given) is band-passed band by
    band on its own (cropped) grid, squared, averaged with its Gaussian window and cropped onto
    the feature grid.
    """
    shape = density.shape
    if spectrum is None:
        spectrum = map_spectrum(density)
    present = bands_present(voxel_size)
    power = np.zeros((N_BANDS,) + tuple(grid), dtype=np.float32)
    n_total = float(np.prod(shape))
    grids: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
    # the window is applied on the feature grid, after the crop: the same coefficients, fewer of them
    grid_voxel = tuple(n * v / g for n, v, g in zip(shape, voxel_size, grid))
    squared_frequency = np.square(spatial_frequency(grid, grid_voxel))
    for j, centre in enumerate(BANDS_A):
        if not present[j]:
            continue
        # the window on the smallest grid that holds the band, then zero-padded to one that holds
        # its square: the window is 0 beyond RATIO / centre, so the same coefficients
        inner_grid = _grid_for_band(shape, voxel_size, RATIO / centre)
        band_grid = _grid_for_band(shape, voxel_size, 2.0 * RATIO / centre)
        if inner_grid not in grids:  # |s| and its log, once per grid size
            inner_voxel = tuple(n * v / m for n, v, m in zip(shape, voxel_size, inner_grid))
            frequency = spatial_frequency(inner_grid, inner_voxel)
            grids[inner_grid] = (frequency, _log_steps(frequency))
        frequency, log_frequency = grids[inner_grid]
        windowed = resize_spectrum(spectrum, shape, inner_grid) if inner_grid != shape else spectrum.copy()
        windowed *= band_weight(frequency, centre, log_frequency)
        if band_grid != inner_grid:
            windowed = resize_spectrum(windowed, inner_grid, band_grid)
        signal = _irfftn(windowed, band_grid)
        del windowed
        signal *= float(np.prod(band_grid)) / n_total  # same amplitude as on the full grid
        np.square(signal, out=signal)
        sigma = max(WINDOW_MIN_A, WINDOW_FACTOR * centre)
        smoothed = _rfftn(signal)
        del signal
        if tuple(grid) != band_grid:
            smoothed = resize_spectrum(smoothed, band_grid, grid)
        smoothed *= np.exp(np.float32(-2.0 * np.pi ** 2 * sigma ** 2) * squared_frequency)
        values = _irfftn(smoothed, tuple(grid))
        values *= float(np.prod(grid)) / float(np.prod(band_grid))
        power[j] = np.maximum(values, 0.0)
    return power, present


def band_power_past_faces(density: np.ndarray, voxel_size: tuple[float, float, float], grid: tuple[int, ...],
                          grid_voxel: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`local_band_power` of the map mirrored past its faces, read back on ``grid``: a
    molecule the box cuts without the jump that wrapping it around the box puts at its faces
    (:mod:`cryores.box_faces`). Everything else (scale, noise, percentiles) stays on the map's own box."""
    pads = mirror_pads(density.shape, voxel_size)
    padded = mirrored(density, pads)
    padded_grid, padded_grid_voxel = feature_grid(padded.shape, voxel_size)
    power, present = local_band_power(padded, voxel_size, padded_grid)
    del padded
    out = np.zeros((N_BANDS,) + tuple(grid), dtype=np.float32)
    out[present] = back_on_grid(power[present], padded_grid_voxel, pads, voxel_size, grid, grid_voxel)
    return out, present


def _solvent_values(density: np.ndarray, grid_solvent: np.ndarray) -> np.ndarray | None:
    """The map's values at the input voxels nearest to ``grid_solvent`` (the feature-grid
    solvent), or None when the solvent holds no noise to measure: too small, or (mostly) one
    constant (masked, flattened or zoned deposits)."""
    n_solvent = int(grid_solvent.sum())
    if n_solvent < 8 or n_solvent * density.size / grid_solvent.size < MIN_SOLVENT_VOXELS:
        return None
    where = np.nonzero(grid_solvent)
    nearest = tuple(np.minimum(np.rint(i * (n / g)).astype(np.intp), n - 1)
                    for i, n, g in zip(where, density.shape, grid_solvent.shape))
    values = density[nearest]
    _, counts = np.unique(values[:: max(1, values.size // 200_000)], return_counts=True)
    if counts.max() > MAX_CONSTANT_SOLVENT * counts.sum() or float(values.std()) == 0.0:
        return None  # masked, flattened or zoned: the solvent is (mostly) one constant
    return values


def solvent_spread(values: np.ndarray, density: np.ndarray, reference: np.ndarray) -> float:
    """How far the solvent's ``values`` spread about their median (median absolute deviation), as
    a share of the map's standard deviation inside ``reference`` (input grid): a scale-free
    number, compared with :data:`cryores.cautions.FAINT_SOLVENT`."""
    inside = density[reference] if reference.any() else density
    spread = float(inside.std())
    deviation = float(np.median(np.abs(values - np.median(values))))
    return deviation / spread if spread > 0 else float("inf")


def reference_region(density: np.ndarray, voxel_size: tuple[float, float, float], mask: np.ndarray,
                     reference: np.ndarray | None = None) -> np.ndarray:
    """The region that sets the features' scale and solvent (:func:`compute_features`):
    ``reference`` if given, else the automatic mask, else (where that fails) ``mask``."""
    if reference is not None:
        return reference
    try:
        return automatic_mask(density, voxel_size)
    except CryoResError:
        return mask


def compute_features(density: np.ndarray, voxel_size: tuple[float, float, float], mask: np.ndarray,
                     reference: np.ndarray | None = None, mirror_cut_faces: bool = True) -> SpectralFeatures:
    """Spectral features of a map (see the module docstring) on its feature grid.

    ``mask`` is where results are wanted. ``reference`` is the region that sets the scale E and,
    outside it (with ``mask``), the solvent for the noise spectrum; by default the automatic
    mask (``mask`` when that fails). So the features do not depend on how tight a user's mask
    is: a tight mask would put the molecule's own surface into the "solvent" and lower E.
    ``mirror_cut_faces``: where ``reference | mask`` reaches the box's faces, take the band powers
    on the map mirrored past them (:mod:`cryores.box_faces`); False keeps them wrapped around the
    box, as the shipped card's training rows and calibration were made.
    """
    reference = reference_region(density, voxel_size, mask, reference)
    grid, grid_voxel = feature_grid(density.shape, voxel_size)
    spectrum = map_spectrum(density)
    if mirror_cut_faces and read_past_faces(mask, reference):
        power, present = band_power_past_faces(density, voxel_size, grid, grid_voxel)
    else:
        power, present = local_band_power(density, voxel_size, grid, spectrum)
    edge = content_edge(spectrum, density.shape, voxel_size)
    del spectrum
    outside = ~(reference | mask)
    if tuple(grid) != density.shape:
        weight = linear_resample(mask.astype(np.float32), grid)
        grid_mask = weight >= 0.5
        if not grid_mask.any():
            grid_mask = weight > 0
        grid_reference = linear_resample(reference.astype(np.float32), grid) >= 0.5
        grid_solvent = linear_resample(outside.astype(np.float32), grid) >= 1.0
    else:
        grid_mask, grid_reference, grid_solvent = mask, reference, outside
    if not grid_reference.any():
        grid_reference = grid_mask
    coarse = [j for j, d in enumerate(BANDS_A) if present[j] and d >= SCALE_BANDS_FROM_A]
    total = power[coarse].sum(axis=0)
    scale = float(np.median(total[grid_reference]))
    scale = scale if scale > 0 else float(total.max()) + 1e-30
    grid_solvent = grid_solvent & ~dilate(grid_mask | grid_reference, tuple(SOLVENT_GAP_A / v for v in grid_voxel))
    values = _solvent_values(density, grid_solvent)
    # channel by channel: the same medians as one median along an axis, in a third of the time
    noise = (np.array([np.median(band[grid_solvent]) for band in power], dtype=power.dtype)
             if values is not None else None)
    spread = solvent_spread(values, density, reference) if values is not None else None

    # band by band, in place: log10(P/E + EPS), log10((P + EPS E) / N); absent bands ABSENT and 0
    features = np.empty((N_FEATURES,) + tuple(grid), dtype=np.float32)
    floor = np.maximum(noise, 1e-6 * scale) if noise is not None else None
    for j in range(N_BANDS):
        relative, snr = features[j], features[N_BANDS + j]
        if not present[j]:
            relative.fill(ABSENT)
            snr.fill(0.0)
            continue
        np.log10(np.add(np.divide(power[j], scale, out=relative), EPS, out=relative), out=relative)
        if floor is None:
            snr.fill(0.0)
        else:
            np.log10(np.divide(np.add(power[j], EPS * scale, out=snr), floor[j], out=snr), out=snr)
    del power
    features[2 * N_BANDS:3 * N_BANDS] = present[:, None, None, None]
    features[HAS_REFERENCE] = float(noise is not None)
    # over the reference (the automatic mask), as the scale E: a user's tighter mask must not move it
    # (channel by channel: the same medians as one median along an axis, in half the time)
    context = np.array([np.median(channel[grid_reference]) for channel in features[:N_CONTEXT]], np.float32)
    # only read without a noise reference (percentile_inputs): not computed for maps that have one
    percentiles = (band_percentiles(features[:N_BANDS, grid_reference].T) if noise is None
                   else np.zeros(N_PERCENTILES, np.float32))
    return SpectralFeatures(features, grid_mask, present, noise is not None, grid_voxel, scale, noise, edge, context,
                            percentiles, spread)


def percentile_inputs(percentiles: np.ndarray, has_reference: bool) -> np.ndarray:
    """What the ``"percentiles"`` layout reads of a map's :func:`band_percentiles`: the values
    where the map has no noise reference, 0 where it has one.

    Why: with a noise reference the solvent's noise spectrum already sets the floor, and there the
    percentiles of the automatic mask (inference) and of the training rows' voxels differ most:
    a raw map's automatic mask holds more of the noisy solvent shell. A fit that read them on
    every map read raw test maps 0.3 Å too coarse (0.69 against 0.50 Å MAE).
    """
    return np.zeros_like(percentiles) if has_reference else percentiles


def band_percentiles(relative: np.ndarray) -> np.ndarray:
    """(N_PERCENTILES,) float32: for each of PERCENTILES (outer) and each band (inner), that
    percentile of log10(P/E) (``relative``: (n, N_BANDS), the first feature group of n voxels)
    over the core voxels among them: those whose coarse bands (SCALE_BANDS_FROM_A and coarser)
    hold at least CORE_RELATIVE x E; all n when fewer than MIN_CORE_VOXELS are.

    Why: noise is about the same everywhere in a map, so a band's power over the molecule has a
    floor, the noise, wherever the band is beyond the local resolution. A raw map shows that noise
    in its solvent; a masked or flattened deposit does not, and a voxel's own features cannot say
    whether its weak fine bands are noise or faint signal. The lower tail over the molecule can.
    The core leaves out the solvent shell a mask holds, so a wider mask (the automatic one at
    inference, the simulation's label in training rows) moves the percentiles little.
    Inference reads the automatic mask's voxels (:func:`compute_features`); training, the voxels
    drawn for each map's rows (``cryores_train.fit_spectral``), the same function either way.
    """
    relative = np.asarray(relative, dtype=np.float32)
    coarse = [j for j, d in enumerate(BANDS_A) if d >= SCALE_BANDS_FROM_A]
    # relative = log10(P/E + EPS): the coarse power over E is the sum of 10**relative (EPS is negligible)
    core = np.power(10.0, relative[:, coarse], dtype=np.float64).sum(axis=1) >= CORE_RELATIVE
    chosen = relative[core] if int(core.sum()) >= MIN_CORE_VOXELS else relative
    if chosen.shape[0] == 0:
        return np.full(N_PERCENTILES, ABSENT, np.float32)
    return np.percentile(chosen, PERCENTILES, axis=0).astype(np.float32).ravel()


def input_layout(width: int, owner: str) -> str:
    """Which inputs a network (or rows) of ``width`` values per voxel reads: ``"features"``
    (N_FEATURES: the first v3 cards), ``"context"`` (N_INPUTS: the map's profile beside them) or
    ``"neighbourhood"`` (N_INPUTS_NEIGHBOURHOOD: and the :func:`neighbourhood_gap`) or
    ``"wide_neighbourhood"`` (N_INPUTS_WIDE: and the gap within WIDE_NEIGHBOURHOOD_A too) or
    ``"percentiles"`` (N_INPUTS_PERCENTILES: the neighbourhood layout and the map's
    :func:`band_percentiles`); any other width is an error naming ``owner``."""
    for layout, n in LAYOUTS.items():
        if width == n:
            return layout
    widths = ", ".join(f"{n} ({layout})" for layout, n in LAYOUTS.items())
    raise CryoResError(f"{owner}: {width} inputs per voxel; this cryores gives {widths}")


def neighbourhood_gap(features: SpectralFeatures, where: np.ndarray, reach_a: float = NEIGHBOURHOOD_A,
                      bin_a: float = NEIGHBOURHOOD_BIN_A) -> np.ndarray:
    """(n, N_BANDS) float32 (a transposed view) for the voxels ``where`` (flat indices or a flat boolean over the
    feature grid): per band, how many decades the strongest power within about ``reach_a`` (Å)
    exceeds the voxel's own (0 where the voxel is the strongest, and in absent bands).

    Why: a band's power is averaged in a Gaussian window, so a coarse voxel beside a well-resolved
    one holds fine-band power that leaked from its neighbour. From its own features alone the
    network cannot tell that leak from power of its own; the gap to the neighbourhood can (a leak
    sits well below its source, power of its own does not). For speed the maximum is taken on the
    feature grid binned to about ``bin_a`` (blocks of whole voxels, so the reach is ``reach_a`` plus
    up to one block) and read only at ``where``.
    """
    relative = features.features[:N_BANDS]
    grid = relative.shape[1:]
    index = np.flatnonzero(where) if np.asarray(where).dtype == bool else np.asarray(where, dtype=np.intp)
    gap = np.zeros((N_BANDS, index.size), np.float32)
    bands = np.flatnonzero(features.present)
    if bands.size == 0 or index.size == 0:
        return gap.T
    voxel = max(features.voxel_size)
    factor = max(1, int(bin_a // voxel))
    reach = int(np.ceil(reach_a / (factor * voxel)))
    block = tuple(i // factor for i in np.unravel_index(index, grid))
    # only the blocks within reach of a wanted one: the same values as on the whole grid, since
    # blocks stay aligned to the grid and every window the filter reads lies inside the crop
    # (or ends at the grid's own edge, where "nearest" extends the same voxels either way)
    first = [max(0, int(b.min()) - reach) for b in block]
    last = [min(-(-n // factor), int(b.max()) + reach + 1) for b, n in zip(block, grid)]
    crop = tuple(slice(f * factor, min(n, e * factor)) for f, e, n in zip(first, last, grid))
    present = slice(bands[0], bands[-1] + 1)  # the bands that exist: all from the first present on
    pooled = _block_maximum(relative[(present,) + crop], factor)
    strongest = ndimage.maximum_filter(pooled, size=(1,) + (2 * reach + 1,) * 3, mode="nearest")
    local = np.ravel_multi_index(tuple(b - f for b, f in zip(block, first)), strongest.shape[1:])
    np.subtract(np.take(strongest.reshape(len(strongest), -1), local, axis=1),
                np.take(relative[present].reshape(len(strongest), -1), index, axis=1), out=gap[present])
    return gap.T


def _block_maximum(values: np.ndarray, factor: int) -> np.ndarray:
    """Maximum over blocks of ``factor`` voxels along each spatial axis (axes 1-3) of
    ``values``; a last, partial block takes the maximum of what it holds."""
    if factor == 1:
        return values
    for axis in (1, 2, 3):
        take = [slice(None)] * 4
        take[axis] = slice(0, None, factor)
        pooled = values[tuple(take)].copy()
        for k in range(1, factor):
            take[axis] = slice(k, None, factor)
            part = values[tuple(take)]
            head = [slice(None)] * 4
            head[axis] = slice(0, part.shape[axis])
            np.maximum(pooled[tuple(head)], part, out=pooled[tuple(head)])
        values = pooled
    return values


def network_inputs(features: SpectralFeatures, where: np.ndarray, layout: str = "context") -> np.ndarray:
    """(n, width) float32 rows for the voxels ``where`` (flat indices or a flat boolean over the
    feature grid) in the given :func:`input_layout`: each voxel's features; then, unless the layout
    is ``"features"``, the map's context; then, for ``"neighbourhood"`` and ``"wide_neighbourhood"``,
    the voxel's :func:`neighbourhood_gap`; then, for ``"wide_neighbourhood"``, the gap within
    WIDE_NEIGHBOURHOOD_A, where the coarse bands' wide windows gather power from further away;
    for ``"percentiles"``, after the neighbourhood gap, the map's :func:`band_percentiles` (0 where
    it has a noise reference, :func:`percentile_inputs`).

    Training rows and inference both build their inputs here, so they cannot drift apart; only the
    percentiles are computed in training from each map's rows instead
    (``cryores_train.fit_spectral.with_percentiles``), through the same two functions.
    """
    if layout not in LAYOUTS:
        raise CryoResError(f"input layout {layout!r}: this cryores knows {', '.join(LAYOUTS)}")
    parts = [features.features.reshape(N_FEATURES, -1)[:, where].T]
    if layout != "features":
        parts.append(np.broadcast_to(features.context, (parts[0].shape[0], N_CONTEXT)))
    if layout in ("neighbourhood", "wide_neighbourhood", "percentiles"):
        parts.append(neighbourhood_gap(features, where))
    if layout == "wide_neighbourhood":
        parts.append(neighbourhood_gap(features, where, WIDE_NEIGHBOURHOOD_A, WIDE_NEIGHBOURHOOD_BIN_A))
    if layout == "percentiles":
        parts.append(np.broadcast_to(percentile_inputs(features.percentiles, features.has_reference),
                                     (parts[0].shape[0], N_PERCENTILES)))
    return np.concatenate(parts, axis=1, dtype=np.float32)


def evidence_floor(features: np.ndarray, edge: float = 0.0) -> np.ndarray:
    """The finest band (Å) with evidence of signal at each voxel of a feature array, and never
    finer than ``edge`` (the map's :func:`content_edge`, Å).

    Two tests, each a floor of its own, and the coarser one wins:

    * content: the finest band whose power is at least EVIDENCE_RELATIVE of the map's
      coarse-band power. A low-passed map has none beyond its cut-off, whatever it looks like.
    * signal over noise (maps with a noise reference): the finest band whose power is
      EVIDENCE_SNR times the noise, one band finer (a region resolved to d still has SNR below
      that in the band centred at d, which straddles its limit), so the floor never cuts into
      real signal and only stops noise from reading as detail.
    """
    relative = features[:N_BANDS]
    snr = features[N_BANDS:2 * N_BANDS]
    present = features[2 * N_BANDS:3 * N_BANDS] > 0.5
    has_reference = features[HAS_REFERENCE] > 0.5
    content = _finest(present & (relative >= np.log10(EVIDENCE_RELATIVE)))
    signal = _finest(present & (snr >= np.log10(EVIDENCE_SNR))) / np.float32(RATIO)
    floor = np.where(has_reference, np.maximum(content, signal), content)
    return np.maximum(floor, np.float32(edge)).astype(np.float32)


def _finest(evident: np.ndarray) -> np.ndarray:
    """Centre (Å) of the finest band marked evident at each voxel (the coarsest band if none)."""
    floor = np.full(evident.shape[1:], BANDS_A[-1], dtype=np.float32)
    for j in range(N_BANDS - 1, -1, -1):  # coarse to fine: the finest evident band wins
        floor = np.where(evident[j], np.float32(BANDS_A[j]), floor)
    return floor
