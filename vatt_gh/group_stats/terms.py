r"""Per-layer terms of the groups' gradients, and a registry of formulas by layer type.

A group g is N consecutive clips of the local batch. Its gradient with respect to a variable is
its contribution through its own forward path (docs/harmonization.md): for a layer applied row
by row, y = x W, with d = d(loss)/dy the output gradient of the WHOLE local loss,

    G_g = sum_{t in group g} x_t^T d_t,

so the groups' gradients add up to the ordinary gradient. A formula (a "handler") turns one
captured call and its two output gradients into terms of three kinds:

- `Outer(x, d_va, d_vt)`: G_g = x_g^T d_g with x (G, T, k) (or (1, T, k) when the same for every
  group), d (G, T, n): dense layers, convolutions with kernel = stride, positional tables.
- `Rows(ids, d_va, d_vt)`: G_g scatters d_t into row ids_t (an embedding table).
- `Full(g_va, g_vt)`: the groups' gradients (G, *shape) themselves, when they are small (biases,
  normalisation scales and offsets, tokens).

Rows of a captured tensor belong to clips in order: a leading axis of R = B * m rows maps row r
to clip r // m (the text path's (B * K, L) narrations: m = K), so group g owns a contiguous block
of rows and `as_groups` is a reshape.
"""

import dataclasses
from typing import Callable, Dict, Optional

import tensorflow as tf


@dataclasses.dataclass
class Outer:
    var: tf.Variable
    x: tf.Tensor  # (G, T, k) or (1, T, k) shared by every group
    d_va: tf.Tensor  # (G, T, n)
    d_vt: tf.Tensor


@dataclasses.dataclass
class Rows:
    var: tf.Variable
    ids: tf.Tensor  # (G, T) int32
    d_va: tf.Tensor  # (G, T, n)
    d_vt: tf.Tensor


@dataclasses.dataclass
class Full:
    var: tf.Variable
    g_va: tf.Tensor  # (G, *var.shape)
    g_vt: tf.Tensor


def as_groups(t: tf.Tensor, groups: int, width: Optional[int] = None) -> tf.Tensor:
    """(R, ..., width) rows of clips (R = batch * m, clip-major) -> (G, -1, width) float32."""
    rows = t.shape[0]
    if rows is None or rows % groups:
        raise ValueError(
            f"a captured tensor of shape {t.shape} has rows that do not split into {groups} groups"
        )
    width = t.shape[-1] if width is None else width
    return tf.reshape(tf.cast(t, tf.float32), [groups, -1, width])


# A handler: f(call, d_va, d_vt, groups) -> [terms], or None to send the call to the generic
# fallback (re-run the layer, pfor Jacobians). d_va / d_vt: the gradients at the call's
# flattened outputs.
Handler = Callable[..., Optional[list]]
_HANDLERS: Dict[type, Handler] = {}


def handles(*layer_types):
    """Registers a handler for layer types (the most derived registered class wins)."""

    def register(fn):
        for layer_type in layer_types:
            _HANDLERS[layer_type] = fn
        return fn

    return register


def handler_for(layer) -> Optional[Handler]:
    for cls in type(layer).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


def is_linear(activation) -> bool:
    return activation is None or activation is tf.keras.activations.linear
