"""cormult_lib: the library behind the CorMulT / CLIP-MSA tutorial notebooks.

The folders follow the pipeline: ``data`` -> features -> correlation -> models -> training ->
``metrics`` / plots. Notebooks call into it; it holds every piece of logic.
"""

from cormult_lib.config import ExperimentConfig, get_config
from cormult_lib.device import resolve_device
from cormult_lib.seeding import seed_everything

__all__ = ["ExperimentConfig", "get_config", "resolve_device", "seed_everything"]
__version__ = "0.1.0"
