"""``cryores-train fit``: train the cryores U-Net on an HDF5 patch dataset, resumably, on a CPU.

* Target: log(resolution), standardised by the training labels' mean and std (stored in the
  model card, so inference maps outputs back to Å). Loss: Huber on that target over labelled
  voxels only (label > 0 inside the mask).
* Augmentations that keep the physics: random crops of the stored patches (translation;
  smaller crops also make CPU steps cheaper), the 48 rotations/reflections of the cube (a map's
  local resolution does not depend on orientation or hand) and a small jitter of the
  normalisation statistics (masks differ between users). No added noise: more noise would
  mean a worse resolution, so it would falsify the label.
* AdamW, linear warm-up then cosine decay. A checkpoint (weights, optimiser, schedule, random
  states, history) is written atomically every ``checkpoint_every`` steps; a run resumes from it.
* Every ``validate_every`` steps: masked MAE in Å on a fixed set of validation patches; the
  learning curves go to ``curves.png``. At the end the weights and a model card are exported
  with :func:`cryores.model_card.save_model`.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.nn import functional

from cryores.errors import CryoResError
from cryores.model_card import save_model
from cryores.unet import UNet3D, count_parameters


def load_config(path: Path) -> dict:
    """Read a JSON training config; relative paths in it (``dataset``, ``more_rows``, ``real_rows``,
    ``output``) are relative to the config's folder's parent."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise CryoResError(f"config {path}: unreadable ({error})") from None
    base = Path(path).resolve().parent.parent
    def resolved(value: str) -> str:
        return str((base / value).resolve()) if not os.path.isabs(value) else value

    for key in ("dataset", "output", "real_rows"):
        if key in config:
            config[key] = resolved(config[key])
    if "more_rows" in config:  # further simulated families' row folders (cryores-v3)
        if not isinstance(config["more_rows"], list) or not all(isinstance(f, str) for f in config["more_rows"]):
            raise CryoResError(f"config {path}: more_rows must be a list of folders")
        config["more_rows"] = [resolved(folder) for folder in config["more_rows"]]
    return config


def model_card_path(config: dict) -> Path:
    """Where a fit writes its model card (``<output>/model/default.json``): the card that
    ``evaluate``, ``evaluate-v3`` and ``calibrate`` read when not given one."""
    return Path(config["output"]) / "model" / "default.json"


class Patches:
    """Random access to one split of the HDF5 dataset, normalised like inference."""

    def __init__(self, path: str, split: str):
        self.file = h5py.File(path, "r")
        if split not in self.file or self.file[split]["density"].shape[0] == 0:
            raise CryoResError(f"dataset {path}: split {split!r} is empty")
        self.group = self.file[split]
        self.size = self.group["density"].shape[0]
        self.norm_mean = self.group["norm_mean"][()]
        self.norm_std = self.group["norm_std"][()]

    def get(self, index: int, jitter: float = 0.0, rng: np.random.Generator | None = None):
        density = self.group["density"][index]
        mean, std = float(self.norm_mean[index]), float(self.norm_std[index])
        if jitter and rng is not None:
            mean += jitter * std * rng.standard_normal()
            std *= math.exp(jitter * rng.standard_normal())
        x = (density - mean) / std
        return x.astype(np.float32), self.group["label"][index], self.group["mask"][index].astype(bool)


def label_statistics(patches: Patches, max_patches: int = 400) -> tuple[float, float]:
    """Mean and std of log(resolution) over labelled voxels of (up to) ``max_patches`` patches."""
    values = []
    for i in np.linspace(0, patches.size - 1, min(max_patches, patches.size)).astype(int):
        label = patches.group["label"][i]
        values.append(np.log(label[label > 0]))
    values = np.concatenate(values)
    return float(values.mean()), float(values.std())


def random_orientation(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random axis permutation and flips (48 cube symmetries) applied to every array."""
    order = rng.permutation(3)
    flips = [axis for axis in range(3) if rng.random() < 0.5]
    out = []
    for a in arrays:
        a = np.transpose(a, order)
        if flips:
            a = np.flip(a, axis=flips)
        out.append(np.ascontiguousarray(a))
    return out


def random_crop(arrays: list[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random ``size``^3 window of every array (translation augmentation, cheaper steps)."""
    start = [int(rng.integers(0, n - size + 1)) for n in arrays[0].shape]
    window = tuple(slice(s, s + size) for s in start)
    return [a[window] for a in arrays]


def make_batch(patches: Patches, indices, rng, augment: dict, mean: float, std: float):
    xs, ts, ms = [], [], []
    for i in indices:
        x, label, mask = patches.get(int(i), augment.get("norm_jitter", 0.0) if rng is not None else 0.0, rng)
        if rng is not None and augment.get("crop"):
            x, label, mask = random_crop([x, label, mask], int(augment["crop"]), rng)
        if rng is not None and augment.get("rotate", True):
            x, label, mask = random_orientation([x, label, mask], rng)
        valid = mask & (label > 0)
        target = np.where(valid, (np.log(np.maximum(label, 1e-3)) - mean) / std, 0.0)
        xs.append(x), ts.append(target.astype(np.float32)), ms.append(valid)
    return (torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ts)[:, None]),
            torch.from_numpy(np.stack(ms)[:, None]))


def masked_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str,
                delta: float) -> torch.Tensor:
    if not valid.any():
        return prediction.sum() * 0.0
    p, t = prediction[valid], target[valid]
    if kind == "huber":
        return functional.huber_loss(p, t, delta=delta)
    return functional.l1_loss(p, t)


def learning_rate(step: int, config: dict) -> float:
    warm, total, peak = config["warmup_steps"], config["steps"], config["learning_rate"]
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def validation_mae(network, patches: Patches, indices, mean: float, std: float) -> float:
    """Masked MAE in Å over the given validation patches (eval mode, no augmentation)."""
    network.eval()
    errors, counts = 0.0, 0
    for start in range(0, len(indices), 4):
        x, t, valid = make_batch(patches, indices[start:start + 4], None, {}, mean, std)
        predicted = torch.exp(network(x) * std + mean)
        truth = torch.exp(t * std + mean)
        errors += float((predicted - truth).abs()[valid].sum())
        counts += int(valid.sum())
    network.train()
    return errors / max(counts, 1)


def restore_checkpoint(path: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       rng: np.random.Generator) -> dict | None:
    """Load a checkpoint's weights, optimiser and random states in place; its dict (None if absent)."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    network.load_state_dict(state["network"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps, losses = zip(*history["train"]) if history["train"] else ((), ())
    axes[0].plot(steps, losses, lw=0.8)
    axes[0].set(xlabel="step", ylabel="training loss (Huber, log-resolution)", yscale="log")
    if history["val"]:
        vs, maes = zip(*history["val"])
        axes[1].plot(vs, maes, "o-")
    axes[1].set(xlabel="step", ylabel="validation MAE (Å)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(config: dict, progress: bool = True, max_steps: int | None = None, export_now: bool = False) -> Path:
    """Run (or resume) training as configured; returns the exported model card path.

    ``max_steps`` stops early (after a checkpoint) without finishing the schedule, e.g. to
    spread a run over several sessions. ``export_now`` exports the checkpoint as it is (the
    card records the step it stopped at).
    """
    output = Path(config["output"])
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    train_set, val_set = Patches(config["dataset"], "train"), Patches(config["dataset"], "val")
    checkpoint_path = output / "checkpoint.pt"
    torch.manual_seed(config["seed"])
    arch = config["architecture"]
    network = UNet3D(tuple(arch["channels"]), dropout=arch["dropout"], output_stride=arch["output_stride"],
                     frontend=arch.get("frontend"))
    optimizer = torch.optim.AdamW(network.parameters(), lr=config["learning_rate"],
                                  weight_decay=config["weight_decay"])
    rng = np.random.default_rng(config["seed"])
    state = restore_checkpoint(checkpoint_path, network, optimizer, rng)
    if state is not None:
        step, history, mean, std = state["step"], state["history"], state["mean"], state["std"]
    else:
        step, history = 0, {"train": [], "val": []}
        mean, std = label_statistics(train_set)
    val_indices = np.linspace(0, val_set.size - 1, min(config["validation_patches"], val_set.size)).astype(int)

    from tqdm import tqdm

    stop = min(config["steps"], max_steps) if max_steps else config["steps"]
    if export_now:
        stop = step
    bar = tqdm(total=config["steps"], initial=step, unit="step", desc="fit", disable=not progress)
    network.train()
    running = None
    started = time.perf_counter()
    while step < stop:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        indices = rng.integers(0, train_set.size, config["batch_size"])
        x, t, valid = make_batch(train_set, indices, rng, config["augment"], mean, std)
        loss = masked_loss(network(x), t, valid, config["loss"], config["huber_delta"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        history["train"].append((step, running))
        if step % config["validate_every"] == 0 or step == config["steps"]:
            history["val"].append((step, validation_mae(network, val_set, val_indices, mean, std)))
            bar.set_postfix(val_mae=f"{history['val'][-1][1]:.3f} Å")
            plot_curves(history, output / "curves.png")
        if step % config["checkpoint_every"] == 0 or step == stop:
            _save_checkpoint(checkpoint_path, {
                "network": network.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "step": step, "history": history, "mean": mean, "std": std})
        bar.update()
    bar.close()
    (output / "history.json").write_text(json.dumps(history) + "\n")
    if step < config["steps"] and not export_now:
        print(f"stopped at step {step} of {config['steps']}; run again to resume")
        return checkpoint_path
    return export(network, config, mean, std, train_set, history, time.perf_counter() - started, step)


def export(network: UNet3D, config: dict, mean: float, std: float, train_set: Patches, history: dict,
           seconds: float, step: int) -> Path:
    """Write weights + model card into ``<output>/model/``."""
    attrs = dict(train_set.file.attrs)
    resampled_to = float(attrs.get("resample_to", float("nan")))
    voxel = resampled_to if math.isfinite(resampled_to) else float(np.median(train_set.group["voxel_size"][()]))
    structures = {s: [str(x) for x in train_set.file[s].attrs.get("structures", [])] for s in ("train", "val", "test")}
    card = {
        "name": config["name"],
        "voxel_size": voxel,
        "patch_size": config["inference"]["patch_size"],
        "overlap": config["inference"]["overlap"],
        "normalisation": "masked-zscore",
        "target": {"transform": "log", "mean": mean, "std": std},
        "resolution_range": config["resolution_range"],
        "weights": f"{config['name']}.pt",
        "parameters": count_parameters(network),
        "training": {
            "command": "make model  (cryores-train simulate -> dataset -> fit -> evaluate -> install; see Makefile)",
            "config": {k: v for k, v in config.items() if k not in ("dataset", "output")},
            "data": "simulated maps from BM5 complexes (cryores-train simulate), designed-truth labels",
            "patches": {s: int(train_set.file[s]["density"].shape[0]) for s in ("train", "val", "test")},
            "structures": {s: len(v) for s, v in structures.items()},
            "test_structures": structures["test"],
            "steps": step,
            "scheduled_steps": config["steps"],
            "cpu_seconds_last_leg": round(seconds),
            "final_validation_mae_A": history["val"][-1][1] if history["val"] else None,
        },
        "metrics": {},
    }
    folder = Path(config["output"]) / "model"
    folder.mkdir(parents=True, exist_ok=True)
    return save_model(network.eval(), card, folder / "default.json")


def register(subparsers) -> None:
    """Add the ``fit`` sub-command."""
    p = subparsers.add_parser("fit", help="train the U-Net on an HDF5 patch dataset (resumable)",
                              description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, help="training config JSON (e.g. training/configs/v1.json)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total (resume later)")
    p.add_argument("--export-now", action="store_true", help="export the current checkpoint without training")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run)
    c = subparsers.add_parser("calibrate", help="redo a v3 model's median shift and interval on validation maps",
                              description="Solve a v3 card's median shift and interval scale again on whole "
                                          "validation maps (the config's calibration), as a fit does at its end, "
                                          "and write them into the card; the weights are not touched.")
    c.add_argument("config", type=Path, help="the v3 training config (e.g. training/configs/v3.json)")
    c.add_argument("--card", type=Path, help="the card to recalibrate (default: the config's output/model)")
    c.set_defaults(run=_run_calibrate)


def _run_calibrate(args) -> int:
    from .fit_spectral import write_calibration

    config = load_config(args.config)
    if config.get("kind") != "spectral" or not config.get("calibration"):
        raise CryoResError(f"config {args.config}: not a v3 (spectral) config with a calibration")
    card = args.card or model_card_path(config)
    if not card.is_file():
        raise CryoResError(f"{card}: no such model card")
    scale, shifts = write_calibration(card, config)
    print(f"median shift {shifts['with_reference']:.4f} with a noise reference, {shifts['without_reference']:.4f} "
          f"without ({shifts['pooled']:.4f} pooled), interval scale {scale:.3f} -> {card}")
    return 0


def _run(args) -> int:
    config = load_config(args.config)
    if config.get("kind") == "spectral":  # cryores-v3: rows -> SpectralNet, or one per seed, joined
        from .ensemble import fit_members
        from .fit_spectral import train as train_spectral

        fit_spectral = fit_members if config.get("members") else train_spectral
        card = fit_spectral(config, progress=not args.quiet, max_steps=args.max_steps)
        print(f"-> {card}")
        return 0
    card = train(config, progress=not args.quiet, max_steps=args.max_steps, export_now=args.export_now)
    print(f"-> {card}")
    return 0
