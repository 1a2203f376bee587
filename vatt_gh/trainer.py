"""The harmonized pre-training step: VATT forward, two tapes, `vatt_gh.harmonize`, optimizer.

`PretrainModel.train_step` reads top to bottom as Algorithms 1-2 of the paper:

  1. gamma <- linear schedule at the optimizer step                      (Alg. 2, "update gamma")
  2. forward once under two tapes; g_va, g_vt; harmonize at a granularity (`_harmonized_update`,
     pure maths: XLA-compilable on one device, the TPU stand-in)
  3. all-reduce the harmonized updates (each replica's is the contribution of its local loss
     terms; their sum is the "replica" update of docs/harmonization.md)
  4. apply, unless every triplet of every replica was dropped or a value is non-finite: then the
     weights and the optimizer slots stay as they are and only the step counter moves
  5. metrics (every replica's values) and the cosines of every group (gathered for histograms)
"""

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf
from official.modeling import optimization  # registers gin configurables: import before parsing

import gin
from vatt_gh import harmonize, losses, per_example

SUM = tf.distribute.ReduceOp.SUM
MEAN = tf.distribute.ReduceOp.MEAN


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Harmonization:
    """How g_va and g_vt are combined (docs/harmonization.md)."""

    method: str = "sum"  # sum | reweight | realign | curriculum | both | gradvac
    granularity: str = "replica"  # replica | example | example_fast | microbatch:K
    gamma_start: float = -0.3  # curriculum threshold at step 0 ...
    gamma_end: float = 0.0  # ... reached at gamma_steps, constant afterwards
    gamma_steps: int = 500_000
    reweight: Tuple[float, float] = harmonize.RW_VA  # (w_va, w_vt) for method="reweight"
    gradvac_beta: float = harmonize.GRADVAC_BETA
    # Examples (groups) per pfor Jacobian for example / microbatch:K / example_fast's fallback:
    # bounds memory to chunk_size x parameters; None = the whole local batch at once.
    chunk_size: Optional[int] = None

    def __post_init__(self):
        harmonize.check_config(self.method, self.granularity, self.chunk_size)


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


def _all_finite(tensors):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])


@gin.configurable
class PretrainModel(tf.keras.Model):
    """VATT plus the harmonized train_step. `vatt` is a model from `vatt_gh.models.build_vatt`."""

    def __init__(
        self,
        vatt,
        harmonization: Optional[Harmonization] = None,
        temperature=0.07,
        xla_math=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vatt = vatt
        # Built here, not as a default argument, so that gin's bindings apply.
        self.harmonization = Harmonization() if harmonization is None else harmonization
        self.temperature = temperature
        self.xla_math = xla_math
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
        self._math = self._harmonized_update

    @property
    def metrics(self):
        return list(self._means.values()) + list(self._counts.values())

    def call(self, inputs, training=False):
        return self.vatt(inputs, training=training)

    def compile(self, optimizer, **kwargs):
        super().compile(optimizer=optimizer, jit_compile=False, **kwargs)
        strategy = tf.distribute.get_strategy()
        if self.xla_math and strategy.num_replicas_in_sync == 1:
            # Forward, both tapes and harmonization as one XLA cluster; summaries, the
            # conditional apply and collectives stay outside it (docs/tensorflow_notes.md).
            self._math = tf.function(self._harmonized_update, jit_compile=True)

    def gamma(self, step):
        h = self.harmonization
        return harmonize.linear_gamma(step, h.gamma_steps, h.gamma_start, h.gamma_end)

    # ------------------------------------------------------------------- the maths (XLA-able)
    def _loss_fn(self, data):
        """loss_fn for `harmonize.harmonized_gradients`: per-example shares of the two losses."""

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

    def _harmonize(self, data, method, granularity, **kwargs):
        """harmonize.harmonized_gradients, or per_example's for granularity 'example_fast'."""
        if granularity == harmonize.EXAMPLE_FAST:  # per-example stats from the layers
            return per_example.harmonized_gradients(
                self._loss_fn(data),
                self.trainable_variables,
                self.vatt,
                method,
                chunk_size=self.harmonization.chunk_size,
                **kwargs,
            )
        return harmonize.harmonized_gradients(
            self._loss_fn(data),
            self.trainable_variables,
            method,
            granularity,
            chunk_size=self.harmonization.chunk_size,
            **kwargs,
        )

    def _harmonized_update(self, data, gamma):
        """Forward under two tapes, g_va and g_vt, harmonized. Returns (update, stats)."""
        h = self.harmonization
        update, stats, (mean_va, mean_vt) = self._harmonize(
            data,
            h.method,
            h.granularity,
            gamma=gamma,
            reweight=h.reweight,
            phi_hat=self.phi_hat,
            gradvac_beta=h.gradvac_beta,
        )
        stats.update(mean_va=mean_va, mean_vt=mean_vt)
        return update, stats

    def gradient_stats(self, data, granularity="example"):
        """cos(g_va, g_vt), dot and norms per example (or group) of a batch; nothing is applied.

        What Figure 3 and the conflict inspection measure. Returns the stats dict of
        `harmonize.harmonized_gradients` (vectors over groups).
        """
        _, stats, (mean_va, mean_vt) = self._harmonize(data, "sum", granularity)
        stats.update(mean_va=mean_va, mean_vt=mean_vt)
        return stats

    # ------------------------------------------------------------------------- the step
    def train_step(self, data):
        # 1. curriculum threshold at this optimizer step
        step = self.optimizer.iterations
        gamma = self.gamma(step)

        # 2. forward, two tapes, harmonization (this replica's local loss terms)
        update, stats = self._math(data, gamma)

        # 3. sum the replicas' harmonized updates; agree on whether to apply
        ctx = tf.distribute.get_replica_context()
        update = ctx.all_reduce(SUM, update)
        kept = ctx.all_reduce(SUM, tf.reduce_sum(1.0 - stats["dropped"]))
        finite = _all_finite(update + [stats["mean_va"], stats["mean_vt"]])
        # 4. apply, or leave weights and slots untouched (the step counter still advances)
        self._apply_if(tf.logical_and(kept > 0, finite), update)
        if self.harmonization.method == "gradvac":
            self.phi_hat.assign(ctx.all_reduce(MEAN, stats["phi_hat"]))

        # 5. metrics over every replica's groups; cosines of all groups for the histogram
        m = self._means
        m["loss_va"].update_state(stats["mean_va"])
        m["loss_vt"].update_state(stats["mean_vt"])
        for name in ("cosine", "projected", "dropped", "norm_va", "norm_vt"):
            m[name].update_state(stats[name])
        self._counts["skipped_all_dropped"].update_state(tf.cast(kept <= 0, tf.float32))
        self._counts["skipped_nonfinite"].update_state(tf.cast(tf.logical_not(finite), tf.float32))
        logs = {name: metric.result() for name, metric in self._means.items()}
        logs.update({name: metric.result() for name, metric in self._counts.items()})
        logs.update(
            gamma=gamma,
            learning_rate=self._learning_rate(step),
            step_applied=tf.cast(tf.logical_and(kept > 0, finite), tf.float32),
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
