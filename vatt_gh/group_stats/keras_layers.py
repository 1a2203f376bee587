"""Per-group gradient terms of Keras layers (vatt_gh.group_stats.terms): Dense, EinsumDense,
Conv1D/2D/3D with kernel = stride, Embedding, LayerNormalization, BatchNormalization.

A formula returns None when a call is outside what it covers (a non-linear activation, strides
other than the kernel, ...): the call then goes through the generic fallback.
"""

import math

import tensorflow as tf

from vatt_gh.group_stats.terms import Full, Outer, Rows, as_groups, handles, is_linear


@handles(tf.keras.layers.Dense)
def dense(call, d_va, d_vt, groups):
    """y = x W + b over any leading axes: Outer(kernel) and Full(bias = sum_t d)."""
    layer = call.layer
    if not is_linear(layer.activation) or len(call.args) != 1 or call.kwargs:
        return None
    x = call.args[0]
    if isinstance(x, (tf.SparseTensor, tf.RaggedTensor)):
        return None
    k, n = layer.kernel.shape
    da, db = as_groups(d_va[0], groups, n), as_groups(d_vt[0], groups, n)  # (G, T, n)
    terms = [Outer(layer.kernel, as_groups(x, groups, k), da, db)]
    if layer.use_bias:
        terms.append(Full(layer.bias, tf.reduce_sum(da, 1), tf.reduce_sum(db, 1)))
    return terms


def split_einsum(equation):
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
def einsum_dense(call, d_va, d_vt, groups):
    """y = einsum(eq, x, W) + b as a dense layer from the contracted to the new axes."""
    layer = call.layer
    split = split_einsum(layer.equation)
    if split is None or not is_linear(layer.activation) or len(call.args) != 1:
        return None
    _, contracted, new = split
    kernel_shape = layer.kernel.shape.as_list()
    k = math.prod(kernel_shape[: len(contracted)])
    n = math.prod(kernel_shape[len(contracted) :])
    x = call.args[0]
    da, db = as_groups(d_va[0], groups, n), as_groups(d_vt[0], groups, n)
    terms = [Outer(layer.kernel, as_groups(x, groups, k), da, db)]
    if layer.bias is not None:
        bias_shape = layer.bias.shape.as_list()
        if bias_shape != kernel_shape[len(kernel_shape) - len(bias_shape) :]:
            return None  # bias not over trailing output axes (broadcast 1s): fallback
        width = math.prod(bias_shape)
        per_group = lambda d: tf.reshape(
            tf.reduce_sum(as_groups(d, groups, width), 1), [groups] + bias_shape
        )
        terms.append(Full(layer.bias, per_group(d_va[0]), per_group(d_vt[0])))
    return terms


def patches(x, kernel_size):
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
def conv(call, d_va, d_vt, groups):
    """Convolution with kernel = stride ('valid', channels_last): a dense layer over patches."""
    layer = call.layer
    if (
        tuple(layer.strides) != tuple(layer.kernel_size)
        or layer.padding != "valid"
        or any(r != 1 for r in layer.dilation_rate)
        or layer.groups != 1
        or layer.data_format != "channels_last"
        or not is_linear(layer.activation)
        or len(call.args) != 1
    ):
        return None
    x = call.args[0]
    k = math.prod(layer.kernel.shape[:-1])
    n = layer.kernel.shape[-1]
    da, db = as_groups(d_va[0], groups, n), as_groups(d_vt[0], groups, n)
    terms = [Outer(layer.kernel, as_groups(patches(x, layer.kernel_size), groups, k), da, db)]
    if layer.use_bias:
        terms.append(Full(layer.bias, tf.reduce_sum(da, 1), tf.reduce_sum(db, 1)))
    return terms


@handles(tf.keras.layers.Embedding)
def embedding(call, d_va, d_vt, groups):
    """Rows(table): group g's gradient puts d_t in row ids_t (kept sparse: IndexedSlices)."""
    layer = call.layer
    if len(call.args) != 1 or getattr(layer, "sparse", False):
        return None
    n = layer.embeddings.shape[-1]
    ids = tf.reshape(tf.cast(call.args[0], tf.int32), [groups, -1])  # (G, T)
    return [
        Rows(layer.embeddings, ids, as_groups(d_va[0], groups, n), as_groups(d_vt[0], groups, n))
    ]


def scale_offset(layer, xhat, d_va, d_vt, groups):
    """Full terms of gamma (sum_t d * xhat) and beta (sum_t d) of a normalisation layer."""
    width = xhat.shape[-1]
    xhat = as_groups(xhat, groups, width)
    da, db = as_groups(d_va, groups, width), as_groups(d_vt, groups, width)
    terms = []
    if layer.scale:
        terms.append(Full(layer.gamma, tf.reduce_sum(da * xhat, 1), tf.reduce_sum(db * xhat, 1)))
    if layer.center:
        terms.append(Full(layer.beta, tf.reduce_sum(da, 1), tf.reduce_sum(db, 1)))
    return terms


@handles(tf.keras.layers.LayerNormalization)
def layer_norm(call, d_va, d_vt, groups):
    """y = gamma * xhat + beta, xhat normalised over the last axis (per row: no coupling)."""
    layer = call.layer
    x = call.args[0]
    if len(call.args) != 1 or list(layer.axis) != [x.shape.rank - 1]:
        return None
    x = tf.cast(x, tf.float32)
    mean, var = tf.nn.moments(x, [-1], keepdims=True)
    xhat = (x - mean) * tf.math.rsqrt(var + layer.epsilon)
    return scale_offset(layer, xhat, d_va[0], d_vt[0], groups)


def batch_moments(x, axes, synchronized):
    """The batch statistics a Keras BatchNormalization uses in training: over the local batch,
    or (synchronized) over the global batch from all-reduced sums, as Keras computes them."""
    ctx = tf.distribute.get_replica_context()
    if not synchronized or ctx is None:
        return tf.nn.moments(x, axes)
    total = lambda t: ctx.all_reduce(tf.distribute.ReduceOp.SUM, t)
    count = total(tf.reduce_sum(tf.ones_like(x), axes, keepdims=True))
    mean = total(tf.reduce_sum(x, axes, keepdims=True)) / count
    squares = total(tf.reduce_sum(tf.square(x), axes, keepdims=True)) / count
    var = tf.maximum(squares - tf.square(mean), 0.0)
    return tf.squeeze(mean, axes), tf.squeeze(var, axes)


@handles(tf.keras.layers.BatchNormalization)
def batch_norm(call, d_va, d_vt, groups):
    """y = gamma * xhat + beta with the batch statistics the layer used (global under a
    synchronised BatchNorm). gamma and beta do not enter the statistics, so a group's
    gradient is sum over its rows of d * xhat and d."""
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
        mean, var = batch_moments(x, list(range(x.shape.rank - 1)), layer.synchronized)
    else:
        mean, var = layer.moving_mean, layer.moving_variance
    xhat = (x - mean) * tf.math.rsqrt(var + layer.epsilon)
    return scale_offset(layer, xhat, d_va[0], d_vt[0], groups)
