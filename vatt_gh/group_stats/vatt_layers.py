"""Per-group gradient terms of VATT's own layers: the factorised positional tables, the
aggregation token, and the T5 text encoder's RMS norm and relative position bias. (The word
embedding is a Keras Embedding: `keras_layers.embedding`; T5's projections are Keras Dense.)"""

import tensorflow as tf

from vatt_gh.group_stats.terms import Full, Outer, as_groups, handles
from vatt_gh.models.backbone import AggregationToken
from vatt_gh.models.positional import FactorisedPositionalEmbedding, interpolate_table
from vatt_gh.models.t5_text import RelativePositionBias, RMSNorm


@handles(FactorisedPositionalEmbedding)
def positions(call, d_va, d_vt, groups):
    """tokens + sum_j broadcast(interp(table_j)): table_j's group gradient is M_j^T U_j with
    U_j = d summed over the other grid axes (G, rows * length_j, D) and M_j (length_j, n_j) the
    spline interpolation (linear in the table; the identity at the configured size): an Outer
    term whose x_t = M_j[t] is shared by every group."""
    layer, tokens = call.layer, call.args[0]
    if len(call.args) != 1 or call.kwargs:
        return None
    rank = len(layer.grid_size)
    terms = []
    for j, table in enumerate(layer.tables):
        n, length = table.shape[0], tokens.shape[1 + j]
        other = [1 + a for a in range(rank) if a != j]
        u = lambda d, other=other: as_groups(
            tf.reduce_sum(tf.cast(d, tf.float32), other), groups, d.shape[-1]
        )
        # The interpolation applied to the identity: column c is the response to table row c.
        m = tf.eye(n) if n == length else interpolate_table(tf.eye(n), length)  # (l, n)
        da, db = u(d_va[0]), u(d_vt[0])
        rows = da.shape[1] // length  # rows (clips x narrations) per group
        terms.append(Outer(table, tf.tile(m[None], [1, rows, 1]), da, db))
    return terms


@handles(AggregationToken)
def aggregation_token(call, d_va, d_vt, groups):
    """concat(token, tokens): the token's group gradient is d at position 0, summed."""
    token = call.layer.token
    g = lambda d: tf.reshape(
        tf.reduce_sum(as_groups(d[:, 0], groups), 1), [groups] + token.shape.as_list()
    )
    return [Full(token, g(d_va[0]), g(d_vt[0]))]


@handles(RMSNorm)
def rms_norm(call, d_va, d_vt, groups):
    """y = scale * xhat, xhat = x / rms(x) per row (like LayerNorm's gamma): the scale's group
    gradient is sum over the group's rows of d * xhat."""
    layer = call.layer
    if len(call.args) != 1 or call.kwargs:
        return None
    xhat = layer.normalise(call.args[0])  # float32
    width = xhat.shape[-1]
    g = lambda d: tf.reduce_sum(as_groups(tf.cast(d, tf.float32) * xhat, groups, width), 1)
    return [Full(layer.scale, g(d_va[0]), g(d_vt[0]))]


@handles(RelativePositionBias)
def relative_position_bias(call, d_va, d_vt, groups):
    """bias[n, h, q, k] = table[bucket(q, k), h] (+ a constant for masked keys): the table has
    no batch axis; its group gradient is the group's logit cotangents (summed over the group's
    rows and over every layer that used the bias: they arrive summed at the layer's output)
    scattered into the buckets: G_g[b, h] = sum_{rows of g, q, k: bucket(q, k) = b} d[., h, q, k].
    """
    layer = call.layer
    if len(call.args) != 1 or call.kwargs:
        return None
    heads, length = call.outputs.shape[1], call.outputs.shape[-1]
    if heads is None or length is None:
        return None
    one_hot = tf.one_hot(layer.buckets(length), layer.num_buckets)  # (L, L, buckets)

    def g(d):
        per_group = tf.reshape(
            tf.reduce_sum(as_groups(d, groups, heads * length * length), 1),
            [groups, heads, length, length],
        )  # (G, H, L, L)
        return tf.einsum("ghqk,qkb->gbh", per_group, one_hot)  # (G, buckets, H)

    return [Full(layer.table, g(d_va[0]), g(d_vt[0]))]
