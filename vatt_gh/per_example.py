r"""Per-example harmonization at scale: exact per-triplet (dot, |g_va|^2, |g_vt|^2) without
materialising per-example gradients ("ghost" inner products), and the harmonized update.

Every method of docs/harmonization.md needs, per example i, only three numbers:

    dot_i = g_va,(i) . g_vt,(i),   |g_va,(i)|^2,   |g_vt,(i)|^2,

and its update is sum_i alpha_i g_va,(i) + beta_i g_vt,(i) (`harmonize.example_weights`).

Which per-example gradient (the definition, granularity 'example_fast')
--------------------------------------------------------------------------
Negatives (and the synchronised BatchNorm of the FAC head) couple the examples, so "the gradient
of example i" needs a definition. Here g_(i) is example i's contribution THROUGH ITS OWN FORWARD
PATH: the gradient of the whole (local share of the) loss with respect to a copy of the weights
that only example i's rows use. For a layer y = x W applied row-wise,

    g_(i) = sum_{t in example i} x_t^T d_t,        d = d(sum_b loss_b) / dy   (all examples' losses)

and sum_i g_(i) is the ordinary gradient. This is the semantics of the `replica` granularity of docs/harmonization.md
(one replica's contribution to the global loss through its copy of the weights), taken down to
one example. The pfor-Jacobian 'example' granularity of `harmonize.harmonized_gradients`
defines instead the gradient of example i's OWN loss term loss_i through every path; the two
agree when the losses do not couple the examples (no shared negatives, no batch statistics) and
differ otherwise. Both sum to the full gradient.

How (one forward, the two usual backward passes, then per-layer algebra)
-------------------------------------------------------------------------
`capture_layer_calls` temporarily wraps the `call` of every layer that owns trainable variables
and records (layer, inputs, outputs) under the tapes. After the forward, ONE `tape.gradient` per
loss w.r.t. all captured outputs gives d_va and d_vt at every layer (weight gradients are never
formed). A handler per layer type turns each call into terms:

- `Outer(x, d)` (Dense, EinsumDense, Conv with kernel = stride as a dense layer over patches):
  G_i = x_i^T d_i with x_i (T, k), d_i (T, n) the example's tokens (all calls of a shared layer
  concatenated along T, so cross-call terms are included). Inner products either
      ghost:  <G^a_i, G^b_i> = sum_{t,s} (x_t . x_s)(d^a_t . d^b_s)      cost B T^2 (k + 3n)
      direct: <x_i^T d^a_i, x_i^T d^b_i>                                  cost 2 B T k n
  chosen per variable by cost (`mode='auto'`), and the update is x^T (alpha d^a + beta d^b)
  summed over examples and tokens.
- VATT's factorised positional tables are Outer terms too: x_t = row t of the (linear)
  interpolation matrix M (the identity at the configured size), d summed over the other axes.
- `Rows(ids, d)` (Embedding): G_i scatters d_t into row ids_t, so
      <G^a_i, G^b_i> = sum_{t,s} [ids_t == ids_s] (d^a_t . d^b_s)
  and the update is a segment sum of alpha d^a + beta d^b over the ids.
- `Full(g)` per-example gradients (B, *shape), materialised because they are small: biases
  (sum_t d), LayerNorm / BatchNorm scale and offset (sum_t d * xhat, sum_t d, with the batch
  statistics the layer used), VATT's aggregation tokens (d at position 0), and the generic
  fallback: any other layer is re-run on its captured inputs and the per-example gradient
  of sum(stop_gradient(d) * y) over each example's rows comes from a pfor Jacobian, in chunks of
  `chunk_size` examples.

Rows of a captured tensor belong to examples in order: a leading axis of R = B * m rows maps row
r to example r // m (the text path's (B * K, L) narrations: m = K).
"""

import collections
import contextlib
import dataclasses
import functools
import math
import threading
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from vatt_gh import harmonize
from vatt_gh.models.backbone import AggregationToken
from vatt_gh.models.positional import FactorisedPositionalEmbedding, interpolate_table

MODES = ("auto", "ghost", "direct")


# --------------------------------------------------------------------------- capturing calls
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


# Wrapped layers are shared by every thread (MirroredStrategy runs each replica in a thread of
# its own), so a wrapper is installed once per layer (reference-counted) and records into the
# innermost capture of the CALLING thread only.
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
    call order. Wraps each layer instance's `call` (Keras' `__call__` looks it up on the
    instance) and restores it on exit. Yields the list that fills up.
    """
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


# ------------------------------------------------------------------------------------ terms
@dataclasses.dataclass
class Outer:
    """G_i = reshape(x_i^T d_i, var.shape); x (B, T, k) or (1, T, k) when the same for every
    example (positional tables), d_va / d_vt (B, T, n)."""

    var: tf.Variable
    x: tf.Tensor
    d_va: tf.Tensor
    d_vt: tf.Tensor


@dataclasses.dataclass
class Rows:
    """G_i[v] = sum_{t: ids_t = v} d_t (an embedding table); ids (B, T), d (B, T, n)."""

    var: tf.Variable
    ids: tf.Tensor
    d_va: tf.Tensor
    d_vt: tf.Tensor


@dataclasses.dataclass
class Full:
    """Materialised per-example gradients (B, *var.shape)."""

    var: tf.Variable
    g_va: tf.Tensor
    g_vt: tf.Tensor


def _examples(t: tf.Tensor, batch: int, width: Optional[int] = None) -> tf.Tensor:
    """(R, ..., width) rows of examples (R = batch * m, example-major) -> (B, -1, width)."""
    rows = t.shape[0]
    if rows is None or rows % batch:
        raise ValueError(
            f"a captured tensor of shape {t.shape} has rows that do not split into {batch} examples"
        )
    width = t.shape[-1] if width is None else width
    return tf.reshape(tf.cast(t, tf.float32), [batch, -1, width])


_HANDLERS = {}


def handles(*layer_types):
    """Registers a handler `f(call, d_va, d_vt, batch, chunk_size) -> [terms]` for layer types.

    A handler may return None to send the call to the generic fallback."""

    def register(fn):
        for layer_type in layer_types:
            _HANDLERS[layer_type] = fn
        return fn

    return register


def _handler_for(layer):
    for cls in type(layer).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


def _is_linear(activation):
    return activation is None or activation is tf.keras.activations.linear


def _single(call, d_va, d_vt):
    if len(d_va) != 1:
        return None
    return call.args[0], d_va[0], d_vt[0]


@handles(tf.keras.layers.Dense)
def _dense(call, d_va, d_vt, batch, chunk_size):
    """y = x W + b over any leading axes: Outer(kernel) and Full(bias = sum_t d)."""
    layer = call.layer
    if not _is_linear(layer.activation) or len(call.args) != 1 or call.kwargs:
        return None
    x, da, db = call.args[0], d_va[0], d_vt[0]
    if isinstance(x, (tf.SparseTensor, tf.RaggedTensor)):
        return None
    k, n = layer.kernel.shape
    da, db = _examples(da, batch, n), _examples(db, batch, n)  # (B, T, n)
    terms = [Outer(layer.kernel, _examples(x, batch, k), da, db)]
    if layer.use_bias:
        terms.append(Full(layer.bias, tf.reduce_sum(da, 1), tf.reduce_sum(db, 1)))
    return terms


def _split_einsum(equation):
    """'abc,cde->abde' -> (free, contracted, new) letters when the kernel contracts the trailing
    input axes and produces the trailing output axes (every EinsumDense of the Transformer);
    else None."""
    equation = equation.replace(" ", "")
    try:
        inputs, out = equation.split("->")
        x_spec, k_spec = inputs.split(",")
    except ValueError:
        return None
    ell = "..."
    if ell in k_spec or (ell in x_spec) != (ell in out):
        return None
    if ell in x_spec and not (x_spec.startswith(ell) and out.startswith(ell)):
        return None
    x_spec, out = x_spec.replace(ell, ""), out.replace(ell, "")
    contracted = "".join(c for c in x_spec if c in k_spec and c not in out)
    new = "".join(c for c in k_spec if c in out and c not in x_spec)
    free = "".join(c for c in x_spec if c in out and c not in k_spec)
    if x_spec != free + contracted or k_spec != contracted + new or out != free + new:
        return None
    return free, contracted, new


@handles(tf.keras.layers.EinsumDense)
def _einsum_dense(call, d_va, d_vt, batch, chunk_size):
    """y = einsum(eq, x, W) + b as a dense layer from the contracted to the new axes."""
    layer = call.layer
    split = _split_einsum(layer.equation)
    if split is None or not _is_linear(layer.activation) or len(call.args) != 1:
        return None
    _, contracted, new = split
    kernel_shape = layer.kernel.shape.as_list()
    k = math.prod(kernel_shape[: len(contracted)])
    n = math.prod(kernel_shape[len(contracted) :])
    x, da, db = call.args[0], d_va[0], d_vt[0]
    terms = [
        Outer(
            layer.kernel, _examples(x, batch, k), _examples(da, batch, n), _examples(db, batch, n)
        )
    ]
    if layer.bias is not None:
        bias_shape = layer.bias.shape.as_list()
        if bias_shape != kernel_shape[len(kernel_shape) - len(bias_shape) :]:
            return None  # bias not over trailing output axes (broadcast 1s): fallback
        width = math.prod(bias_shape)
        sum_t = lambda d: tf.reshape(
            tf.reduce_sum(_examples(d, batch, width), 1), [batch] + bias_shape
        )
        terms.append(Full(layer.bias, sum_t(da), sum_t(db)))
    return terms


def _patches(x, kernel_size):
    """(R, s_1..s_n, C) -> (R, prod(s_j // k_j), prod(k_j) * C): non-overlapping patches in the
    order of a (k_1..k_n, C, out) convolution kernel."""
    n = len(kernel_size)
    spatial = x.shape[1 : 1 + n]
    grid = [s // k for s, k in zip(spatial, kernel_size)]
    x = x[(slice(None),) + tuple(slice(0, g * k) for g, k in zip(grid, kernel_size))]
    split = [-1]
    for g, k in zip(grid, kernel_size):
        split += [g, k]
    x = tf.reshape(x, split + [x.shape[-1]])  # (R, g1, k1, ..., gn, kn, C)
    perm = [0] + [1 + 2 * j for j in range(n)] + [2 + 2 * j for j in range(n)] + [2 * n + 1]
    x = tf.transpose(x, perm)  # (R, g..., k..., C)
    return tf.reshape(x, [-1, math.prod(grid), math.prod(kernel_size) * x.shape[-1]])


@handles(tf.keras.layers.Conv1D, tf.keras.layers.Conv2D, tf.keras.layers.Conv3D)
def _conv(call, d_va, d_vt, batch, chunk_size):
    """Convolution with kernel = stride ('valid', channels_last): a dense layer over patches."""
    layer = call.layer
    if (
        tuple(layer.strides) != tuple(layer.kernel_size)
        or layer.padding != "valid"
        or any(r != 1 for r in layer.dilation_rate)
        or layer.groups != 1
        or layer.data_format != "channels_last"
        or not _is_linear(layer.activation)
        or len(call.args) != 1
    ):
        return None
    x, da, db = call.args[0], d_va[0], d_vt[0]
    k = math.prod(layer.kernel.shape[:-1])
    n = layer.kernel.shape[-1]
    da, db = _examples(da, batch, n), _examples(db, batch, n)
    terms = [Outer(layer.kernel, _examples(_patches(x, layer.kernel_size), batch, k), da, db)]
    if layer.use_bias:
        terms.append(Full(layer.bias, tf.reduce_sum(da, 1), tf.reduce_sum(db, 1)))
    return terms


@handles(tf.keras.layers.Embedding)
def _embedding(call, d_va, d_vt, batch, chunk_size):
    layer = call.layer
    if len(call.args) != 1 or getattr(layer, "sparse", False):
        return None
    ids, da, db = call.args[0], d_va[0], d_vt[0]
    n = layer.embeddings.shape[-1]
    ids = tf.reshape(tf.cast(ids, tf.int32), [batch, -1])  # (B, T)
    return [Rows(layer.embeddings, ids, _examples(da, batch, n), _examples(db, batch, n))]


@handles(FactorisedPositionalEmbedding)
def _positions(call, d_va, d_vt, batch, chunk_size):
    """tokens + sum_j broadcast(interp(table_j)): table_j's per-example gradient is M_j^T U_j
    with U_j = d summed over the other grid axes (B, length_j, D) and M_j (length_j, n_j) the
    spline interpolation (linear in the table; the identity at the configured size): an Outer
    term with x_t = M_j[t]."""
    layer, tokens = call.layer, call.args[0]
    if len(call.args) != 1 or call.kwargs:
        return None
    rank = len(layer.grid_size)
    terms = []
    for j, table in enumerate(layer.tables):
        n, length = table.shape[0], tokens.shape[1 + j]
        other = [1 + a for a in range(rank) if a != j]
        u = lambda d, other=other: _examples(
            tf.reduce_sum(d, other), batch, d.shape[-1]
        )  # (B, m*l, D)
        # The interpolation applied to the identity: column c is the response to table row c.
        m = tf.eye(n) if n == length else interpolate_table(tf.eye(n), length)  # (l, n)
        da, db = u(d_va[0]), u(d_vt[0])
        rows = da.shape[1] // length  # narrations per example (text)
        terms.append(Outer(table, tf.tile(m[None], [1, rows, 1]), da, db))  # x shared
    return terms


@handles(AggregationToken)
def _aggregation_token(call, d_va, d_vt, batch, chunk_size):
    """concat(token, tokens): the token's per-example gradient is d at position 0."""
    token = call.layer.token
    g = lambda d: tf.reshape(
        tf.reduce_sum(_examples(d[:, 0], batch), 1), [batch] + token.shape.as_list()
    )
    return [Full(token, g(d_va[0]), g(d_vt[0]))]


def _scale_offset(layer, x, xhat, d_va, d_vt, batch):
    """Full terms of gamma (sum_t d * xhat) and beta (sum_t d) of a normalisation layer."""
    width = x.shape[-1]
    xhat = _examples(xhat, batch, width)
    da, db = _examples(d_va, batch, width), _examples(d_vt, batch, width)
    terms = []
    if layer.scale:
        terms.append(Full(layer.gamma, tf.reduce_sum(da * xhat, 1), tf.reduce_sum(db * xhat, 1)))
    if layer.center:
        terms.append(Full(layer.beta, tf.reduce_sum(da, 1), tf.reduce_sum(db, 1)))
    return terms


@handles(tf.keras.layers.LayerNormalization)
def _layer_norm(call, d_va, d_vt, batch, chunk_size):
    """y = gamma * xhat + beta, xhat normalised over the last axis (per row: no coupling)."""
    layer = call.layer
    x = call.args[0]
    if len(call.args) != 1 or list(layer.axis) != [x.shape.rank - 1]:
        return None
    x = tf.cast(x, tf.float32)
    mean, var = tf.nn.moments(x, [-1], keepdims=True)
    xhat = (x - mean) * tf.math.rsqrt(var + layer.epsilon)
    return _scale_offset(layer, x, xhat, d_va[0], d_vt[0], batch)


@handles(tf.keras.layers.BatchNormalization)
def _batch_norm(call, d_va, d_vt, batch, chunk_size):
    """y = gamma * xhat + beta with the batch statistics the layer used (global under a
    synchronised BatchNorm: the same all-reduce, via the layer's own moments)."""
    layer = call.layer
    x = call.args[0]
    if (
        layer.renorm
        or layer.virtual_batch_size is not None
        or layer.adjustment is not None
        or len(layer.axis) != 1
        or layer.axis[0] != x.shape.rank - 1
        or call.kwargs.get("mask") is not None
    ):
        return None
    training = call.kwargs.get("training", call.args[1] if len(call.args) > 1 else None)
    if not isinstance(training, (bool, type(None))):
        training = tf.get_static_value(training)
        if training is None:
            return None
    x = tf.cast(x, tf.float32)
    if training:
        axes = list(range(x.shape.rank - 1))
        mean, var = layer._calculate_mean_and_var(x, axes, keep_dims=False)  # noqa: SLF001
    else:
        mean, var = layer.moving_mean, layer.moving_variance
    xhat = (x - mean) * tf.math.rsqrt(var + layer.epsilon)
    return _scale_offset(layer, x, xhat, d_va[0], d_vt[0], batch)


def _fallback(call, d_va, d_vt, batch, chunk_size, variables):
    """Any layer: re-run its call on the captured inputs; per-example gradients of
    s_i = sum_{rows of i} <stop_gradient(d), y> from pfor Jacobians, chunk by chunk.

    The layer must be deterministic (no dropout inside it) and free of side effects."""
    with tf.GradientTape(persistent=True) as tape:
        outputs = tf.nest.flatten(call.layer.call(*call.args, **call.kwargs))

        def per_example(ds):
            s = tf.add_n(
                [
                    tf.reduce_sum(_examples(tf.stop_gradient(d) * y, batch, 1), [1, 2])
                    for d, y in zip(ds, outputs)
                ]
            )  # (B,)
            return [s[a:b] for a, b in harmonize.chunks(batch, chunk_size)]

        parts_va, parts_vt = per_example(d_va), per_example(d_vt)
    zero = tf.UnconnectedGradients.ZERO
    g_va = [[] for _ in variables]
    g_vt = [[] for _ in variables]
    previous = []
    for s_va, s_vt in zip(parts_va, parts_vt):  # one chunk after the other: bounded memory
        with tf.control_dependencies(previous):
            j_va = tape.jacobian(
                s_va, variables, unconnected_gradients=zero, experimental_use_pfor=True
            )
            j_vt = tape.jacobian(
                s_vt, variables, unconnected_gradients=zero, experimental_use_pfor=True
            )
        for i in range(len(variables)):
            g_va[i].append(j_va[i])
            g_vt[i].append(j_vt[i])
        previous = j_va + j_vt
    del tape
    return [Full(v, tf.concat(a, 0), tf.concat(b, 0)) for v, a, b in zip(variables, g_va, g_vt)]


# ------------------------------------------------------------------- statistics and update
def _per_example_outer(x, d):
    """x_i^T d_i for every example: (B, k, n); x may be shared (1, T, k)."""
    if x.shape[0] == 1:
        return tf.einsum("tk,btn->bkn", x[0], d)
    return tf.einsum("btk,btn->bkn", x, d)


def _outer_cost(terms):
    """(ghost flops, direct flops) of a variable's concatenated Outer terms."""
    b, k, n = terms[0].d_va.shape[0], terms[0].x.shape[-1], terms[0].d_va.shape[-1]
    t = sum(term.x.shape[1] for term in terms)
    return b * t * t * (k + 3 * n), 2 * b * t * k * n + 3 * b * k * n


def _outer_stats(terms, mode):
    """(dot, |g_va|^2, |g_vt|^2), each (B,), for one variable's Outer terms (one per call).

    Calls are not concatenated (no copy of the captured tensors): direct sums the per-call
    x_c^T d_c; ghost sums the blocks (x_c x_c'^T) * (d_c d_c'^T) over every pair of calls."""
    if mode == "auto":
        ghost, direct = _outer_cost(terms)
        mode = "ghost" if ghost < direct else "direct"
    if mode == "ghost":  # sum_{t,s} (x_t . x_s)(d^a_t . d^b_s), t and s over all calls' tokens
        dot = nva = nvt = 0.0
        for p in terms:
            for q in terms:
                gram = tf.einsum("...tk,...sk->...ts", p.x, q.x)  # (B or 1, T_p, T_q)
                pair = lambda u, v, gram=gram: tf.reduce_sum(
                    gram * tf.einsum("btn,bsn->bts", u, v), [1, 2]
                )
                dot += pair(p.d_va, q.d_vt)
                nva += pair(p.d_va, q.d_va)
                nvt += pair(p.d_vt, q.d_vt)
        return dot, nva, nvt
    ga = tf.add_n([_per_example_outer(t.x, t.d_va) for t in terms])  # (B, k, n)
    gb = tf.add_n([_per_example_outer(t.x, t.d_vt) for t in terms])
    return (
        tf.reduce_sum(ga * gb, [1, 2]),
        tf.reduce_sum(ga * ga, [1, 2]),
        tf.reduce_sum(gb * gb, [1, 2]),
    )


def _cat(tensors):
    return tensors[0] if len(tensors) == 1 else tf.concat(tensors, axis=1)


def _rows_stats(terms):
    ids = _cat([t.ids for t in terms])  # (B, T)
    da, db = _cat([t.d_va for t in terms]), _cat([t.d_vt for t in terms])  # (B, T, n)
    same = tf.cast(tf.equal(ids[:, :, None], ids[:, None, :]), tf.float32)  # (B, T, T)
    pair = lambda p, q: tf.reduce_sum(same * tf.einsum("btn,bsn->bts", p, q), [1, 2])
    return pair(da, db), pair(da, da), pair(db, db)


def _materialise(term, batch):
    """Any term as Full (B, *var.shape) (used when one variable mixes term kinds)."""
    shape = term.var.shape.as_list()
    if isinstance(term, Full):
        return term
    if isinstance(term, Outer):
        g = lambda d: tf.reshape(_per_example_outer(term.x, d), [batch] + shape)
        return Full(term.var, g(term.d_va), g(term.d_vt))
    rows = shape[0]
    seg = term.ids + rows * tf.range(batch)[:, None]  # (B, T) ids per example
    g = lambda d: tf.reshape(
        tf.math.unsorted_segment_sum(
            tf.reshape(d, [-1, shape[-1]]), tf.reshape(seg, [-1]), batch * rows
        ),
        [batch] + shape,
    )
    return Full(term.var, g(term.d_va), g(term.d_vt))


def _variable_stats(terms, batch, mode):
    kinds = {type(t) for t in terms}
    if kinds == {Outer}:
        return _outer_stats(terms, mode)
    if kinds == {Rows}:
        return _rows_stats(terms)
    full = [_materialise(t, batch) for t in terms]
    ga, gb = tf.add_n([f.g_va for f in full]), tf.add_n([f.g_vt for f in full])
    axes = list(range(1, ga.shape.rank))
    return (
        tf.reduce_sum(ga * gb, axes),
        tf.reduce_sum(ga * ga, axes),
        tf.reduce_sum(gb * gb, axes),
    )


def _variable_update(terms, alpha, beta, batch):
    """sum_i alpha_i G^va_(i) + beta_i G^vt_(i) for one variable, from its terms."""
    shape = terms[0].var.shape
    total = []
    for t in terms:
        if isinstance(t, Full):
            total.append(tf.tensordot(alpha, t.g_va, 1) + tf.tensordot(beta, t.g_vt, 1))
            continue
        d = alpha[:, None, None] * t.d_va + beta[:, None, None] * t.d_vt  # (B, T, n)
        if isinstance(t, Outer) and t.x.shape[0] == 1:  # shared x: sum d over examples first
            total.append(
                tf.reshape(tf.matmul(t.x[0], tf.reduce_sum(d, 0), transpose_a=True), shape)
            )
        elif isinstance(t, Outer):
            total.append(tf.reshape(tf.einsum("btk,btn->kn", t.x, d), shape))
        else:
            total.append(
                tf.math.unsorted_segment_sum(
                    tf.reshape(d, [-1, shape[-1]]), tf.reshape(t.ids, [-1]), shape[0]
                )
            )
    return tf.add_n(total)


def collect_terms(calls, d_va, d_vt, owners, batch, chunk_size=None, materialise=False):
    """Terms per variable ref from the captured calls and their output gradients.

    materialise=True sends every call to the generic fallback (the reference path)."""
    by_var = collections.OrderedDict()
    for call, da, db in zip(calls, d_va, d_vt):
        handler = None if materialise else _handler_for(call.layer)
        terms = handler(call, da, db, batch, chunk_size) if handler else None
        if terms is None:
            terms = _fallback(call, da, db, batch, chunk_size, owners[call.layer])
        for term in terms:
            by_var.setdefault(term.var.ref(), []).append(term)
    return by_var


@dataclasses.dataclass
class Forward:
    """One forward under the two tapes and both losses' gradients at the captured outputs."""

    calls: List[Call]  # calls of variable-owning layers, in call order
    d_va: list  # per call: d(sum loss_va)/d(its flattened outputs)
    d_vt: list
    owners: dict  # {layer: the variables it owns}
    batch: int
    out: tuple  # (loss_va, loss_vt, aux) of loss_fn


def _forward(loss_fn, variables, model) -> Forward:
    """Forward under two tapes with every variable-owning layer's calls captured, then one
    backward pass per loss to the captured outputs (weight gradients are never formed)."""
    owners = owned_variables(model)
    owned = {v.ref() for vs in owners.values() for v in vs}
    missing = [v.name for v in variables if v.ref() not in owned]
    if missing:
        raise ValueError(
            f"per-example statistics need every variable to belong to a layer of "
            f"the model; these do not: {missing}"
        )
    with capture_layer_calls(list(owners)) as calls:
        with tf.GradientTape() as tape_va, tf.GradientTape() as tape_vt:
            loss_va, loss_vt, aux = loss_fn()
            target_va, target_vt = tf.reduce_sum(loss_va), tf.reduce_sum(loss_vt)
    batch = loss_va.shape[0]
    if batch is None:
        raise ValueError(
            "per-example statistics need a static batch size (batch with drop_remainder=True)"
        )
    flat = [tf.nest.flatten(c.outputs) for c in calls]
    sources = [y for ys in flat for y in ys]
    zero = tf.UnconnectedGradients.ZERO
    grads_va = tape_va.gradient(target_va, sources, unconnected_gradients=zero)
    grads_vt = tape_vt.gradient(target_vt, sources, unconnected_gradients=zero)
    d_va, d_vt, i = [], [], 0
    for ys in flat:
        d_va.append(grads_va[i : i + len(ys)])
        d_vt.append(grads_vt[i : i + len(ys)])
        i += len(ys)
    return Forward(calls, d_va, d_vt, owners, batch, (loss_va, loss_vt, aux))


def _statistics(fwd: Forward, variables, chunk_size, mode, materialise=False):
    """Terms per variable and the summed (dot, |g_va|^2, |g_vt|^2), each (B,)."""
    by_var = collect_terms(
        fwd.calls, fwd.d_va, fwd.d_vt, fwd.owners, fwd.batch, chunk_size, materialise
    )
    stats = [
        _variable_stats(by_var[v.ref()], fwd.batch, mode) for v in variables if v.ref() in by_var
    ]
    zero = tf.zeros([fwd.batch])
    return by_var, [tf.add_n([s[j] for s in stats]) if stats else zero for j in range(3)]


def per_example_statistics(
    loss_fn, variables, model, chunk_size=None, mode="auto", materialise=False
):
    """(dot, |g_va|^2, |g_vt|^2), each (B,), of the forward-path per-example gradients
    (module docstring), over `variables`, plus (loss_va, loss_vt, aux) from `loss_fn`."""
    variables = list(variables)
    fwd = _forward(loss_fn, variables, model)
    _, (dot, nva2, nvt2) = _statistics(fwd, variables, chunk_size, mode, materialise)
    return dot, nva2, nvt2, fwd.out


def per_example_gradients(loss_fn, variables, model, chunk_size=None):
    """Reference path: materialised forward-path per-example gradients, (B, *shape) per
    variable and per loss (zeros where not reached), every layer through the generic fallback
    (autodiff of its call, no hand-written formula). Memory B x parameters: tests only."""
    variables = list(variables)
    fwd = _forward(loss_fn, variables, model)
    by_var = collect_terms(
        fwd.calls, fwd.d_va, fwd.d_vt, fwd.owners, fwd.batch, chunk_size, materialise=True
    )
    g_va, g_vt = [], []
    for v in variables:
        terms = by_var.get(v.ref(), [])
        zeros = tf.zeros([fwd.batch] + v.shape.as_list())
        g_va.append(tf.add_n([t.g_va for t in terms]) if terms else zeros)
        g_vt.append(tf.add_n([t.g_vt for t in terms]) if terms else zeros)
    return g_va, g_vt, fwd.out


def harmonized_gradients(
    loss_fn,
    variables,
    model,
    method,
    gamma=None,
    reweight=harmonize.RW_VA,
    phi_hat=None,
    gradvac_beta=harmonize.GRADVAC_BETA,
    chunk_size=None,
    mode="auto",
):
    """Per-example harmonization (granularity 'example_fast') without per-example gradients.

    Same contract as `harmonize.harmonized_gradients` (loss_fn() -> (loss_va (B,), loss_vt (B,),
    aux); returns (update, stats, aux) with stats vectors over the B examples), with the
    forward-path definition of the per-example gradient (module docstring). `model` is the
    Keras model (built) whose layers own `variables`. `chunk_size` bounds the examples per pfor
    Jacobian in the fallback; `mode` picks the Outer inner product ('auto' by cost).
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {MODES}")
    variables = list(variables)
    fwd = _forward(loss_fn, variables, model)
    by_var, (dot, nva2, nvt2) = _statistics(fwd, variables, chunk_size, mode)
    loss_va, loss_vt, aux = fwd.out

    alpha, beta, cos, projected, dropped = harmonize._weights(  # noqa: SLF001
        dot, nva2, nvt2, method, gamma, reweight, phi_hat
    )
    alpha, beta = tf.stop_gradient(alpha), tf.stop_gradient(beta)

    update = [
        _variable_update(by_var[v.ref()], alpha, beta, fwd.batch)
        if v.ref() in by_var
        else tf.zeros(v.shape)
        for v in variables
    ]
    stats = dict(
        cosine=cos,
        dot=dot,
        norm_va=tf.sqrt(nva2),
        norm_vt=tf.sqrt(nvt2),
        projected=projected,
        dropped=dropped,
        alpha=alpha,
        beta=beta,
        loss_va=tf.reduce_sum(loss_va),
        loss_vt=tf.reduce_sum(loss_vt),
        phi_hat=harmonize._next_phi(phi_hat, cos, gradvac_beta),
    )  # noqa: SLF001
    return update, stats, aux
