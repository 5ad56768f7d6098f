"""dm-search: find the example weighting (EDF) that trains the most robust classifier.

Public API:
    EDF: emphasis density functions (weight as a function of p), by family name.
    DMLoss: the Derivative Manipulation loss for any PyTorch classifier.
    load_loss: a DMLoss from the EDF file that `dm-search export` writes.
"""

__version__ = "0.1.0"

# Imported after __version__: dm_search.export reads it.
from dm_search.edf import EDF
from dm_search.export import load_loss
from dm_search.loss import DMLoss, dm_loss

__all__ = ["EDF", "DMLoss", "__version__", "dm_loss", "load_loss"]
