"""``cryores-train ensemble``: join v3 models fit alike from different seeds into one card.

Each member is a fit of the same config with another ``seed`` (same rows, same architecture and
input layout). A config that lists ``"members": [seeds]`` makes ``cryores-train fit`` fit each
member into ``<output>/members/seed-<seed>`` (:func:`fit_members`, each resumable) and join them
into ``<output>/model``. The joined network (:class:`cryores.spectral_net.SpectralEnsemble`) averages the
members' ln-Å medians and widens their intervals by how far they disagree; its median shift and
interval scale are then solved afresh on whole validation maps (:func:`write_calibration`), since
the members' own calibrations describe each member, not their mean.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryores.errors import CryoResError
from cryores.model_card import load_model, save_model
from cryores.spectral_net import SpectralEnsemble, SpectralNet

from .fit import load_config, model_card_path
from .fit_spectral import card_config, train, write_calibration


def join_members(member_cards: list[Path], config: dict, output: Path) -> Path:
    """Write the ensemble of ``member_cards`` to the card ``output`` (weights beside it), calibrated
    with ``config``'s calibration. Raises CryoResError when a member is no v3 SpectralNet, when
    members differ in architecture or input layout, or when fewer than two are given."""
    if len(member_cards) < 2:
        raise CryoResError(f"an ensemble needs at least two member cards, not {len(member_cards)}")
    loaded = [load_model(card) for card in member_cards]
    for card, model in zip(member_cards, loaded, strict=True):
        if not isinstance(model.network, SpectralNet):
            raise CryoResError(f"{card}: not a single v3 (SpectralNet) model")
    features = [model.card.get("features") for model in loaded]
    if any(f != features[0] for f in features[1:]):
        raise CryoResError("the member cards read different spectral features")
    try:
        network = SpectralEnsemble([model.network for model in loaded])
    except ValueError as error:
        raise CryoResError(f"cannot join the members: {error}") from None
    first = loaded[0].card
    card = {key: value for key, value in first.items() if key not in ("sha256", "calibration", "metrics")}
    card["weights"] = f"{config['name']}.pt"
    card["parameters"] = sum(p.numel() for p in network.parameters())
    card["metrics"] = {}
    # a member's interval scale describes that member; the joined card's comes from its own calibration
    card["uncertainty"] = {"kind": "5-95 % quantiles of the joined members, not calibrated", "interval_scale": 1.0}
    training = dict(first.get("training", {}))
    training["command"] = ("make model  (cryores-train rows -> fit per seed -> ensemble -> evaluate -> install; "
                           "see Makefile)")
    training["config"] = card_config(config)
    training["members"] = [{"seed": model.card.get("training", {}).get("config", {}).get("seed"),
                            "sha256": model.card["sha256"],
                            "final_validation": model.card.get("training", {}).get("final_validation")}
                           for model in loaded]
    card["training"] = training
    output.parent.mkdir(parents=True, exist_ok=True)
    card_path = save_model(network.eval(), card, output)
    if config.get("calibration"):
        write_calibration(card_path, config)
    return card_path


def member_config(config: dict, seed: int) -> dict:
    """The config of the member fit with ``seed``: the ensemble's, into its own output folder and
    without the whole-map calibration (the joined card is calibrated; a member's would be unused)."""
    member = {key: value for key, value in config.items() if key not in ("members", "calibration")}
    member.update(seed=int(seed), output=str(Path(config["output"]) / "members" / f"seed-{int(seed)}"))
    return member


def member_finished(config: dict) -> bool:
    """Whether the member ``config`` describes has its card from a fit of all its steps."""
    card = model_card_path(config)
    if not card.is_file():
        return False
    return json.loads(card.read_text()).get("training", {}).get("steps") == config["steps"]


def fit_members(config: dict, progress: bool = True, max_steps: int | None = None) -> Path:
    """Fit every member of ``config["members"]`` not fit yet, then join them (:func:`join_members`).
    Returns the joined card, or the checkpoint of a member that ``max_steps`` stopped early (run
    again to resume it)."""
    seeds = config.get("members")
    if not isinstance(seeds, list) or len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise CryoResError(f"config members must list two or more different seeds, not {seeds!r}")
    cards = []
    for seed in seeds:
        member = member_config(config, seed)
        if not member_finished(member):
            stopped = train(member, progress=progress, max_steps=max_steps)
            if not member_finished(member):
                return stopped
        cards.append(model_card_path(member))
    return join_members(cards, config, model_card_path(config))


def register(subparsers) -> None:
    """Add the ``ensemble`` sub-command."""
    p = subparsers.add_parser("ensemble", help="join v3 models fit from different seeds into one calibrated card",
                              description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, help="the v3 training config whose calibration the ensemble gets")
    p.add_argument("members", type=Path, nargs="+", help="the members' model cards (default.json of each fit)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the ensemble's card (weights go beside it)")
    p.set_defaults(run=_run)


def _run(args) -> int:
    config = load_config(args.config)
    if config.get("kind") != "spectral":
        raise CryoResError(f"config {args.config}: not a v3 (spectral) config")
    card = join_members(args.members, config, args.output)
    written = json.loads(card.read_text())
    scale = written.get("uncertainty", {}).get("interval_scale")
    print(f"{len(args.members)} members joined -> {card} (interval scale {scale})")
    return 0
