r"""The harmonized update of one replica's local batch, at any granularity, behind one function.

`harmonized_update(loss_fn, variables, model, h, gamma, phi_hat)` -> (update, stats, aux), where
`h` is the run's `harmonize.Harmonization` (method and granularity, parsed once):

- `group:N` (and `replica` = `group:<local batch>`): each group of N consecutive clips has its
  own pair (G_va,g, G_vt,g), its contribution through its own forward path; the three numbers
  per group come from `vatt_gh.group_stats` (layer inputs and both losses' output gradients),
  the weights from `harmonize.weights`, and the update sum_g alpha_g G_va,g + beta_g G_vt,g is
  formed from the same tensors.
- `sum` / `reweight` with `monitor=False`: their weights are constants, so the update is ONE
  backward pass of w_va loss_va + w_vt loss_vt (VATT's step); no statistics (empty vectors).
- `example` / `microbatch:K` (analysis only: the Figure 3 inspection): each group's OWN loss
  terms through every path, from one pfor Jacobian per loss (B x parameters of memory). One
  device only: under several replicas it raises at once.

loss_fn() -> (loss_va (B,), loss_vt (B,), aux): per-clip shares of the two losses, whose sums
(over clips and replicas) are the global losses; aux is returned as is.
stats: `harmonize.statistics` (vectors over the groups).
"""

import tensorflow as tf

from vatt_gh import group_stats, harmonize


def harmonized_update(
    loss_fn, variables, model, h: harmonize.Harmonization, gamma=None, phi_hat=None, monitor=True
):
    """Returns (update, stats, aux); update: one tensor (or IndexedSlices) per variable.

    `gamma` and `phi_hat` are this step's curriculum threshold and GradVac target; `monitor`
    False lets sum / reweight skip the statistics (one backward pass)."""
    variables = list(variables)
    if h.parsed.kind == "own_loss":
        return own_loss_terms(loss_fn, variables, h, gamma, phi_hat)
    if h.constant_weights and not monitor:
        return _one_backward_pass(loss_fn, variables, h, phi_hat)

    fwd = group_stats.forward(loss_fn, variables, model)
    pairs = group_stats.group_pairs(fwd, variables, h.parsed.group_size(fwd.batch), h.chunk_size)
    w = harmonize.weights(pairs.dot, pairs.nva, pairs.nvt, h, gamma, phi_hat)
    update = pairs.update(tf.stop_gradient(w.alpha), tf.stop_gradient(w.beta))
    loss_va, loss_vt, aux = fwd.out
    stats = harmonize.statistics(
        pairs.dot, pairs.nva, pairs.nvt, w, loss_va, loss_vt, phi_hat, h.gradvac_beta
    )
    return update, stats, aux


def _one_backward_pass(loss_fn, variables, h: harmonize.Harmonization, phi_hat):
    w_va, w_vt = h.reweight if h.method == "reweight" else (1.0, 1.0)
    with tf.GradientTape() as tape:
        loss_va, loss_vt, aux = loss_fn()
        total = w_va * tf.reduce_sum(loss_va) + w_vt * tf.reduce_sum(loss_vt)
    grads = tape.gradient(total, variables)
    update = [tf.zeros(v.shape) if g is None else g for g, v in zip(grads, variables)]
    empty = tf.zeros([0])
    w = harmonize.Weights(empty, empty, empty, empty, empty)
    stats = harmonize.statistics(empty, empty, empty, w, loss_va, loss_vt, phi_hat, h.gradvac_beta)
    return update, stats, aux


def own_loss_terms(loss_fn, variables, h: harmonize.Harmonization, gamma=None, phi_hat=None):
    """Analysis granularities 'example' / 'microbatch:K': per-group gradients of the group's
    own loss terms from pfor Jacobians (correct although negatives couple the clips;
    docs/tensorflow_notes.md). h.chunk_size=C: C groups' Jacobian rows at a time (memory C x
    parameters per loss), the update accumulated; same result as unchunked."""
    granularity, chunk_size = h.granularity, h.chunk_size
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        raise ValueError(
            f"granularity {granularity!r} (own loss terms, pfor Jacobians) runs on one device "
            "only: pfor cannot vectorise the all_gather of the negatives across replicas; "
            "use 'group:1' under several replicas"
        )
    variables = list(variables)
    with (
        tf.GradientTape(persistent=bool(chunk_size)) as tape_va,
        tf.GradientTape(persistent=bool(chunk_size)) as tape_vt,
    ):
        loss_va, loss_vt, aux = loss_fn()
        batch = loss_va.shape[0]
        if batch is None:
            raise ValueError("own_loss_terms needs a static batch size (drop_remainder=True)")
        groups = batch // h.parsed.group_size(batch)
        # The targets stay on the tapes: (G,) group sums per loss, cut into chunks of groups.
        target_va = tf.reduce_sum(tf.reshape(loss_va, [groups, batch // groups]), axis=1)
        target_vt = tf.reduce_sum(tf.reshape(loss_vt, [groups, batch // groups]), axis=1)
        parts = [
            (target_va[a:b], target_vt[a:b]) for a, b in group_stats.chunks(groups, chunk_size)
        ]

    zero = tf.UnconnectedGradients.ZERO
    update, per_chunk = None, []
    for part_va, part_vt in parts:
        # One chunk after the other: only one chunk's Jacobians are alive at a time.
        with tf.control_dependencies([] if update is None else update):
            g_va, g_vt = (
                [
                    tf.cast(g, tf.float32)
                    for g in tape.jacobian(
                        part, variables, unconnected_gradients=zero, experimental_use_pfor=True
                    )
                ]
                for tape, part in ((tape_va, part_va), (tape_vt, part_vt))
            )
        total = lambda xs: tf.add_n([tf.reduce_sum(x, list(range(1, x.shape.rank))) for x in xs])
        dot = total([a * b for a, b in zip(g_va, g_vt)])
        nva2, nvt2 = total([a * a for a in g_va]), total([b * b for b in g_vt])
        w = harmonize.weights(dot, nva2, nvt2, h, gamma, phi_hat)
        chunk_update = [
            tf.tensordot(w.alpha, a, axes=1) + tf.tensordot(w.beta, b, axes=1)
            for a, b in zip(g_va, g_vt)
        ]
        update = chunk_update if update is None else [u + c for u, c in zip(update, chunk_update)]
        per_chunk.append((dot, nva2, nvt2) + tuple(w))
    del tape_va, tape_vt
    dot, nva2, nvt2, *w = (tf.concat([c[j] for c in per_chunk], 0) for j in range(8))
    stats = harmonize.statistics(
        dot, nva2, nvt2, harmonize.Weights(*w), loss_va, loss_vt, phi_hat, h.gradvac_beta
    )
    return update, stats, aux
