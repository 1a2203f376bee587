r"""Cost of each harmonization method and granularity relative to the VATT baseline step.

    python bench/step_cost.py                                  # tiny and small presets
    python bench/step_cost.py --presets=tiny --repeats=1 --steps=5   # quick look
    python bench/step_cost.py --presets=small --batch=32 --repeats=4 --steps=3 \
        --methods=sum,both@example_fast             # issue 9 (rounds vary 10-25% here: use 4)
    python bench/step_cost.py --presets=small --batch=32 --repeats=2 --steps=3 \
        --methods=baseline,sum,both@example_fast --breakdown --check   # + where the time goes

Baseline (ratio 1.00): VATT's step, ONE backward pass of loss_va + loss_vt, then Adam.
Every other row is `PretrainModel.train_step` (two tapes, harmonization, conditional apply).
The reference for per-example harmonization is the `sum` row: PretrainModel at 'replica'
granularity, i.e. TWO backward passes (one per loss) and no per-example work; the
'x sum' columns divide by it. `both@example_fast` is per-example `both` through
`vatt_gh.per_example` (no per-example gradients); `both@example` the pfor Jacobians.
Each configuration runs in a subprocess of its own (so its peak memory is its own); the set is
repeated `--repeats` times in rotated order and the medians are reported, side by side in one
run. Memory is the largest RSS (sampled every 2 ms) up to the end of the timed steps, reported
three ways: above the RSS once the step function is traced ('step': the step's own tensors, the
part an accelerator holds in device memory), above the RSS of the built model ('with trace':
adds host-side graph building and the optimizer slots), and the whole process. Inputs are
smaller than the paper's (printed) so that `small` fits a 2-core CPU.
--breakdown: for the example_fast step, time (as tf.functions, no optimizer) the forward, the
forward + the two backward passes to the captured layer outputs, + the per-layer statistics,
and the whole harmonized update; and the replica two-pass gradients for comparison.
--check: relative error of the fast statistics against materialised per-example gradients.
Always printed: an analytic memory estimate (`memory_estimate`) of the `medium` model at
the paper's per-core batch, and the same model's prediction for `small` next to the measurement.
"""

import json
import math
import subprocess
import sys
import threading
import time

from absl import app, flags

flags.DEFINE_list("presets", ["tiny", "small"], "Model presets.")
flags.DEFINE_list(
    "methods",
    [
        "baseline",
        "sum",
        "reweight",
        "realign",
        "curriculum",
        "both",
        "gradvac",
        "both@microbatch:4",
        "both@example",
        "both@example_fast",
    ],
    "method[@granularity]; 'baseline' is VATT's single backward pass.",
)
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("steps", 10, "Timed steps per configuration (after 2 warm-up steps).")
flags.DEFINE_integer("repeats", 2, "Rounds over all configurations (rotated order).")
flags.DEFINE_string("worker", None, "Internal: run one configuration 'preset|method'.")
flags.DEFINE_bool("breakdown", False, "Time the parts of the example_fast step.")
flags.DEFINE_bool("check", False, "Relative error of example_fast against materialising.")
FLAGS = flags.FLAGS

# Input sizes per preset: (frames, height=width, audio samples, narrations K, tokens L).
INPUTS = {"tiny": (8, 32, 38_400, 2, 8), "small": (8, 64, 38_400, 2, 16)}


def make_batch(preset, batch):
    import tensorflow as tf

    frames, size, samples, k, length = INPUTS.get(preset, INPUTS["small"])
    rng = tf.random.Generator.from_seed(0)
    return {
        "video": rng.uniform([batch, frames, size, size, 3], -1, 1),
        "audio": rng.normal([batch, samples]),
        "text": rng.uniform([batch, k, length], 1, 1000, dtype=tf.int32),
        "audio_mask": tf.ones([batch]),
        "text_mask": tf.ones([batch, k]),
    }


def worker(spec):
    """Time and measure one configuration; prints a JSON line."""
    import numpy as np
    import psutil
    import tensorflow as tf

    from vatt_gh import losses, trainer
    from vatt_gh.models import build_vatt

    preset, method = spec.split("|")
    method, _, granularity = method.partition("@")
    batch = make_batch(preset, FLAGS.batch)
    overrides = {"audio_patch_size": 1200} if preset == "tiny" else {}
    vatt = build_vatt(preset, **overrides)
    optimizer = tf.keras.optimizers.Adam(1e-4)

    if method == "baseline":  # VATT: one backward pass of the summed loss
        vatt(batch, training=False)

        @tf.function
        def step(data):
            with tf.GradientTape() as tape:
                out = vatt(data, training=True)
                loss = (
                    losses.nce(out["video_va"], out["audio_va"], data["audio_mask"])[0]
                    + losses.mil_nce(out["video_vt"], out["text_vt"], data["text_mask"])[0]
                )
            grads = tape.gradient(loss, vatt.trainable_variables)
            optimizer.apply_gradients(zip(grads, vatt.trainable_variables))
            return loss

        run = lambda: step(batch)
        trace = lambda: step.get_concrete_function(batch)
    else:
        model = trainer.PretrainModel(
            vatt, trainer.Harmonization(method=method, granularity=granularity or "replica")
        )
        model(batch, training=False)
        model.compile(optimizer=optimizer)
        train_fn = model.make_train_function()
        iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
        run = lambda: train_fn(iterator)
        trace = lambda: train_fn.get_concrete_function(iterator)

    process = psutil.Process()
    base_rss = process.memory_info().rss  # model built; before the first step
    peak, running = [base_rss], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    trace()  # host-side graph building, one-off (not device memory on an accelerator)
    traced_rss = max(peak[0], process.memory_info().rss)
    peak[0] = traced_rss
    for _ in range(2):  # warm up
        tf.nest.map_structure(lambda t: t.numpy(), run())
    times = []
    for _ in range(FLAGS.steps):
        t0 = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), run())
        times.append(time.perf_counter() - t0)
    running[0] = False
    thread.join()
    print(
        "RESULT "
        + json.dumps(
            dict(
                spec=spec,
                step_ms=1000 * float(np.median(times)),
                peak_mb=(peak[0] - traced_rss) / 2**20,
                with_trace_mb=(peak[0] - base_rss) / 2**20,
                rss_mb=peak[0] / 2**20,
                params=int(vatt.count_params()),
            )
        )
    )


def _median_ms(fn, steps):
    import numpy as np

    for _ in range(2):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def breakdown(preset):
    """Where the example_fast time goes (tf.functions, no optimizer); prints a JSON line."""
    import tensorflow as tf

    from vatt_gh import harmonize, per_example, trainer
    from vatt_gh.models import build_vatt

    batch = make_batch(preset, FLAGS.batch)
    model = trainer.PretrainModel(build_vatt(preset))
    model(batch, training=False)
    loss_fn = model._loss_fn(batch)
    variables = model.trainable_variables
    done = lambda xs: tf.add_n([tf.reduce_sum(x) for x in tf.nest.flatten(xs)])

    def forward():
        return done(loss_fn()[:2])

    def backward_to_outputs():
        fwd = per_example._forward(loss_fn, variables, model.vatt)
        return done([fwd.d_va, fwd.d_vt])

    def stats():
        return done(per_example.per_example_statistics(loss_fn, variables, model.vatt)[:3])

    def fast_update():
        update, st, _ = per_example.harmonized_gradients(
            loss_fn, variables, model.vatt, "both", gamma=-0.3
        )
        return done(update) + done(st["cosine"])

    def replica_update():
        update, _, _ = harmonize.harmonized_gradients(loss_fn, variables, "sum", "replica")
        return done(update)

    parts = dict(
        forward=forward,
        forward_and_two_backward_to_outputs=backward_to_outputs,
        plus_per_layer_stats=stats,
        example_fast_both_update=fast_update,
        replica_sum_update=replica_update,
    )
    out = {
        name: _median_ms(lambda f=tf.function(fn): f().numpy(), FLAGS.steps)
        for name, fn in parts.items()
    }
    print("BREAKDOWN " + json.dumps(dict(preset=preset, batch=FLAGS.batch, ms=out)))


def check(preset="tiny", batch_size=4):
    """Relative error of the fast (dot, norms) against materialised per-example gradients."""
    import numpy as np

    from vatt_gh import per_example, trainer
    from vatt_gh.models import build_vatt

    batch = make_batch(preset, batch_size)
    model = trainer.PretrainModel(build_vatt(preset, drop_token_rate=0.0, dropout_rate=0.0))
    model(batch, training=False)
    loss_fn = model._loss_fn(batch)
    variables = model.trainable_variables
    g_va, g_vt, _ = per_example.per_example_gradients(loss_fn, variables, model.vatt)
    flat = lambda gs: np.concatenate([g.numpy().reshape(batch_size, -1) for g in gs], 1)
    a, b = flat(g_va).astype(np.float64), flat(g_vt).astype(np.float64)
    want = (np.sum(a * b, 1), np.sum(a * a, 1), np.sum(b * b, 1))
    errors = {}
    for mode in ("ghost", "direct", "auto"):
        got = per_example.per_example_statistics(loss_fn, variables, model.vatt, mode=mode)[:3]
        errors[mode] = max(
            float(np.abs(g.numpy() - w).max() / np.abs(w).max()) for g, w in zip(got, want)
        )
    print("CHECK " + json.dumps(dict(preset=preset, batch=batch_size, max_rel_error=errors)))


def memory_estimate(
    preset="medium",
    batch=8,
    video_tokens=1568,
    audio_tokens=1200,
    text_tokens=16,
    narrations=5,
    drop=0.5,
    act_bytes=4,
):
    """Analytic per-core peak memory (GB) of a VATT-MA preset (default: medium at the paper's
    per-core batch and inputs) for the `sum` step and the `example_fast` step.

    Counted per Transformer layer and token (floats): the forward keeps ~17 D for the backward
    (LN in/out, q, k, v, context, attention out, residuals, LN2 out, MLP pre- and post-GELU 4 D
    each) + H T for the attention probabilities. The backward frees them as it goes, so:
    - sum: all activations, then the weight gradients g_va, g_vt and the update (3 x params);
    - example_fast: the backward also makes d_va and d_vt at the outputs of every layer with
      weights (LN1, q, k, v, attention out, LN2, MLP in 4 D, MLP out: 12 D per token and loss,
      counted as kept until the weights are known), and keeps the inputs of the dense layers
      for the update (LN1 out, context, LN2 out, MLP hidden 4 D: 7 D). Its peak is at one end
      of the backward: all activations, or kept inputs + both losses' output gradients; plus
      the update (params) and the largest per-variable statistic (direct 2 B k n, ghost
      4 B T^2).
    Weights and Adam slots in float32; activations and output gradients in `act_bytes`.
    """
    from vatt_gh.models import get_config

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
    stat_transient = gb(min(2 * batch * d * mlp, 4 * batch * t_all**2))
    weights, adam = gb(params), gb(2 * params)
    rows = {
        "weights": weights,
        "adam_slots": adam,
        "activations": activations,
        "sum_step_gradients_g_va_g_vt_update": gb(3 * params),
        "example_fast_kept_layer_inputs": kept_inputs,
        "example_fast_captured_d_va_d_vt": captured,
        "example_fast_update": gb(params),
        "example_fast_stat_transient": stat_transient,
    }
    rows["total_sum_step"] = weights + adam + activations + gb(3 * params)
    rows["total_example_fast"] = (
        weights + adam + max(activations, kept_inputs + captured) + gb(params) + stat_transient
    )
    return params, tokens, rows


def main(argv):
    del argv
    if FLAGS.worker:
        if FLAGS.worker.endswith("|breakdown"):
            return breakdown(FLAGS.worker.split("|")[0])
        if FLAGS.worker == "check":
            return check()
        return worker(FLAGS.worker)
    import numpy as np

    extra_lines = []
    for flag, spec, tag in ((FLAGS.check, "check", "CHECK "),) + tuple(
        (FLAGS.breakdown, f"{p}|breakdown", "BREAKDOWN ") for p in FLAGS.presets
    ):
        if not flag:
            continue
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                f"--worker={spec}",
                f"--batch={FLAGS.batch}",
                f"--steps={FLAGS.steps}",
            ],
            capture_output=True,
            text=True,
        )
        line = [l for l in proc.stdout.splitlines() if l.startswith(tag)]
        extra_lines.append(line[-1] if line else f"{spec} failed:\n{proc.stderr[-2000:]}")
        print("  " + extra_lines[-1][:200], file=sys.stderr)
    specs = [f"{p}|{m}" for p in FLAGS.presets for m in FLAGS.methods]
    results = {s: [] for s in specs}
    for r in range(FLAGS.repeats):
        order = specs[r % len(specs) :] + specs[: r % len(specs)]
        for spec in order:
            cmd = [
                sys.executable,
                __file__,
                f"--worker={spec}",
                f"--batch={FLAGS.batch}",
                f"--steps={FLAGS.steps}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if not line:
                print(f"{spec} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            results[spec].append(json.loads(line[-1][7:]))
            print(
                f"  round {r + 1}: {spec:28s} {results[spec][-1]['step_ms']:8.1f} ms",
                file=sys.stderr,
            )

    print(
        f"\nbatch {FLAGS.batch}; inputs (frames, side, audio samples, K, L): "
        + ", ".join(f"{p} {INPUTS[p]}" for p in FLAGS.presets)
    )
    print(
        "'sum' = PretrainModel sum at replica granularity (two backward passes): the "
        "reference of the 'x sum' columns; 'baseline' = VATT's one backward pass."
    )
    print(
        "Memory (MB, x sum): 'step' = peak RSS during the steps above the RSS once the step "
        "is traced (the step's tensors: what device memory would hold); 'with trace' = above "
        "the RSS of the built model (adds graph building and the optimizer slots); "
        "'process' = the whole process's peak RSS."
    )
    print(
        "\n| preset | method | granularity | ms / step | x baseline | x sum | step MB | x sum "
        "| with trace MB | x sum | process MB | x sum |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    med = lambda runs, key: np.median([r[key] for r in runs]) if runs else np.nan
    for preset in FLAGS.presets:
        base, ref = results.get(f"{preset}|baseline"), results.get(f"{preset}|sum")
        for method in FLAGS.methods:
            runs = results[f"{preset}|{method}"]
            if not runs:
                continue
            ms = med(runs, "step_ms")
            name, _, gran = method.partition("@")
            gran = "-" if name == "baseline" else (gran or "replica")
            cells = [
                f"{ms:.1f}",
                f"{ms / med(base, 'step_ms'):.2f}",
                f"{ms / med(ref, 'step_ms'):.2f}",
            ]
            for key in ("peak_mb", "with_trace_mb", "rss_mb"):
                cells += [f"{med(runs, key):.0f}", f"{med(runs, key) / med(ref, key):.2f}"]
            print(f"| {preset} | {name} | {gran} | " + " | ".join(cells) + " |")
    for line in extra_lines:
        print("\n" + line)
    if (
        "small" in FLAGS.presets
        and results.get("small|sum")
        and results.get("small|both@example_fast")
    ):
        # The same model at this run's small inputs, against the measured ratio.
        from vatt_gh.models import get_config

        config = get_config("small")
        frames, side, samples, k, length = INPUTS["small"]
        t, h, w = config.video_patch_size
        video_tokens = (frames // t) * (side // h) * (side // w)
        _, _, rows = memory_estimate(
            "small", FLAGS.batch, video_tokens, samples // config.audio_patch_size, length, k
        )
        measured = med(results["small|both@example_fast"], "peak_mb") / med(
            results["small|sum"], "peak_mb"
        )
        print(
            f"\nmemory model on small at these inputs: example_fast / sum = "
            f"{rows['total_example_fast'] / rows['total_sum_step']:.2f} predicted, "
            f"{measured:.2f} measured (step memory)"
        )
    for act_bytes, label in ((4, "float32"), (2, "bfloat16")):
        params, tokens, rows = memory_estimate(act_bytes=act_bytes)
        print(
            f"\nmedium, per-core batch 8, 1568 video / 1200 audio / 5 x 16 text tokens "
            f"(DropToken 0.5): {params / 1e6:.0f}M parameters, {tokens} token rows; "
            f"activations in {label} (weights and optimizer in float32); GB:"
        )
        print("| item | GB |\n| --- | --- |")
        for key, value in rows.items():
            print(f"| {key} | {value:.2f} |")
        for key in ("total_sum_step", "total_example_fast"):
            print(f"{key}: {'fits' if rows[key] < 16 else 'does NOT fit'} a 16 GB TPU v3 core")


if __name__ == "__main__":
    app.run(main)
