"""Reading and writing MRC maps without losing their metadata.

Maps are read with mrcfile into float32 arrays in file order (sections, rows, columns). The
source header travels with the data so that every output is written on the same grid with the
same voxel size, origin, nstart, axis order and cell. Outputs are written atomically: to a
temporary file in the destination folder, then renamed, so an interrupted or failed run never
leaves a partial file and never replaces an existing one unless ``force`` is given.

What counts as a volume (:func:`volume_of`): any real-valued MRC file whose data are 3-D with
more than one section is a map, whatever its space group (ISPG) says. EMDB entries and older
programs write ISPG 0 for volumes, which mrcfile calls an image stack; ChimeraX, Chimera and
RELION open them as volumes, and so does cryores. A volume stack (ISPG 401-630) holding a single
volume is that volume. Refused, with one line: complex data, a single 2-D image, a stack of
several volumes, and a real stack of 2-D images, which MRC2014 (and mrcfile's
``set_image_stack``) mark with ISPG 0 and mz = 1, and RELION with the ``.mrcs`` suffix. Maps
are always written as volumes (ISPG 1).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import mrcfile.utils
import numpy as np

from .errors import CryoResError

# Header fields copied verbatim from the source map to every output written on its grid.
_GRID_FIELDS = ("mx", "my", "mz", "cella", "cellb", "mapc", "mapr", "maps",
                "nxstart", "nystart", "nzstart", "origin")


@dataclass
class DensityMap:
    """A 3-D map in file order with its voxel size per array axis and its source header.

    ``voxel_size`` is in Å along array axes (0, 1, 2) = (sections, rows, columns), already
    permuted from the header's X/Y/Z by the map's axis order.
    """

    data: np.ndarray
    voxel_size: tuple[float, float, float]
    header: np.recarray | None = None
    path: Path | None = None


def axis_order(header: np.recarray) -> tuple[int, int, int]:
    """(mapc, mapr, maps) of a header, or (1, 2, 3) when the fields are not a permutation."""
    order = (int(header.mapc), int(header.mapr), int(header.maps))
    return order if sorted(order) == [1, 2, 3] else (1, 2, 3)


def header_labels(header: np.recarray | None) -> list[str]:
    """The header's text labels, blank ones left out (bytes that are not ASCII read as '?')."""
    if header is None:
        return []
    labels = (bytes(label).decode("ascii", "replace").strip("\x00 ") for label in header.label)
    return [label for label in labels if label]


def voxel_size_along_array_axes(header: np.recarray, voxel_size_xyz) -> tuple[float, float, float]:
    """Voxel size for array axes (sections, rows, columns) from the header's X/Y/Z sizes."""
    mapc, mapr, maps = axis_order(header)
    xyz = tuple(float(v) for v in voxel_size_xyz)
    return (xyz[maps - 1], xyz[mapr - 1], xyz[mapc - 1])


def _open_strict_or_permissive(path: Path):
    """Open strictly; fall back to permissive mode only to accept a damaged *label* area.

    Older maps sometimes fail mrcfile's strict checks on cosmetic fields. Permissive mode still
    reads them, but it also lets truncated files through with ``data=None``; those are refused
    by the caller with the strict error's message.
    """
    try:
        return mrcfile.open(path, mode="r", permissive=False)
    except (ValueError, OverflowError) as strict_error:  # Overflow: sizes whose product wraps negative
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                mrc = mrcfile.open(path, mode="r", permissive=True)
            except Exception:
                raise strict_error from None
        if mrc.data is None:
            mrc.close()
            raise strict_error from None
        return mrc


def _read_checked(path: Path, role: str) -> tuple[np.ndarray, np.recarray, np.recarray]:
    """(float32 copy of the data, header copy, header voxel size) of a 3-D real MRC map."""
    try:
        mrc = _open_strict_or_permissive(path)
    except PermissionError:
        raise CryoResError(f"{role} {path}: permission denied") from None
    except (ValueError, OverflowError, OSError, EOFError, zlib.error) as error:  # zlib: a damaged .gz
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CryoResError(f"{role} {path}: not a readable MRC file ({reason})") from None
    with mrc:
        volume = volume_of(mrc.data, mrc.header, path, role)
        header = mrc.header.copy()
        header_voxel = mrc.voxel_size
        array = np.array(volume, dtype=np.float32)  # copy: detach from the closed file
    return array, header, header_voxel


def volume_of(data: np.ndarray, header: np.recarray, path: Path, role: str = "map") -> np.ndarray:
    """The 3-D volume held by an MRC file's data, by the rule in this module's docstring.

    Raises CryoResError for complex data, a 2-D image, a stack of 2-D images (ISPG 0 with
    mz = 1, or a ``.mrcs`` file) or a stack of several volumes.
    """
    if np.iscomplexobj(data):
        raise CryoResError(f"{role} {path}: complex-valued MRC (mode {int(header.mode)}) is not a density map")
    if data.ndim == 4 and data.shape[0] == 1:  # ISPG 401-630 with a single volume
        data = data[0]
    stacked = 401 <= int(header.ispg) <= 630
    if stacked and (int(header.mz) < 1 or int(header.nz) % int(header.mz)):
        raise CryoResError(f"{role} {path}: ISPG {int(header.ispg)} says a volume stack, but mz = {int(header.mz)} "
                           f"does not divide its {int(header.nz)} sections; fix the header (ISPG 1 for one volume)")
    if data.ndim == 4:
        raise CryoResError(f"{role} {path}: is a stack of {data.shape[0]} volumes of shape {data.shape[1:]}; "
                           "one 3-D map is needed (split the stack first)")
    if data.ndim != 3 or data.shape[0] == 1:
        raise CryoResError(f"{role} {path}: is a 2-D image of shape {data.shape[-2:]}; a 3-D map is needed")
    if int(header.ispg) == 0 and (int(header.mz) == 1 or Path(path).name.lower().endswith(".mrcs")):
        raise CryoResError(f"{role} {path}: is an image stack of {data.shape[0]} 2-D images "
                           f"(ISPG 0, mz {int(header.mz)}); a 3-D map is needed")
    return data


def read_map(path: str | os.PathLike, *, role: str = "map",
             voxel_size: float | None = None) -> DensityMap:
    """Read a 3-D MRC map as float32.

    ``role`` names the file in error messages ("map", "mask", "half map 1"). ``voxel_size``
    (Å) overrides the header, e.g. for maps whose header says 0.

    Raises CryoResError if the file is missing, unreadable, not an MRC file, truncated, complex,
    a 2-D image, a stack of images or of several volumes (see :func:`volume_of`), or has a voxel
    size of 0 and no override.
    """
    path = Path(path)
    if not path.exists():
        raise CryoResError(f"{role} {path}: no such file")
    if not path.is_file():
        raise CryoResError(f"{role} {path}: not a regular file")
    with warnings.catch_warnings():  # mrcfile warns on damaged headers (e.g. mx = 0): keep stderr one line
        warnings.simplefilter("ignore")
        array, header, header_voxel = _read_checked(path, role)
    if voxel_size is not None:
        if not np.isfinite(voxel_size) or voxel_size <= 0:
            raise CryoResError(f"voxel size override {voxel_size} must be a positive number of Å")
        sizes = (float(voxel_size),) * 3
    else:
        sizes = voxel_size_along_array_axes(header, (header_voxel.x, header_voxel.y, header_voxel.z))
        if not all(np.isfinite(s) and s > 0 for s in sizes):
            raise CryoResError(
                f"{role} {path}: voxel size in the header is {tuple(round(s, 4) for s in sizes)} Å; "
                "give the real one with --voxel-size")
    return DensityMap(array, sizes, header, path)


def peek_grid(path: str | os.PathLike, voxel_size: float | None = None
              ) -> tuple[tuple[int, int, int], tuple[float, float, float]] | None:
    """(array shape, voxel size per array axis) from the header alone, without reading data.

    For memory checks before a map is read. Returns None whenever the answer is not certain
    (unreadable header, voxel size 0, a data block shorter than the header claims): then
    :func:`read_map` reports the real problem.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", header_only=True) as mrc:
                header = mrc.header.copy()
                header_voxel = mrc.voxel_size
        shape = (int(header.nz), int(header.ny), int(header.nx))
        itemsize = mrcfile.utils.data_dtype_from_header(header).itemsize
        expected = 1024 + int(header.nsymbt) + itemsize * int(np.prod(shape, dtype=np.int64))
        compressed = path.suffix in (".gz", ".bz2")
        if min(shape) < 1 or (not compressed and path.stat().st_size < expected):
            return None
        if voxel_size is not None:
            sizes = (float(voxel_size),) * 3
        else:
            sizes = voxel_size_along_array_axes(header, (header_voxel.x, header_voxel.y, header_voxel.z))
    except Exception:  # any problem: let read_map find and explain it
        return None
    if not all(np.isfinite(s) and s > 0 for s in sizes):
        return None
    return shape, sizes


def check_same_grid(other: DensityMap, like: DensityMap, path: str | os.PathLike,
                    role: str = "local-resolution map", like_role: str = "the map") -> None:
    """Raise CryoResError unless ``other`` (read from ``path``) lies on ``like``'s grid: same shape,
    voxel size, axis order (mapc/mapr/maps; arrays are compared in file order) and placement
    (origin + nstart, to half a voxel), so values land where they belong."""
    if other.data.shape != like.data.shape:
        raise CryoResError(f"{role} {path} has shape {other.data.shape} but {like_role} has {like.data.shape}")
    if not np.allclose(other.voxel_size, like.voxel_size, rtol=1e-3):
        raise CryoResError(f"{role} {path} has voxel size {other.voxel_size} Å but {like_role} has "
                           f"{like.voxel_size} Å")
    if other.header is not None and like.header is not None:
        if axis_order(other.header) != axis_order(like.header):
            raise CryoResError(f"{role} {path} has axis order (mapc, mapr, maps) {axis_order(other.header)} but "
                               f"{like_role} has {axis_order(like.header)}; save both with one axis order")
        a, b = grid_start(other), grid_start(like)
        if max(abs(x - y) for x, y in zip(a, b)) > 0.5 * min(like.voxel_size):
            raise CryoResError(f"{role} {path} starts at {tuple(round(x, 2) for x in a)} Å but {like_role} at "
                               f"{tuple(round(x, 2) for x in b)} Å (origin/nstart differ); it is not on "
                               f"the grid of {like_role}")


def read_half_maps(half1: str | os.PathLike, half2: str | os.PathLike, *,
                   voxel_size: float | None = None) -> tuple[DensityMap, DensityMap]:
    """Two half maps of one reconstruction, each read and checked as any map (:func:`read_map`);
    half map 2 must lie on half map 1's grid (:func:`check_same_grid`), else CryoResError."""
    first = read_map(half1, role="half map 1", voxel_size=voxel_size)
    second = read_map(half2, role="half map 2", voxel_size=voxel_size)
    check_same_grid(second, first, half2, role="half map 2", like_role="half map 1")
    return first, second


def read_half_map_average(half1: str | os.PathLike, half2: str | os.PathLike, *,
                          voxel_size: float | None = None) -> DensityMap:
    """The average of two half maps of one reconstruction, with half map 1's header and path.

    Why: deposited maps are often masked, so their solvent holds no noise to read them against,
    while half maps are usually deposited unmasked; their average is the full map with its noise.
    The files are read by :func:`read_half_maps` and must be two files, else CryoResError. Half
    map 1's array (a float32 copy of its own) is reused for the sum.
    """
    if Path(half1).resolve() == Path(half2).resolve():
        raise CryoResError(f"half map 1 and half map 2 are the same file {half1}; give the two half maps")
    first, second = read_half_maps(half1, half2, voxel_size=voxel_size)
    return DensityMap(average_in_place(first.data, second.data), first.voxel_size, first.header, first.path)


def average_in_place(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The two half maps' average, summed into ``first`` (a float32 array the caller owns, on the
    same grid as ``second``), so that a large map costs no third copy; returns ``first``."""
    first += second
    first *= np.float32(0.5)
    return first


def grid_start(density_map: DensityMap) -> tuple[float, float, float]:
    """Position (Å, X/Y/Z) of the first voxel: header origin + nstart x voxel size along each axis."""
    header = density_map.header
    order = axis_order(header)
    sizes = dict(zip((order[2], order[1], order[0]), density_map.voxel_size))  # array axes -> X/Y/Z
    starts = dict(zip(order, (int(header.nxstart), int(header.nystart), int(header.nzstart))))
    origin = (float(header.origin.x), float(header.origin.y), float(header.origin.z))
    return tuple(origin[i] + starts[i + 1] * sizes[i + 1] for i in range(3))


def read_mask(path: str | os.PathLike, like: DensityMap) -> np.ndarray:
    """Read a mask that must lie on the grid of ``like`` (its voxel size is not needed).

    Raises CryoResError for an unreadable file or a shape different from ``like``'s.
    """
    mask = read_map(path, role="mask", voxel_size=min(like.voxel_size))
    if mask.data.shape != like.data.shape:
        raise CryoResError(f"mask {path} has shape {mask.data.shape} but the map has {like.data.shape}")
    return mask.data


def _check_writable(path: Path, force: bool, role: str, protected: tuple[Path, ...]) -> None:
    for source in protected:
        if source is not None and path.exists() and Path(source).exists() and path.samefile(source):
            raise CryoResError(f"{role} {path} is one of the input files; choose another name")
    if path.exists() and not force:
        raise CryoResError(f"{role} {path} exists; use --force to overwrite it")
    if path.exists() and not path.is_file():
        raise CryoResError(f"{role} {path} exists and is not a regular file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CryoResError(f"{role} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CryoResError(f"{role} {path}: folder {folder} is not writable")


def check_output_path(path: str | os.PathLike, *, force: bool, role: str = "output",
                      protected: tuple[Path, ...] = ()) -> Path:
    """Fail early (before any computation) if ``path`` cannot or must not be written.

    Refuses an existing file without ``force``, any path that is one of the ``protected``
    inputs (even with ``force``: never destroy a user's data), a missing or read-only folder.
    """
    path = Path(path)
    try:
        _check_writable(path, force, role, protected)
    except OSError as error:  # e.g. a name too long for the file system
        raise CryoResError(f"{role} {path}: {error.strerror or error}") from None
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def default_file_mode() -> int:
    """0o666 less the process umask: what a plain ``open(path, "w")`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_mrc(path: Path, data: np.ndarray, like: DensityMap, label: str, dtype=np.float32) -> None:
    """Write ``data`` as MRC (float32 unless said) at ``path`` with ``like``'s grid metadata, fsynced.

    The temporary file from mkstemp is private (0600); it gets the usual permissions here.
    """
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=dtype))
        if like.header is not None:
            for field in _GRID_FIELDS:
                mrc.header[field] = like.header[field]
        else:
            z, y, x = like.voxel_size
            mrc.voxel_size = (x, y, z)
        mrc.header.ispg = 1  # a volume, even when the input said ISPG 0 or 401 (see volume_of)
        mrc.update_header_stats()
        for line in label.split("\n")[:10]:  # one MRC label per line; the header holds ten of 80 characters
            mrc.add_label(line.replace("Å", "A").encode("ascii", "replace").decode()[:80])
    with open(path, "rb+") as stream:  # make the bytes durable before the rename
        os.fsync(stream.fileno())
    os.chmod(path, default_file_mode())


def write_maps(outputs: list[tuple[str | os.PathLike, np.ndarray, str]], like: DensityMap, *,
               force: bool = False, dtypes: dict[str, type] | None = None) -> list[Path]:
    """Write several maps on the grid of ``like``: all or none.

    ``outputs`` holds (path, data, header label) triples; a label's lines become MRC labels. Voxel
    size, origin, nstart, axis order and cell are copied from ``like``'s header (or set from its voxel size when it came
    from an array). ``dtypes`` maps file names to another MRC data type than float32 (e.g.
    float16 or int8 for compact training data). Every map goes to a temporary file first; the renames happen only after
    all were written. Raises CryoResError if a shape differs from ``like``'s, a file exists
    and ``force`` is false, or writing fails; then no output file exists.
    """
    paths = [check_output_path(path, force=force) for path, _, _ in outputs]
    if len({p.resolve() for p in paths}) != len(paths):
        raise CryoResError("two outputs have the same file name")
    for path, (_, data, _) in zip(paths, outputs):
        if np.shape(data) != like.data.shape:
            raise CryoResError(f"internal: output {path} has shape {np.shape(data)}, the map {like.data.shape}")
    try:
        with contextlib.ExitStack() as stack:
            for path, (_, data, label) in zip(paths, outputs):
                dtype = (dtypes or {}).get(path.name, np.float32)
                _write_mrc(stack.enter_context(atomic_path(path)), data, like, label, dtype)
    except OSError as error:
        raise CryoResError(f"cannot write {error.filename or paths[0]}: {error.strerror or error}") from None
    return paths


def write_map(path: str | os.PathLike, data: np.ndarray, like: DensityMap, *,
              force: bool = False, label: str = "cryores") -> Path:
    """Write one map on the grid of ``like`` atomically (see :func:`write_maps`)."""
    return write_maps([(path, data, label)], like, force=force)[0]
