r"""From captured calls to each group's (G_va . G_vt, |G_va|^2, |G_vt|^2) and the update.

`forward` runs the loss under two tapes with every variable-owning layer's calls captured, then
ONE backward pass per loss to the captured outputs (weight gradients are not formed there).
`group_pairs` turns the calls into terms (vatt_gh.group_stats.terms) and, per variable, into
three (G,) vectors and an update function. For a variable's Outer terms (one per call of a
shared layer), whichever is cheaper for the shapes:

    ghost:  <G^a_g, G^b_g> = sum_{t,s in g} (x_t . x_s)(d^a_t . d^b_s)  cost G T^2 (k + 3n)
            + the update x^T (alpha d^a + beta d^b) over all tokens      cost 2 G T k n
    direct: the groups' gradients x_g^T [d^a_g, d^b_g] in one matmul      cost 4 G T k n
            + the update sum_g alpha_g G^a_g + beta_g G^b_g              cost 2 G k n

so the weight-gradient work is done once (ghost) or once per loss (direct, what two ordinary
backward passes do) and never a third time. An embedding table's update stays an
`IndexedSlices` (no dense vocabulary-sized tensor).
"""

import collections
import dataclasses
from typing import Callable, List

import tensorflow as tf

from vatt_gh.group_stats.capture import Call, capture_layer_calls, owned_variables
from vatt_gh.group_stats.terms import Full, Outer, Rows, as_groups, handler_for

MODES = ("auto", "ghost", "direct")


def chunks(size: int, chunk_size=None):
    """[(start, stop)] covering range(size) in consecutive pieces of at most chunk_size."""
    step = size if not chunk_size or chunk_size >= size else int(chunk_size)
    return [(a, min(a + step, size)) for a in range(0, size, step)]


# ------------------------------------------------------------------------------ forward
@dataclasses.dataclass
class Forward:
    """One forward under the two tapes and both losses' gradients at the captured outputs."""

    calls: List[Call]  # calls of variable-owning layers, in call order
    d_va: list  # per call: d(sum loss_va)/d(its flattened outputs)
    d_vt: list
    owners: dict  # {layer: the variables it owns}
    batch: int  # clips in the local batch
    out: tuple  # (loss_va, loss_vt, aux) of loss_fn


def forward(loss_fn, variables, model) -> Forward:
    """Forward under two tapes with every variable-owning layer of `model` captured, then one
    backward pass per loss to the captured outputs.

    loss_fn() -> (loss_va (B,), loss_vt (B,), aux): per-clip shares of the two losses."""
    owners = owned_variables(model)
    owned = {v.ref() for vs in owners.values() for v in vs}
    missing = [v.name for v in variables if v.ref() not in owned]
    if missing:
        raise ValueError(
            f"group statistics need every variable to belong to a layer of the model; "
            f"these do not: {missing}"
        )
    with capture_layer_calls(list(owners)) as calls:
        with tf.GradientTape() as tape_va, tf.GradientTape() as tape_vt:
            loss_va, loss_vt, aux = loss_fn()
            target_va = tf.reduce_sum(loss_va)
            target_vt = tf.reduce_sum(loss_vt)
    batch = loss_va.shape[0]
    if batch is None:
        raise ValueError(
            "group statistics need a static batch size (batch with drop_remainder=True)"
        )
    d_va, d_vt, _, _ = output_cotangents(calls, (tape_va, target_va), (tape_vt, target_vt))
    return Forward(calls, d_va, d_vt, owners, batch, (loss_va, loss_vt, aux))


def output_cotangents(calls, va, vt, extra=()):
    """Each loss's gradient with respect to every output of every call (per call, a list over
    its flattened outputs), and with respect to the tensors `extra`. `va`, `vt`: (tape, target).
    """
    flat = [tf.nest.flatten(c.outputs) for c in calls]
    sources = [y for ys in flat for y in ys] + list(extra)
    zero = tf.UnconnectedGradients.ZERO
    grads_va = va[0].gradient(va[1], sources, unconnected_gradients=zero)
    grads_vt = vt[0].gradient(vt[1], sources, unconnected_gradients=zero)
    d_va, d_vt, i = [], [], 0
    for ys in flat:
        d_va.append(grads_va[i : i + len(ys)])
        d_vt.append(grads_vt[i : i + len(ys)])
        i += len(ys)
    return d_va, d_vt, grads_va[i:], grads_vt[i:]


def _f32(t):
    return tf.cast(t, tf.float32)


def fallback(call, d_va, d_vt, groups, chunk_size, variables):
    """Any layer: re-run its call on the captured inputs; the groups' gradients of
    s_g = sum_{rows of g} <stop_gradient(d), y> from pfor Jacobians, chunk by chunk.

    The layer must be deterministic (no dropout inside it) and free of side effects."""
    with tf.GradientTape(persistent=True) as tape:
        # Through __call__: under a mixed policy it reads the variables in the compute dtype.
        outputs = tf.nest.flatten(call.layer(*call.args, **call.kwargs))

        def per_group(ds):
            s = tf.add_n(
                [
                    tf.reduce_sum(
                        as_groups(tf.stop_gradient(tf.cast(d, tf.float32)) * _f32(y), groups, 1),
                        [1, 2],
                    )
                    for d, y in zip(ds, outputs)
                ]
            )  # (G,)
            return [s[a:b] for a, b in chunks(groups, chunk_size)]

        parts_va, parts_vt = per_group(d_va), per_group(d_vt)
    zero = tf.UnconnectedGradients.ZERO
    g_va, g_vt = [[] for _ in variables], [[] for _ in variables]
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


def collect_terms(fwd: Forward, groups: int, chunk_size=None, materialise=False):
    """{variable ref: [terms]} from the captured calls and their output gradients.

    materialise=True sends every call to the generic fallback (the reference path)."""
    by_var = collections.OrderedDict()
    for call, da, db in zip(fwd.calls, fwd.d_va, fwd.d_vt):
        handler = None if materialise else handler_for(call.layer)
        terms = handler(call, da, db, groups) if handler else None
        if terms is None:
            terms = fallback(call, da, db, groups, chunk_size, fwd.owners[call.layer])
        for term in terms:
            by_var.setdefault(term.var.ref(), []).append(term)
    return by_var


# --------------------------------------------------------------- per-variable algebra
@dataclasses.dataclass
class Pair:
    """A variable's three (G,) vectors and its update from the groups' weights."""

    dot: tf.Tensor
    nva: tf.Tensor
    nvt: tf.Tensor
    update: Callable  # (alpha (G,), beta (G,)) -> tensor or IndexedSlices of var.shape


def _inner(ga, gb):
    axes = list(range(1, ga.shape.rank))
    return (
        tf.reduce_sum(ga * gb, axes),
        tf.reduce_sum(ga * ga, axes),
        tf.reduce_sum(gb * gb, axes),
    )


def _from_groups(var, ga, gb):
    """Pair from the groups' gradients (G, *shape): the update reuses them."""
    dot, nva, nvt = _inner(ga, gb)
    shape = var.shape

    def update(alpha, beta):
        return tf.reshape(tf.tensordot(alpha, ga, 1) + tf.tensordot(beta, gb, 1), shape)

    return Pair(dot, nva, nvt, update)


def outer_cost(terms):
    """(ghost flops, direct flops) of a variable's Outer terms."""
    g, k, n = terms[0].d_va.shape[0], terms[0].x.shape[-1], terms[0].d_va.shape[-1]
    t = sum(term.x.shape[1] for term in terms)
    return g * t * t * (k + 3 * n) + 2 * g * t * k * n, 4 * g * t * k * n + 2 * g * k * n


def _group_outer(x, d):
    """x_g^T d_g for every group: (G, k, n'); x may be shared (1, T, k)."""
    if x.shape[0] == 1 and d.shape[0] != 1:
        return tf.einsum("tk,gtn->gkn", x[0], d)
    return tf.einsum("gtk,gtn->gkn", x, d)


def _outer_pair(terms, mode):
    var = terms[0].var
    if mode == "auto":
        ghost, direct = outer_cost(terms)
        mode = "ghost" if ghost < direct else "direct"
    if mode == "direct":  # both losses' group gradients in one matmul per call
        n = terms[0].d_va.shape[-1]
        both = tf.add_n([_group_outer(t.x, tf.concat([t.d_va, t.d_vt], -1)) for t in terms])
        return _from_groups(var, both[..., :n], both[..., n:])
    # ghost: sum_{t,s} (x_t . x_s)(d^a_t . d^b_s), t and s over every call's tokens
    dot = nva = nvt = 0.0
    for p in terms:
        for q in terms:
            gram = tf.einsum("...tk,...sk->...ts", p.x, q.x)  # (G or 1, T_p, T_q)
            pair = lambda u, v, gram=gram: tf.reduce_sum(
                gram * tf.einsum("gtn,gsn->gts", u, v), [1, 2]
            )
            dot += pair(p.d_va, q.d_vt)
            nva += pair(p.d_va, q.d_va)
            nvt += pair(p.d_vt, q.d_vt)

    def update(alpha, beta):
        total = []
        for t in terms:
            d = alpha[:, None, None] * t.d_va + beta[:, None, None] * t.d_vt  # (G, T, n)
            if t.x.shape[0] == 1:
                total.append(tf.matmul(t.x[0], tf.reduce_sum(d, 0), transpose_a=True))
            else:
                total.append(tf.einsum("gtk,gtn->kn", t.x, d))
        return tf.reshape(tf.add_n(total), var.shape)

    return Pair(dot, nva, nvt, update)


def _rows_pair(terms):
    var = terms[0].var
    cat = lambda ts: ts[0] if len(ts) == 1 else tf.concat(ts, axis=1)
    ids = cat([t.ids for t in terms])  # (G, T)
    da, db = cat([t.d_va for t in terms]), cat([t.d_vt for t in terms])  # (G, T, n)
    same = tf.cast(tf.equal(ids[:, :, None], ids[:, None, :]), tf.float32)  # (G, T, T)
    pair = lambda p, q: tf.reduce_sum(same * tf.einsum("gtn,gsn->gts", p, q), [1, 2])

    def update(alpha, beta):
        d = alpha[:, None, None] * da + beta[:, None, None] * db
        return tf.IndexedSlices(
            tf.reshape(d, [-1, d.shape[-1]]),
            tf.reshape(ids, [-1]),
            tf.constant(var.shape.as_list(), tf.int64),
        )

    return Pair(pair(da, db), pair(da, da), pair(db, db), update)


def materialise(term, groups):
    """Any term as Full (G, *var.shape): reference path, or a variable mixing term kinds."""
    shape = term.var.shape.as_list()
    if isinstance(term, Full):
        return term
    if isinstance(term, Outer):
        g = lambda d: tf.reshape(_group_outer(term.x, d), [groups] + shape)
        return Full(term.var, g(term.d_va), g(term.d_vt))
    rows = shape[0]
    seg = term.ids + rows * tf.range(groups)[:, None]  # (G, T) ids per group
    g = lambda d: tf.reshape(
        tf.math.unsorted_segment_sum(
            tf.reshape(d, [-1, shape[-1]]), tf.reshape(seg, [-1]), groups * rows
        ),
        [groups] + shape,
    )
    return Full(term.var, g(term.d_va), g(term.d_vt))


def variable_pair(terms, groups, mode="auto") -> Pair:
    kinds = {type(t) for t in terms}
    if kinds == {Outer}:
        return _outer_pair(terms, mode)
    if kinds == {Rows}:
        return _rows_pair(terms)
    full = [materialise(t, groups) for t in terms]
    return _from_groups(
        terms[0].var, tf.add_n([f.g_va for f in full]), tf.add_n([f.g_vt for f in full])
    )


# --------------------------------------------------------------------------------- API
@dataclasses.dataclass
class GroupPairs:
    """(G,) vectors summed over the variables, and the harmonized update from the weights."""

    dot: tf.Tensor
    nva: tf.Tensor
    nvt: tf.Tensor
    variables: list
    pairs: list  # Pair or None (not reached) per variable

    def update(self, alpha, beta):
        """sum_g alpha_g G_va,g + beta_g G_vt,g per variable (zeros where not reached)."""
        return [
            tf.zeros(v.shape) if p is None else p.update(alpha, beta)
            for v, p in zip(self.variables, self.pairs)
        ]


def group_pairs(fwd: Forward, variables, group_size, chunk_size=None, mode="auto") -> GroupPairs:
    """Per-group statistics over `variables`, groups of `group_size` consecutive clips."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {MODES}")
    groups = fwd.batch // group_size
    by_var = collect_terms(fwd, groups, chunk_size)
    pairs = [
        variable_pair(by_var[v.ref()], groups, mode) if v.ref() in by_var else None
        for v in variables
    ]
    reached = [p for p in pairs if p is not None]
    zero = tf.zeros([groups])
    total = lambda name: tf.add_n([getattr(p, name) for p in reached]) if reached else zero
    return GroupPairs(total("dot"), total("nva"), total("nvt"), list(variables), pairs)


def group_gradients(loss_fn, variables, model, group_size, chunk_size=None):
    """Reference path: the groups' gradients (G, *shape) per variable and per loss, every layer
    through the generic fallback (autodiff of its call, no formula). Memory G x parameters:
    tests only. Returns (g_va, g_vt, (loss_va, loss_vt, aux))."""
    variables = list(variables)
    fwd = forward(loss_fn, variables, model)
    groups = fwd.batch // group_size
    by_var = collect_terms(fwd, groups, chunk_size, materialise=True)
    g_va, g_vt = [], []
    for v in variables:
        terms = by_var.get(v.ref(), [])
        zeros = tf.zeros([groups] + v.shape.as_list())
        g_va.append(tf.add_n([t.g_va for t in terms]) if terms else zeros)
        g_vt.append(tf.add_n([t.g_vt for t in terms]) if terms else zeros)
    return g_va, g_vt, fwd.out
