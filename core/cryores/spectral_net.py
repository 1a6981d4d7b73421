"""The v3 network: local spectral evidence -> quantiles of the local resolution.

A small per-voxel network over the features of :mod:`cryores.spectral` and, beside them, the
map's own profile (:func:`cryores.spectral.network_inputs`; older cards read the features alone). It needs no
convolutional context: each feature already averages a window of several Å around its voxel,
in Å, so the same weights hold at any voxel size (a U-Net's receptive field would cover 8x
more Å at 2 Å voxels than at 1 Å). It predicts three quantiles (5 %, 50 %, 95 %) of
ln(resolution / Å); the 5-95 % interval is the uncertainty, calibrated on held-out maps
(a factor in the model card). Quantiles are ordered by construction: the outer ones are the
median minus/plus a softplus.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from .spectral import BANDS_A, HAS_REFERENCE, N_BANDS, N_CONTEXT, N_FEATURES, RATIO

QUANTILES = (0.05, 0.5, 0.95)
Z90 = 1.6449  # the standard normal's 95 % quantile: the outer quantiles are the median -/+ Z90 sigma
CROSSING_SNR = (1.15, 1.33, 2.0, 4.0)  # band power / noise thresholds of snr_crossings (1.33: FSC 0.143)


class SpectralNet(nn.Module):
    """MLP on standardised spectral features; ``forward`` maps (N, F) -> (N, 3) ln-Å quantiles."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (96, 96), dropout: float = 0.0,
                 context_without_reference: bool = False, snr_crossings: bool = False):
        super().__init__()
        self.n_features = n_features
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.context_without_reference = bool(context_without_reference)
        self.snr_crossings = bool(snr_crossings)
        if self.context_without_reference and n_features <= N_FEATURES:
            raise ValueError(f"context_without_reference needs the map's context: {n_features} inputs have none")
        width = n_features + (len(CROSSING_SNR) if self.snr_crossings else 0)
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        self.register_buffer("target_mean", torch.tensor(1.6))
        layers: list[nn.Module] = []
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            if self.dropout:
                layers.append(nn.Dropout(self.dropout))
            width = h
        layers.append(nn.Linear(width, len(QUANTILES)))
        self.layers = nn.Sequential(*layers)

    @classmethod
    def from_architecture(cls, architecture: dict, n_features: int | None = None) -> SpectralNet:
        """The network an architecture describes: a card's (which names ``n_features``) or a
        training config's (the rows give ``n_features``). One reader of the keys for both, so a
        key added here is read by training and inference alike."""
        return cls(int(n_features if n_features is not None else architecture["n_features"]),
                   tuple(architecture["hidden"]), float(architecture.get("dropout", 0.0)),
                   bool(architecture.get("context_without_reference", False)),
                   bool(architecture.get("snr_crossings", False)))

    @property
    def derives_inputs(self) -> bool:
        """Whether :meth:`expand` changes the inputs (then standardise what it returns)."""
        return self.context_without_reference or self.snr_crossings

    def expand(self, features: torch.Tensor) -> torch.Tensor:
        """What the layers read, before standardisation: the inputs, the context hidden where the
        map has a noise reference (``context_without_reference``), then the SNR crossings
        (``snr_crossings``, :func:`snr_crossings`)."""
        expanded = _hide_context_where_referenced(features) if self.context_without_reference else features
        if self.snr_crossings:
            expanded = torch.cat([expanded, snr_crossings(features)], dim=1)
        return expanded

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (self.expand(features) - self.feature_mean) / self.feature_std
        raw = self.layers(x)
        median = raw[:, 1] + self.target_mean
        low = median - functional.softplus(raw[:, 0]) - 1e-3
        high = median + functional.softplus(raw[:, 2]) + 1e-3
        return torch.stack([low, median, high], dim=1)

    def config(self) -> dict:
        config = {"type": "SpectralNet", "n_features": self.n_features, "hidden": list(self.hidden),
                  "dropout": self.dropout, "quantiles": list(QUANTILES)}
        if self.context_without_reference:
            config["context_without_reference"] = True
        if self.snr_crossings:
            config["snr_crossings"] = True
        return config


def snr_crossings(features: torch.Tensor) -> torch.Tensor:
    """(N, len(CROSSING_SNR)) ln Å: per threshold T, where the voxel's band SNR (power over the
    solvent's noise) falls below T, walking from the coarsest band to finer ones and
    interpolating in log-frequency between the last band above T and the first below it.

    Why: where a map has a noise reference, the resolution is where the SNR ends, at any rate of
    fall-off; band levels alone let a network read the fall-off's shape instead (benchmarks/
    steepness.py). Walking from coarse to fine keeps a lone noisy fine band from counting.
    No band above T: one band coarser than the coarsest. Maps without a reference: that too.
    """
    snr = features[:, N_BANDS:2 * N_BANDS]
    present = features[:, 2 * N_BANDS:3 * N_BANDS] > 0.5
    referenced = features[:, HAS_REFERENCE] > 0.5
    out = []
    for threshold in CROSSING_SNR:
        level = math.log10(threshold)
        evident = (present & (snr >= level)).to(torch.int32)
        run = torch.flip(torch.cumprod(torch.flip(evident, [1]), dim=1), [1])  # all bands from here to the coarsest
        finest = N_BANDS - run.sum(dim=1)  # N_BANDS where none is evident
        below = (finest - 1).clamp(min=0)
        has_below = (finest > 0) & (finest < N_BANDS) & present.gather(1, below[:, None])[:, 0]
        at = snr.gather(1, finest.clamp(max=N_BANDS - 1)[:, None])[:, 0]
        under = snr.gather(1, below[:, None])[:, 0]
        step = torch.where(has_below, ((at - level) / (at - under).clamp(min=1e-6)).clamp(0.0, 1.0),
                           torch.zeros_like(at))
        position = finest.to(features.dtype) - step
        position = torch.where(referenced, position, torch.full_like(position, float(N_BANDS)))
        out.append(math.log(BANDS_A[0]) + position * math.log(RATIO))
    return torch.stack(out, dim=1)


def _hide_context_where_referenced(features: torch.Tensor) -> torch.Tensor:
    """The inputs with the map's context set to 0 in rows whose map has a noise reference.

    Why: with a noise reference each voxel's SNR per band is measured against the map's own
    noise, and the map-wide profile then mostly tells the network how the signal falls off,
    a shortcut that holds only for the fall-offs it was trained on. Maps without one (masked,
    flattened or low-passed deposits) keep the profile: there it is the only hint of how the
    map was processed.
    """
    referenced = features[:, HAS_REFERENCE:HAS_REFERENCE + 1] > 0.5
    context = features[:, N_FEATURES:N_FEATURES + N_CONTEXT]
    hidden = torch.where(referenced, torch.zeros_like(context), context)
    return torch.cat([features[:, :N_FEATURES], hidden, features[:, N_FEATURES + N_CONTEXT:]], dim=1)


def pinball_loss(prediction: torch.Tensor, target: torch.Tensor, lower_bound: torch.Tensor) -> torch.Tensor:
    """Quantile (pinball) loss on ln-Å; rows whose label is only a lower bound are penalised
    only where a quantile falls below it (a map low-passed at X, or with noise added, is at least
    as coarse as X or as before)."""
    losses = []
    for i, q in enumerate(QUANTILES):
        error = target - prediction[:, i]
        exact = torch.maximum(q * error, (q - 1) * error)
        bound = torch.clamp(error, min=0.0) * q  # only predictions below the bound cost
        losses.append(torch.where(lower_bound, bound, exact))
    return torch.stack(losses, dim=1).sum(dim=1).mean()


class SpectralEnsemble(nn.Module):
    """Several :class:`SpectralNet` fit alike from different seeds; ``forward`` maps (N, F) ->
    (N, 3) ln-Å quantiles like one member.

    Why: members fit from other seeds err partly apart, so their mean errs less than each; and
    where they disagree the reading is less certain, which one member's interval cannot know.
    The median is the members' mean. Each side of the interval is the members' mean half-width
    widened by their disagreement, as for a mixture of normals (law of total variance): side² =
    mean(side²) + (Z90 · std of the medians)².
    """

    def __init__(self, members: list[SpectralNet]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, not {len(members)}")
        first = members[0].config()
        if any(member.config() != first for member in members[1:]):
            raise ValueError("ensemble members must share one architecture and input layout")
        self.members = nn.ModuleList(members)
        self.n_features = members[0].n_features

    @classmethod
    def from_architecture(cls, architecture: dict) -> SpectralEnsemble:
        """The ensemble a card's architecture describes (``members``: how many; ``member``: theirs)."""
        count = int(architecture["members"])
        return cls([SpectralNet.from_architecture(architecture["member"]) for _ in range(count)])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([member(features) for member in self.members])  # (M, N, 3)
        median = outputs[:, :, 1].mean(dim=0)
        disagreement = (Z90 * outputs[:, :, 1].std(dim=0, unbiased=False)) ** 2
        low_side = torch.sqrt(((outputs[:, :, 1] - outputs[:, :, 0]) ** 2).mean(dim=0) + disagreement)
        high_side = torch.sqrt(((outputs[:, :, 2] - outputs[:, :, 1]) ** 2).mean(dim=0) + disagreement)
        return torch.stack([median - low_side, median, median + high_side], dim=1)

    def config(self) -> dict:
        return {"type": "SpectralEnsemble", "n_features": self.n_features, "members": len(self.members),
                "member": self.members[0].config(), "quantiles": list(QUANTILES)}


# the v3 networks: read spectral features on the map's own grid; their card architecture is their config()
SPECTRAL_NETWORKS = (SpectralNet, SpectralEnsemble)
