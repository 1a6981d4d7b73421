"""Real EMDB maps through Scipion's import and the cryores protocol (headless project).

Every map of the core's real corpus (tests/data/real, ../shared/data/maps; sources in
tests/data/real/README.md) is imported with ProtImportVolumes at its header's voxel size, as
a user would (gzip files are unpacked first: Scipion does not read .gz), and the protocol runs
on it (a random v3 model: fast at any voxel size). The output must keep the map's dimensions and
sampling rate and hold Å within [Nyquist, model's bound] where it is non-zero.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import mrcfile
import numpy as np
from cryores_scipion.constants import METHOD_DEEP_LEARNING
from cryores_scipion.protocols import ProtCryoResLocalResolution
from pwem.protocols import ProtImportMask, ProtImportVolumes
from pyworkflow.tests import BaseTest, setupTestProject

from conftest import MODEL_MAX_RESOLUTION, SCIPION_TMP, make_random_spectral_model, read_mrc, write_mrc

REPOSITORY = Path(__file__).resolve().parents[2]
REAL = REPOSITORY / "tests" / "data" / "real"
SHARED_MAPS = REPOSITORY.parent / "shared" / "data" / "maps"
MAPS = [REAL / "emd_1832.map.gz", REAL / "emd_1997.map.gz", REAL / "emd_5625.map.gz",
        REAL / "emd_2566_3j6b_chain9_zone.mrc", REAL / "emd_30342_7cec_A_zone4.mrc.gz",
        REAL / "emd_5168_monomer_segment.mrc", REAL / "ngl_betaGal.mrc.gz",
        SHARED_MAPS / "emd_5168.map", SHARED_MAPS / "emd_3488.mrc", SHARED_MAPS / "emd_11007_center144.mrc"]
# EMD-3001 (a MicroED crystal map: ISPG 4, axis order 3,1,2, 73x43x25) is left out here: Scipion's
# own import reads it as 40x12x72, before cryores is involved. The core tests run every command on it.
NEEDS_MASK: set[str] = set()


class TestRealMaps(BaseTest):
    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.card = make_random_spectral_model(SCIPION_TMP / "model-real")

    def _local_copy(self, path: Path) -> str:
        """The map as an uncompressed .mrc in the project's folder (Scipion reads no .gz)."""
        name = path.name.replace(".gz", "").replace(".map", ".mrc")
        target = Path(self.getOutputPath(name))
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return str(target)

    def _check_map(self, path: Path) -> None:
        local = self._local_copy(path)
        with mrcfile.open(local, header_only=True) as mrc:
            voxel = float(mrc.voxel_size.x)
            dims = (int(mrc.header.nx), int(mrc.header.ny), int(mrc.header.nz))
        volume = self.launchProtocol(self.newProtocol(
            ProtImportVolumes, filesPath=local, samplingRate=voxel, objLabel=f"import {path.name}")).outputVolume
        self.assertEqual(tuple(volume.getDim()), dims)
        prot = self.newProtocol(ProtCryoResLocalResolution, estimationMethod=METHOD_DEEP_LEARNING,
                                computeDevice=1, modelCard=self.card, objLabel=f"cryores {path.name}")
        prot.inputVolume.set(volume)
        if path.name in NEEDS_MASK:
            shape = read_mrc(local).shape
            mask_file = write_mrc(self.getOutputPath("whole_box_mask.mrc"), np.ones(shape, np.float32), voxel)
            mask = self.launchProtocol(self.newProtocol(ProtImportMask, maskPath=mask_file, samplingRate=voxel))
            prot.inputMask.set(mask.outputMask)
        self.launchProtocol(prot)
        output = prot.resolution_Volume
        self.assertEqual(tuple(output.getDim()), dims)
        self.assertAlmostEqual(output.getSamplingRate(), volume.getSamplingRate(), places=4)
        values = read_mrc(output.getFileName())
        inside = values > 0
        self.assertTrue(inside.any())
        # Nyquist along the coarsest axis: EMD-3001's voxels are anisotropic.
        self.assertLessEqual(values[inside].max(), MODEL_MAX_RESOLUTION + 1e-4)
        self.assertGreaterEqual(values[inside].min(), 2.0 * voxel * 0.8)

    def test_every_real_map_imports_and_runs(self):
        for path in MAPS:
            with self.subTest(map=path.name):
                self._check_map(path)


    def test_a_masked_deposit_is_scaled_to_the_cut_found_in_its_spectrum(self):
        """EMD-3488 (masked, low-passed near 3.1 Å, 3.2 Å reported): the protocol stores the cut
        cryores finds in its spectrum and the scale it set, and its methods text says so; with
        'Look for the low-pass cut' off, neither."""
        local = self._local_copy(SHARED_MAPS / "emd_3488.mrc")
        volume = self.launchProtocol(self.newProtocol(
            ProtImportVolumes, filesPath=local, samplingRate=1.05, objLabel="import EMD-3488")).outputVolume
        runs = {}
        for find_cut in (True, False):
            # the installed model: a random one may read the map so coarse that a found cut is dropped
            prot = self.newProtocol(ProtCryoResLocalResolution, estimationMethod=METHOD_DEEP_LEARNING,
                                    computeDevice=1, findCut=find_cut, objLabel=f"cryores EMD-3488 findCut {find_cut}")
            prot.inputVolume.set(volume)
            self.launchProtocol(prot)
            runs[find_cut] = prot
        found, plain = runs[True], runs[False]
        self.assertAlmostEqual(found.foundCut.get() / 3.2, 1.0, delta=0.05)
        self.assertTrue(found.cutScale.hasValue())
        self.assertIn("low-pass cut found in its spectrum", "\n".join(found.methods()))
        self.assertFalse(plain.foundCut.hasValue() or plain.cutScale.hasValue())
        self.assertNotIn("found in its spectrum", "\n".join(plain.methods()))
        values = read_mrc(found.resolution_Volume.getFileName())
        self.assertGreaterEqual(values[values > 0].min(), found.foundCut.get() * (1 - 1e-5))


def test_corpus_is_there():
    missing = [str(p) for p in MAPS if not p.is_file()]
    assert not missing, missing
