"""Where ``cryores.predict`` spends its time, and the channels-last speed-up measured side by side.

For a synthetic particle-like map (default 256^3 at 1 Å) and a randomly initialised network of
the real architecture (training/configs/v1.json: channels 8-16-32-64, dropout 0.1, output
stride 4; patch 96, overlap 0.333), prints:

1. a stage breakdown from cProfile (mask, resampling, normalisation, patch selection, network,
   cutting/blending) with the network in the plain layout and in channels-last;
2. the heaviest torch operators of one batch of patches in both layouts (torch.profiler);
3. wall time of predict() with the optimisation off and on, interleaved in one process,
   median of ``--repeats`` runs each, their ratio, and the largest difference of the outputs.

    python benchmarks/profile_predict.py [--size 256] [--repeats 3] [--batch-size 4]

Random weights: speed does not depend on them. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_speed import blob_map  # noqa: E402

from cryores import inference, load_model, predict  # noqa: E402
from cryores.model_card import save_model  # noqa: E402
from cryores.unet import UNet3D  # noqa: E402

V1_CARD = {"name": "profile-random-v1-architecture", "voxel_size": 1.0, "patch_size": 96, "overlap": 0.333,
           "normalisation": "masked-zscore", "target": {"transform": "log", "mean": 1.8, "std": 0.05},
           "resolution_range": [2.0, 15.0]}
# (label, file name ending, function name); cumulative times from cProfile
STAGES = [("input checks", "validation.py", "check_density"),
          ("automatic mask", "masking.py", "automatic_mask"),
          ("resampling", "resample.py", "fourier_resample"),
          ("resampling back", "resample.py", "linear_resample"),
          ("normalisation", "normalise.py", "normalise"),
          ("patch inference (all)", "inference.py", "sliding_window_predict"),
          ("  patch selection", "inference.py", "_touches"),
          ("  network forward", "unet.py", "forward")]


def random_v1_model(folder: Path):
    torch.manual_seed(0)
    network = UNet3D(channels=(8, 16, 32, 64), dropout=0.1, output_stride=4)
    return load_model(save_model(network, V1_CARD, folder / "card.json"))


def set_channels_last(on: bool) -> None:
    inference.CHANNELS_LAST_ON_CPU = on


def cumulative(stats: pstats.Stats, ending: str, name: str) -> float:
    return sum(row[3] for (path, _, func), row in stats.stats.items() if path.endswith(ending) and func == name)


def stage_breakdown(density: np.ndarray, model, batch_size: int) -> tuple[dict[str, float], int]:
    """Seconds per stage of one predict() run under cProfile, and the number of patches run."""
    profiler = cProfile.Profile()
    patches = []
    start = time.perf_counter()
    profiler.runcall(predict, density, 1.0, model=model, device="cpu", batch_size=batch_size,
                     progress=lambda done, total: patches.append(total))
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    times = {label: cumulative(stats, ending, name) for label, ending, name in STAGES}
    times["  cutting, blending, copies"] = (times["patch inference (all)"] - times["  patch selection"]
                                            - times["  network forward"])
    times["other"] = total - sum(times[label] for label, _, _ in STAGES if not label.startswith(" "))
    times["total"] = total
    return times, patches[-1]


def operator_table(model, batch_size: int, channels_last: bool, rows: int = 6) -> str:
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    network = model.network.to(memory_format=layout)
    x = torch.randn(batch_size, 1, 96, 96, 96).contiguous(memory_format=layout)
    with torch.inference_mode():
        network(x)  # warm-up: oneDNN picks its kernels
        with torch.profiler.profile() as prof:
            network(x)
    model.network.to(memory_format=torch.contiguous_format)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--no-operators", action="store_true", help="skip the torch.profiler tables")
    args = parser.parse_args()

    density = blob_map(args.size)
    with tempfile.TemporaryDirectory() as folder:
        model = random_v1_model(Path(folder))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; map {args.size}^3 at 1 Å; "
          f"v1 architecture (random weights), patch 96, overlap 0.333, batch {args.batch_size}")
    predict(density[:64, :64, :64], 1.0, np.ones((64, 64, 64)), model=model, device="cpu")  # warm-up

    breakdown = {}
    for on in (False, True):
        set_channels_last(on)
        breakdown[on], patches = stage_breakdown(density, model, args.batch_size)
    print(f"\n1. stage breakdown (cProfile, one run each; {patches} patches of 96^3 outside pure solvent)")
    print(f"{'stage':<30} {'plain s':>8} {'%':>5}   {'ch-last s':>9} {'%':>5}")
    for label in breakdown[False]:
        a, b = breakdown[False][label], breakdown[True][label]
        print(f"{label:<30} {a:>8.2f} {100 * a / breakdown[False]['total']:>5.1f}   "
              f"{b:>9.2f} {100 * b / breakdown[True]['total']:>5.1f}")

    if not args.no_operators:
        for on in (False, True):
            print(f"\n2. torch operators, one batch of {args.batch_size} patches, "
                  f"{'channels-last' if on else 'plain'} layout")
            print(operator_table(model, args.batch_size, on))

    walls: dict[bool, list[float]] = {False: [], True: []}
    outputs = {}
    for _ in range(args.repeats):
        for on in (False, True):  # interleaved, so drifting machine load hits both alike
            set_channels_last(on)
            start = time.perf_counter()
            outputs[on] = predict(density, 1.0, model=model, device="cpu", batch_size=args.batch_size).resolution
            walls[on].append(time.perf_counter() - start)
    before, after = statistics.median(walls[False]), statistics.median(walls[True])
    diff = float(np.abs(outputs[True] - outputs[False]).max())
    print(f"\n3. predict() wall time, median of {args.repeats} interleaved runs")
    print(f"   plain layout   {before:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w in walls[False])})")
    print(f"   channels-last  {after:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w in walls[True])})")
    print(f"   speed-up {before / after:.2f}x; largest output difference {diff:.2e} Å "
          f"(median resolution {float(np.median(outputs[True][outputs[True] > 0])):.2f} Å)")


if __name__ == "__main__":
    main()
