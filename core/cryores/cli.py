"""The ``cryores`` command line.

Every user mistake ends with one line on stderr (``cryores: error: ...``) and a non-zero exit
status, never a traceback; SIGINT/SIGTERM stop the run without leaving output or temporary
files. Set CRYORES_DEBUG=1 to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .chimerax_script import add_chimerax_parser, run_chimerax
from .errors import CryoResError
from .predict import predict_file

SUMMARY_NAME = "cryores_batch.csv"  # cryores.batch.SUMMARY_NAME, without importing Dask's side here

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line (exit 2), like every other error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cryores", description="Local resolution of cryo-EM maps from a single map.")
    parser.add_argument("--version", action="version", version=f"cryores {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = commands.add_parser("predict", help="estimate local resolution from one map or many",
                            description="Write a local-resolution map (Å, 0 outside the mask) on the input grid. "
                                        "Several maps (or --list, --out-dir, --scheduler) run as a batch on Dask.")
    p.add_argument("map", nargs="*", metavar="MAP", help="input MRC map(s)")
    p.add_argument("-o", "--output", help="output MRC (default: <map stem>_locres.mrc beside the map); one map only")
    batch = p.add_argument_group("many maps (needs cryores[distributed]; see docs/scale.md)")
    batch.add_argument("--list", metavar="FILE", dest="map_list",
                       help="file with one map path per line (# comments and blank lines ignored)")
    batch.add_argument("--out-dir", metavar="DIR",
                       help="write every <map stem>_locres.mrc here (default: beside each map)")
    batch.add_argument("--scheduler", metavar="ADDRESS",
                       help="existing Dask scheduler (e.g. tcp://head:8786); default: a local cluster on this machine")
    batch.add_argument("--workers", type=_at_least_one, metavar="N",
                       help="local cluster: worker processes (default: one per core, at most one per map)")
    batch.add_argument("--torch-threads", type=_at_least_one, metavar="N",
                       help="torch threads per map (default: cores / workers, so workers x threads <= cores)")
    batch.add_argument("--summary", metavar="CSV",
                       help=f"summary table, one row per map (default: {SUMMARY_NAME} in --out-dir, else here)")
    p.add_argument("--half-maps", nargs=2, metavar=("HALF1", "HALF2"),
                   help="read the average of two half maps (one grid) instead of MAP; output by default beside "
                        "half map 1. Unmasked half maps give a masked or flattened map the solvent noise it lacks; "
                        "where your map was low-passed at X Å, values finer than X mean X for it")
    p.add_argument("--lowpass-cut", type=float, metavar="X",
                   help="the map was low-pass filtered at X Å, its global FSC resolution, as post-processing "
                        "does: nothing finer is left in it, so no voxel reads finer than X; with a v3 model a map "
                        "without a noise reference (masked) is also scaled so that its best-resolved fifth reads X. "
                        "Only for maps "
                        "so filtered; with --half-maps, the cut of the map you will read the values for")
    p.add_argument("--no-cut-finding", dest="find_cut", action="store_false",
                   help="do not look for the low-pass cut in the spectrum of a map without a noise reference "
                        "(masked, flattened, zoned); by default a cut found there sets the map's scale as "
                        "--lowpass-cut would")
    p.add_argument("--mask", help="mask MRC on the map's grid (> 0.5 is inside); default: automatic mask")
    p.add_argument("--uncertainty", metavar="STD_OUT",
                   help="also write the uncertainty σ (Å): v3 models: calibrated from the predicted 5-95 %% "
                        "interval; U-Net models: MC-dropout std (implies --samples 10)")
    p.add_argument("--samples", type=_positive_int, default=None,
                   help="U-Net models (cryores-v2) only: Monte-Carlo dropout passes (>= 2), the output "
                        "their mean; v3 models predict their uncertainty directly and ignore it")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--voxel-size", type=float, help="voxel size in Å, overriding the header")
    p.add_argument("--model", help="model card JSON (default: the model installed with cryores)")
    p.add_argument("--patch-size", type=int, help="patch side in model voxels (default: model card)")
    p.add_argument("--overlap", type=float, help="patch overlap fraction (default: model card, else 0.5)")
    p.add_argument("--batch-size", type=int, default=4, help="patches per forward pass (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dropout masks (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the summary line stays)")
    p.add_argument("--report", metavar="PNG", help="also draw a picture report (needs matplotlib)")
    f = commands.add_parser("localfsc", help="local resolution from two half maps (FSC = 0.143)",
                            description="Blocres-style local FSC in a soft spherical window; same output "
                                        "conventions as predict.")
    f.add_argument("half1", help="half map 1 (MRC)")
    f.add_argument("half2", help="half map 2 (MRC), same grid")
    f.add_argument("-o", "--output", help="output MRC (default: <half1 stem>_localfsc.mrc beside half map 1)")
    f.add_argument("--mask", help="mask MRC on the half maps' grid (> 0.5 is inside); default: automatic")
    f.add_argument("--window", type=float, default=30.0, help="window diameter in Å (default 30)")
    f.add_argument("--step", type=float, help="spacing of window centres in Å (default window/5)")
    f.add_argument("--whiten", choices=("halves", "noise", "none"), default="halves",
                   help="spectral flattening before the FSC (default: by the half maps' mean power)")
    f.add_argument("--voxel-size", type=float, help="voxel size in Å, overriding the headers")
    f.add_argument("--force", action="store_true", help="overwrite an existing output")
    f.add_argument("--quiet", action="store_true", help="no progress bar (the summary line stays)")
    r = commands.add_parser("report", help="draw a PNG report of a local-resolution map",
                            description="Slices with the local resolution overlaid, a histogram and the facts.")
    r.add_argument("map", help="the density map (MRC)")
    r.add_argument("locres", help="its local-resolution map (MRC, Å, 0 = outside the mask), from any tool")
    r.add_argument("-o", "--output", help="PNG (default: <locres stem>_report.png beside it)")
    r.add_argument("--uncertainty", metavar="STD", help="uncertainty map (MRC, Å), e.g. from predict --uncertainty")
    r.add_argument("--force", action="store_true", help="overwrite an existing PNG")
    lf = commands.add_parser("filter", help="low-pass filter each region at its local resolution",
                             description="Blend a ladder of low-pass filtered maps voxel by voxel so every region "
                                         "is filtered at its own local resolution; optional global B-factor.")
    lf.add_argument("map", help="the density map to filter (MRC)")
    lf.add_argument("--locres", required=True,
                    help="its local-resolution map (MRC, Å; <= 0 = no estimate), e.g. from predict or localfsc")
    lf.add_argument("-o", "--output", help="output MRC (default: <map stem>_locfilt.mrc beside the map)")
    lf.add_argument("--mask", help="mask MRC on the map's grid (> 0.5 is inside); default: voxels where locres > 0")
    lf.add_argument("--bfactor", type=float, metavar="B",
                    help="global B-factor in Å², amplitudes x exp(-B s²/4): negative sharpens (as RELION)")
    lf.add_argument("--voxel-size", type=float, help="voxel size in Å, overriding both headers")
    lf.add_argument("--force", action="store_true", help="overwrite an existing output")
    lf.add_argument("--quiet", action="store_true", help="no progress bar (the summary line stays)")
    add_chimerax_parser(commands)
    return parser


def _run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .mrc_io import read_map
    from .report import report_for_files

    output = Path(args.output) if args.output else Path(args.locres).with_name(Path(args.locres).stem + "_report.png")
    std = read_map(args.uncertainty, role="uncertainty map") if args.uncertainty else None
    path = report_for_files(read_map(args.map), read_map(args.locres, role="local-resolution map"), output,
                            uncertainty=std, force=args.force)
    print(f"report -> {path}")
    return 0


def _run_localfsc(args: argparse.Namespace) -> int:
    from .localfsc import local_fsc_file

    result, output = local_fsc_file(
        args.half1, args.half2, args.output, mask=args.mask, voxel_size=args.voxel_size, force=args.force,
        window=args.window, step=args.step, whiten=args.whiten, progress=not args.quiet)
    print(f"{result.summary.line()} -> {output}")
    return 0


def _run_filter(args: argparse.Namespace) -> int:
    from .local_filter import filter_file

    result, output = filter_file(args.map, args.locres, args.output, mask=args.mask, bfactor=args.bfactor,
                                 voxel_size=args.voxel_size, force=args.force, progress=not args.quiet)
    print(f"{result.line()} -> {output}")
    return 0


def _is_batch(args: argparse.Namespace) -> bool:
    """Several maps or any batch option: a Dask batch. One MAP alone, or one pair of half maps
    (``--half-maps``, which refuses batch options), runs in-process, as always."""
    if args.half_maps is not None:
        return False
    return (len(args.map) != 1 or args.map_list is not None or args.out_dir is not None
            or args.scheduler is not None or args.workers is not None or args.torch_threads is not None
            or args.summary is not None)


def predict_usage_error(args: argparse.Namespace) -> str | None:
    """The usage mistake in a predict command line, or None."""
    if args.lowpass_cut is not None and not (math.isfinite(args.lowpass_cut) and args.lowpass_cut > 0):
        return f"--lowpass-cut must be a finite positive number of Å, got {args.lowpass_cut}"  # upper end: predict
    if args.half_maps is not None:
        if args.map or args.map_list is not None:
            return "--half-maps HALF1 HALF2 replaces MAP: give the two half maps and no MAP or --list"
        batch = [name for name, value in (("--out-dir", args.out_dir), ("--scheduler", args.scheduler),
                                          ("--workers", args.workers), ("--torch-threads", args.torch_threads),
                                          ("--summary", args.summary)) if value is not None]
        return f"{', '.join(batch)} run(s) batches of maps; --half-maps reads one pair" if batch else None
    if not args.map and args.map_list is None:
        return "predict needs a MAP (or several, or --list FILE)"
    if not _is_batch(args):
        return None
    single = [name for name, value in (("-o/--output", args.output), ("--mask", args.mask),
                                       ("--uncertainty", args.uncertainty), ("--report", args.report))
              if value is not None]
    if single:
        return f"{', '.join(single)} name(s) one file and work with one map only; several maps use --out-dir"
    if args.scheduler is not None and args.workers is not None:
        return "--workers sizes a local cluster; with --scheduler the cluster decides"
    return None


def _run_predict_batch(args: argparse.Namespace) -> int:
    """Many maps on Dask: a progress bar counting maps, a summary CSV, exit 1 if any map failed."""
    from pathlib import Path

    from .batch import BatchOptions, MapRow, count_line, plan_outputs, read_map_list, run_batch, write_summary
    from .mrc_io import check_output_path

    if not os.environ.get("CRYORES_DEBUG"):  # Dask's warnings (e.g. a slow event loop) would break one-line errors
        import contextlib
        import logging

        with contextlib.suppress(ImportError):
            import distributed  # noqa: F401  (it sets its loggers' levels when imported: set ours after)
        for name in [*logging.root.manager.loggerDict, "distributed", "tornado"]:  # some set their own level
            if name.split(".")[0] in ("distributed", "tornado"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    maps = [Path(m) for m in args.map] + (read_map_list(args.map_list) if args.map_list is not None else [])
    pairs = plan_outputs(maps, args.out_dir)
    summary = Path(args.summary) if args.summary else Path(args.out_dir or ".") / SUMMARY_NAME
    check_output_path(summary, force=True, role="summary", protected=tuple(m for m, _ in pairs))
    options = BatchOptions(model=args.model, force=args.force, samples=args.samples, voxel_size=args.voxel_size,
                           device=args.device, patch_size=args.patch_size, overlap=args.overlap,
                           batch_size=args.batch_size, seed=args.seed, torch_threads=args.torch_threads,
                           predict_options=({} if args.lowpass_cut is None else {"lowpass_cut": args.lowpass_cut})
                           | ({} if args.find_cut else {"find_cut": False}))
    finished: dict[str, MapRow] = {}
    try:
        rows = run_batch([m for m, _ in pairs], args.out_dir, options, scheduler=args.scheduler,
                         workers=args.workers, progress=not args.quiet,
                         on_row=lambda row: finished.__setitem__(row.input, row))
    except KeyboardInterrupt:  # keep what finished in the summary; the rerun resumes from the disk
        write_summary([finished.get(str(m)) or MapRow(str(m), str(o)) for m, o in pairs], summary)
        raise
    write_summary(rows, summary)
    for row in rows:
        if not row.ok:
            print(f"cryores: error: {row.error}", file=sys.stderr)
    print(f"{count_line(rows)} -> {summary}")
    return 0 if all(row.ok for row in rows) else EXIT_ERROR


def _run_predict(args: argparse.Namespace) -> int:
    if _is_batch(args):
        return _run_predict_batch(args)
    first, second = args.half_maps if args.half_maps is not None else (args.map[0], None)
    result, output = predict_file(
        first, args.output, half_map2=second, mask=args.mask, uncertainty=args.uncertainty,
        samples=args.samples, voxel_size=args.voxel_size, force=args.force, model=args.model,
        device=args.device, patch_size=args.patch_size, overlap=args.overlap,
        batch_size=args.batch_size, seed=args.seed, progress=not args.quiet, report=args.report,
        lowpass_cut=args.lowpass_cut, find_cut=args.find_cut)
    print(f"{result.summary.line()} -> {output}")
    for caution in result.cautions:  # the output is written; these say where to read it with care
        print(f"cryores: caution: {caution}", file=sys.stderr)
    return 0


COMMANDS = {"predict": _run_predict, "localfsc": _run_localfsc, "report": _run_report,
            "filter": _run_filter, "chimerax": run_chimerax}


def _terminate(signum, frame):
    raise KeyboardInterrupt


def run_guarded(prog: str, action: Callable[[], int]) -> int:
    """Run ``action`` under the error contract shared by every cryores command line.

    CryoResError -> its message on one line, exit 1; Ctrl-C or SIGTERM -> exit 130 (atomic
    writers have removed their temporary files by then); any other exception is a bug, still
    reported on one line unless CRYORES_DEBUG is set.
    """
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(action() or 0)
    except CryoResError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no partial output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(f"{prog}: error: out of memory; crop the box or bin the map first", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # a bug: still one line unless debugging
        if os.environ.get("CRYORES_DEBUG"):
            raise
        print(f"{prog}: error: unexpected {type(error).__name__}: {error} "
              "(set CRYORES_DEBUG=1 for a traceback and please report it)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "predict" and (problem := predict_usage_error(args)):
        parser.exit(EXIT_USAGE, f"cryores predict: error: {problem}\n")
    return run_guarded("cryores", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
