"""The harmonized pre-training step: VATT forward, the harmonized update, optimizer.

`PretrainModel.train_step` reads top to bottom as Algorithms 1-2 of the paper:

  1. gamma <- linear schedule at the optimizer step                      (Alg. 2, "update gamma")
  2. forward; per group of clips g_va, g_vt and their weights; the update
     (`vatt_gh.harmonized_update` -> `vatt_gh.harmonize.weights`; pure maths: XLA-compilable on
     one device, the TPU stand-in). `sum` / `reweight`: one backward pass of the weighted sum,
     with the cosines measured every `monitor_every` steps only
  3. all-reduce the replicas' updates (each is its local groups' harmonized contribution),
     halved: VATT's objective is (loss_va + loss_vt) / 2
  4. apply, unless every group of every replica was dropped or a value is non-finite: then
     every variable stays as it was (weights, optimizer slots, BatchNorm moving statistics,
     GradVac's target) and only the step counter moves
  5. metrics (every replica's groups) and the cosines of every group (for the histogram)
"""

import dataclasses
import inspect
from typing import Optional

import tensorflow as tf
from official.modeling import optimization  # registers gin configurables: import before parsing

import gin
from vatt_gh import harmonize, losses
from vatt_gh.harmonize import Harmonization
from vatt_gh.harmonized_update import harmonized_update

SUM = tf.distribute.ReduceOp.SUM
MEAN = tf.distribute.ReduceOp.MEAN
# VATT minimises (loss_va + loss_vt) / 2. The harmonized update is a weighted sum of the two
# losses' gradients (`sum`: g_va + g_vt), so every method's update is scaled by 1/2: `sum` is
# VATT's step and every method keeps its relation to `sum` (docs/losses.md).
OBJECTIVE_SCALE = 0.5


def _scaled(update, scale):
    return [
        tf.IndexedSlices(scale * u.values, u.indices, u.dense_shape)
        if isinstance(u, tf.IndexedSlices)
        else scale * u
        for u in update
    ]


@gin.configurable
def make_optimizer(
    learning_rate=1e-4,
    warmup_steps=10_000,
    decay_steps=500_000,
    end_learning_rate=5e-5,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
):
    """Adam with linear warm-up and cosine decay (paper Sec. 4.2), from tf-models-official."""
    config = optimization.OptimizationConfig(
        {
            "optimizer": {
                "type": "adam",
                "adam": {"beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon},
            },
            "learning_rate": {
                "type": "cosine",
                "cosine": {
                    "initial_learning_rate": learning_rate,
                    "decay_steps": decay_steps,
                    "alpha": end_learning_rate / learning_rate,
                },
            },
            "warmup": {
                "type": "linear",
                "linear": {"warmup_steps": warmup_steps, "warmup_learning_rate": 0.0},
            },
        }
    )
    factory = optimization.OptimizerFactory(config)
    return factory.build_optimizer(factory.build_learning_rate(), use_legacy_optimizer=False)


def optimizer_settings() -> dict:
    """`make_optimizer`'s settings as the next call will see them: its defaults, then gin's."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(make_optimizer).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **gin.get_bindings(make_optimizer)}


def _all_finite(tensors):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


def _all_finite_update(update):
    values = [u.values if isinstance(u, tf.IndexedSlices) else u for u in update]
    return _all_finite(values)


def forward_state(model: tf.keras.Model):
    """Non-trainable variables the forward pass itself writes: BatchNorm moving statistics."""
    return [
        v
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


@gin.configurable
class PretrainModel(tf.keras.Model):
    """VATT plus the harmonized train_step. `vatt` is a model from `vatt_gh.models.build_vatt`.

    summary_every: the run's summary cadence, the default of `Harmonization.monitor_every`
    (how often `sum` / `reweight` measure their cosines); None and no monitor_every: every step.
    """

    def __init__(
        self,
        vatt,
        harmonization: Optional[Harmonization] = None,
        temperature=0.07,
        xla_math=False,
        summary_every: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vatt = vatt
        # Built here, not as a default argument, so that gin's bindings apply.
        self.harmonization = Harmonization() if harmonization is None else harmonization
        self.temperature = temperature
        self.xla_math = xla_math
        self.monitor_every = self.harmonization.monitor_every or summary_every or 1
        self._monitor = True  # read when train_step is traced (see make_train_function)
        # GradVac's EMA target phi_hat (checkpointed with the model); same value on all replicas.
        self.phi_hat = tf.Variable(
            0.0,
            trainable=False,
            name="gradvac_phi_hat",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self._means = {
            name: tf.keras.metrics.Mean(name)
            for name in (
                "loss_va",
                "loss_vt",
                "cosine",
                "projected",
                "dropped",
                "norm_va",
                "norm_vt",
            )
        }
        self._counts = {
            name: tf.keras.metrics.Sum(name)
            for name in ("skipped_all_dropped", "skipped_nonfinite")
        }
        self.distribute_reduction_method = "first"  # every returned value is replica-identical
        self._math = self.compute_update

    @property
    def metrics(self):
        return list(self._means.values()) + list(self._counts.values())

    def call(self, inputs, training=False):
        return self.vatt(inputs, training=training)

    def compile(self, optimizer, **kwargs):
        super().compile(optimizer=optimizer, jit_compile=False, **kwargs)
        strategy = tf.distribute.get_strategy()
        if self.xla_math and strategy.num_replicas_in_sync == 1:
            # Forward, the backward passes and harmonization as one XLA cluster; summaries,
            # the conditional apply and collectives stay outside it (docs/tensorflow_notes.md).
            self._math = tf.function(self.compute_update, jit_compile=True)

    def make_train_function(self, force=False):
        """Keras' train function; for `sum` / `reweight` two traces, one that measures the
        cosines (every `monitor_every`-th step, host-side choice) and one that does not."""
        if not self.harmonization.constant_weights:
            return super().make_train_function(force)
        if getattr(self, "_dispatch", None) is not None and not force:
            return self._dispatch
        self._monitor = True
        monitored = super().make_train_function(force=True)
        self._monitor = False
        plain = super().make_train_function(force=True)

        def train_function(iterator):
            step = int(self.optimizer.iterations.numpy())
            # The step that ends a summary window (steps are counted from 1 in the loop).
            self._monitor = (step + 1) % self.monitor_every == 0
            return (monitored if self._monitor else plain)(iterator)

        self._dispatch = self.train_function = train_function
        return train_function

    def gamma(self, step):
        h = self.harmonization
        return harmonize.linear_gamma(step, h.gamma_steps, h.gamma_start, h.gamma_end)

    # ------------------------------------------------------------------- the maths (XLA-able)
    def loss_fn(self, data):
        """loss_fn for `harmonized_update`: per-clip shares of the two global mean losses."""

        def loss_fn():
            out = self.vatt(data, training=True)
            mean_va, loss_va = losses.nce(
                out["video_va"], out["audio_va"], data["audio_mask"], self.temperature
            )  # (B,)
            mean_vt, loss_vt = losses.mil_nce(
                out["video_vt"], out["text_vt"], data["text_mask"], self.temperature
            )  # (B,)
            # Per-replica contributions whose sum over replicas is the global mean loss.
            loss_va = loss_va / tf.maximum(losses.global_valid_count(data["audio_mask"]), 1.0)
            loss_vt = loss_vt / tf.maximum(losses.global_valid_count(data["text_mask"]), 1.0)
            return loss_va, loss_vt, (mean_va, mean_vt)

        return loss_fn

    def compute_update(self, data, gamma, monitor=True, harmonization=None):
        """Forward, the groups' g_va and g_vt, weights, update. Returns (update, stats).

        `harmonization`: another rule than the run's (the analysis of `gradient_stats`)."""
        update, stats, (mean_va, mean_vt) = harmonized_update(
            self.loss_fn(data),
            self.trainable_variables,
            self.vatt,
            harmonization or self.harmonization,
            gamma,
            self.phi_hat,
            monitor,
        )
        stats.update(mean_va=mean_va, mean_vt=mean_vt)
        return update, stats

    def gradient_stats(self, data, granularity="example"):
        """cos(g_va, g_vt), dot and norms per clip (or group) of a batch; nothing is applied.

        What Figure 3 and the conflict inspection measure: 'group:N' (a group's contribution
        through its own forward path, the training definition) or 'example' / 'microbatch:K'
        (each group's own loss terms, one device only). Returns `harmonize.statistics`.
        BatchNorm moving statistics are left as they were."""
        state = forward_state(self.vatt)
        before = [tf.identity(v) for v in state]
        analysis = dataclasses.replace(
            self.harmonization, method="sum", granularity=granularity, analysis=True
        )
        _, stats = self.compute_update(data, None, True, analysis)
        with tf.control_dependencies([stats["cosine"]]):
            for v, value in zip(state, before):
                v.assign(value)
        return stats

    # ------------------------------------------------------------------------- the step
    def train_step(self, data):
        # 1. curriculum threshold at this optimizer step
        step = self.optimizer.iterations
        gamma = self.gamma(step)

        # 2. forward, the groups' pairs and weights, this replica's harmonized update (the
        #    BatchNorm moving statistics the forward moves are kept aside for step 4)
        state = forward_state(self.vatt)
        before = [tf.identity(v) for v in state]
        update, stats = self._math(data, gamma, self._monitor)

        # 3. sum the replicas' harmonized updates; agree on whether to apply
        ctx = tf.distribute.get_replica_context()
        update = _scaled(ctx.all_reduce(SUM, update), OBJECTIVE_SCALE)  # VATT's (va + vt) / 2
        measured = tf.cast(tf.size(stats["dropped"]), tf.float32)
        kept = tf.reduce_sum(1.0 - stats["dropped"])
        measured, kept = tf.unstack(ctx.all_reduce(SUM, tf.stack([measured, kept])))
        all_dropped = tf.logical_and(measured > 0, kept <= 0)
        finite = _all_finite_update(update + [stats["mean_va"], stats["mean_vt"]])
        ok = tf.logical_and(tf.logical_not(all_dropped), finite)

        # 4. apply, or leave every variable as it was (the step counter still advances)
        self._apply_if(ok, update)
        for v, value in zip(state, before):
            v.assign(tf.where(ok, v, value))
        if self.harmonization.method == "gradvac":
            phi = ctx.all_reduce(MEAN, stats["phi_hat"])
            self.phi_hat.assign(tf.where(ok, phi, self.phi_hat))

        # 5. metrics over every replica's groups; cosines of all groups for the histogram
        m = self._means
        m["loss_va"].update_state(stats["mean_va"])
        m["loss_vt"].update_state(stats["mean_vt"])
        for name in ("cosine", "projected", "dropped", "norm_va", "norm_vt"):
            m[name].update_state(stats[name])
        self._counts["skipped_all_dropped"].update_state(tf.cast(all_dropped, tf.float32))
        self._counts["skipped_nonfinite"].update_state(tf.cast(tf.logical_not(finite), tf.float32))
        logs = {name: metric.result() for name, metric in self._means.items()}
        logs.update({name: metric.result() for name, metric in self._counts.items()})
        logs.update(
            gamma=gamma,
            learning_rate=self._learning_rate(step),
            step_applied=tf.cast(ok, tf.float32),
            nonfinite=tf.cast(tf.logical_not(finite), tf.float32),
            cosines=ctx.all_gather(stats["cosine"], axis=0),
        )
        return logs

    def _learning_rate(self, step):
        """The schedule at this step (Keras' `learning_rate` lags one applied step behind)."""
        schedule = getattr(self.optimizer, "_learning_rate", None)
        if isinstance(schedule, tf.keras.optimizers.schedules.LearningRateSchedule):
            return schedule(step)
        return tf.convert_to_tensor(self.optimizer.learning_rate)

    def _apply_if(self, ok, update):
        """Apply the (already all-reduced) update when `ok`, else only advance the step.

        Under a mirrored strategy `tf.cond` around `apply_gradients` fails (merge_call inside
        control flow), so the branch is taken in cross-replica context, as Keras'
        LossScaleOptimizer does, and each replica applies without re-aggregating.
        """
        variables = self.trainable_variables
        optimizer = self.optimizer

        def apply_on_replica(grads):
            optimizer.apply_gradients(zip(grads, variables), skip_gradients_aggregation=True)

        def in_cross_replica(strategy, ok, grads):
            ok = strategy.experimental_local_results(ok)[0]  # identical on every replica

            def apply():
                strategy.extended.call_for_each_replica(apply_on_replica, args=(grads,))
                return tf.constant(True)

            def skip():
                optimizer.iterations.assign_add(1)
                return tf.constant(False)

            return tf.cond(ok, apply, skip)

        return tf.distribute.get_replica_context().merge_call(in_cross_replica, args=(ok, update))
