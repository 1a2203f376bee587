"""Per-group gradient statistics from each layer's inputs and the two losses' output gradients.

- `capture`: recording layer calls during a forward pass (isolated, tested on its own).
- `terms`: the three kinds of per-layer terms and the registry of formulas by layer type.
- `keras_layers`, `vatt_layers`: the formulas (Keras layers; VATT's own layers).
- `top`: the statistics over the top part S only (the FAC head), and the update below S from
  one backward pass of the per-group combined cotangents (`Harmonization.statistics`).
- `algebra`: forward + one backward pass per loss to the layer outputs, then per variable the
  groups' (dot, |G_va|^2, |G_vt|^2) and the update, ghost or direct by cost.
"""

from vatt_gh.group_stats import keras_layers, vatt_layers  # noqa: F401  (register formulas)
from vatt_gh.group_stats.algebra import (  # noqa: F401
    MODES,
    Forward,
    GroupPairs,
    chunks,
    forward,
    group_gradients,
    group_pairs,
)
from vatt_gh.group_stats.capture import Call, capture_layer_calls, owned_variables  # noqa: F401
from vatt_gh.group_stats.top import TopForward, top_variables  # noqa: F401
from vatt_gh.group_stats.top import forward as top_forward  # noqa: F401
