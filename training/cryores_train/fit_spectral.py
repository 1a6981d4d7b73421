"""Training cryores-v3 (:class:`cryores.spectral_net.SpectralNet`) on rows, resumably.

Rows come from ``cryores-train rows`` (simulated maps; the config's ``dataset`` and, for further
families, ``more_rows``) and, when the config names ``real_rows``, from ``cryores-train
real-rows`` (real maps cut at X: lower bounds), with features exactly as inference computes
them. The target is ln(resolution); the loss is the pinball loss of the 5/50/95 % quantiles,
where rows whose label is only a lower bound (noise added, or a real map's cut) cost only when a
quantile falls below it.
Rows are weighted so that every 1-Å bin of the label counts the same (without it the rare
coarse and very fine regions would be biased toward the middle).

AdamW, warm-up then cosine decay. A checkpoint (weights, optimiser, step, random states,
history) is written atomically every ``checkpoint_every`` steps, so a killed run resumes where
it stopped. At the end the model is exported with a card and calibrated on whole validation
maps (:func:`calibrate_on_maps`): the median shift, and the 5-95 % interval scaled about the
median so that it holds 90 % of their voxels, pooled.

Under ``torchrun --nproc_per_node N -m cryores_train fit CONFIG`` the network trains in
DistributedDataParallel (:mod:`cryores_train.distributed`; gloo on CPU, nccl on GPUs). Batch sizes:
``batch_size`` is per process (per rank), so the global batch is ``batch_size * N``; or give
``global_batch_size`` (divisible by N) and each rank takes ``global_batch_size / N``. Every rank
draws the same global batch of row indices from the same seeded generator and trains on its own
contiguous block of it (its shard); gradients are averaged over ranks. SpectralNet has no batch
statistics, so N ranks of batch B give the same weights as one process of batch N*B (up to float
summation order). Only rank 0 validates and writes the checkpoint, history and model; the
checkpoint (unwrapped weights, optimiser, step, generator states) does not depend on N, so a run
resumes at any world size. Without torchrun a single CPU process trains exactly as before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryores.errors import CryoResError
from cryores.model_card import save_model
from cryores.spectral import (
    BANDS_A,
    FEATURE_VOXEL_A,
    HAS_REFERENCE,
    LAYOUTS,
    N_BANDS,
    N_CONTEXT,
    N_FEATURES,
    N_INPUTS,
    N_INPUTS_NEIGHBOURHOOD,
    N_INPUTS_PERCENTILES,
    N_PERCENTILES,
    band_percentiles,
    input_layout,
    percentile_inputs,
)
from cryores.spectral_inference import Z90
from cryores.spectral_net import SpectralNet, pinball_loss

from . import distributed
from .fit import _save_checkpoint, learning_rate, restore_checkpoint
from .rows import load_rows
from .simulate import V3_COARSE_RESOLUTION_A, V3_COARSE_VOXEL_A, V3_RESOLUTION_A, V3_VOXEL_A
from .variants import CROP_MAX_VOXEL_A

# Labels coarser than this share one weight bin. Every 1-Å bin below weighs the same; with one bin
# per Å up to 30, coarse-map rows' 20-30 Å labels took a third of the fit's weight from the 2-20 Å
# range users mostly hold: the test split's MAE rose from 0.55 to 0.65 Å, and 0.57 with the cap
# (training/README, "coarse maps"). Rows of labels under 20 Å weigh as they did before the cap.
WEIGHT_BIN_CAP_A = 20


def jitter_percentiles(x: torch.Tensor, scale: float, global_rows: int | None = None,
                       shard: slice = slice(None)) -> torch.Tensor:
    """``x`` (rows of the ``"percentiles"`` layout) with Gaussian noise of ``scale`` decades added
    to each map's band percentiles where the map has no noise reference (elsewhere they are 0 and
    not read, :func:`cryores.spectral.percentile_inputs`); the config's ``percentile_jitter``.

    Why: the percentiles are the same in every row of a map, so the ~2000 training maps give the
    network only a few thousand distinct points in those 104 inputs, and the fits that read them
    differ most from seed to seed on maps without a reference (test MAE 0.59-0.78 Å there against
    0.48-0.51 with one, training/README). And inference takes them over the automatic mask, the
    rows over the labelled voxels: 0.04 decades apart on the median map, 0.11 at the 90th
    percentile (:func:`with_percentiles`). Noise of that size asks the network for a reading that
    does not hang on differences the two regions already make.

    Under DDP ``x`` is this rank's ``shard`` of a global batch of ``global_rows``: the noise is
    drawn for the whole global batch (every rank's generator is alike) and the shard's part
    taken, so N ranks add the same noise as one process given the global batch."""
    if x.shape[1] != N_INPUTS_PERCENTILES:
        raise CryoResError(f"percentile_jitter needs rows of the percentiles layout ({N_INPUTS_PERCENTILES} "
                           f"inputs), not {x.shape[1]}")
    without_reference = (x[:, HAS_REFERENCE] < 0.5).unsqueeze(1).to(x.dtype)
    percentiles = x[:, N_INPUTS_NEIGHBOURHOOD:]
    drawn = (global_rows if global_rows is not None else len(x), percentiles.shape[1])
    noise = torch.randn(drawn, dtype=x.dtype, device=x.device)[shard] * (scale * without_reference)
    return torch.cat([x[:, :N_INPUTS_NEIGHBOURHOOD], percentiles + noise], dim=1)


def _weights(labels: np.ndarray) -> np.ndarray:
    """Each row's sampling weight: every 1-Å bin of the label (those from
    :data:`WEIGHT_BIN_CAP_A` up pooled in one) weighs the same in total."""
    bins = np.clip(labels.astype(int), 0, WEIGHT_BIN_CAP_A)
    counts = np.bincount(bins, minlength=WEIGHT_BIN_CAP_A + 1).astype(np.float64)
    weights = 1.0 / np.maximum(counts[bins], 1.0)
    return (weights / weights.sum()).astype(np.float64)


@torch.no_grad()
def validate(network: SpectralNet, rows: dict) -> dict:
    """MAE (Å) of the median on exact labels, bias, and the raw 5-95 % interval's coverage, on a
    split as loaded (``"x"`` whole or :class:`PercentileRows`)."""
    network.eval()
    x, device = rows["x"], network.feature_mean.device
    q = torch.cat([network(torch.from_numpy(take_rows(x, slice(i, i + 65536))).to(device)).cpu()
                   for i in range(0, len(x), 65536)]).numpy()
    network.train()
    exact = ~rows["bound"]
    y = rows["y"][exact]
    median = np.exp(q[exact, 1])
    inside = (np.exp(q[exact, 0]) <= y) & (y <= np.exp(q[exact, 2]))
    bound_ok = np.exp(q[rows["bound"], 1]) >= rows["y"][rows["bound"]] * 0.95
    return {"mae": float(np.abs(median - y).mean()), "bias": float((median - y).mean()),
            "coverage": float(inside.mean()), "bound_respected": float(bound_ok.mean()) if bound_ok.size else 1.0}


@torch.no_grad()
def calibrate_interval(network: SpectralNet, rows: dict) -> float:
    """Scale s of the half-width so that |y - median| <= s * half-width (Å) for 90 % of exact rows.

    Matches inference, which reports sigma = s * (high - low) / 2 / 1.645 around the median.
    """
    network.eval()
    exact = np.flatnonzero(~rows["bound"])
    x, device = rows["x"], network.feature_mean.device
    q = np.exp(torch.cat([network(torch.from_numpy(take_rows(x, exact[i:i + 65536])).to(device)).cpu()
                          for i in range(0, len(exact), 65536)]).numpy())
    half_width = 0.5 * (q[:, 2] - q[:, 0])
    ratio = np.abs(rows["y"][exact] - q[:, 1]) / np.maximum(half_width, 1e-6)
    return float(np.quantile(ratio, 0.9))


def train(config: dict, progress: bool = True, max_steps: int | None = None) -> Path:
    """Train (or resume) as configured; returns the exported model card (or the checkpoint).

    Under torchrun every rank calls this; see the module docstring for DDP and batch sizes.
    """
    context = distributed.init()
    try:
        result = _train(config, context, progress, max_steps)
        distributed.barrier(context)
        return result
    finally:
        distributed.cleanup(context)


def input_statistics(network: SpectralNet, x: np.ndarray | PercentileRows,
                     chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of what the network's layers read: the rows themselves, or, for a network
    that derives inputs (:attr:`SpectralNet.derives_inputs`), what :meth:`SpectralNet.expand`
    makes of them, summed chunk by chunk so no second copy of all rows is held."""
    if isinstance(x, np.ndarray) and not network.derives_inputs and network.n_features != N_INPUTS_PERCENTILES:
        # the earlier layouts keep numpy's statistics, so their fits stay bit-equal; the
        # percentiles layout's rows are too wide for x.std's full-size temporary
        return x.mean(axis=0), x.std(axis=0)
    total = square = None
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            part = network.expand(torch.from_numpy(take_rows(x, slice(start, start + chunk)))).double()
            total = part.sum(0) if total is None else total + part.sum(0)
            square = (part ** 2).sum(0) if square is None else square + (part ** 2).sum(0)
    mean = total / len(x)
    return mean.float().numpy(), (square / len(x) - mean ** 2).clamp(min=0).sqrt().float().numpy()


def narrowed_rows(rows: dict[str, np.ndarray], layout: str, folders: list[Path]) -> dict[str, np.ndarray]:
    """``rows`` with only the inputs of ``layout`` (the config's ``inputs``): the layouts nest
    (features, then the map's context, then the neighbourhood gap), so a narrower layout is the
    first columns of wider rows, and one set of rows can train all of them. ``"percentiles"`` is
    the neighbourhood columns and each map's percentiles (:func:`with_percentiles`, written out
    whole; the fit holds them as :class:`PercentileRows`). Rows
    narrower than the layout are refused, naming their folders."""
    if layout not in LAYOUTS:
        raise CryoResError(f"config inputs {layout!r}: this cryores knows {', '.join(LAYOUTS)}")
    if layout == "percentiles":
        return with_percentiles(narrowed_rows(rows, "neighbourhood", folders))
    width = LAYOUTS[layout]
    if rows["x"].shape[1] < width:
        raise CryoResError(f"rows in {', '.join(map(str, folders))}: {rows['x'].shape[1]} inputs per row, "
                           f"fewer than the {width} of inputs {layout!r}; make the rows with that layout")
    return {**rows, "x": rows["x"][:, :width]}


def with_percentiles(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Neighbourhood-layout ``rows`` with each map's :func:`cryores.spectral.band_percentiles`
    appended (the ``"percentiles"`` layout; 0 where the map has a noise reference,
    :func:`cryores.spectral.percentile_inputs`), computed over the rows drawn from that map
    (``variant``).

    The fit holds the same rows as :class:`PercentileRows` (:func:`load_percentile_rows`), which
    must match what this writes out whole.

    Why here and not in the rows files: the rows already hold a uniform draw of each map's labelled
    voxels, so the percentiles come without simulating every map again. Inference computes them
    over the automatic mask instead; on 30 maps of 6 validation structures the two differed by
    0.04 decades (median over maps; 90th percentile 0.11; the automatic mask's 0.04 lower on
    average, which the calibration's shift takes up), where they spread by 0.3-3.3 decades from
    map to map.
    """
    x, variant = rows["x"], rows["variant"]
    out = np.empty((len(x), N_INPUTS_PERCENTILES), dtype=np.float32)
    out[:, :N_INPUTS_NEIGHBOURHOOD] = x[:, :N_INPUTS_NEIGHBOURHOOD]
    bounds = run_bounds(variant)
    out[:, N_INPUTS_NEIGHBOURHOOD:] = np.repeat(map_percentiles(x, bounds), np.diff(bounds), axis=0)
    return {**rows, "x": out}


def map_percentiles(x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(maps, N_PERCENTILES) float32: :func:`cryores.spectral.percentile_inputs` of each map's
    rows, the maps being the runs between ``bounds`` (:func:`run_bounds`); a map's has-reference
    flag is the same in all its rows."""
    return np.array([percentile_inputs(band_percentiles(x[start:stop, :N_BANDS]), bool(x[start, HAS_REFERENCE] > 0.5))
                     for start, stop in zip(bounds[:-1], bounds[1:])], dtype=np.float32).reshape(-1, N_PERCENTILES)


@dataclass(frozen=True, eq=False)
class PercentileRows:
    """Rows of the ``"percentiles"`` layout held as each row's own inputs (the neighbourhood
    layout's columns, float32) and each map's percentiles once, gathered when rows are taken.

    Why: the 104 percentiles are the same in every row of a map; written into every row they made
    the fit's 23 M training rows 17 GB (peak 23 GB on a 24 GB machine), held once per map 7 GB.
    :meth:`take` returns the very rows :func:`with_percentiles` writes (same values, dtype and
    order), so a fit reads the same batches either way."""

    own: np.ndarray  # (rows, N_INPUTS_NEIGHBOURHOOD) float32
    per_map: np.ndarray  # (maps, N_PERCENTILES) float32
    map_of: np.ndarray  # (rows,) int64: which map (run of rows) each row was drawn from

    def __post_init__(self) -> None:
        if (self.own.shape[1] != N_INPUTS_NEIGHBOURHOOD or self.per_map.shape[1] != N_PERCENTILES
                or len(self.map_of) != len(self.own)):
            raise ValueError(f"PercentileRows: own {self.own.shape}, per_map {self.per_map.shape}, "
                             f"map_of {self.map_of.shape} do not fit together")

    def __len__(self) -> int:
        return len(self.own)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.own), N_INPUTS_PERCENTILES

    def take(self, index: slice | np.ndarray) -> np.ndarray:
        """The full rows at ``index`` (a slice or row numbers), float32."""
        return np.concatenate([self.own[index], self.per_map[self.map_of[index]]], axis=1)


def take_rows(x: np.ndarray | PercentileRows, index: slice | np.ndarray) -> np.ndarray:
    """Rows ``index`` of a fit's inputs as float32, whether held whole or as :class:`PercentileRows`."""
    return x.take(index) if isinstance(x, PercentileRows) else x[index].astype(np.float32, copy=False)


def run_bounds(variant: np.ndarray) -> np.ndarray:
    """Where each run of equal ``variant`` (one map's rows) starts, and the end: the maps
    :func:`with_percentiles` takes percentiles over."""
    return np.concatenate([[0], np.flatnonzero(np.diff(variant)) + 1, [len(variant)]])


def load_percentile_rows(folders: list[Path], split: str) -> dict:
    """:func:`cryores_train.rows.load_rows` for the ``"percentiles"`` layout: ``"x"`` is a
    :class:`PercentileRows` (each map's percentiles computed over its rows, as
    :func:`with_percentiles` does, file by file as they load). Rows narrower than the
    neighbourhood layout are refused, naming their folders."""
    per_file: list[np.ndarray] = []  # load_rows transforms each file once, in load order

    def own_inputs(x: np.ndarray, variant: np.ndarray) -> np.ndarray:
        x = narrowed_rows({"x": x}, "neighbourhood", folders)["x"]
        per_file.append(map_percentiles(x, run_bounds(variant)))
        return x.astype(np.float32)

    rows = load_rows(folders, split, True, own_inputs)
    # the same runs over all files: each file's variant numbers start above the previous file's
    bounds = run_bounds(rows["variant"])
    map_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    table = np.concatenate(per_file)
    return {**rows, "x": PercentileRows(rows["x"], table, map_of)}


def simulated_row_folders(config: dict) -> list[Path]:
    """The simulated families' row folders a fit reads: ``dataset`` (``rows/bfactor``), then any
    ``more_rows`` (for example ``rows/cliff``); each folder is named after its family."""
    return [Path(config["dataset"])] + [Path(folder) for folder in config.get("more_rows", [])]


def _train(config: dict, context: distributed.Context, progress: bool, max_steps: int | None) -> Path:
    if config.get("percentile_jitter") and config.get("inputs") != "percentiles":
        # refused here, not at the first step after minutes of loading rows
        raise CryoResError(f"percentile_jitter needs \"inputs\": \"percentiles\" (the config has "
                           f"{json.dumps(config.get('inputs'))})")
    global_batch = config.get("global_batch_size") or config["batch_size"] * context.world_size
    if global_batch % context.world_size:
        raise CryoResError(f"global_batch_size {global_batch} is not divisible by {context.world_size} ranks")
    shard = slice(context.rank * global_batch // context.world_size,
                  (context.rank + 1) * global_batch // context.world_size)
    output = Path(config["output"])
    if context.is_rank0:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    folders = simulated_row_folders(config) + ([Path(config["real_rows"])] if config.get("real_rows") else [])
    derived = config.get("inputs") == "percentiles"  # needs each row's map (PercentileRows)
    train_rows, val_rows = (load_percentile_rows(folders, split) if derived else load_rows(folders, split)
                            for split in ("train", "val"))
    if train_rows["x"].shape[1] != val_rows["x"].shape[1]:
        raise CryoResError(f"rows in {', '.join(map(str, folders))}: {train_rows['x'].shape[1]} inputs in training and "
                           f"{val_rows['x'].shape[1]} in validation rows (this cryores makes {N_INPUTS}); "
                           "make the rows again")
    input_layout(train_rows["x"].shape[1], f"rows in {', '.join(map(str, folders))}")  # a known width
    if config.get("inputs") and not derived:
        train_rows, val_rows = (narrowed_rows(r, config["inputs"], folders) for r in (train_rows, val_rows))
    torch.manual_seed(config["seed"])
    x_train = train_rows["x"] if derived else train_rows["x"].astype(np.float32, copy=False)
    # the float16 copy is no longer read: dropped, the peak (float32 rows and x.std's temporary)
    # stays under 24 GB with 30 M rows of 79 inputs, where holding it ran out
    train_rows = {key: value for key, value in train_rows.items() if key != "x"}
    network = SpectralNet.from_architecture(config["architecture"], x_train.shape[1])
    mean, std = input_statistics(network, x_train)
    network.feature_mean.copy_(torch.from_numpy(mean))
    network.feature_std.copy_(torch.from_numpy(np.where(std > 1e-3, std, 1.0)))
    network.target_mean.fill_(float(np.log(train_rows["y"]).mean()))
    network.to(context.device)  # before the optimiser and the checkpoint: their state follows the parameters
    optimizer = torch.optim.AdamW(network.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    rng = np.random.default_rng(config["seed"])
    checkpoint = output / "checkpoint.pt"
    step, history = 0, {"train": [], "val": []}
    earlier_seconds: float | None = 0.0  # training time of the legs before this one (None: not recorded)
    state = restore_checkpoint(checkpoint, network, optimizer, rng)
    if state is not None:
        step, history = state["step"], state["history"]
        earlier_seconds = state.get("seconds")
    distributed.barrier(context)  # every rank has read the checkpoint before rank 0 may replace it
    model = distributed.wrap(network, context)  # trains; ``network`` (unwrapped) is what is saved
    weights = _weights(train_rows["y"])
    # rng.choice(n, size, p=weights) is searchsorted(cdf, rng.random(size)) (numpy's own method, the
    # same draws); with the cdf made once, a step costs O(batch), not O(rows), and a rank looks up only its shard
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    take_batch = batch_taker(x_train, context.device)
    y_all = torch.from_numpy(np.log(train_rows["y"]).astype(np.float32)).to(context.device)
    bound_all = torch.from_numpy(train_rows["bound"]).to(context.device)
    from tqdm import tqdm

    jitter = float(config.get("percentile_jitter", 0.0))  # decades; 0: the rows as they are
    stop = min(config["steps"], max_steps) if max_steps else config["steps"]
    bar = tqdm(total=config["steps"], initial=step, unit="step", desc="fit v3",
               disable=not (progress and context.is_rank0))
    started, running = time.perf_counter(), None
    network.train()
    while step < stop:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        # the same global batch on every rank (same generator, same state); each rank takes its shard
        uniform = rng.random(global_batch)[shard]
        index = torch.from_numpy(np.searchsorted(cdf, uniform, side="right")).to(context.device)
        batch = take_batch(index)
        if jitter:
            batch = jitter_percentiles(batch, jitter, global_batch, shard)
        loss = pinball_loss(model(batch), y_all[index], bound_all[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % 50 == 0:  # the running mean is linear in the losses: its mean over ranks is the global one
            history["train"].append((step, distributed.mean(running, context)))
        if not context.is_rank0:
            bar.update()
            continue
        if step % config["validate_every"] == 0 or step == config["steps"]:
            history["val"].append((step, validate(network, val_rows)))
            bar.set_postfix(val_mae=f"{history['val'][-1][1]['mae']:.3f} Å")
        if step % config["checkpoint_every"] == 0 or step == stop:
            _save_checkpoint(checkpoint, {
                "network": network.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "history": history,
                "seconds": None if earlier_seconds is None else earlier_seconds + time.perf_counter() - started})
        bar.update()
    bar.close()
    if not context.is_rank0:  # rank 0 alone writes history, checkpoint and model
        return checkpoint if step < config["steps"] else output / "model" / "default.json"
    (output / "history.json").write_text(json.dumps(history) + "\n")
    if step < config["steps"]:
        print(f"stopped at step {step} of {config['steps']}; run again to resume")
        return checkpoint
    seconds = time.perf_counter() - started
    total = None if earlier_seconds is None else earlier_seconds + seconds
    del take_batch, x_train  # the training rows (most of the fit's memory) are not read again
    return export(network.cpu(), config, train_rows, val_rows, history, seconds, step, total)


def batch_taker(x: np.ndarray | PercentileRows, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """index -> the batch of training rows, on ``device``: rows held whole are indexed, and
    :class:`PercentileRows` gathered (each map's percentiles beside its rows' own inputs), the
    same values either way."""
    if not isinstance(x, PercentileRows):
        whole = torch.from_numpy(x).to(device)
        return lambda index: whole[index]
    own, per_map, map_of = (torch.from_numpy(a).to(device) for a in (x.own, x.per_map, x.map_of))
    return lambda index: torch.cat([own[index], per_map[map_of[index]]], dim=1)


def export(network: SpectralNet, config: dict, train_rows: dict, val_rows: dict, history: dict, seconds: float,
           step: int, total_seconds: float | None = None) -> Path:
    """Write the weights and the card. ``seconds``: this leg's training time; ``total_seconds``:
    all legs' (None when an older checkpoint did not record it)."""
    scale = calibrate_interval(network, val_rows)
    layout = input_layout(network.n_features, "network")
    families = [folder.name for folder in simulated_row_folders(config)]  # each folder is named after its family
    card = {
        "name": config["name"],
        "voxel_size": FEATURE_VOXEL_A,
        "patch_size": 0,
        "normalisation": "spectral",
        "target": {"transform": "log", "mean": 0.0, "std": 1.0},
        "resolution_range": config["resolution_range"],
        "weights": f"{config['name']}.pt",
        "parameters": sum(p.numel() for p in network.parameters()),
        "features": {"bands_A": list(BANDS_A), "n_features": N_FEATURES,
                     "n_context": N_CONTEXT if layout != "features" else 0, "layout": layout,
                     "module": "cryores.spectral"},
        "uncertainty": {"kind": "5-95 % quantiles, calibrated on validation rows", "interval_scale": scale},
        # what cryores.cautions compares a prediction with (real-map rows are 1.1-2.6 Å/px, inside it)
        "trained_on": trained_ranges(families),
        "training": {
            "command": "make model  (cryores-train rows -> fit -> evaluate -> install; see Makefile)",
            "config": card_config(config),
            "data": "simulated maps (BM5 + the PDB entries of training/structures/extra and /more, famil"
                    + ("ies " if len(families) > 1 else "y ") + spoken_list([f"'{name}'" for name in families])
                    + "), variants raw/deposit/lowpass/noisier/sharp; family 'lowpass' held out"
                    + ("; real EMDB maps cut at X as lower bounds (training/real_maps)" if config.get("real_rows")
                       else ""),
            "rows": {"train": int(len(train_rows["y"])), "val": int(len(val_rows["y"]))},
            "samples": {split: int(np.unique(rows["sample"]).size)
                        for split, rows in (("train", train_rows), ("val", val_rows))},
            "steps": step,
            "cpu_seconds_last_leg": round(seconds),
            "training_seconds_all_legs": None if total_seconds is None else round(total_seconds),
            "final_validation": history["val"][-1][1] if history["val"] else None,
        },
        "metrics": {},
    }
    folder = Path(config["output"]) / "model"
    folder.mkdir(parents=True, exist_ok=True)
    card_path = save_model(network.eval(), card, folder / "default.json")
    if config.get("calibration"):
        write_calibration(card_path, config)
    return card_path


def card_config(config: dict) -> dict:
    """The training config as a card records it: without this machine's row and output paths."""
    return {k: v for k, v in config.items() if k not in ("dataset", "output", "real_rows", "more_rows")}


def spoken_list(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def trained_ranges(families: list[str]) -> dict[str, list[float]]:
    """The voxel sizes and local resolutions the simulated rows span (what :mod:`cryores.cautions`
    compares a prediction with): the v3 ranges, widened by coarse-map rows (a ``*-coarse*`` folder,
    ``cryores-train rows --coarse``) and, in voxel size, by cropped maps (a ``*-cropped`` folder,
    ``--cropped``, cropped at most to :data:`~cryores_train.variants.CROP_MAX_VOXEL_A`) where the fit
    reads some."""
    voxel, resolution = list(V3_VOXEL_A), list(V3_RESOLUTION_A)
    if any("-coarse" in name for name in families):
        voxel[1], resolution[1] = max(voxel[1], V3_COARSE_VOXEL_A[1]), max(resolution[1], V3_COARSE_RESOLUTION_A[1])
    if any(name.endswith("-cropped") for name in families):
        voxel[1] = max(voxel[1], CROP_MAX_VOXEL_A)
    return {"voxel_size_A": voxel, "resolution_A": resolution}


def write_calibration(card_path: Path, config: dict) -> tuple[float, dict[str, float]]:
    """Solve the median shifts and the interval scale on whole validation maps
    (:func:`calibrate_on_maps`) and write them into the card at ``card_path``: the last step of a
    fit, and ``cryores-train calibrate`` alone (same weights, calibration redone)."""
    scale, shifts = calibrate_on_maps(card_path, config)
    card = json.loads(card_path.read_text())
    card.setdefault("training", {}).setdefault("config", {})["calibration"] = config["calibration"]
    card["calibration"] = {"kind": "shift of ln(median) that centres ln(predicted / true) on whole validation "
                                   "maps (raw and deposited-style, each map weighing the same) with the evidence "
                                   "floor in place; subtracted at inference. One per path: maps whose solvent "
                                   "gives a noise reference and maps without (median_log_shift: all maps pooled, "
                                   "what a cryores that reads one shift applies)",
                           "median_log_shift": shifts["pooled"],
                           "median_log_shift_by_reference": {"with": shifts["with_reference"],
                                                             "without": shifts["without_reference"]}}
    card["uncertainty"] = {"kind": "5-95 % quantiles; interval scaled to hold 90 % of the voxels of whole "
                                   "validation maps (raw and deposited-style, voxels pooled)",
                           "interval_scale": scale}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return scale, shifts


def map_weighted_quantile(values: np.ndarray, map_sizes: list[int], q: float) -> float:
    """The ``q`` quantile of ``values`` (the voxels of several maps, concatenated) where each map
    weighs the same, whatever its voxel count.

    Pooled over voxels, a quantile is set by the largest maps: on the 120 validation maps the
    first shipped calibration used, one sample's two maps (1M4X) held 7.5 % of the voxels and only
    29.5 % and 65 % of theirs fell in the interval; pooled, the scale came out 1.12, map-weighted
    1.07. (``np.quantile`` takes weights from numpy 2.0, which training requires.) Used for the
    median shift; the interval scale is pooled again (:func:`calibrate_on_maps`), as its promise
    is per voxel, so large maps weigh more there.
    """
    weights = np.concatenate([np.full(n, 1.0 / n) for n in map_sizes])
    return float(np.quantile(values, q, weights=weights, method="inverted_cdf"))


@dataclass
class CalibrationMap:
    """One whole validation map's labelled voxels as :func:`calibrate_on_maps` reads them: the
    network's median before any shift (Å, unfloored), the evidence floor (Å), sigma before any
    shift or scale (Å, the 5-95 % half-width / 1.645), the true resolution (Å), the Nyquist limit
    (Å); which structure and variant it is, and whether its solvent gave a noise reference."""

    median: np.ndarray
    floor: np.ndarray
    sigma: np.ndarray
    label: np.ndarray
    nyquist: float
    structure: str
    variant: int
    has_reference: bool


def calibration_maps(card_path: Path, config: dict) -> tuple[list[CalibrationMap], float]:
    """(the validation maps of the config's ``calibration``, the model's ceiling in Å), predicted
    the way users get predictions (features on the whole map, smoothing, back to the input grid):
    ``maps`` structures (all validation structures if it is absent), ``per_structure`` samples of
    each, and each sample's raw and deposited-style variants. The network runs once per map; the
    shift and scale are solved on these arrays (:func:`solve_calibration`)."""
    from cryores.masking import mask_from_array
    from cryores.model_card import load_model
    from cryores.resample import linear_resample
    from cryores.spectral_inference import spectral_parts

    from .rows import MIRROR_CUT_FACES, scored_maps, structures_in_splits

    model = load_model(card_path)
    calibration = config["calibration"]
    base = Path(config["dataset"]).resolve().parents[3]  # training/ (dataset is training/data/v3/rows/<family>)
    groups, ids = structures_in_splits([base / root for root in calibration["structures"]], ("val",),
                                       calibration.get("maps"))
    maps = []
    for sid, index in [(sid, i) for i in range(int(calibration.get("per_structure", 1))) for sid in ids]:
        _, _, voxel, variants = scored_maps(sid, groups[sid], "bfactor", index, config["seed"], salt=3)
        for number, variant in enumerate(variants):
            region = variant.label > 0
            parts = spectral_parts(variant.density, (voxel,) * 3, mask_from_array(region, region.shape), model,
                                   torch.device("cpu"), mirror_cut_faces=MIRROR_CUT_FACES)
            median, sigma = parts.calibrated(0.0, 1.0, floored=False)  # floored by the solver, at each shift
            on_grid = [median, parts.filled_floor(), sigma]
            if median.shape != region.shape:
                on_grid = [linear_resample(a.astype(np.float32), region.shape) for a in on_grid]
            maps.append(CalibrationMap(on_grid[0][region], on_grid[1][region], on_grid[2][region],
                                       variant.label[region], 2.0 * voxel, sid, number, parts.has_reference))
    return maps, float(model.max_resolution)


def calibrate_on_maps(card_path: Path, config: dict) -> tuple[float, dict[str, float]]:
    """(interval scale, median shifts) from whole maps of validation structures
    (:func:`calibration_maps`, solved by :func:`solve_calibration`)."""
    return solve_calibration(*calibration_maps(card_path, config))


# a path (with or without a noise reference) gets its own shift from at least this many maps; with
# fewer its maps take the pooled one (a median over a handful of maps is mostly their own offsets)
MIN_MAPS_PER_SHIFT = 10


def centring_shift(maps: list[CalibrationMap], ceiling: float) -> float:
    """The shift s that makes the map-weighted median (:func:`map_weighted_quantile`) of
    ln(max(median / e^s, floor) / true) over ``maps``' labelled voxels 0 (bisection)."""
    sizes = [len(m.label) for m in maps]
    median, floor, label = (np.concatenate([getattr(m, key) for m in maps]) for key in ("median", "floor", "label"))
    nyquist = np.concatenate([np.full(len(m.label), m.nyquist, np.float32) for m in maps])
    log_label = np.log(label)
    below, above = -3.0, 3.0  # median(ln(predicted / true)) falls as the shift grows
    for _ in range(40):
        shift = 0.5 * (below + above)
        if map_weighted_quantile(np.log(predicted_at(median, floor, nyquist, ceiling, shift)) - log_label,
                                 sizes, 0.5) > 0:
            below = shift
        else:
            above = shift
    return 0.5 * (below + above)


def predicted_at(median: np.ndarray, floor: np.ndarray, nyquist: np.ndarray | float, ceiling: float,
                 shift: float) -> np.ndarray:
    """What ``cryores.predict`` reports for an unshifted ``median`` at ``shift``: divided by
    e^shift, never finer than the floor, clipped to [Nyquist, ceiling]."""
    return np.clip(np.maximum(median * np.float32(np.exp(-shift)), floor), nyquist, ceiling)


def solve_calibration(maps: list[CalibrationMap], ceiling: float) -> tuple[float, dict[str, float]]:
    """(interval scale, median shifts) that centre and size the errors of ``maps``.

    Rows miss what inference adds, above all the evidence floor, which only ever coarsens: on maps
    it binds on many voxels, so the median of ln(predicted / true) measured with the floor in place
    is not the shift that centres the errors once applied under it. Each shift is solved by
    :func:`centring_shift`: ``"pooled"`` over all maps (what a card read as one shift holds), and
    ``"with_reference"`` / ``"without_reference"`` over the maps whose solvent did / did not give
    a noise reference. The two paths read differently (the percentiles stand in for the noise
    spectrum; on the shipped weights the shifts are 0.045 and 0.005): one shift apiece cut the
    held-out MAE from 0.708 to 0.690 Å in a cross-validation over validation maps, though on the
    test split the MAE stayed 0.554 Å (training/README). A path with fewer than :data:`MIN_MAPS_PER_SHIFT` maps
    takes the pooled shift. The interval scale is the factor that makes +-1.645 sigma hold 90 % of
    all labelled voxels (pooled) at each map's own shift.
    """
    shifts = {"pooled": centring_shift(maps, ceiling)}
    for key, has_reference in (("with_reference", True), ("without_reference", False)):
        group = [m for m in maps if m.has_reference == has_reference]
        shifts[key] = centring_shift(group, ceiling) if len(group) >= MIN_MAPS_PER_SHIFT else shifts["pooled"]
    ratios = []
    for m in maps:
        shift = shifts["with_reference" if m.has_reference else "without_reference"]
        shifted_sigma = m.sigma * np.float32(np.exp(-shift))
        error = np.abs(predicted_at(m.median, m.floor, m.nyquist, ceiling, shift) - m.label)
        ratios.append(error / np.maximum(Z90 * shifted_sigma, 1e-6))
    # the interval's promise is per voxel ("holds 90 % of the voxels"), so its scale is a pooled
    # quantile; map-weighted (as the shift is) it held 95.1 % of the test split's voxels while
    # each map's own share averaged 92.7 % (training/README, "neighbourhood input with cliff")
    return float(np.quantile(np.concatenate(ratios), 0.9)), {key: float(value) for key, value in shifts.items()}
