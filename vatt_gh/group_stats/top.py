r"""Statistics from the top part S of the network; the update below S from ONE backward pass.

`Harmonization.statistics = 'heads'`: S is the FAC head (everything between the pooled features
and the two losses, its BatchNorm and the contrastive negatives included); 'top:K' adds the
post-projections, the encoders' final norms and their last K Transformer layers. `forward` runs
the loss once, with S's variable-owning layers and the boundary layers' calls captured, and
propagates each loss's gradient only through S: to S's layer outputs (for
`algebra.group_pairs` over S's variables) and to S's lower boundary (the pooled features the
head receives; for 'top:K' the tokens entering the K-th layer from the top).

Below S nothing couples clips (attention and LayerNorm act within a clip), so group g's
contribution to a backbone variable is the vector-Jacobian product of its own rows of the
pooled features with the losses' cotangents there. Hence, with every clip's two cotangents
combined as alpha_g d_va + beta_g d_vt (`TopForward.below`), ONE backward pass through the
backbone gives sum_g alpha_g G_va,g + beta_g G_vt,g exactly for every variable below S.
"""

import dataclasses
from typing import List

import tensorflow as tf

from vatt_gh.group_stats.algebra import Forward, output_cotangents
from vatt_gh.group_stats.capture import capture_layer_calls, owned_variables
from vatt_gh.group_stats.terms import as_groups

# Layers that couple the clips of a batch: S must contain them.
COUPLING = (tf.keras.layers.BatchNormalization,)


def top_part(model, statistics: str):
    """(the layers that form S, the layers whose calls' inputs are S's lower boundary).

    'heads': the model's `fac_head`. 'top:K': the head, the post-projections, each encoder's
    final norm and its last K Transformer layers; the boundary is the input of each encoder's
    K-th layer from the top (a shared encoder: one call per modality)."""
    head = getattr(model, "fac_head", None)
    if not isinstance(head, tf.keras.layers.Layer):
        raise ValueError(
            f"statistics {statistics!r}: the model {model.name!r} has no FAC head (`fac_head`) "
            "to take the statistics from; use statistics='all'"
        )
    if statistics == "heads":
        return [head], [head]
    k = int(statistics.split(":")[1])
    encoders = list({id(e): e for e in getattr(model, "encoders", {}).values()}.values())
    if not encoders:
        raise ValueError(
            f"statistics {statistics!r}: the model {model.name!r} has no `encoders`; "
            "use statistics='heads' or 'all'"
        )
    for encoder in encoders:
        if getattr(encoder, "relative_bias", None) is not None:
            raise ValueError(
                f"statistics {statistics!r}: the encoder {encoder.name!r} (T5) feeds one relative "
                "position bias to all its layers, so its layers above and below the top part do "
                "not separate; use statistics='heads' or 'all'"
            )
        if k > len(encoder.blocks):
            raise ValueError(
                f"statistics {statistics!r}: the encoder {encoder.name!r} has only "
                f"{len(encoder.blocks)} layers"
            )
    projections = list(getattr(model, "post_projections", {}).values())
    layers = [head] + projections + [e.final_norm for e in encoders]
    layers += [block for e in encoders for block in e.blocks[-k:]]
    return layers, [e.blocks[-k] for e in encoders]


def _module_ids(layers) -> set:
    return {id(m) for layer in layers for m in [layer] + list(layer.submodules)}


def top_variables(model, variables, statistics: str) -> List[tf.Variable]:
    """The variables of S among `variables`, in their order (the ones `forward` puts in
    `TopForward.top`)."""
    in_top = _module_ids(top_part(model, statistics)[0])
    refs = {
        v.ref() for layer, vs in owned_variables(model).items() if id(layer) in in_top for v in vs
    }
    return [v for v in variables if v.ref() in refs]


@dataclasses.dataclass
class TopForward:
    """One forward; both losses' gradients through S only; the tape for the pass below S."""

    fwd: Forward  # S's captured calls and gradients (for algebra.group_pairs)
    top: List[tf.Variable]  # the variables of S, in the order of `variables`
    below: List[tf.Variable]  # every other variable
    boundary: list  # the tensors S receives (rows of clips, clip-major)
    b_va: list  # d(sum loss_va) / d(boundary)
    b_vt: list
    tape: tf.GradientTape  # persistent; recorded the forward

    def update_below(self, alpha, beta):
        """sum_g alpha_g G_va,g + beta_g G_vt,g for `below`: the combined cotangents at the
        boundary, propagated once. None-free (zeros where a variable is not reached)."""
        groups = alpha.shape[0]
        combined = []
        for x, da, db in zip(self.boundary, self.b_va, self.b_vt):
            width = x.shape[-1]
            d = alpha[:, None, None] * as_groups(da, groups, width) + beta[
                :, None, None
            ] * as_groups(db, groups, width)  # (G, rows per group, width), float32
            combined.append(tf.cast(tf.reshape(d, tf.shape(x)), x.dtype))
        grads = self.tape.gradient(
            self.boundary,
            self.below,
            output_gradients=combined,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return [
            g if isinstance(g, tf.IndexedSlices) else tf.cast(g, v.dtype)
            for g, v in zip(grads, self.below)
        ]


def forward(loss_fn, variables, model, statistics: str) -> TopForward:
    """Forward with S's layers captured; both losses' gradients to S's layer outputs and to
    the pooled features S receives (one backward pass per loss through S only).

    loss_fn() -> (loss_va (B,), loss_vt (B,), aux): per-clip shares of the two losses."""
    layers, boundary_layers = top_part(model, statistics)
    in_top = _module_ids(layers)
    coupling = [m.name for m in model.submodules if isinstance(m, COUPLING) and id(m) not in in_top]
    if coupling:
        raise ValueError(
            f"statistics {statistics!r}: {coupling} couple the clips below the top part, so one "
            "backward pass below it would not be the per-group update; use statistics='all'"
        )
    owners = owned_variables(model)
    owned = {v.ref() for vs in owners.values() for v in vs}
    missing = [v.name for v in variables if v.ref() not in owned]
    if missing:
        raise ValueError(
            f"group statistics need every variable to belong to a layer of the model; "
            f"these do not: {missing}"
        )
    top_owners = {layer: vs for layer, vs in owners.items() if id(layer) in in_top}
    top_refs = {v.ref() for vs in top_owners.values() for v in vs}
    recorded = list(top_owners) + [b for b in boundary_layers if b not in top_owners]
    with capture_layer_calls(recorded) as calls:
        with tf.GradientTape(persistent=True) as tape:
            loss_va, loss_vt, aux = loss_fn()
            target_va = tf.reduce_sum(loss_va)
            target_vt = tf.reduce_sum(loss_vt)
    batch = loss_va.shape[0]
    if batch is None:
        raise ValueError(
            "group statistics need a static batch size (batch with drop_remainder=True)"
        )
    inner = [c for c in calls if c.layer in top_owners]
    boundary = [
        x
        for c in calls
        if any(c.layer is b for b in boundary_layers)
        for x in tf.nest.flatten((c.args, c.kwargs))
        if isinstance(x, tf.Tensor) and x.dtype.is_floating
    ]
    d_va, d_vt, boundary_va, boundary_vt = output_cotangents(
        inner, (tape, target_va), (tape, target_vt), boundary
    )
    fwd = Forward(inner, d_va, d_vt, top_owners, batch, (loss_va, loss_vt, aux))
    return TopForward(
        fwd,
        [v for v in variables if v.ref() in top_refs],
        [v for v in variables if v.ref() not in top_refs],
        boundary,
        boundary_va,
        boundary_vt,
        tape,
    )
