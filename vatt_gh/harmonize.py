"""Cross-modality gradient harmonization (paper Section 3.2, Algorithms 1-2, Section 4.4).

The module a reader checks against the paper: the configuration (`Harmonization`), the
curriculum threshold (`linear_gamma`), the weights of every method (`weights`), and one builder
of the step's statistics (`statistics`). Pure TensorFlow, no Keras. How the three numbers below
are measured for each group of clips, and how the update is formed from them, is
`vatt_gh.harmonized_update`.

Every method of docs/harmonization.md is a linear combination of the two gradients,

    update = alpha * g_va + beta * g_vt,

whose weights depend only on three numbers: ``d = g_va . g_vt``, ``|g_va|^2`` and ``|g_vt|^2``.
At granularity ``group:N`` each group g of N clips has its own pair and its own weights, and the
update is sum_g alpha_g G_va,g + beta_g G_vt,g.

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

import dataclasses
from typing import NamedTuple, Optional, Sequence, Tuple

import tensorflow as tf

import gin

METHODS = ("sum", "reweight", "realign", "curriculum", "both", "gradvac")
CONSTANT_WEIGHTS = ("sum", "reweight")  # one backward pass of w_va loss_va + w_vt loss_vt
RW_VA = (2.5, 0.5)  # re-weighting baseline favouring video-audio (paper Table 1)
RW_VT = (0.5, 2.5)  # re-weighting baseline favouring video-text
GRADVAC_BETA = 0.01  # EMA rate of the GradVac target phi_hat
# Analysis-only granularities (the Figure 3 inspection): each clip's (or each of K groups')
# OWN loss terms through every path, from pfor Jacobians. Not a training granularity.
OWN_LOSS_TERMS = ("example", "microbatch:K")

Grads = Sequence[Optional[tf.Tensor]]


# ------------------------------------------------------------------------ configuration
class Granularity(NamedTuple):
    """What one pair (g_va, g_vt) is: `kind` 'group' (a group's contribution through its own
    forward path) or 'own_loss' (a group's own loss terms through every path, analysis only),
    and `size`, the clips per group (None: from the local batch, known at trace time: 'replica',
    or `groups` equal groups for 'microbatch:K'). `name` is the string it was parsed from."""

    kind: str
    size: Optional[int]
    groups: Optional[int] = None
    name: str = ""

    def group_size(self, local_batch: int) -> int:
        """Clips per group in a local batch of `local_batch` (one-line ValueError unless the
        groups tile it)."""
        if self.groups is not None:
            if local_batch % self.groups:
                raise ValueError(
                    f"granularity {self.name!r}: the local batch of {local_batch} "
                    f"does not split into {self.groups} equal groups"
                )
            return local_batch // self.groups
        if self.size is None:
            return local_batch
        if local_batch % self.size:
            raise ValueError(
                f"granularity {self.name!r}: the local batch of {local_batch} clips does not "
                f"split into groups of {self.size} (set Harmonization.granularity or the batch size)"
            )
        return self.size


def parse_granularity(granularity: str, local_batch: Optional[int] = None) -> Granularity:
    """'group:N' -> groups of N clips; 'replica' -> one group per replica (hardware-dependent);
    'example' / 'microbatch:K' -> own-loss-term groups of 1 / local_batch // K clips.

    With `local_batch` the size is resolved and checked to tile it (one-line ValueError)."""

    def count(prefix):
        try:
            n = int(granularity[len(prefix) :])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"granularity {granularity!r}: N in '{prefix}N' must be >= 1")
        return n

    if granularity == "replica":
        parsed = Granularity("group", None, name=granularity)
    elif granularity.startswith("group:"):
        parsed = Granularity("group", count("group:"), name=granularity)
    elif granularity == "example":
        parsed = Granularity("own_loss", 1, name=granularity)
    elif granularity.startswith("microbatch:"):
        parsed = Granularity("own_loss", None, count("microbatch:"), granularity)
    else:
        raise ValueError(
            f"unknown granularity {granularity!r}; use 'group:N' or 'replica' (training), "
            "'example' or 'microbatch:K' (analysis only)"
        )
    if local_batch is not None:
        parsed = parsed._replace(size=parsed.group_size(local_batch), groups=None)
    return parsed


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Harmonization:
    """How g_va and g_vt are combined (docs/harmonization.md); checked and parsed once, here.

    `parsed` is the granularity parsed (`Granularity`). `analysis` admits the analysis-only
    granularities ('example', 'microbatch:K': each clip's own loss terms, for
    `PretrainModel.gradient_stats` and tools/inspect_conflicts.py); never for training."""

    method: str = "sum"  # sum | reweight | realign | curriculum | both | gradvac
    # 'group:N': N consecutive clips of the local batch per pair (gin/base.gin: 'group:8', the
    # authors' 8 clips per TPU v3 core); 'group:1' is per triplet; 'replica' is one pair per
    # device (depends on the hardware).
    granularity: str = "group:1"
    gamma_start: float = -0.3  # curriculum threshold at step 0 ...
    gamma_end: float = 0.0  # ... reached at gamma_steps, constant afterwards
    gamma_steps: int = 500_000
    reweight: Tuple[float, float] = RW_VA  # (w_va, w_vt) for method="reweight"
    gradvac_beta: float = GRADVAC_BETA
    # sum / reweight: the cosines (TensorBoard only) are measured every monitor_every steps;
    # None: at the run's summary cadence.
    monitor_every: Optional[int] = None
    # Groups per pfor Jacobian (analysis granularities, and layers without a formula in
    # vatt_gh.group_stats): bounds memory to chunk_size x parameters; None = all at once.
    chunk_size: Optional[int] = None
    analysis: bool = False
    parsed: Granularity = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(
                f"unknown harmonization method {self.method!r}; choose one of {METHODS}"
            )
        object.__setattr__(self, "parsed", parse_granularity(self.granularity))
        if self.parsed.kind != "group" and not self.analysis:
            raise ValueError(
                f"granularity {self.granularity!r} is analysis-only (each clip's own loss terms, "
                "tools/inspect_conflicts.py); train with 'group:N' or 'replica'"
            )
        for name in ("gamma_start", "gamma_end"):  # thresholds on a cosine
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Harmonization.{name} {value!r} must be a number in [-1, 1]")
            if not -1.0 <= value <= 1.0:  # also rejects NaN
                raise ValueError(
                    f"Harmonization.{name} = {value!r}: a cosine threshold must be in [-1, 1] "
                    "(1 or more drops every triplet)"
                )
        if isinstance(self.gamma_steps, bool) or not isinstance(self.gamma_steps, int):
            raise ValueError(f"Harmonization.gamma_steps {self.gamma_steps!r} must be an integer")
        if self.gamma_steps < 1:
            raise ValueError(f"Harmonization.gamma_steps {self.gamma_steps!r} must be >= 1")
        for name in ("chunk_size", "monitor_every"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"Harmonization.{name} {value!r} must be a positive integer")

    @property
    def constant_weights(self) -> bool:
        """sum / reweight: the weights are constants (one backward pass gives the update)."""
        return self.method in CONSTANT_WEIGHTS


def linear_gamma(step, total_steps, gamma_start=-0.3, gamma_end=0.0):
    """Curriculum threshold at an optimizer step (Sec. 3.2.2): linear from gamma_start at step 0
    to gamma_end at total_steps, held at gamma_end afterwards."""
    step = tf.cast(step, tf.float32)
    frac = tf.clip_by_value(step / float(max(total_steps, 1)), 0.0, 1.0)
    return gamma_start + frac * (gamma_end - gamma_start)


# ------------------------------------------------------------------------------ weights
class Weights(NamedTuple):
    """Per pair: the update's weights, the cosine, and 0/1 flags (realigned or vaccinated;
    dropped by the curriculum). Shapes follow the inputs of `weights`."""

    alpha: tf.Tensor
    beta: tf.Tensor
    cos: tf.Tensor
    projected: tf.Tensor
    dropped: tf.Tensor


def cosine(dot, norm_va_sq, norm_vt_sq):
    """cos(g_va, g_vt) with a zero gradient giving 0 (no NaN)."""
    denom = tf.sqrt(norm_va_sq) * tf.sqrt(norm_vt_sq)
    return tf.clip_by_value(tf.math.divide_no_nan(dot, denom), -1.0, 1.0)


def weights(dot, norm_va_sq, norm_vt_sq, h: Harmonization, gamma=None, phi_hat=None) -> Weights:
    """(alpha, beta, cos, projected, dropped) of every pair from d, |g_va|^2, |g_vt|^2, by the
    method of `h`; `gamma` (curriculum / both) and `phi_hat` (gradvac) are this step's."""
    method = h.method
    if method in ("curriculum", "both") and gamma is None:
        raise ValueError(f"method {method!r} needs gamma (see linear_gamma)")
    dot = tf.convert_to_tensor(dot, tf.float32)
    norm_va_sq = tf.convert_to_tensor(norm_va_sq, tf.float32)
    norm_vt_sq = tf.convert_to_tensor(norm_vt_sq, tf.float32)
    cos = cosine(dot, norm_va_sq, norm_vt_sq)
    one, zero = tf.ones_like(dot), tf.zeros_like(dot)

    if method == "sum":
        return Weights(one, one, cos, zero, zero)
    if method == "reweight":
        w_va, w_vt = h.reweight
        return Weights(w_va * one, w_vt * one, cos, zero, zero)

    # Algorithm 1: g_va - (d/|g_vt|^2) g_vt + g_vt - (d/|g_va|^2) g_va, only when d < 0.
    conflict = dot < 0.0
    d_neg = tf.minimum(dot, 0.0)
    alpha_realign = one - tf.math.divide_no_nan(d_neg, norm_va_sq)
    beta_realign = one - tf.math.divide_no_nan(d_neg, norm_vt_sq)

    if method == "realign":
        return Weights(alpha_realign, beta_realign, cos, tf.cast(conflict, tf.float32), zero)
    if method == "curriculum":  # Algorithm 2, gated on the cosine (docs/harmonization.md)
        keep = tf.cast(cos > gamma, tf.float32)
        return Weights(keep, keep, cos, zero, 1.0 - keep)
    if method == "both":  # Section 4.4: drop, else realign when conflicting, else sum
        keep = cos > gamma
        project = tf.logical_and(keep, cos < 0.0)
        alpha = tf.where(keep, tf.where(project, alpha_realign, one), zero)
        beta = tf.where(keep, tf.where(project, beta_realign, one), zero)
        return Weights(
            alpha, beta, cos, tf.cast(project, tf.float32), 1.0 - tf.cast(keep, tf.float32)
        )

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
    return Weights(alpha, beta, cos, tf.cast(vaccinate, tf.float32), zero)


def next_phi(phi_hat, cos, rate=GRADVAC_BETA):
    """GradVac EMA: phi_hat <- (1 - beta) phi_hat + beta * mean(cos); unchanged without pairs."""
    phi = tf.convert_to_tensor(0.0 if phi_hat is None else phi_hat, tf.float32)
    mean = tf.math.divide_no_nan(tf.reduce_sum(cos), tf.cast(tf.size(cos), tf.float32))
    return tf.where(tf.size(cos) > 0, (1.0 - rate) * phi + rate * mean, phi)


def statistics(dot, norm_va_sq, norm_vt_sq, w: Weights, loss_va, loss_vt, phi_hat, rate):
    """The step's statistics (vectors over the pairs, empty when none was measured): `cosine`,
    `dot`, `norm_va`, `norm_vt`, `projected`, `dropped`, `alpha`, `beta`; scalars `loss_va`,
    `loss_vt` (sums of the per-clip shares) and `phi_hat` (the GradVac target after this step)."""
    return dict(
        cosine=w.cos,
        dot=dot,
        norm_va=tf.sqrt(norm_va_sq),
        norm_vt=tf.sqrt(norm_vt_sq),
        projected=w.projected,
        dropped=w.dropped,
        alpha=w.alpha,
        beta=w.beta,
        loss_va=tf.reduce_sum(loss_va),
        loss_vt=tf.reduce_sum(loss_vt),
        phi_hat=next_phi(phi_hat, w.cos, rate),
    )


# --------------------------------------------------------------------- one pair, dense
def _dense(grads: Grads, shapes):
    """Gradients as dense float32 tensors, zeros where a loss does not reach a variable."""
    return [
        tf.zeros(shape, tf.float32) if g is None else tf.cast(tf.convert_to_tensor(g), tf.float32)
        for g, shape in zip(grads, shapes)
    ]


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


def harmonize(g_va: Grads, g_vt: Grads, h: Harmonization, gamma=None, phi_hat=None):
    """Algorithms 1-2 on one pair of gradient lists, by the method of `h`. Returns
    (update, stats).

    update: list of dense tensors, one per variable. stats: scalar `cosine`, `dot`, `norm_va`,
    `norm_vt`, `projected`, `dropped`, `alpha`, `beta`, `phi_hat` (after this step's EMA).
    """
    shapes = _shapes_of(g_va, g_vt)
    g_va, g_vt = _dense(g_va, shapes), _dense(g_vt, shapes)
    total = lambda xs: tf.add_n([tf.reduce_sum(x) for x in xs])
    dot = total([a * b for a, b in zip(g_va, g_vt)])
    nva2, nvt2 = total([a * a for a in g_va]), total([b * b for b in g_vt])
    w = weights(dot, nva2, nvt2, h, gamma, phi_hat)
    update = [w.alpha * a + w.beta * b for a, b in zip(g_va, g_vt)]
    stats = statistics(dot, nva2, nvt2, w, 0.0, 0.0, phi_hat, h.gradvac_beta)
    del stats["loss_va"], stats["loss_vt"]
    return update, stats
