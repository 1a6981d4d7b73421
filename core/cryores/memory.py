"""Fail early when a map would not fit in memory, instead of swapping for an hour.

The limit is 90 % of what the machine can give this process now: the smaller of the memory the
kernel calls available (free plus reclaimable cache, not the installed total, which other
processes may be using) and a cgroup (container or batch-job) limit. ``CRYORES_MEMORY_LIMIT``
(bytes, or with a K/M/G/T suffix) replaces it, for schedulers that know better.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CryoResError

# float32 arrays alive at the peak of predict(), per voxel of each grid, measured with the
# 512^3 benchmark: on the input grid the density, mask and output; on the model grid the
# resampled and normalised density, its complex spectrum (~2 floats), the patch-selection
# mask and the two accumulators (three with Monte-Carlo dropout).
BYTES_PER_INPUT_VOXEL = 4 * 4
BYTES_PER_MODEL_VOXEL = 4 * 6
LIMIT_ENV = "CRYORES_MEMORY_LIMIT"
USABLE_FRACTION = 0.9
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def _meminfo_available() -> int | None:
    """MemAvailable from /proc/meminfo (Linux) in bytes, or None."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup in bytes ("max" and absurd values -> None)."""
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def available_memory() -> int | None:
    """Bytes this process can use without swapping, or None where the OS does not tell."""
    candidates = [_meminfo_available(), _cgroup_limit()]
    if candidates[0] is None:
        try:
            candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            pass
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def parse_size(text: str) -> int:
    """``"2G"`` -> 2147483648; plain numbers are bytes. Raises CryoResError for anything else."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = cleaned[-1:] if cleaned[-1:] in _SUFFIXES else ""
    number = cleaned[: len(cleaned) - len(suffix)]
    try:
        value = float(number) * _SUFFIXES[suffix]
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise CryoResError(f"{LIMIT_ENV}={text!r} is not a size such as 8G or 500M")
    return int(value)


def memory_limit() -> int | None:
    """Bytes a run may use: ``CRYORES_MEMORY_LIMIT`` if set, else 90 % of available memory."""
    override = os.environ.get(LIMIT_ENV)
    if override:
        return parse_size(override)
    available = available_memory()
    return None if available is None else int(USABLE_FRACTION * available)


def estimated_peak(input_voxels: int, model_voxels: int, mc_dropout: bool) -> int:
    model_bytes = BYTES_PER_MODEL_VOXEL + (4 if mc_dropout else 0)
    return input_voxels * BYTES_PER_INPUT_VOXEL + model_voxels * model_bytes


def check_bytes(need: int, limit: int | None = None) -> None:
    """Raise CryoResError if ``need`` bytes exceed ``limit`` (default: :func:`memory_limit`)."""
    if limit is None:
        limit = memory_limit()
        if limit is None:
            return
    if need > limit:
        raise CryoResError(
            f"this map needs about {need / 2**30:.1f} GiB of memory, more than the "
            f"{limit / 2**30:.1f} GiB available; crop the box or bin the map first")


def check_fits(input_voxels: int, model_voxels: int, mc_dropout: bool,
               limit: int | None = None) -> None:
    """Raise CryoResError if predict()'s estimated peak exceeds ``limit`` bytes (see :func:`check_bytes`)."""
    check_bytes(estimated_peak(input_voxels, model_voxels, mc_dropout), limit)
