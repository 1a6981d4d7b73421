from __future__ import annotations

import numpy as np

from cryores.fourier import spatial_frequency


def test_frequency_grid_matches_the_rfftn_layout_with_anisotropic_voxels():
    shape, voxel = (6, 5, 8), (1.0, 2.0, 0.5)
    s = spatial_frequency(shape, voxel, dtype=np.float64)
    assert s.shape == np.fft.rfftn(np.zeros(shape)).shape and s.dtype == np.float64
    z, y, x = np.meshgrid(np.fft.fftfreq(6, 1.0), np.fft.fftfreq(5, 2.0), np.fft.rfftfreq(8, 0.5), indexing="ij")
    np.testing.assert_allclose(s, np.sqrt(z ** 2 + y ** 2 + x ** 2), rtol=1e-12)
    assert s[0, 0, -1] == 1.0  # Nyquist of the 0.5 Å axis
    assert spatial_frequency(shape, voxel).dtype == np.float32
