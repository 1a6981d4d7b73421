"""A ResMap-style local-resolution labeler, written from the published algorithm.

Kucukelbir, Sigworth & Tagare (Nat. Methods 2014) define local resolution as the finest
wavelength at which a local sinusoid is statistically detectable above noise. This module
implements that idea independently (no ResMap code was read or copied):

1. **Trial resolutions** ``r`` from Nyquist (2 x voxel size) upwards every ``step`` Å (0.5 Å by
   default) up to ``max_resolution`` (20 Å), but only while +-2 window sigmas fit in the box.
2. **Local model at each voxel**, inside a Gaussian window of sigma ``window_factor * r``
   (0.7 r by default): H0 = a smooth part, a quadratic polynomial in the window coordinates
   (level, gradient, curvature: 10 functions); H1 = smooth part + a sinusoid of wavelength
   ``r``, represented by cos/sin pairs along the six five-fold axes of an icosahedron
   (12 functions).
3. **Test statistic.** In weighted least squares, the evidence for the sinusoid is the vector
   ``c`` of correlations of the map with the 12 sinusoid functions after their weighted fit by
   the smooth part is subtracted: 12 band-pass ("Gabor") filters that are exactly blind to any
   quadratic density. ``T = c^T C^-1 c``, with ``C`` the covariance of ``c`` under noise alone,
   is the likelihood-ratio statistic of H1 against H0 for Gaussian noise, chi-square with 12
   degrees of freedom under H0 (fewer when ``C`` is rank-deficient). ``C`` is computed exactly
   from the filters' spectra and the measured noise power spectrum (Parseval), so coloured noise
   and the window's "effective number of independent samples" are accounted for without a fudge
   factor; tests/training/test_resmap.py checks the null on pure noise.
4. **Noise.** With half maps the test runs on their average and the noise map is
   ``(half1 - half2) / 2`` (same noise variance and spectrum as the average of independent
   halves), read inside a softened mask. With one map the noise is read in the solvent, at
   least 4 Å from the mask. Either way the power spectrum is rotationally averaged
   (stationary, isotropic noise is assumed).
5. **Pre-whitening.** Map and noise spectra are both divided by the map's own rotationally
   averaged amplitude (inside the mask). This leaves the per-frequency SNR and the null
   untouched but stops strong low-frequency signal from leaking, through the window's spectral
   width, into the tests at finer trial resolutions (without it, 8 Å maps read about 6.5 Å).
6. **Multiple testing.** Benjamini-Hochberg at false-discovery rate ``alpha`` (0.05) over all
   voxels inside the mask, separately at each trial resolution.
7. **Label.** A voxel's resolution is the first (smallest) trial resolution at which it is
   significant. Voxels never significant get **0 (unassigned)**, the project's label
   convention; voxels outside the mask are 0 too. The loop stops once every mask voxel has a
   value.

What is *not* ResMap's exact procedure: ResMap's own sinusoid basis, window width, smooth-part
model, noise model (white noise, with spectral pre-whitening in later versions) and
bookkeeping differ; here the sinusoid is sampled along six fixed directions, the null covariance
is computed from the measured noise spectrum, and the result is not post-filtered. Numbers from
this labeler are "ResMap-style", not ResMap's.

Failure modes to know about:

* The value is a *detection limit*: it moves with SNR (finer at high SNR, coarser at low SNR),
  and the window's spectral width (about ``1 / (2 pi window_factor r)``) lets strong signal just
  below a cutoff be seen from slightly finer trial resolutions, especially where the local
  spectrum differs from the map's average one (the blurred part of a mixed map reads 1-1.5 Å
  too fine in docs/resmap_labeler.md).
* Per-resolution FDR control: on pure noise every trial resolution may contribute a few false
  voxels, so a few per cent of a pure-noise mask can be assigned (measured 0-5 %).
* Single-map mode trusts the solvent as a noise sample. Masked or solvent-flattened maps (less
  noise outside than inside) make the test liberal: too fine values.
* Noise is one spectrum for the whole mask; locally noisier regions are tested against the
  average noise.
* Windows grow with ``r`` (sigma 7 Å at 10 Å), blurring boundaries between regions by about
  that much; coarse trial resolutions are limited by the box size.
* Memory: 12 complex64 half spectra (48 bytes per voxel) plus 12 float32 values per mask voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage, stats

from cryores.errors import CryoResError
from cryores.fourier import spatial_frequency
from cryores.masking import automatic_mask, dilate, mask_from_array
from cryores.progress import ProgressArg, progress_reporter
from cryores.validation import as_voxel_size, check_density

DEFAULT_ALPHA = 0.05
DEFAULT_MAX_RESOLUTION_A = 20.0
DEFAULT_STEP_A = 0.5
DEFAULT_WINDOW_FACTOR = 0.7
WINDOW_TRUNCATION_SIGMAS = 3.0
WINDOW_FIT_SIGMAS = 2.0  # +- this many window sigmas must fit in the box
POLYNOMIAL_DEGREE = 2
SOLVENT_GAP_A = 4.0  # solvent noise is read this far from the mask ...
SOLVENT_EDGE_A = 2.0  # ... through a weight with edges this soft (Gaussian sigma)
MIN_NOISE_VOXELS = 1000
COVARIANCE_CHUNK = 1 << 16
WHITENING_FLOOR = 1e-8  # of the largest map power: shells emptied by a low-pass are not amplified past it
EIGENVALUE_FLOOR = 1e-6


def sinusoid_directions() -> np.ndarray:
    """The six five-fold axes of an icosahedron: the most even sampling of directions with six."""
    phi = (1.0 + np.sqrt(5.0)) / 2.0
    axes = np.array([[0, 1, phi], [0, -1, phi], [1, phi, 0], [-1, phi, 0], [phi, 0, 1], [phi, 0, -1]], float)
    return axes / np.linalg.norm(axes, axis=1, keepdims=True)


def _window_offsets(sigma_a: float, voxel: tuple[float, float, float], shape: tuple[int, ...]) -> list[np.ndarray]:
    """Integer offsets per axis covering +-3 sigma, or the whole periodic axis when that is longer."""
    offsets = []
    for v, n in zip(voxel, shape):
        half = int(np.ceil(WINDOW_TRUNCATION_SIGMAS * sigma_a / v))
        if 2 * half + 1 >= n:
            offsets.append(np.arange(-(n // 2), n - n // 2))
        else:
            offsets.append(np.arange(-half, half + 1))
    return offsets


def _monomials(coords: list[np.ndarray], degree: int) -> list[np.ndarray]:
    """All monomials of the three coordinates up to ``degree`` (10 for degree 2)."""
    x, y, z = coords
    terms = []
    for total in range(degree + 1):
        for i in range(total + 1):
            for j in range(total - i + 1):
                terms.append(x ** i * y ** j * z ** (total - i - j))
    return terms


def sinusoid_filters(resolution: float, voxel: tuple[float, float, float], shape: tuple[int, ...],
                     window_factor: float = DEFAULT_WINDOW_FACTOR) -> tuple[np.ndarray, list[np.ndarray]]:
    """Correlation kernels whose outputs are the sinusoid evidence after removing the smooth part.

    Returns kernels of shape (12, k0, k1, k2) and the integer offsets of each axis. Kernel j is
    ``w * q_j`` where ``w`` is the Gaussian window and ``q_j`` the j-th cos/sin function minus
    its weighted least-squares fit by the quadratic smooth basis: the weighted-LS score for the
    sinusoid coefficients with the smooth part profiled out, blind to any quadratic density.
    """
    sigma = window_factor * resolution
    offsets = _window_offsets(sigma, voxel, shape)
    grids = np.meshgrid(*[o * v for o, v in zip(offsets, voxel)], indexing="ij")
    weight = np.exp(-(grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2) / (2.0 * sigma ** 2)).ravel()
    smooth = np.stack([m.ravel() for m in _monomials([g / sigma for g in grids], POLYNOMIAL_DEGREE)], axis=1)
    phase_parts = [(2.0 * np.pi / resolution) * (n[0] * grids[0] + n[1] * grids[1] + n[2] * grids[2]).ravel()
                   for n in sinusoid_directions()]
    del grids
    waves = np.stack([f(p) for p in phase_parts for f in (np.cos, np.sin)], axis=1)
    weighted_smooth = smooth * weight[:, None]
    beta = np.linalg.solve(smooth.T @ weighted_smooth, weighted_smooth.T @ waves)
    residual = waves - smooth @ beta
    kernels = (residual * weight[:, None]).T.astype(np.float32)
    return kernels.reshape((-1,) + tuple(len(o) for o in offsets)), offsets


def _kernel_spectrum(kernel: np.ndarray, offsets: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """rfft of a kernel placed on the periodic grid (its offset u at voxel u mod n)."""
    full = np.zeros(shape, dtype=np.float32)
    full[np.ix_(*[o % n for o, n in zip(offsets, shape)])] = kernel
    return scipy.fft.rfftn(full, workers=-1)


def _radial_shells(shape: tuple[int, ...], voxel: tuple[float, float, float]) -> np.ndarray:
    """rfft-shaped shell index of each frequency, shells one Fourier pixel of the longest box side wide."""
    radius = spatial_frequency(shape, voxel, dtype=np.float64)
    spacing = 1.0 / max(n * v for n, v in zip(shape, voxel))
    return np.rint(radius / spacing).astype(np.int32)


def noise_power(noise: np.ndarray, weight: np.ndarray, voxel: tuple[float, float, float]) -> np.ndarray:
    """rfft-shaped noise power spectrum, rotationally averaged, from the weighted region of a noise map.

    ``noise`` holds only noise where ``weight`` > 0 (the half-map difference in the mask, or the
    solvent of a single map). Normalised so that its inverse FFT is the noise autocorrelation:
    for white noise of variance s^2 it is s^2 everywhere. Rotational averaging turns a box of
    samples into a precise spectrum (the test's covariance then needs no "effective sample
    size" guess); it assumes isotropic, stationary noise.
    """
    total = float(weight.sum())
    level = float((noise * weight).sum()) / total
    spectrum = scipy.fft.rfftn((noise - level) * weight, workers=-1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2) / float((weight.astype(np.float64) ** 2).sum())
    del spectrum
    shells = _radial_shells(noise.shape, voxel)
    counts = np.broadcast_to(_rfft_multiplicity(noise.shape), power.shape)
    sums = np.bincount(shells.ravel(), weights=(power * counts).ravel())
    numbers = np.bincount(shells.ravel(), weights=counts.ravel())
    averaged = sums / np.maximum(numbers, 1e-12)
    return averaged[shells].astype(np.float32)


def _correlate(spectrum: np.ndarray, kernel_spectrum: np.ndarray, shape: tuple[int, ...],
               where: np.ndarray) -> np.ndarray:
    """Filter output sum_u h(u) x(v + u) at the flat indices ``where`` (periodic boundary)."""
    out = scipy.fft.irfftn(spectrum * np.conj(kernel_spectrum), s=shape, workers=-1)
    return out.ravel()[where].astype(np.float32)


def _rfft_multiplicity(shape: tuple[int, ...]) -> np.ndarray:
    """How many full-spectrum frequencies each rfft plane along the last axis stands for (1 or 2)."""
    multiplicity = np.full(shape[2] // 2 + 1, 2.0, dtype=np.float32)
    multiplicity[0] = 1.0
    if shape[2] % 2 == 0:
        multiplicity[-1] = 1.0
    return multiplicity


def _covariance_weights(power: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Noise power times rfft plane multiplicity over the voxel count: the weights of :func:`noise_covariance`."""
    return (power * _rfft_multiplicity(shape) / float(np.prod(shape))).astype(np.float32)


def noise_covariance(kernel_spectra: np.ndarray, weighted_power: np.ndarray) -> np.ndarray:
    """Cov(c_j, c_k) of the filter outputs under stationary noise: Re sum_xi P H_j H_k* / N (Parseval).

    ``weighted_power`` is the rfft-shaped noise power times each plane's multiplicity over the
    number of voxels (see :func:`_covariance_weights`), so the half spectrum stands for the whole.
    """
    flat = kernel_spectra.reshape(len(kernel_spectra), -1)
    weights = weighted_power.ravel()
    covariance = np.zeros((len(flat), len(flat)))
    for start in range(0, flat.shape[1], COVARIANCE_CHUNK):  # float64 sums, bounded temporaries
        part = flat[:, start:start + COVARIANCE_CHUNK].astype(np.complex128)
        covariance += ((part * weights[start:start + COVARIANCE_CHUNK]) @ part.conj().T).real
    return covariance


def whitening_matrix(covariance: np.ndarray) -> np.ndarray:
    """Matrix W with W C W^T = I for the filters' noise covariance C.

    Directions of C with eigenvalues below 1e-6 of the largest (combinations of filters that see
    almost no noise) are dropped, so the degrees of freedom are W's rows.
    """
    values, vectors = np.linalg.eigh(0.5 * (covariance + covariance.T))
    if not values[-1] > 0:
        raise CryoResError("the noise estimate is zero at a trial resolution; the map or half maps carry no noise")
    keep = values > EIGENVALUE_FLOOR * values[-1]
    return (vectors[:, keep] / np.sqrt(values[keep])).T


def benjamini_hochberg(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Boolean discoveries of the Benjamini-Hochberg step-up procedure at FDR ``alpha``."""
    m = pvalues.size
    order = np.sort(pvalues)
    passing = np.flatnonzero(order <= alpha * np.arange(1, m + 1) / m)
    if passing.size == 0:
        return np.zeros(m, dtype=bool)
    return pvalues <= order[passing[-1]]


def trial_resolutions(voxel: tuple[float, float, float], shape: tuple[int, ...], max_resolution: float,
                      step: float = DEFAULT_STEP_A, window_factor: float = DEFAULT_WINDOW_FACTOR) -> np.ndarray:
    """Nyquist, Nyquist + step, ... up to ``max_resolution`` and while +-2 window sigmas fit the box."""
    nyquist = 2.0 * max(voxel)
    box = min(n * v for n, v in zip(shape, voxel))
    upper = min(max_resolution, box / (2.0 * WINDOW_FIT_SIGMAS * window_factor))
    if upper < nyquist:
        raise CryoResError(f"the box ({box:g} Å) is too small for a window at Nyquist ({nyquist:g} Å)")
    return np.arange(nyquist, upper + 1e-6, step)


def _check_inputs(volume, voxel_size, mask, half_maps, alpha, max_resolution, step, window_factor):
    """Validated float32 arrays and voxel size; CryoResError with one line otherwise."""
    voxel = as_voxel_size(voxel_size)
    volume = check_density(volume, "map")
    halves = None
    if half_maps is not None:
        if len(half_maps) != 2:
            raise CryoResError(f"half_maps must be two arrays, got {len(half_maps)}")
        halves = [check_density(h, f"half map {i + 1}") for i, h in enumerate(half_maps)]
        for i, h in enumerate(halves):
            if h.shape != volume.shape:
                raise CryoResError(f"half map {i + 1} has shape {h.shape} but the map has {volume.shape}")
        if not np.any(halves[0] != halves[1]):
            raise CryoResError("the two half maps are identical: no noise to test against")
    if not 0.0 < alpha < 1.0:
        raise CryoResError(f"alpha must be between 0 and 1, got {alpha}")
    for name, value in (("max_resolution", max_resolution), ("step", step), ("window_factor", window_factor)):
        if not (np.isfinite(value) and value > 0):
            raise CryoResError(f"{name} must be a positive number, got {value}")
    mask = automatic_mask(volume, voxel) if mask is None else mask_from_array(mask, volume.shape)
    return volume, voxel, mask, halves


def solvent_weight(mask: np.ndarray, voxel: tuple[float, float, float]) -> np.ndarray:
    """Soft weight of the solvent at least SOLVENT_GAP_A from the mask (noise sample of a single map)."""
    grown = dilate(mask, tuple(SOLVENT_GAP_A / v for v in voxel))
    weight = ndimage.gaussian_filter((~grown).astype(np.float32), [SOLVENT_EDGE_A / v for v in voxel], mode="wrap")
    weight[grown] = 0.0
    if float((weight > 0.5).sum()) < MIN_NOISE_VOXELS:
        raise CryoResError("the mask leaves too little solvent to measure the noise in; give half maps")
    return weight


def likelihood_ratio(spectrum: np.ndarray, weighted_power: np.ndarray, resolution: float,
                     voxel: tuple[float, float, float], shape: tuple[int, ...], test_at: np.ndarray,
                     window_factor: float = DEFAULT_WINDOW_FACTOR) -> tuple[np.ndarray, int]:
    """Sinusoid-vs-smooth statistic at flat indices ``test_at`` and its degrees of freedom.

    ``spectrum`` is the rfft of the tested map, ``weighted_power`` its noise power spectrum
    prepared by :func:`_covariance_weights`.
    """
    kernels, offsets = sinusoid_filters(resolution, voxel, shape, window_factor)
    spectra = np.empty((len(kernels),) + spectrum.shape, dtype=np.complex64)
    evidence = np.empty((len(kernels), len(test_at)), dtype=np.float32)
    for k, kernel in enumerate(kernels):
        spectra[k] = _kernel_spectrum(kernel, offsets, shape)
        evidence[k] = _correlate(spectrum, spectra[k], shape, test_at)
    whitener = whitening_matrix(noise_covariance(spectra, weighted_power)).astype(np.float32)
    whitened = whitener @ evidence
    return np.einsum("ij,ij->j", whitened, whitened), whitener.shape[0]


def resmap_local_resolution(
    volume: np.ndarray,
    voxel_size: float | Sequence[float],
    mask: np.ndarray | None = None,
    *,
    half_maps: tuple[np.ndarray, np.ndarray] | None = None,
    resolutions: Sequence[float] | None = None,
    alpha: float = DEFAULT_ALPHA,
    max_resolution: float = DEFAULT_MAX_RESOLUTION_A,
    step: float = DEFAULT_STEP_A,
    window_factor: float = DEFAULT_WINDOW_FACTOR,
    whiten: bool = True,
    progress: ProgressArg = False,
) -> np.ndarray:
    """ResMap-style local resolution (float32 Å on the input grid) by the method in the module docstring.

    mask: > 0.5 inside (None: :func:`cryores.masking.automatic_mask` of ``volume``). half_maps:
    two independent half maps; then the test runs on their average and the noise comes from
    their difference (``volume`` only supplies the automatic mask). resolutions: explicit trial
    resolutions in Å (sorted; default Nyquist to ``max_resolution`` every ``step`` Å, limited by
    the box). alpha: false-discovery rate per trial resolution. window_factor: window sigma in
    units of the trial resolution (larger: sharper in frequency, coarser in space). whiten:
    pre-whiten by the map's own spectrum (keep it on; off only to see the leakage it prevents).
    progress: True for a bar on stderr, or a ``(done, total)`` callable.

    Returns the first significant trial resolution per voxel; 0 outside the mask and where no
    trial resolution was significant. Raises CryoResError (one line) for bad input.
    """
    volume, voxel, mask, halves = _check_inputs(volume, voxel_size, mask, half_maps, alpha, max_resolution,
                                                step, window_factor)
    shape = volume.shape
    if resolutions is None:
        trials = trial_resolutions(voxel, shape, max_resolution, step, window_factor)
    else:
        trials = np.sort(np.asarray(resolutions, dtype=np.float64).ravel())
        if trials.size == 0 or not np.all(np.isfinite(trials)) or trials[0] < 2.0 * max(voxel) - 1e-6:
            raise CryoResError(f"trial resolutions must be finite and at least Nyquist ({2 * max(voxel):g} Å)")
    inside = ndimage.gaussian_filter(mask.astype(np.float32), [SOLVENT_EDGE_A / v for v in voxel], mode="wrap")
    if halves is None:
        power = noise_power(volume, solvent_weight(mask, voxel), voxel)
        tested = volume
    else:
        power = noise_power(0.5 * (halves[0] - halves[1]), inside, voxel)
        tested = 0.5 * (halves[0] + halves[1])
    del halves
    spectrum = scipy.fft.rfftn(tested, workers=-1)
    if whiten:
        gain = noise_power(tested, inside, voxel)
        gain = 1.0 / np.sqrt(np.maximum(gain, WHITENING_FLOOR * float(gain.max())))
        spectrum *= gain
        power *= gain ** 2
        del gain
    del tested, inside
    weighted_power = _covariance_weights(power, shape)
    del power

    mask_flat = np.flatnonzero(mask.ravel())
    labels = np.zeros(len(mask_flat), dtype=np.float32)
    with progress_reporter(progress, len(trials), "resolution", "ResMap-style") as bar:
        for resolution in trials:
            statistic, dof = likelihood_ratio(spectrum, weighted_power, float(resolution), voxel, shape, mask_flat,
                                              window_factor)
            significant = benjamini_hochberg(stats.chi2.sf(statistic, dof), alpha)
            labels[significant & (labels == 0)] = resolution
            if bar is not None:
                bar.update(1)
            if labels.all():
                break
    result = np.zeros(shape, dtype=np.float32)
    result.ravel()[mask_flat] = labels
    return result
