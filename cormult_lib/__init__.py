"""cormult_lib: the library behind the CorMulT / CLIP-MSA tutorial notebooks.

Layers, bottom to top, each importing only from those below it (``make lint`` enforces it):
the foundation modules (``config``, ``modalities``, ``parameters``, ``seeding``, ``device``,
``files``, ``processes``), ``nn``, ``data``, ``metrics`` / ``stats``, ``features``,
``correlation``, ``models``, ``training``, and ``tutorial`` (what serves the notebooks). The
notebooks call into it; it holds every piece of logic.
"""

from cormult_lib.config import ExperimentConfig, get_config
from cormult_lib.device import resolve_device
from cormult_lib.seeding import seed_everything

__all__ = ["ExperimentConfig", "get_config", "resolve_device", "seed_everything"]
__version__ = "0.1.0"
