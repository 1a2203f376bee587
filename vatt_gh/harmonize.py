"""Cross-modality gradient harmonization (paper Section 3.2, Algorithms 1-2, Section 4.4).

Pure TensorFlow, no Keras: functions over lists of gradient tensors, one per trainable variable,
in the same order for both losses (``None`` where a loss does not reach a variable).

Every method of docs/harmonization.md is a linear combination of the two gradients,

    update = alpha * g_va + beta * g_vt,

whose weights depend only on three numbers: ``d = g_va . g_vt``, ``|g_va|^2`` and ``|g_vt|^2``.
``example_weights`` computes them (for one pair or for a vector of pairs); ``harmonize`` applies
them to one pair of gradients; ``harmonized_gradients`` runs a loss callable under two tapes and
harmonizes at a granularity (``replica``, ``example`` or ``microbatch:K``).

| method       | (alpha, beta)                                                             |
| ------------ | ------------------------------------------------------------------------- |
| sum          | (1, 1)                                                                    |
| reweight     | (w_va, w_vt): RW-VA = (2.5, 0.5), RW-VT = (0.5, 2.5)                      |
| realign      | d < 0: (1 - d/|g_va|^2, 1 - d/|g_vt|^2)  (Alg. 1: each projected on the     |
|              | normal plane of the other, then summed); else (1, 1)                      |
| curriculum   | cos > gamma: (1, 1); else (0, 0), the triplet is dropped (Alg. 2)         |
| both         | cos <= gamma: (0, 0); gamma < cos < 0: realign; cos >= 0: (1, 1) (Sec 4.4)|
| gradvac      | cos < phi_hat: (1 + c_vt, 1 + c_va), Gradient Vaccine (Wang et al. 2021)  |
"""

from typing import Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

METHODS = ("sum", "reweight", "realign", "curriculum", "both", "gradvac")
RW_VA = (2.5, 0.5)  # re-weighting baseline favouring video-audio (paper Table 1)
RW_VT = (0.5, 2.5)  # re-weighting baseline favouring video-text
GRADVAC_BETA = 0.01  # EMA rate of the GradVac target phi_hat
# Per-example statistics without per-example gradients (vatt_gh.per_example; needs the model).
EXAMPLE_FAST = "example_fast"

Grads = Sequence[Optional[tf.Tensor]]


def linear_gamma(step, total_steps, gamma_start=-0.3, gamma_end=0.0):
    """Curriculum threshold at an optimizer step (Sec. 3.2.2): linear from gamma_start at step 0
    to gamma_end at total_steps, held at gamma_end afterwards."""
    step = tf.cast(step, tf.float32)
    frac = tf.clip_by_value(step / float(max(total_steps, 1)), 0.0, 1.0)
    return gamma_start + frac * (gamma_end - gamma_start)


def _check_method(method, gamma):
    if method not in METHODS:
        raise ValueError(f"unknown harmonization method {method!r}; choose one of {METHODS}")
    if method in ("curriculum", "both") and gamma is None:
        raise ValueError(f"method {method!r} needs gamma (see linear_gamma)")


def _cosine(dot, norm_va_sq, norm_vt_sq):
    """cos(g_va, g_vt) with a zero gradient giving 0 (no NaN)."""
    denom = tf.sqrt(norm_va_sq) * tf.sqrt(norm_vt_sq)
    return tf.clip_by_value(tf.math.divide_no_nan(dot, denom), -1.0, 1.0)


def _weights(dot, norm_va_sq, norm_vt_sq, method, gamma, reweight, phi_hat):
    """(alpha, beta, cos, projected, dropped) for every pair; shapes follow `dot`."""
    _check_method(method, gamma)
    dot = tf.convert_to_tensor(dot, tf.float32)
    norm_va_sq = tf.convert_to_tensor(norm_va_sq, tf.float32)
    norm_vt_sq = tf.convert_to_tensor(norm_vt_sq, tf.float32)
    cos = _cosine(dot, norm_va_sq, norm_vt_sq)
    one, zero = tf.ones_like(dot), tf.zeros_like(dot)
    no_flag = zero

    if method == "sum":
        return one, one, cos, no_flag, no_flag
    if method == "reweight":
        w_va, w_vt = reweight
        return w_va * one, w_vt * one, cos, no_flag, no_flag

    # Algorithm 1: g_va - (d/|g_vt|^2) g_vt + g_vt - (d/|g_va|^2) g_va, only when d < 0.
    conflict = dot < 0.0
    d_neg = tf.minimum(dot, 0.0)
    alpha_realign = one - tf.math.divide_no_nan(d_neg, norm_va_sq)
    beta_realign = one - tf.math.divide_no_nan(d_neg, norm_vt_sq)

    if method == "realign":
        return alpha_realign, beta_realign, cos, tf.cast(conflict, tf.float32), no_flag
    if method == "curriculum":  # Algorithm 2, gated on the cosine (docs/harmonization.md)
        keep = tf.cast(cos > gamma, tf.float32)
        return keep, keep, cos, no_flag, 1.0 - keep
    if method == "both":  # Section 4.4: drop, else realign when conflicting, else sum
        keep = cos > gamma
        project = tf.logical_and(keep, cos < 0.0)
        alpha = tf.where(keep, tf.where(project, alpha_realign, one), zero)
        beta = tf.where(keep, tf.where(project, beta_realign, one), zero)
        return alpha, beta, cos, tf.cast(project, tf.float32), 1.0 - tf.cast(keep, tf.float32)

    # gradvac: raise the cosine to the EMA target phi_hat when below it (Wang et al. 2021, eq. 6):
    # g_va += g_vt * |g_va| (phi sqrt(1-cos^2) - cos sqrt(1-phi^2)) / (|g_vt| sqrt(1-phi^2)), and
    # symmetrically; both from the original pair, so the sum is (1 + c_vt) g_va + (1 + c_va) g_vt.
    phi = tf.convert_to_tensor(0.0 if phi_hat is None else phi_hat, tf.float32)
    norm_va, norm_vt = tf.sqrt(norm_va_sq), tf.sqrt(norm_vt_sq)
    sin_cos = tf.sqrt(tf.maximum(1.0 - cos * cos, 0.0))
    sin_phi = tf.sqrt(tf.maximum(1.0 - phi * phi, 1e-12))
    core = (phi * sin_cos - cos * sin_phi) / sin_phi
    c_va = tf.math.divide_no_nan(norm_va * core, norm_vt)  # coefficient of g_vt added to g_va
    c_vt = tf.math.divide_no_nan(norm_vt * core, norm_va)  # coefficient of g_va added to g_vt
    vaccinate = cos < phi
    alpha = tf.where(vaccinate, one + c_vt, one)
    beta = tf.where(vaccinate, one + c_va, one)
    return alpha, beta, cos, tf.cast(vaccinate, tf.float32), no_flag


def example_weights(
    dot, norm_va_sq, norm_vt_sq, method, gamma=None, reweight=RW_VA, phi_hat=None
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Per-example loss weights (alpha_i, beta_i) of docs/harmonization.md.

    With d_i = g_va,i . g_vt,i and the squared norms of the per-example gradients,
    sum_i alpha_i grad(loss_va_i) + beta_i grad(loss_vt_i) is the per-example harmonized update.
    Works for scalars too (one pair).
    """
    alpha, beta, _, _, _ = _weights(dot, norm_va_sq, norm_vt_sq, method, gamma, reweight, phi_hat)
    return alpha, beta


def _dense(grads: Grads, shapes) -> List[tf.Tensor]:
    """Gradients as dense float32 tensors, zeros where a loss does not reach a variable."""
    out = []
    for g, shape in zip(grads, shapes):
        if g is None:
            out.append(tf.zeros(shape, tf.float32))
        else:
            out.append(tf.cast(tf.convert_to_tensor(g), tf.float32))
    return out


def _shapes_of(g_va: Grads, g_vt: Grads):
    if len(g_va) != len(g_vt):
        raise ValueError(f"g_va has {len(g_va)} tensors, g_vt {len(g_vt)}: one per variable each")
    shapes = []
    for i, (a, b) in enumerate(zip(g_va, g_vt)):
        if a is None and b is None:
            raise ValueError(
                f"variable {i} is reached by neither loss: its shape is unknown; "
                "pass zeros or drop it"
            )
        shapes.append((a if a is not None else b).shape)
    return shapes


def _pair_stats(g_va, g_vt, batch_dims=0):
    """(dot, |g_va|^2, |g_vt|^2) over all variables; batch_dims leading axes are kept."""

    def total(x):
        return tf.add_n([tf.reduce_sum(t, axis=list(range(batch_dims, t.shape.rank))) for t in x])

    dot = total([a * b for a, b in zip(g_va, g_vt)])
    return dot, total([a * a for a in g_va]), total([b * b for b in g_vt])


def harmonize(
    g_va: Grads,
    g_vt: Grads,
    method: str,
    gamma=None,
    reweight=RW_VA,
    phi_hat=None,
    gradvac_beta=GRADVAC_BETA,
):
    """Harmonize one pair of gradients (docs/harmonization.md). Returns (update, stats).

    update: list of dense tensors, one per variable. stats: scalar tensors `cosine`, `dot`,
    `norm_va`, `norm_vt`, `projected` (0/1), `dropped` (0/1), `alpha`, `beta`, and `phi_hat`
    (the GradVac target after this step's EMA update; unchanged for the other methods).
    """
    shapes = _shapes_of(g_va, g_vt)
    g_va, g_vt = _dense(g_va, shapes), _dense(g_vt, shapes)
    dot, nva2, nvt2 = _pair_stats(g_va, g_vt)
    alpha, beta, cos, projected, dropped = _weights(
        dot, nva2, nvt2, method, gamma, reweight, phi_hat
    )
    update = [alpha * a + beta * b for a, b in zip(g_va, g_vt)]
    stats = dict(
        cosine=cos,
        dot=dot,
        norm_va=tf.sqrt(nva2),
        norm_vt=tf.sqrt(nvt2),
        projected=projected,
        dropped=dropped,
        alpha=alpha,
        beta=beta,
        phi_hat=_next_phi(phi_hat, cos, gradvac_beta),
    )
    return update, stats


def _next_phi(phi_hat, cos, rate):
    """GradVac EMA: phi_hat <- (1 - beta) phi_hat + beta * mean(cos)."""
    phi = tf.convert_to_tensor(0.0 if phi_hat is None else phi_hat, tf.float32)
    return (1.0 - rate) * phi + rate * tf.reduce_mean(cos)


def parse_granularity(granularity: str, batch_size: int) -> int:
    """Number of groups G whose gradient pairs are harmonized separately.

    'replica' -> 1 (this replica's pair), 'example' and 'example_fast' -> batch_size,
    'microbatch:K' -> K.
    batch_size None checks the spelling only.
    """
    if granularity == "replica":
        return 1
    if granularity in ("example", EXAMPLE_FAST):
        return None if batch_size is None else int(batch_size)
    if granularity.startswith("microbatch:"):
        try:
            groups = int(granularity.split(":", 1)[1])
        except ValueError:
            groups = 0
        if groups < 1:
            raise ValueError(
                f"granularity {granularity!r}: K in 'microbatch:K' must be a positive integer"
            )
        if batch_size is not None and batch_size % groups:
            raise ValueError(
                f"granularity {granularity!r}: the local batch of {batch_size} "
                f"does not split into {groups} equal groups"
            )
        return groups
    raise ValueError(
        f"unknown granularity {granularity!r}; use 'replica', 'example', "
        f"'{EXAMPLE_FAST}' or 'microbatch:K'"
    )


def check_config(method: str, granularity: str = "replica", chunk_size=None):
    """Raise a ValueError naming a bad method, granularity or chunk size before any tracing."""
    _check_method(method, gamma=0.0)
    parse_granularity(granularity, batch_size=None)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size {chunk_size!r} must be a positive integer or None")


def chunks(size: int, chunk_size=None):
    """[(start, stop)] covering range(size) in consecutive pieces of at most chunk_size."""
    step = size if not chunk_size or chunk_size >= size else int(chunk_size)
    return [(a, min(a + step, size)) for a in range(0, size, step)]


def harmonized_gradients(
    loss_fn: Callable,
    variables,
    method: str,
    granularity="replica",
    gamma=None,
    reweight=RW_VA,
    phi_hat=None,
    gradvac_beta=GRADVAC_BETA,
    chunk_size=None,
):
    """Run `loss_fn` under two tapes and harmonize its two gradients at a granularity.

    loss_fn() -> (loss_va, loss_vt, aux): per-example loss vectors (B,) whose SUMS are the two
    losses to differentiate (e.g. loss_b / global_batch), and anything else (returned as is).

    - 'replica': one pair, g_va = grad(sum loss_va), g_vt = grad(sum loss_vt). Inside a
      replica context with negatives gathered by `all_gather` (and synchronised BatchNorm),
      this is the gradient of the GLOBAL losses with respect to this replica's copy of the
      weights, i.e. the local examples' contribution through their own forward path
      (docs/harmonization.md). It is not the same split as 'microbatch:R' on one device, which
      takes each group's own loss terms through every path; both add up to the full gradient.
    - 'example' / 'microbatch:K': the B examples form G groups of B/G consecutive examples;
      per-group gradients of the group-summed losses come from one pfor Jacobian per loss
      (correct although negatives couple examples; docs/tensorflow_notes.md), and the update is
      sum_g alpha_g G_va,g + beta_g G_vt,g with the weights of `example_weights`.
      chunk_size=C: the Jacobian rows, the stats, the weights and the update are computed for C
      groups at a time and the update accumulated (each group's weights depend only on its
      own three numbers and the step constants), so memory is C x parameters per loss, not
      G x parameters; same result as unchunked. None: all groups at once.
    - 'example_fast' is not computed here (it needs the model's layers):
      `vatt_gh.per_example.harmonized_gradients`.

    Returns (update, stats, aux); stats holds vectors over the G groups: `cosine`, `dot`,
    `norm_va`, `norm_vt`, `projected`, `dropped`, `alpha`, `beta`, plus the scalars `loss_va`,
    `loss_vt` (the sums) and `phi_hat` (GradVac target after this step).
    """
    if granularity == EXAMPLE_FAST:
        raise ValueError(
            f"granularity {EXAMPLE_FAST!r} needs the model's layers: use "
            "vatt_gh.per_example.harmonized_gradients"
        )
    variables = list(variables)
    with (
        tf.GradientTape(persistent=bool(chunk_size)) as tape_va,
        tf.GradientTape(persistent=bool(chunk_size)) as tape_vt,
    ):
        loss_va, loss_vt, aux = loss_fn()
        batch = loss_va.shape[0]
        if batch is None:
            raise ValueError(
                "harmonized_gradients needs a static batch size (batch with drop_remainder=True)"
            )
        groups = parse_granularity(granularity, batch)
        # The targets stay on the tapes: the two sums, or (G,) group sums per loss, sliced
        # into chunks of groups here so that each chunk's Jacobian is taken separately.
        if groups == 1:
            target_va, target_vt = tf.reduce_sum(loss_va), tf.reduce_sum(loss_vt)
        else:
            target_va = tf.reduce_sum(tf.reshape(loss_va, [groups, batch // groups]), axis=1)
            target_vt = tf.reduce_sum(tf.reshape(loss_vt, [groups, batch // groups]), axis=1)
            parts = [(target_va[a:b], target_vt[a:b]) for a, b in chunks(groups, chunk_size)]

    def weigh(g_va, g_vt):
        """Stats (vectors over the chunk's groups) and sum_g alpha_g G_va,g + beta_g G_vt,g."""
        dot, nva2, nvt2 = _pair_stats(g_va, g_vt, batch_dims=1)  # (G_chunk,)
        weights = _weights(dot, nva2, nvt2, method, gamma, reweight, phi_hat)
        alpha, beta = weights[:2]
        update = [
            tf.tensordot(alpha, a, axes=1) + tf.tensordot(beta, b, axes=1)
            for a, b in zip(g_va, g_vt)
        ]
        return update, (dot, nva2, nvt2) + tuple(weights)

    if groups == 1:  # one pair: an ordinary backward pass per loss
        shapes = [v.shape for v in variables]
        g_va = [g[None] for g in _dense(tape_va.gradient(target_va, variables), shapes)]
        g_vt = [g[None] for g in _dense(tape_vt.gradient(target_vt, variables), shapes)]
        update, chunk_stats = weigh(g_va, g_vt)
        per_group = [chunk_stats]
    else:  # (C, *shape) per variable and chunk, one pfor Jacobian per loss and chunk
        zero = tf.UnconnectedGradients.ZERO
        update, per_group = None, []
        for part_va, part_vt in parts:
            # One chunk after the other: only one chunk's Jacobians are alive at a time.
            with tf.control_dependencies([] if update is None else update):
                g_va = [
                    tf.cast(g, tf.float32)
                    for g in tape_va.jacobian(
                        part_va, variables, unconnected_gradients=zero, experimental_use_pfor=True
                    )
                ]
                g_vt = [
                    tf.cast(g, tf.float32)
                    for g in tape_vt.jacobian(
                        part_vt, variables, unconnected_gradients=zero, experimental_use_pfor=True
                    )
                ]
            chunk_update, chunk_stats = weigh(g_va, g_vt)
            update = (
                chunk_update if update is None else [u + c for u, c in zip(update, chunk_update)]
            )
            per_group.append(chunk_stats)
    del tape_va, tape_vt

    dot, nva2, nvt2, alpha, beta, cos, projected, dropped = (
        tf.concat([s[j] for s in per_group], 0) for j in range(8)
    )
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
        phi_hat=_next_phi(phi_hat, cos, gradvac_beta),
    )
    return update, stats, aux
