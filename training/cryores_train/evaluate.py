"""``cryores-train evaluate`` and ``install``: judge a trained model on held-out structures.

Evaluation runs whole maps of the test split (structures never seen in training) through the
real ``cryores.predict`` path and compares with the designed truth inside each sample's mask;
in the same run, half-map local FSC (and the ResMap-style labeler when available) on the same
maps. It also checks consistency of one map at 0.8/1.0/1.4/2.0 Å voxels, whether the MC-dropout
standard deviation tracks the error, and the real map EMD-5168. Results go to
``docs/evaluation.md`` (+ PNGs) and into the model card's ``metrics``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from scipy import stats

import cryores
from cryores.errors import CryoResError
from cryores.model_card import load_model, sha256_of
from cryores.mrc_io import read_map
from cryores.resample import fourier_resample, linear_resample, shape_for_voxel_size

from .fit import load_config, model_card_path
from .label import finished_samples

BINS = [(2, 3), (3, 4), (4, 5), (5, 6), (6, 8), (8, 10), (10, 12.01)]
CONSISTENCY_VOXELS = (0.8, 1.0, 1.4, 2.0)


def test_samples(samples_root: Path, test_structures: list[str], limit: int) -> list[Path]:
    test = set(test_structures)
    chosen = [f for f in finished_samples(samples_root)
              if json.loads((f / "params.json").read_text())["structure_id"] in test]
    if not chosen:
        raise CryoResError(f"no sample of a test structure under {samples_root}")
    return chosen[:limit]


def error_table(truth: np.ndarray, estimate: np.ndarray) -> dict:
    error = estimate - truth
    table = {"mae": float(np.abs(error).mean()), "median_ae": float(np.median(np.abs(error))),
             "bias": float(error.mean()), "bins": {}}
    for lo, hi in BINS:
        sel = (truth >= lo) & (truth < hi)
        if sel.sum() > 10:
            table["bins"][f"{lo}-{hi:g}"] = {"voxels": int(sel.sum()), "mae": float(np.abs(error[sel]).mean()),
                                            "bias": float(error[sel].mean())}
    return table


def evaluate(config: dict, samples_root: Path, docs: Path, limit: int = 15, card: Path | None = None,
             resmap_maps: int = 5, consistency_maps: int = 3, uncertainty_maps: int = 3) -> dict:
    """Evaluate on up to ``limit`` test maps; the slower checks use the first few of them."""
    card_path = card or model_card_path(config)
    model = load_model(card_path)
    test_structures = model.card["training"]["test_structures"]
    folders = test_samples(samples_root, test_structures, limit)
    docs.mkdir(parents=True, exist_ok=True)
    pooled = {"cryores": ([], []), "localfsc": ([], []), "resmap": ([], [])}
    per_map, seconds = [], {"cryores": [], "localfsc": [], "resmap": []}
    resmap = _resmap_function()
    for i, folder in enumerate(folders):
        density = read_map(folder / "map.mrc")
        voxel = density.voxel_size
        truth = read_map(folder / "truth.mrc").data
        mask = read_map(folder / "mask.mrc", voxel_size=1.0).data > 0.5
        halves = [read_map(folder / f"half{k}.mrc").data for k in (1, 2)]
        start = time.perf_counter()
        ours = cryores.predict(density.data, voxel, mask, model=model).resolution
        seconds["cryores"].append(time.perf_counter() - start)
        start = time.perf_counter()
        fsc = cryores.local_fsc(halves[0], halves[1], voxel, mask).resolution
        seconds["localfsc"].append(time.perf_counter() - start)
        row = {"sample": folder.name, "voxel": voxel[0], "box": density.data.shape[0],
               "truth_median": float(np.median(truth[mask]))}
        for name, estimate in (("cryores", ours), ("localfsc", fsc)):
            pooled[name][0].append(truth[mask]), pooled[name][1].append(estimate[mask])
            row[name] = _map_scores(truth[mask], estimate[mask])
        if resmap is not None and i < resmap_maps:
            start = time.perf_counter()
            rm = resmap(density.data, voxel, mask, half_maps=tuple(halves))
            seconds["resmap"].append(time.perf_counter() - start)
            assigned = mask & (rm > 0)
            pooled["resmap"][0].append(truth[assigned]), pooled["resmap"][1].append(rm[assigned])
            row["resmap"] = _map_scores(truth[assigned], rm[assigned])
        per_map.append(row)
    results = {"maps": len(folders), "test_structures": len(test_structures), "per_map": per_map,
               "seconds_median": {k: float(np.median(v)) for k, v in seconds.items() if v}}
    for name, (t, e) in pooled.items():
        if t:
            results[name] = error_table(np.concatenate(t), np.concatenate(e))
            results[name]["pearson_median"] = float(np.median([r[name]["pearson"] for r in per_map if name in r]))
            results[name]["spearman_median"] = float(np.median([r[name]["spearman"] for r in per_map if name in r]))
    results["consistency"] = consistency(model, folders[:consistency_maps])
    results["uncertainty"] = uncertainty_check(model, folders[:uncertainty_maps])
    results["emd_5168"] = real_map(model, docs)
    _write_report(results, docs, card_path)
    _store_metrics(card_path, results)
    return results


def _map_scores(truth: np.ndarray, estimate: np.ndarray) -> dict:
    return {"mae": float(np.abs(estimate - truth).mean()), "bias": float((estimate - truth).mean()),
            "pearson": float(stats.pearsonr(truth, estimate)[0]) if truth.std() > 0 and estimate.std() > 0 else 0.0,
            "spearman": float(stats.spearmanr(truth, estimate)[0]) if truth.std() > 0 and estimate.std() > 0 else 0.0}


def _resmap_function():
    try:
        from .resmap import resmap_local_resolution
    except ImportError:
        return None
    return resmap_local_resolution


def consistency(model, folders: list[Path]) -> dict:
    """Median |difference| to the 1.0 Å prediction after predicting at other voxel sizes."""
    diffs = {v: [] for v in CONSISTENCY_VOXELS if v != 1.0}
    for folder in folders:
        density = read_map(folder / "map.mrc")
        mask = read_map(folder / "mask.mrc", voxel_size=1.0).data > 0.5
        truth = read_map(folder / "truth.mrc").data
        predictions = {}
        for v in CONSISTENCY_VOXELS:
            grid = shape_for_voxel_size(density.data.shape, density.voxel_size, v)
            actual = density.data.shape[0] * density.voxel_size[0] / grid[0]
            small_mask = linear_resample(mask, grid) >= 0.5
            res = cryores.predict(fourier_resample(density.data, grid), actual, small_mask, model=model).resolution
            predictions[v] = linear_resample(res, density.data.shape)
        inner = mask & (truth > 2 * 2.0 * 1.1)  # resolvable at every tested voxel size
        for v in diffs:
            diffs[v].append(np.abs(predictions[v] - predictions[1.0])[inner])
    return {f"{v:g}": float(np.median(np.concatenate(d))) for v, d in diffs.items()}


def uncertainty_check(model, folders: list[Path], samples: int = 10) -> dict:
    """Correlation between the MC-dropout std and the absolute error, voxel-wise."""
    stds, errors = [], []
    for folder in folders:
        density = read_map(folder / "map.mrc")
        mask = read_map(folder / "mask.mrc", voxel_size=1.0).data > 0.5
        truth = read_map(folder / "truth.mrc").data
        result = cryores.predict(density.data, density.voxel_size, mask, model=model, samples=samples)
        stds.append(result.uncertainty[mask]), errors.append(np.abs(result.resolution - truth)[mask])
    std, err = np.concatenate(stds), np.concatenate(errors)
    return {"pearson": float(stats.pearsonr(std, err)[0]), "spearman": float(stats.spearmanr(std, err)[0]),
            "median_std": float(np.median(std)), "samples": samples}


def real_map(model, docs: Path) -> dict:
    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "maps" / "emd_5168.map"
    if not path.exists():
        return {}
    density = read_map(path)
    result = cryores.predict(density.data, density.voxel_size, model=model)
    from cryores.report import write_report_png

    write_report_png(docs / "emd_5168_report.png", density, result)
    s = result.summary
    return {"median": s.median, "p5": s.p5, "p95": s.p95, "mask_fraction": s.mask_fraction}


def _fmt_table(results: dict) -> list[str]:
    lines = ["| method | maps | MAE Å | median AE Å | bias Å | per-map Pearson (median) | per-map Spearman | s/map |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("cryores", "localfsc", "resmap"):
        if name in results:
            r = results[name]
            n = sum(1 for m in results["per_map"] if name in m)
            lines.append(f"| {name} | {n} | {r['mae']:.2f} | {r['median_ae']:.2f} | {r['bias']:+.2f} | "
                         f"{r['pearson_median']:.2f} | {r['spearman_median']:.2f} | "
                         f"{results['seconds_median'].get(name, float('nan')):.1f} |")
    lines += ["", "| designed resolution | " + " | ".join(f"{n} MAE (bias)" for n in ("cryores", "localfsc")
                                                          if n in results) + " |", "|---|---|---|"]
    for key in results["cryores"]["bins"]:
        cells = [f"{results[n]['bins'][key]['mae']:.2f} ({results[n]['bins'][key]['bias']:+.2f})"
                 for n in ("cryores", "localfsc") if key in results[n]["bins"]]
        lines.append(f"| {key} Å | " + " | ".join(cells) + " |")
    return lines


def _write_report(results: dict, docs: Path, card_path: Path) -> None:
    lines = ["# cryores model evaluation", "",
             f"Model card `{card_path.name}`; {results['maps']} simulated maps of "
             f"{results['test_structures']} held-out BM5 structures (test split), designed truth inside "
             "each sample's mask. Same maps for every method. Reproduce: `make model` (or "
             "`cryores-train evaluate training/configs/v2.json --samples training/data/sims --docs docs --limit 12`).",
             ""] + _fmt_table(results)
    c = results["consistency"]
    lines += ["", "Same map at other voxel sizes (median |Δ| to the 1.0 Å prediction, voxels whose truth is "
              "resolvable at 2 Å voxels): " + ", ".join(f"{k} Å: {v:.2f} Å" for k, v in c.items()) + "."]
    u = results["uncertainty"]
    lines += ["", f"MC-dropout ({u['samples']} passes): std vs |error| Pearson {u['pearson']:.2f}, "
              f"Spearman {u['spearman']:.2f}; median std {u['median_std']:.2f} Å."]
    e = results.get("emd_5168")
    if e:
        lines += ["", f"EMD-5168 (real map, 1.742 Å voxels): median {e['median']:.2f} Å, 5-95 % "
                  f"{e['p5']:.2f}-{e['p95']:.2f} Å, automatic mask {100 * e['mask_fraction']:.1f} % of the box.",
                  "", "![EMD-5168](emd_5168_report.png)"]
    (docs / "evaluation.md").write_text("\n".join(lines) + "\n")
    (docs / "evaluation.json").write_text(json.dumps(results, indent=1) + "\n")


def _store_metrics(card_path: Path, results: dict) -> None:
    card = json.loads(card_path.read_text())
    card["metrics"] = {k: results[k] for k in ("cryores", "localfsc", "resmap", "consistency", "uncertainty",
                                               "emd_5168", "maps", "seconds_median") if k in results}
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def install(card_path: Path) -> Path:
    """Copy a model card and its weights into the core package as the installed model."""
    card = json.loads(Path(card_path).read_text())
    weights = Path(card_path).parent / card["weights"]
    if sha256_of(weights) != card["sha256"]:
        raise CryoResError(f"{weights} does not match its card's sha256")
    target = Path(cryores.__file__).parent / "models"
    shutil.copy2(weights, target / card["weights"])
    shutil.copy2(card_path, target / "default.json")
    load_model(target / "default.json")  # checks it loads
    return target / "default.json"


def register(subparsers) -> None:
    """Add the ``evaluate`` and ``install`` sub-commands."""
    p = subparsers.add_parser("evaluate", help="evaluate a trained model on the test split",
                              description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path)
    p.add_argument("--samples", type=Path, required=True, help="sample folders the dataset was built from")
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--limit", type=int, default=15, help="test maps to evaluate (default 15)")
    p.add_argument("--model", type=Path, help="model card (default: <output>/model/default.json)")
    p.set_defaults(run=_run_evaluate)
    q = subparsers.add_parser("install", help="install a model card + weights into the cryores package")
    q.add_argument("card", type=Path)
    q.set_defaults(run=lambda args: print(f"installed {install(args.card)}") or 0)


def _run_evaluate(args) -> int:
    results = evaluate(load_config(args.config), args.samples, args.docs, args.limit, args.model)
    print(f"cryores MAE {results['cryores']['mae']:.2f} Å vs local FSC {results['localfsc']['mae']:.2f} Å "
          f"on {results['maps']} test maps -> {args.docs / 'evaluation.md'}")
    return 0
