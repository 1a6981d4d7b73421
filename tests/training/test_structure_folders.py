"""The structure folders shipped for simulation (training/structures/*): intact, readable, distinct."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import pytest

from cryores_train.rows import split_of
from cryores_train.structures import discover, read_structure

ROOT = Path(__file__).resolve().parents[2]
MORE = ROOT / "training" / "structures" / "more"
MORE2 = ROOT / "training" / "structures" / "more2"  # gathered for the next fit; not yet in `make model`
ADDED = [pytest.param(MORE, id="more"), pytest.param(MORE2, id="more2")]
EXTRA = ROOT / "training" / "structures" / "extra"
BETA_GALACTOSIDASE = re.compile(r"GALACTOSIDASE", re.IGNORECASE)


def checksums(folder: Path) -> dict[str, str]:
    lines = (folder / "SHA256SUMS").read_text().split("\n")
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


@pytest.mark.parametrize("folder", ADDED)
def test_every_added_structure_is_listed_with_its_checksum_and_source(folder):
    """A changed or unlisted file would make `make model` train on data nobody can trace."""
    files = sorted(p.name for p in folder.glob("*.gz"))
    sums = checksums(folder)
    assert len(files) >= 100 and sorted(sums) == files
    for name in files:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sums[name], name
    readme = (folder / "README.md").read_text()
    for name in files:
        listed = re.search(rf"^\| `?{re.escape(name)}`? \|.*@ [0-9a-f]{{40}}", readme, re.MULTILINE)
        assert listed, f"{name}: no source in README.md"


@pytest.mark.parametrize("folder", ADDED)
def test_added_structures_are_new_ids_and_no_beta_galactosidase(shared, folder):
    """No complex twice (it would sit in two splits' worth of samples) and nothing the real-map
    evaluation holds (β-galactosidase is one of its maps)."""
    bm5 = set(discover(shared / "data" / "structures" / "bm5"))
    extra, added = set(discover(EXTRA)), set(discover(folder))
    earlier = set(discover(MORE)) if folder != MORE else set()
    extra_codes = {sid.split("_")[0] for sid in extra}
    assert not added & bm5 and not added & extra_codes and not added & earlier
    assert all(re.fullmatch(r"[0-9][0-9A-Z]{3}", sid) for sid in added)
    assert {split_of(sid) for sid in added} == {"train", "val", "test"}
    for path in folder.glob("*.gz"):
        with gzip.open(path, "rt", errors="replace") as stream:
            head = stream.read(4000)
        assert not BETA_GALACTOSIDASE.search(head), path.name


@pytest.mark.parametrize("name", ["1A28.pdb.gz", "1M4X.pdb.gz"])
def test_an_added_structure_reads_as_a_protein_with_side_chains(name):
    path = MORE / name
    if not path.exists():
        pytest.skip(f"{name} not in the folder")
    structure = read_structure(path)
    residues = [r for chain in structure[0] for r in chain]
    atoms = sum(len(r) for r in residues)
    assert atoms >= 1200 and atoms / len(residues) > 6.0
