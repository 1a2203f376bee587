"""Recording the calls of chosen Keras layers during a forward pass.

`capture_layer_calls(layers)` wraps the `call` of each given layer instance (Keras' `__call__`
looks it up on the instance) for the duration of a `with` block and records every call made by
the current thread as a `Call` (the layer, its arguments and its outputs), in call order. The
per-group statistics need exactly that: each layer's inputs, and its outputs as sources for
one backward pass per loss.

MirroredStrategy runs each replica in a thread of its own on the SAME layer objects, so a
wrapper is installed once per layer (reference-counted, under a lock) and records into the
innermost capture of the calling thread only.
"""

import contextlib
import dataclasses
import functools
import threading
from typing import Dict, List, Sequence

import tensorflow as tf


@dataclasses.dataclass
class Call:
    """One call of a layer during the forward: its arguments and outputs (as given to call)."""

    layer: tf.keras.layers.Layer
    args: tuple
    kwargs: dict
    outputs: object


def owned_variables(model: tf.Module) -> Dict[tf.keras.layers.Layer, List[tf.Variable]]:
    """{layer: the trainable variables it owns itself (not through sublayers)}, non-empty only.

    The model must be built (its sublayers and variables exist)."""
    layers = [model] + [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)]
    owned = {}
    for layer in layers:
        if layer in owned:
            continue
        inner = {
            v.ref()
            for sub in layer.submodules
            if isinstance(sub, tf.keras.layers.Layer)
            for v in sub.trainable_weights
        }
        own = [v for v in layer.trainable_weights if v.ref() not in inner]
        if own:
            owned[layer] = own
    return owned


_LOCAL = threading.local()
_LOCK = threading.Lock()
_INSTALLED = {}  # id(layer) -> [layer, users, previous instance attribute or None]


def _install(layer):
    with _LOCK:
        entry = _INSTALLED.get(id(layer))
        if entry is not None:
            entry[1] += 1
            return
        original = layer.call

        def wrapper(*args, **kwargs):
            outputs = original(*args, **kwargs)
            stack = getattr(_LOCAL, "captures", None)
            if stack and id(layer) in stack[-1][0]:
                stack[-1][1].append(Call(layer, args, kwargs, outputs))
            return outputs

        functools.update_wrapper(wrapper, original)
        _INSTALLED[id(layer)] = [layer, 1, layer.__dict__.get("call")]
        object.__setattr__(layer, "call", wrapper)  # bypass Keras' attribute tracking


def _uninstall(layer):
    with _LOCK:
        entry = _INSTALLED[id(layer)]
        entry[1] -= 1
        if entry[1] == 0:
            del _INSTALLED[id(layer)]
            if entry[2] is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", entry[2])


@contextlib.contextmanager
def capture_layer_calls(layers: Sequence[tf.keras.layers.Layer]):
    """Records every call of `layers` made inside the block (by this thread) as a `Call`, in
    call order; restores the layers on exit. Yields the list that fills up."""
    calls: List[Call] = []
    layers = list(layers)
    for layer in layers:
        _install(layer)
    if not hasattr(_LOCAL, "captures"):
        _LOCAL.captures = []
    _LOCAL.captures.append(({id(layer) for layer in layers}, calls))
    try:
        yield calls
    finally:
        _LOCAL.captures.pop()
        for layer in layers:
            _uninstall(layer)
