"""VATT models: VATT-MA (one shared encoder) and VATT-MS (one encoder per modality).

Modules, one idea each: presets (sizes + config), tokenizers, positional (factorised positional
embeddings), backbone (encoder, aggregation token, DropToken), t5_text (VATT-MS's T5 text
encoder), heads (FAC head), vatt (the model).
"""

from vatt_gh.models.presets import PRESETS, VattConfig, get_config
from vatt_gh.models.vatt import VATT, build_vatt, dummy_inputs

__all__ = ["PRESETS", "VattConfig", "get_config", "VATT", "build_vatt", "dummy_inputs"]
