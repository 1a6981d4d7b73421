"""Speed and memory of ``cryores.predict`` on the CPU, against the original research network.

Prints, for synthetic maps of 128^3 and 256^3 voxels at the model's voxel size: wall time of the
whole predict() pipeline, voxels/s, peak resident memory; the same for the original research
architecture (3-D U-Net with 64-128-256-512-1024 filters on non-overlapping 16^3 cubes, random
weights) on the same map, and the ratio. Optionally a 512^3 map for the memory target.
Each measurement runs in its own process so peak memory is its own.

    python benchmarks/predict_speed.py [--sizes 128 256] [--big 512] [--repeats 3]

cryores runs the installed model (its card's architecture, patch size and overlap) when one is
installed, else a randomly initialised network of the default architecture; speed does not
depend on the weights. Not a test: the machines are shared and noisy, so it reports medians of
repeated runs measured side by side.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ORIGINAL_CHANNELS = (64, 128, 256, 512, 1024)
ORIGINAL_CUBE = 16


def blob_map(n: int, seed: int = 0) -> np.ndarray:
    """A particle-like map: Gaussian 'atoms' filling a sphere of 60 % of the box, plus noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    volume = np.zeros((n, n, n), np.float32)
    radius = 0.3 * n
    n_atoms = int(0.1 * 4 / 3 * np.pi * radius ** 3)  # ~1 atom per 10 Å^3 at 1 Å/voxel
    points = rng.normal(size=(n_atoms, 3))
    points *= (radius * rng.uniform(0, 1, n_atoms) ** (1 / 3) / np.linalg.norm(points, axis=1))[:, None]
    idx = np.clip(np.round(points + n / 2).astype(int), 0, n - 1)
    np.add.at(volume, tuple(idx.T), 1.0)
    volume = ndimage.gaussian_filter(volume, 1.5)
    volume += rng.normal(0, 0.2 * volume.std(), volume.shape).astype(np.float32)
    return volume


def worker_cryores(n: int, patch: int, overlap: float, full_mask: bool) -> dict:
    import torch

    from cryores import load_model, predict
    from cryores.model_card import installed_card_path, save_model
    from cryores.unet import UNet3D

    density = blob_map(n)
    if installed_card_path() is not None:
        model = load_model()
    else:
        with tempfile.TemporaryDirectory() as folder:
            torch.manual_seed(0)
            card = {"name": "benchmark-random", "voxel_size": 1.0, "patch_size": patch, "overlap": overlap,
                    "normalisation": "masked-zscore", "target": {"transform": "log", "mean": 1.5, "std": 0.3},
                    "resolution_range": [1.0, 20.0]}
            model = load_model(save_model(UNet3D(), card, Path(folder) / "card.json"))
    mask = np.ones(density.shape, bool) if full_mask else None
    start = time.perf_counter()
    result = predict(density, 1.0, mask, model=model, device="cpu")
    wall = time.perf_counter() - start
    return {"wall_s": wall, "mask_fraction": result.summary.mask_fraction, "model": model.card["name"],
            "patch": model.patch_size, "overlap": model.overlap}


def whole_process(n: int) -> dict:
    """A whole ``cryores predict`` process on an MRC file of the map: start-up, read, write included."""
    import mrcfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "map.mrc"
        with mrcfile.new(path) as mrc:
            mrc.set_data(blob_map(n))
            mrc.voxel_size = 1.0
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cryores", "predict", str(path), "-o", str(Path(folder) / "o.mrc"),
                               "--quiet"], capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return {"wall_s": wall, "summary": proc.stdout.strip()}


def worker_original(n: int, max_cubes: int) -> dict:
    """The research code's scheme: every 16^3 cube, no overlap, min-max normalised, big U-Net."""
    import torch

    from cryores.unet import UNet3D

    density = blob_map(n)
    density = (density - density.min()) / (density.max() - density.min())
    torch.manual_seed(0)
    network = UNet3D(ORIGINAL_CHANNELS, dropout=0.0, output_stride=1).eval()
    c = ORIGINAL_CUBE
    corners = [(i, j, k) for i in range(0, n, c) for j in range(0, n, c) for k in range(0, n, c)]
    timed = corners[:max_cubes]
    output = np.zeros_like(density)
    start = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(timed), 8):
            batch = timed[b:b + 8]
            x = torch.from_numpy(np.stack([density[i:i + c, j:j + c, k:k + c] for i, j, k in batch])[:, None])
            y = network(x).numpy()
            for (i, j, k), cube in zip(batch, y):
                output[i:i + c, j:j + c, k:k + c] = cube[0]
    wall = (time.perf_counter() - start) * len(corners) / len(timed)
    return {"wall_s": wall, "cubes_timed": len(timed), "cubes": len(corners)}


def run_worker(kind: str, **kwargs) -> dict:
    """Run one measurement in a fresh process; add its peak resident memory."""
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, json.dumps(kwargs)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--big", type=int, default=0, help="also measure one map of this size (e.g. 512)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--overlap", type=float, default=1 / 3)
    parser.add_argument("--original-max-cubes", type=int, default=512,
                        help="cubes timed for the original network (the rest extrapolated)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        kind, kwargs = args.worker[0], json.loads(args.worker[1])
        result = {"cryores": worker_cryores, "original": worker_original}[kind](**kwargs)
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(result))
        return

    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} runs")
    print(f"{'map':>6} {'what':<28} {'wall s':>8} {'Mvoxel/s':>9} {'peak GiB':>9}  notes")
    for n in args.sizes:
        voxels = n ** 3
        ours = [run_worker("cryores", n=n, patch=args.patch, overlap=args.overlap, full_mask=False)
                for _ in range(args.repeats)]
        full = [run_worker("cryores", n=n, patch=args.patch, overlap=args.overlap, full_mask=True)
                for _ in range(args.repeats)]
        process = [whole_process(n) for _ in range(args.repeats)]
        original = run_worker("original", n=n, max_cubes=args.original_max_cubes)
        print(f"cryores model {ours[0]['model']}, patch {ours[0]['patch']}, overlap {ours[0]['overlap']:.3f}")
        t_ours = statistics.median(r["wall_s"] for r in ours)
        t_full = statistics.median(r["wall_s"] for r in full)
        rows = [("cryores (auto mask)", t_ours, max(r["peak_rss_gib"] for r in ours),
                 f"mask {100 * ours[0]['mask_fraction']:.0f} % of box"),
                ("cryores (whole box masked)", t_full, max(r["peak_rss_gib"] for r in full), "worst case"),
                ("original 64..1024, 16^3", original["wall_s"], original["peak_rss_gib"],
                 f"{original['cubes_timed']}/{original['cubes']} cubes timed, rest extrapolated")]
        t_process = statistics.median(r["wall_s"] for r in process)
        rows.insert(0, ("cryores predict, whole process", t_process, float("nan"), "python -m cryores predict map.mrc"))
        for what, wall, peak, note in rows:
            print(f"{n:>5}³ {what:<28} {wall:>8.1f} {voxels / wall / 1e6:>9.2f} {peak:>9.2f}  {note}")
        print(f"{n:>5}³ speed-up over the original: {original['wall_s'] / t_ours:.0f}x (auto mask), "
              f"{original['wall_s'] / t_full:.0f}x (whole box), {original['wall_s'] / t_process:.0f}x (whole "
              "cryores process against the original's network time alone)")
    if args.big:
        big = run_worker("cryores", n=args.big, patch=args.patch, overlap=args.overlap, full_mask=False)
        print(f"{args.big:>5}³ cryores (auto mask): {big['wall_s']:.1f} s, peak {big['peak_rss_gib']:.2f} GiB, "
              f"mask {100 * big['mask_fraction']:.0f} % of box")


if __name__ == "__main__":
    main()
