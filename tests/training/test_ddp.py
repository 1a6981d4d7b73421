"""Training cryores-v3 under torchrun (DDP, gloo on CPU): real 2-rank runs on tiny synthetic rows.

Two ranks with a per-rank batch of B must end with the weights of one process with batch 2B
(same global batch of rows each step, gradients averaged; SpectralNet has no batch statistics),
to float-summation-order tolerance: ``ATOL`` on every weight. A run stopped by ``--max-steps``
(after its checkpoint) resumes under DDP to the uninterrupted result, and a 2-rank checkpoint
resumes in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cryores.errors import CryoResError
from cryores.spectral import N_FEATURES
from cryores_train import distributed
from cryores_train.fit_spectral import _train, train

ATOL = 1e-5  # on weights of order 0.1-1 after 60 AdamW steps; observed differences are ~1e-7
B = 32  # per-rank batch
STEPS, STOP = 60, 30


def make_rows(folder: Path, rows: int = 300) -> Path:
    """Three npz files as ``cryores-train rows`` writes them: two train, one val."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(["train", "train", "val"]):
        rng = np.random.default_rng(i)
        x = rng.normal(size=(rows, N_FEATURES)).astype(np.float16)
        y = np.exp(1.5 + 0.3 * x[:, :3].astype(np.float32).sum(axis=1)).astype(np.float32)
        np.savez_compressed(folder / f"S{i}_000.npz", x=x, y=y, bound=rng.random(rows) < 0.2,
                            kind=np.zeros(rows, np.int8), voxel=1.0, structure=f"S{i}", split=split)
    return folder


def config(rows: Path, output: Path, **changes) -> dict:
    base = {"name": "tiny", "kind": "spectral", "dataset": str(rows), "output": str(output), "seed": 0,
            "architecture": {"hidden": [16, 16], "dropout": 0.0}, "batch_size": B, "steps": STEPS,
            "learning_rate": 0.01, "weight_decay": 0.0001, "warmup_steps": 5, "validate_every": 20,
            "checkpoint_every": 10, "resolution_range": [1.0, 30.0]}
    return {**base, **changes}


def torchrun(cfg: dict, *extra: str) -> subprocess.Popen:
    """Start ``torchrun --standalone --nproc_per_node 2 -m cryores_train fit CONFIG``, for real."""
    path = Path(cfg["output"]).with_suffix(".json")
    path.write_text(json.dumps(cfg))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "cryores_train", "fit", str(path), "--quiet", *extra]
    return subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(run: subprocess.Popen) -> None:
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output[-4000:]


def weights(output: Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(output) / "model" / "tiny.pt", map_location="cpu")


def assert_close(a: dict, b: dict, atol: float = ATOL) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Side by side (process start-up dominates): two ranks of batch B to the end; two ranks of
    global batch 2B stopped at step STOP by --max-steps; one process (no torchrun) of batch 2B."""
    rows = make_rows(tmp_path_factory.mktemp("ddp") / "rows")
    folders = {name: rows.parent / name for name in ("single", "two_ranks", "resumed")}
    # One torchrun at a time: two standalone launches at once can race for the same free port.
    started = torchrun(config(rows, folders["two_ranks"]))
    train(config(rows, folders["single"], batch_size=2 * B), progress=False)
    finish(started)
    finish(torchrun(config(rows, folders["resumed"], global_batch_size=2 * B), "--max-steps", str(STOP)))
    return folders


def test_two_ranks_of_batch_b_match_one_process_of_batch_2b(runs):
    two_ranks, single = runs["two_ranks"], runs["single"]
    assert_close(weights(two_ranks), weights(single))
    ddp, one = (json.loads((out / "history.json").read_text()) for out in (two_ranks, single))
    # the logged running loss is the mean over ranks, i.e. the global batch's loss
    assert [s for s, _ in ddp["train"]] == [s for s, _ in one["train"]] == [50]
    assert ddp["train"][0][1] == pytest.approx(one["train"][0][1], rel=1e-5)
    assert [v["mae"] for _, v in ddp["val"]] == pytest.approx([v["mae"] for _, v in one["val"]], rel=1e-4)
    card = json.loads((two_ranks / "model" / "default.json").read_text())
    assert card["training"]["steps"] == STEPS and card["training"]["config"]["batch_size"] == B
    assert sorted(p.name for p in two_ranks.iterdir()) == ["checkpoint.pt", "config.json", "history.json", "model"]


def test_ddp_run_resumes_after_a_stop_and_at_another_world_size(runs):
    output = runs["resumed"]
    cfg = json.loads(output.with_suffix(".json").read_text())  # global batch 2B: B per rank on 2 ranks
    state = torch.load(output / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == STOP and not (output / "model").exists()
    alone = output.parent / "resumed_alone"  # the same 2-rank checkpoint, to be resumed by one process
    alone.mkdir()
    shutil.copy(output / "checkpoint.pt", alone / "checkpoint.pt")
    run = torchrun(cfg)  # resume under DDP to the end
    train({**cfg, "output": str(alone)}, progress=False)
    finish(run)
    assert_close(weights(output), weights(runs["two_ranks"]))
    assert_close(weights(output), weights(runs["single"]))
    assert_close(weights(alone), weights(runs["single"]))


def test_a_global_batch_that_ranks_cannot_share_is_refused(tmp_path):
    context = distributed.Context(rank=1, world_size=2)
    cfg = config(tmp_path / "rows", tmp_path / "odd", global_batch_size=2 * B + 1)
    with pytest.raises(CryoResError, match="not divisible by 2 ranks"):
        _train(cfg, context, progress=False, max_steps=None)


def test_a_single_process_is_not_distributed(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = distributed.init()
    assert (context.rank, context.world_size, context.is_rank0, context.device.type) == (0, 1, True, "cpu")
    network = torch.nn.Linear(2, 1)
    assert distributed.wrap(network, context) is network and distributed.mean(2.5, context) == 2.5


def test_the_batch_draw_is_numpys_weighted_choice():
    """The trainer draws searchsorted(cdf, rng.random(n)) in shards: the same rows, and the same
    generator state after, as rng.choice(rows, n, p=weights) (what it drew before DDP)."""
    weights = np.random.default_rng(3).random(5000)
    weights /= weights.sum()
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    a, b = np.random.default_rng(0), np.random.default_rng(0)
    for n in (64, 2048):
        uniform = b.random(n)
        shards = [np.searchsorted(cdf, uniform[s], side="right") for s in (slice(0, n // 2), slice(n // 2, n))]
        np.testing.assert_array_equal(np.concatenate(shards), a.choice(len(weights), n, p=weights))
    assert a.bit_generator.state == b.bit_generator.state
