"""``cryores-train label``: label finished sample folders with local FSC or the ResMap-style labeler.

Writes ``localfsc.mrc`` or ``resmap.mrc`` (Å inside the mask, 0 elsewhere: the label
convention of training/README.md) beside each sample's maps, with the sample's own mask, and
records the labeller's settings and runtime in ``labels.json``. Finished labels are skipped
unless ``--force``; each label file is written atomically, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cryores.errors import CryoResError
from cryores.localfsc import local_fsc
from cryores.mrc_io import read_map, write_maps

METHODS = ("localfsc", "resmap")


def finished_samples(root: Path) -> list[Path]:
    """Sample folders under ``root`` whose params.json exists (the simulator writes it last)."""
    root = Path(root)
    if not root.is_dir():
        raise CryoResError(f"samples {root}: no such folder")
    return sorted(p.parent for p in root.glob("*/params.json"))


def label_sample(folder: Path, method: str, *, window: float = 30.0, force: bool = False) -> float | None:
    """Write ``<method>.mrc`` in one sample folder; returns the seconds it took (None if skipped)."""
    output = folder / f"{method}.mrc"
    if output.exists() and not force:
        return None
    half1 = read_map(folder / "half1.mrc", role="half map 1")
    half2 = read_map(folder / "half2.mrc", role="half map 2")
    mask = read_map(folder / "mask.mrc", role="mask", voxel_size=min(half1.voxel_size)).data > 0.5
    start = time.perf_counter()
    if method == "localfsc":
        result = local_fsc(half1.data, half2.data, half1.voxel_size, mask, window=window).resolution
        settings = {"window_A": window}
    elif method == "resmap":
        from .resmap import resmap_local_resolution

        average = 0.5 * (half1.data + half2.data)
        result = resmap_local_resolution(average, half1.voxel_size, mask, half_maps=(half1.data, half2.data))
        settings = {}
    else:
        raise CryoResError(f"unknown labelling method {method!r}; use one of {', '.join(METHODS)}")
    seconds = time.perf_counter() - start
    result = np.where(mask, result, 0.0).astype(np.float32)
    write_maps([(output, result, f"cryores-train label {method}")], half1, force=True)
    record = folder / "labels.json"
    labels = json.loads(record.read_text()) if record.exists() else {}
    labels[method] = {**settings, "seconds": round(seconds, 2)}
    record.write_text(json.dumps(labels, indent=1) + "\n")
    return seconds


def register(subparsers) -> None:
    """Add the ``label`` sub-command."""
    p = subparsers.add_parser("label", help="label sample folders by local FSC or the ResMap-style labeler",
                              description=__doc__.splitlines()[0])
    p.add_argument("samples", type=Path, help="folder of sample folders (from cryores-train simulate)")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--window", type=float, default=30.0, help="local FSC window diameter in Å (default 30)")
    p.add_argument("--force", action="store_true", help="redo existing labels")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run)


def _run(args) -> int:
    from tqdm import tqdm

    folders = finished_samples(args.samples)
    if not folders:
        raise CryoResError(f"samples {args.samples}: no finished sample folder (with params.json)")
    times = []
    for folder in tqdm(folders, unit="sample", desc=f"label {args.method}", disable=args.quiet):
        seconds = label_sample(folder, args.method, window=args.window, force=args.force)
        if seconds is not None:
            times.append(seconds)
    median = f", median {np.median(times):.1f} s per map" if times else ""
    print(f"{len(times)} labelled, {len(folders) - len(times)} already done{median}")
    return 0
