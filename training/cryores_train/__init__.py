"""cryores-train: simulated training data, labels, HDF5 datasets, training and evaluation.

Imports the core package ``cryores``; the core never imports this one.
"""

__version__ = "0.1.0"
