"""cryores: local resolution of cryo-EM density maps from a single map with a small 3-D U-Net.

Python API::

    import cryores
    result = cryores.predict(density, voxel_size=1.06)      # numpy array in, Å map out
    result, path = cryores.predict_file("map.mrc")           # writes map_locres.mrc
"""

__version__ = "0.1.0"

from .errors import CryoResError, ModelIntegrityError, NoModelInstalledError  # noqa: E402
from .model_card import LoadedModel, load_model  # noqa: E402
from .predict import Prediction, predict, predict_file  # noqa: E402
from .summary import ResolutionSummary  # noqa: E402

__all__ = ["CryoResError", "LoadedModel", "ModelIntegrityError", "NoModelInstalledError",
           "Prediction", "ResolutionSummary", "__version__", "load_model", "predict", "predict_file"]
