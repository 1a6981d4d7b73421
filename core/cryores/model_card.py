"""Trained models: weights plus a JSON model card, checked by sha256 before loading.

A card records everything inference needs (architecture, voxel size, patch size,
normalisation, how network outputs map to Å, the upper clipping bound) and everything a user
should know (training data, command, seed, metrics). The installed model lives in the package
folder ``cryores/models/`` as ``default.json`` plus the weights file it names. Until a training
run ships one there is none, and :func:`load_model` says so instead of guessing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .errors import CryoResError, ModelIntegrityError, NoModelInstalledError
from .spectral_net import SPECTRAL_NETWORKS, SpectralEnsemble, SpectralNet
from .unet import UNet3D, fold_batchnorm

FORMAT_VERSION = 1
DEFAULT_CARD_NAME = "default.json"
DEFAULT_OVERLAP = 0.5
REQUIRED_FIELDS = ("name", "format_version", "architecture", "voxel_size", "patch_size",
                   "normalisation", "target", "resolution_range", "weights", "sha256")


@dataclass
class LoadedModel:
    """A network in eval mode, BatchNorm folded for inference, with the card that describes it."""

    network: UNet3D | SpectralNet | SpectralEnsemble
    card: dict
    card_path: Path | None

    @property
    def spectral(self) -> bool:
        """True for v3 models, which read spectral features on the map's own grid (no patches)."""
        return isinstance(self.network, SPECTRAL_NETWORKS)

    @property
    def interval_scale(self) -> float:
        """Calibration factor of the 5-95 % interval, measured on held-out maps (1 if absent)."""
        return float(self.card.get("uncertainty", {}).get("interval_scale", 1.0))

    @property
    def median_shift(self) -> float:
        """ln-Å correction of the median, measured on held-out maps through the whole predict
        path (0 if absent): the evidence floor and smoothing only ever coarsen, so the network's
        median, right on rows, read coarse on whole maps."""
        return float(self.card.get("calibration", {}).get("median_log_shift", 0.0))

    def median_shift_for(self, has_reference: bool) -> float:
        """:attr:`median_shift` of one path: maps whose solvent gives a noise reference, or maps
        without one (masked, flattened, low-passed deposits), which the network reads apart and
        the calibration centres apart; a card with one shift applies it to both."""
        by_path = self.card.get("calibration", {}).get("median_log_shift_by_reference", {})
        return float(by_path.get("with" if has_reference else "without", self.median_shift))

    @property
    def voxel_size(self) -> float:
        return float(self.card["voxel_size"])

    @property
    def patch_size(self) -> int:
        return int(self.card["patch_size"])

    @property
    def overlap(self) -> float:
        """Patch overlap the model was validated with (0.5 when the card does not say)."""
        return float(self.card.get("overlap", DEFAULT_OVERLAP))

    @property
    def max_resolution(self) -> float:
        return float(self.card["resolution_range"][1])

    def to_angstrom(self, output: torch.Tensor) -> torch.Tensor:
        """Network output -> resolution in Å (the card's target transform, inverted)."""
        target = self.card["target"]
        if target["transform"] == "log":
            return torch.exp(output * float(target["std"]) + float(target["mean"]))
        return output * float(target["std"]) + float(target["mean"])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_card_path() -> Path | None:
    """Path of the model card shipped inside the package, or None when none is installed."""
    candidate = resources.files("cryores") / "models" / DEFAULT_CARD_NAME
    return Path(str(candidate)) if candidate.is_file() else None


def build_network(architecture: dict) -> UNet3D | SpectralNet | SpectralEnsemble:
    if architecture.get("type") == "SpectralNet":
        return SpectralNet.from_architecture(architecture)
    if architecture.get("type") == "SpectralEnsemble":
        return SpectralEnsemble.from_architecture(architecture)
    if architecture.get("type") != "UNet3D":
        raise CryoResError(f"model card names unknown architecture {architecture.get('type')!r}")
    return UNet3D(channels=tuple(architecture["channels"]), dropout=float(architecture["dropout"]),
                  output_stride=int(architecture.get("output_stride", 1)), frontend=architecture.get("frontend"))


def _check_card(card: dict, path: Path) -> None:
    missing = [f for f in REQUIRED_FIELDS if f not in card]
    if missing:
        raise CryoResError(f"model card {path}: missing field(s) {', '.join(missing)}")
    if card["format_version"] != FORMAT_VERSION:
        raise CryoResError(f"model card {path}: format_version {card['format_version']} is not {FORMAT_VERSION}")
    if card["target"].get("transform") not in ("log", "linear"):
        raise CryoResError(f"model card {path}: target transform must be 'log' or 'linear'")
    _check_range(card["resolution_range"], "resolution_range", path)
    trained = card.get("trained_on")  # optional: the ranges cryores.cautions compares predictions with
    if trained is not None:
        if not isinstance(trained, dict):
            raise CryoResError(f"model card {path}: trained_on must hold voxel_size_A and resolution_A, "
                               f"not {trained!r}")
        for key in ("voxel_size_A", "resolution_A"):
            _check_range(trained.get(key), f"trained_on.{key}", path)


def _check_range(value, what: str, path: Path) -> None:
    """Raise CryoResError unless ``value`` is two finite numbers (Å) with 0 < low < high."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CryoResError(f"model card {path}: {what} must be two numbers (Å), not {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise CryoResError(f"model card {path}: bad {what} {value}")


def load_model(card_path: str | os.PathLike | None = None) -> LoadedModel:
    """Load the model a card describes, or the installed one when ``card_path`` is None.

    Raises NoModelInstalledError when no card is given and none ships with the package,
    ModelIntegrityError when the weights' sha256 differs from the card's, CryoResError for an
    unreadable or incomplete card or weights file.
    """
    if card_path is None:
        card_path = installed_card_path()
        if card_path is None:
            raise NoModelInstalledError(
                "no trained model is installed in this cryores (it ships once training lands); "
                "give a model card with --model CARD.json")
    card_path = Path(card_path)
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise CryoResError(f"model card {card_path}: no such file") from None
    except (OSError, ValueError) as error:
        raise CryoResError(f"model card {card_path}: unreadable ({error})") from None
    if not isinstance(card, dict):
        raise CryoResError(f"model card {card_path}: not a JSON object")
    _check_card(card, card_path)
    weights_path = card_path.parent / card["weights"]
    if not weights_path.is_file():
        raise CryoResError(f"model card {card_path}: weights file {weights_path} is missing")
    actual = sha256_of(weights_path)
    if actual != card["sha256"]:
        raise ModelIntegrityError(
            f"weights {weights_path} have sha256 {actual[:12]}…, the model card says {str(card['sha256'])[:12]}…; "
            "the file is corrupt or does not belong to this card")
    network = build_network(card["architecture"])
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as error:  # torch raises many types for bad files
        raise CryoResError(f"weights {weights_path}: cannot be loaded ({type(error).__name__})") from None
    network.eval()
    return LoadedModel(fold_batchnorm(network) if isinstance(network, UNet3D) else network, card, card_path)


def save_model(network: UNet3D | SpectralNet | SpectralEnsemble, card: dict, card_path: str | os.PathLike) -> Path:
    """Save weights beside ``card_path`` and write the card with their sha256 and architecture.

    Used by training (and by tests, which save small randomly initialised networks).
    """
    card_path = Path(card_path)
    card = dict(card)
    weights_name = card.get("weights") or card_path.with_suffix(".pt").name
    weights_path = card_path.parent / weights_name
    torch.save(network.state_dict(), weights_path)
    card.update(
        format_version=FORMAT_VERSION,
        weights=weights_name,
        sha256=sha256_of(weights_path),
        architecture=network.config() if isinstance(network, SPECTRAL_NETWORKS) else {
            "type": "UNet3D", "channels": list(network.channels), "dropout": _dropout_of(network),
            "output_stride": network.output_stride,
            "frontend": network.frontend.config() if network.frontend is not None else None},
    )
    _check_card(card, card_path)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def _dropout_of(network: UNet3D) -> float:
    for module in network.modules():
        if isinstance(module, torch.nn.Dropout3d):
            return float(module.p)
    return 0.0
