"""cryores: local resolution of cryo-EM density maps from a single map (or its two half maps).

The installed model (cryores-v3) reads each voxel's spectral evidence on the map's own grid;
models in the older U-Net format (cryores-v2) still load.

Python API::

    import cryores
    result = cryores.predict(density, voxel_size=1.06)      # numpy array in, Å map out
    result, path = cryores.predict_file("map.mrc")           # writes map_locres.mrc
    result = cryores.local_fsc(half1, half2, voxel_size=1.06)  # half-map local FSC
    filtered = cryores.filter_map(density, result.resolution, 1.06)  # local low-pass filter
"""

__version__ = "0.1.0"

from .errors import CryoResError, ModelIntegrityError, NoModelInstalledError  # noqa: E402
from .local_filter import FilteredMap, filter_file, filter_map  # noqa: E402
from .localfsc import local_fsc, local_fsc_file  # noqa: E402
from .model_card import LoadedModel, load_model  # noqa: E402
from .predict import Prediction, predict, predict_file  # noqa: E402
from .summary import ResolutionSummary  # noqa: E402

__all__ = ["CryoResError", "FilteredMap", "LoadedModel", "ModelIntegrityError", "NoModelInstalledError",
           "Prediction", "ResolutionSummary", "__version__", "filter_file", "filter_map", "load_model", "local_fsc",
           "local_fsc_file", "predict", "predict_file"]
