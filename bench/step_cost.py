r"""Cost of a harmonized step relative to VATT's step, side by side in ONE process.

    python bench/step_cost.py --rounds=8 --steps=3            # the README table (small, batch 8)
    python bench/step_cost.py --rounds=1 --steps=2 --nomemory --nobreakdown   # quick look
    python bench/step_cost.py --worker=sum --preset=medium --batch=2 --precision=mixed_bfloat16
                                        # one configuration's step memory (README, Memory)

VATT's step (ratio 1.00): ONE backward pass of (loss_va + loss_vt) / 2, then Adam (a plain
tf.function, no vatt_gh step). Every other row is `PretrainModel.train_step`:
- `sum` (monitor off): one backward pass of the summed loss through the harmonized step's
  bookkeeping (all-reduce, finiteness check, conditional apply, metrics);
- `both@group:8` / `both@group:1`: forward, one backward pass per loss to every layer's output,
  the per-group statistics and the update formed once from them (vatt_gh.group_stats);
- `both@group:8/heads` / `both@group:1/heads` (`Harmonization.statistics='heads'`): both
  losses' gradients through the FAC head only, each group's weights from the head's
  statistics, then ONE backward pass below the head of the per-group combined cotangents
  (vatt_gh.group_stats.top): what a per-triplet `both` costs at VATT's cost; `/top:K` (not
  in the default set) takes them over the heads and the last K encoder layers;
- `both@group:8+dense` (not in the default set): the same with the word table's update made
  dense (what the step did before the update stayed an IndexedSlices), to show what keeping
  it sparse saves.
Inputs: the paper's token proportions after DropToken (video : audio : text about 53 : 41 : 5):
32 x 112 x 112 video (392 tokens, 196 kept), 38,400 audio samples (300, 150 kept), K = 2
narrations of 10 tokens; local batch 8; the `small` preset with its frozen word table (VATT's;
--trainable_words for a trainable one, where `+dense` matters). All configurations are built
and traced first; then `--rounds` rounds each run every configuration for `--steps` steps in
rotated order; the table gives medians over rounds.
Memory (one short subprocess per configuration, --memory): the peak RSS during the steps above
the RSS once the step is traced (the step's own tensors: what device memory would hold).
--breakdown: where the group step's time goes (tf.functions, no optimizer).
Always printed: the analytic memory model (`memory_estimate`) of the `medium` preset at the
paper's 8 clips per TPU v3 core, for VATT's step and the group:8 / group:1 steps.
"""

import json
import math
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import tensorflow as tf
from absl import app, flags

from vatt_gh import group_stats, losses, trainer
from vatt_gh.harmonize import Harmonization
from vatt_gh.harmonized_update import harmonized_update
from vatt_gh.models import build_vatt, get_config

flags.DEFINE_string("preset", "small", "Model preset.")
flags.DEFINE_list(
    "methods",
    ["vatt", "sum", "both@group:8", "both@group:1", "both@group:8/heads", "both@group:1/heads"],
    "method[@granularity][+dense][/statistics]; 'vatt' is VATT's step.",
)
flags.DEFINE_integer("batch", 8, "Local batch (clips).")
flags.DEFINE_integer("steps", 3, "Timed steps per configuration and round.")
flags.DEFINE_integer("rounds", 4, "Interleaved rounds over all configurations (rotated order).")
flags.DEFINE_bool(
    "trainable_words", False, "A trainable word table (default: frozen, as VATT's word2vec)."
)
flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_bfloat16"], "The layers' precision (build_vatt)."
)
flags.DEFINE_bool("memory", True, "Measure each configuration's step memory (subprocesses).")
flags.DEFINE_bool("breakdown", True, "Time the parts of the group step.")
flags.DEFINE_string("worker", None, "Internal: measure the memory of one configuration.")
FLAGS = flags.FLAGS

# (frames, side, audio samples, narrations K, tokens L): the paper's token mix (module doc).
INPUTS = (32, 112, 38_400, 2, 10)


def make_batch(batch):
    frames, size, samples, k, length = INPUTS
    rng = tf.random.Generator.from_seed(0)
    return {
        "video": rng.uniform([batch, frames, size, size, 3], -1, 1),
        "audio": rng.normal([batch, samples]),
        "text": rng.uniform([batch, k, length], 1, 1000, dtype=tf.int32),
        "audio_mask": tf.ones([batch]),
        "text_mask": tf.ones([batch, k]),
    }


def build(spec, batch, vatt=None):
    """A step function `run()` for one configuration. `vatt`: a built model to share (the
    configurations of one process share their weights, to fit in memory)."""
    spec, _, statistics = spec.partition("/")
    method, _, granularity = spec.partition("@")
    granularity, _, dense = granularity.partition("+")
    vatt = vatt or shared_vatt(batch)
    optimizer = tf.keras.optimizers.Adam(1e-4)
    if method == "vatt":  # one backward pass of the summed loss, then Adam

        @tf.function
        def step(data):
            with tf.GradientTape() as tape:
                out = vatt(data, training=True)
                loss = (
                    losses.nce(out["video_va"], out["audio_va"], data["audio_mask"])[0]
                    + losses.mil_nce(out["video_vt"], out["text_vt"], data["text_mask"])[0]
                ) / 2  # VATT's objective
            grads = tape.gradient(loss, vatt.trainable_variables)
            optimizer.apply_gradients(zip(grads, vatt.trainable_variables))
            return loss

        run = lambda: step(batch)
    else:
        cls = DenseUpdateModel if dense else trainer.PretrainModel
        model = cls(
            vatt,
            trainer.Harmonization(
                method=method,
                granularity=granularity or "group:8",
                monitor_every=10**9,
                statistics=statistics or "all",
            ),
        )
        model(batch, training=False)
        model.compile(optimizer=optimizer)
        train_fn = model.make_train_function()
        iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
        run = lambda: train_fn(iterator)
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), run())


def shared_vatt(batch):
    vatt = build_vatt(
        FLAGS.preset, precision=FLAGS.precision, trainable_word_vectors=FLAGS.trainable_words
    )
    vatt(batch, training=False)
    return vatt


class DenseUpdateModel(trainer.PretrainModel):
    """The word table's update made dense (vocabulary x width) before the all-reduce."""

    def compute_update(self, *args, **kwargs):
        update, stats = super().compute_update(*args, **kwargs)
        return [tf.convert_to_tensor(u) for u in update], stats


def worker(spec):
    """Step memory of one configuration (a process of its own); prints a JSON line."""
    batch = make_batch(FLAGS.batch)
    run = build(spec, batch)
    process = psutil.Process()
    peak, running = [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    run()  # traces
    traced = process.memory_info().rss
    peak[0] = traced
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for _ in range(2):
        run()
    running[0] = False
    thread.join()
    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    print(
        "RESULT "
        + json.dumps(
            dict(
                spec=spec,
                step_mb=(peak[0] - traced) / 2**20,
                traced_mb=traced / 2**20,
                peak_rss_mb=whole,
            )
        )
    )


def _median_ms(fn, steps):
    fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def breakdown(batch):
    """Where the group step's time goes (tf.functions, no optimizer): ms per part."""
    model = trainer.PretrainModel(
        build_vatt(FLAGS.preset, trainable_word_vectors=FLAGS.trainable_words)
    )
    model(batch, training=False)
    loss_fn = model.loss_fn(batch)
    variables = model.trainable_variables
    done = lambda xs: tf.add_n(
        [tf.reduce_sum(tf.convert_to_tensor(x)) for x in tf.nest.flatten(xs)]
    )

    def one_backward():
        with tf.GradientTape() as tape:
            a, b, _ = loss_fn()
            total = tf.reduce_sum(a) + tf.reduce_sum(b)
        return done([g for g in tape.gradient(total, variables) if g is not None])

    def two_backward():
        with tf.GradientTape(persistent=True) as tape:
            a, b, _ = loss_fn()
            a, b = tf.reduce_sum(a), tf.reduce_sum(b)
        grads = [g for t in (a, b) for g in tape.gradient(t, variables) if g is not None]
        return done(grads)

    def to_outputs():
        fwd = group_stats.forward(loss_fn, variables, model.vatt)
        return done([fwd.d_va, fwd.d_vt])

    def stats(size):
        fwd = group_stats.forward(loss_fn, variables, model.vatt)
        pairs = group_stats.group_pairs(fwd, variables, size)
        return done([pairs.dot, pairs.nva, pairs.nvt])

    def update(size):
        h = Harmonization("both", f"group:{size}")
        u, st, _ = harmonized_update(loss_fn, variables, model.vatt, h, gamma=-0.3)
        return done(u) + done(st["cosine"])

    parts = dict(
        forward=lambda: done(loss_fn()[:2]),
        forward_one_backward_to_weights=one_backward,
        forward_two_backward_to_weights=two_backward,
        forward_two_backward_to_layer_outputs=to_outputs,
        plus_group_8_stats=lambda: stats(8),
        plus_group_1_stats=lambda: stats(1),
        group_8_both_update=lambda: update(8),
        group_1_both_update=lambda: update(1),
    )
    fns = {name: tf.function(fn) for name, fn in parts.items()}
    for fn in fns.values():  # trace all first
        fn().numpy()
    rounds = {name: [] for name in fns}
    for r in range(max(FLAGS.rounds, 1)):
        names = list(fns)[r % len(fns) :] + list(fns)[: r % len(fns)]
        for name in names:
            rounds[name].append(_median_ms(lambda f=fns[name]: f().numpy(), FLAGS.steps))
    return {name: float(np.median(ms)) for name, ms in rounds.items()}


def memory_estimate(
    preset="medium",
    batch=8,
    video_tokens=1568,
    audio_tokens=1200,
    text_tokens=16,
    narrations=5,
    drop=0.5,
    act_bytes=4,
    group_size=1,
):
    """Analytic per-core peak memory (GB) of a VATT-MA preset (default: medium at the paper's
    per-core batch and inputs) for VATT's step (`sum`) and the group step (`group:N`, N = 1 or 8).

    Counted per Transformer layer and token (floats): the forward keeps ~17 D for the backward
    (LN in/out, q, k, v, context, attention out, residuals, LN2 out, MLP pre- and post-GELU 4 D
    each) + H T for the attention probabilities. The backward frees them as it goes, so:
    - sum: all activations, then one weight gradient (params);
    - group:N: the backward also makes d_va and d_vt at the outputs of every layer with
      weights (LN1, q, k, v, attention out, LN2, MLP in 4 D, MLP out: 12 D per token and loss,
      counted as kept until the weights are known), and keeps the inputs of the dense layers
      for the update (LN1 out, context, LN2 out, MLP hidden 4 D: 7 D). Its peak is at one end
      of the backward: all activations, or kept inputs + both losses' output gradients; plus
      the update (params) and the largest per-variable statistic (direct: the groups'
      weight gradients of both losses, 2 G k n with G = B / N; ghost 4 G T^2).
    Weights and Adam slots in float32; activations and output gradients in `act_bytes`.
    """
    c = get_config(preset)
    d, h, mlp, layers = c.hidden_size, c.num_heads, c.mlp_dim, c.num_layers
    seqs = [
        (1, int(video_tokens * (1 - drop)) + 1),
        (1, int(audio_tokens * (1 - drop)) + 1),
        (narrations, text_tokens + 1),
    ]  # (sequences per example, T)
    tokens = batch * sum(n * t for n, t in seqs)
    per_layer = 4 * d * d + 4 * d + 2 * d * mlp + mlp + d + 4 * d
    patch = math.prod(c.video_patch_size) * 3
    params = (
        layers * per_layer
        + 2 * d
        + patch * d
        + d
        + d * d
        + d  # video conv + projection
        + c.audio_patch_size * d
        + d
        + d * d
        + d  # audio conv + projection
        + c.vocab_size * c.word_dim
        + c.word_dim * d
        + d  # word embedding + projection
        + (sum(c.video_grid) + c.audio_grid + c.text_grid + 3) * d
        + d * 512
        + 2 * 512
        + 512 * 512
        + 512
        + 512 * 512
        + 2 * 512
        + 512 * 256
        + 256
        + d * 512
        + 512
        + d * 256
        + 256
    )  # FAC head
    gb = lambda floats, nbytes=4: floats * nbytes / 2**30
    probs = layers * batch * h * sum(n * t * t for n, t in seqs)
    per_d = gb(layers * tokens * d, act_bytes)  # one D per token and layer
    activations = 17 * per_d + gb(probs, act_bytes)
    kept_inputs, captured = 7 * per_d, 2 * 12 * per_d
    t_all = sum(n * t for n, t in seqs)
    groups = batch // group_size
    t_group = group_size * t_all
    stat_transient = gb(min(2 * groups * d * mlp, 4 * groups * t_group**2))
    weights, adam = gb(params), gb(2 * params)
    rows = {
        "weights": weights,
        "adam_slots": adam,
        "activations": activations,
        "sum_step_gradient": gb(params),
        "group_kept_layer_inputs": kept_inputs,
        "group_captured_d_va_d_vt": captured,
        "group_update": gb(params),
        f"group_{group_size}_stat_transient": stat_transient,
    }
    rows["total_sum_step"] = weights + adam + activations + gb(params)
    rows[f"total_group_{group_size}"] = (
        weights + adam + max(activations, kept_inputs + captured) + gb(params) + stat_transient
    )
    return params, tokens, rows


def main(argv):  # noqa: C901  (one branch per bench mode, each a few lines)
    del argv
    if FLAGS.worker:
        return worker(FLAGS.worker)
    batch = make_batch(FLAGS.batch)
    specs = list(FLAGS.methods)
    runs, vatt = {}, shared_vatt(batch)
    for spec in specs:  # build and trace everything before timing
        t0 = time.perf_counter()
        runs[spec] = build(spec, batch, vatt)
        runs[spec]()
        print(f"  traced {spec} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    times = {spec: [] for spec in specs}
    for r in range(FLAGS.rounds):
        for spec in specs[r % len(specs) :] + specs[: r % len(specs)]:
            times[spec].append(_median_ms(runs[spec], FLAGS.steps))
            print(f"  round {r + 1}: {spec:22s} {times[spec][-1]:8.0f} ms", file=sys.stderr)
    memory = {}
    if FLAGS.memory:
        for spec in specs:
            cmd = [sys.executable, __file__, f"--worker={spec}", f"--batch={FLAGS.batch}"]
            cmd += [f"--preset={FLAGS.preset}", f"--trainable_words={FLAGS.trainable_words}"]
            cmd += [f"--precision={FLAGS.precision}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            memory[spec] = json.loads(line[-1][7:])["step_mb"] if line else float("nan")
    parts = breakdown(batch) if FLAGS.breakdown else {}

    med = {spec: float(np.median(ms)) for spec, ms in times.items()}
    ref = med.get("vatt")
    print(
        f"\n{FLAGS.preset}, local batch {FLAGS.batch}, inputs (frames, side, audio samples, "
        f"K, L) {INPUTS}, word table {'trainable' if FLAGS.trainable_words else 'frozen'}; "
        f"{FLAGS.rounds} interleaved rounds of {FLAGS.steps} steps, medians"
    )
    print("\n| step | ms / step | x VATT's step | step memory MB | x VATT's step |")
    print("| --- | --- | --- | --- | --- |")
    for spec in specs:
        name = "VATT's step" if spec == "vatt" else f"`{spec}`"
        ratio = f"{med[spec] / ref:.2f}" if ref else "-"
        mb = memory.get(spec, float("nan"))
        mb_ratio = f"{mb / memory['vatt']:.2f}" if memory.get("vatt") else "-"
        print(f"| {name} | {med[spec]:.0f} | {ratio} | {mb:.0f} | {mb_ratio} |")
    if parts:
        print("\nbreakdown (tf.functions, no optimizer; ms, medians):")
        print("| part | ms |\n| --- | --- |")
        for name, ms in parts.items():
            print(f"| {name} | {ms:.0f} |")
    for size in (8, 1):
        for act_bytes, label in ((4, "float32"), (2, "bfloat16")):
            params, tokens, rows = memory_estimate(act_bytes=act_bytes, group_size=size)
            print(
                f"\nmemory model: medium, 8 clips per core, 1568 video / 1200 audio / 5 x 16 "
                f"text tokens (DropToken 0.5): {params / 1e6:.0f}M parameters, {tokens} token "
                f"rows; activations in {label}; group:{size}; GB:"
            )
            print("| item | GB |\n| --- | --- |")
            for key, value in rows.items():
                print(f"| {key} | {value:.2f} |")
            for key in ("total_sum_step", f"total_group_{size}"):
                verdict = "fits" if rows[key] < 16 else "does NOT fit"
                print(f"{key}: {verdict} a 16 GB TPU v3 core")


if __name__ == "__main__":
    app.run(main)
