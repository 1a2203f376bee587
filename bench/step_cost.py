r"""Cost of each harmonization method and granularity relative to the VATT baseline step.

    python bench/step_cost.py                                  # tiny and small presets
    python bench/step_cost.py --presets=tiny --repeats=1 --steps=5   # quick look

Baseline (ratio 1.00): VATT's step, ONE backward pass of loss_va + loss_vt, then Adam.
Every other row is `PretrainModel.train_step` (two tapes, harmonization, conditional apply).
Each configuration runs in a subprocess of its own (so its peak memory is its own); the set is
repeated `--repeats` times in rotated order and the medians are reported, side by side in one
run. Peak memory: the largest RSS above the pre-step RSS while the timed steps run (sampled
every 2 ms). Inputs are smaller than the paper's (printed) so that `small` fits a 2-core CPU.
"""
import json
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

flags.DEFINE_list("presets", ["tiny", "small"], "Model presets.")
flags.DEFINE_list("methods", ["baseline", "sum", "reweight", "realign", "curriculum", "both",
                              "gradvac", "both@microbatch:4", "both@example"],
                  "method[@granularity]; 'baseline' is VATT's single backward pass.")
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("steps", 10, "Timed steps per configuration (after 2 warm-up steps).")
flags.DEFINE_integer("repeats", 2, "Rounds over all configurations (rotated order).")
flags.DEFINE_string("worker", None, "Internal: run one configuration 'preset|method'.")
FLAGS = flags.FLAGS

# Input sizes per preset: (frames, height=width, audio samples, narrations K, tokens L).
INPUTS = {"tiny": (8, 32, 38_400, 2, 8), "small": (8, 64, 38_400, 2, 16)}


def make_batch(preset, batch):
    import tensorflow as tf
    frames, size, samples, k, length = INPUTS.get(preset, INPUTS["small"])
    rng = tf.random.Generator.from_seed(0)
    return {"video": rng.uniform([batch, frames, size, size, 3], -1, 1),
            "audio": rng.normal([batch, samples]),
            "text": rng.uniform([batch, k, length], 1, 1000, dtype=tf.int32),
            "audio_mask": tf.ones([batch]), "text_mask": tf.ones([batch, k])}


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
                loss = (losses.nce(out["video_va"], out["audio_va"], data["audio_mask"])[0] +
                        losses.mil_nce(out["video_vt"], out["text_vt"], data["text_mask"])[0])
            grads = tape.gradient(loss, vatt.trainable_variables)
            optimizer.apply_gradients(zip(grads, vatt.trainable_variables))
            return loss
        run = lambda: step(batch)
    else:
        model = trainer.PretrainModel(vatt, trainer.Harmonization(
            method=method, granularity=granularity or "replica"))
        model(batch, training=False)
        model.compile(optimizer=optimizer)
        train_fn = model.make_train_function()
        iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
        run = lambda: train_fn(iterator)

    for _ in range(2):  # trace and warm up
        tf.nest.map_structure(lambda t: t.numpy(), run())
    process = psutil.Process()
    base_rss = process.memory_info().rss
    peak, running = [base_rss], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    times = []
    for _ in range(FLAGS.steps):
        t0 = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), run())
        times.append(time.perf_counter() - t0)
    running[0] = False
    thread.join()
    print("RESULT " + json.dumps(dict(
        spec=spec, step_ms=1000 * float(np.median(times)), peak_mb=(peak[0] - base_rss) / 2**20,
        rss_mb=peak[0] / 2**20, params=int(vatt.count_params()))))


def main(argv):
    del argv
    if FLAGS.worker:
        return worker(FLAGS.worker)
    import numpy as np
    specs = [f"{p}|{m}" for p in FLAGS.presets for m in FLAGS.methods]
    results = {s: [] for s in specs}
    for r in range(FLAGS.repeats):
        order = specs[r % len(specs):] + specs[:r % len(specs)]
        for spec in order:
            cmd = [sys.executable, __file__, f"--worker={spec}", f"--batch={FLAGS.batch}",
                   f"--steps={FLAGS.steps}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if not line:
                print(f"{spec} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            results[spec].append(json.loads(line[-1][7:]))
            print(f"  round {r + 1}: {spec:28s} {results[spec][-1]['step_ms']:8.1f} ms",
                  file=sys.stderr)

    print(f"\nbatch {FLAGS.batch}; inputs (frames, side, audio samples, K, L): "
          + ", ".join(f"{p} {INPUTS[p]}" for p in FLAGS.presets))
    print("\n| preset | method | granularity | ms / step | x baseline | peak MB | x baseline |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for preset in FLAGS.presets:
        base = results.get(f"{preset}|baseline") or [{}]
        base_ms = np.median([r["step_ms"] for r in base]) if base[0] else np.nan
        base_mb = np.median([r["peak_mb"] for r in base]) if base[0] else np.nan
        for method in FLAGS.methods:
            runs = results[f"{preset}|{method}"]
            if not runs:
                continue
            ms = np.median([r["step_ms"] for r in runs])
            mb = np.median([r["peak_mb"] for r in runs])
            name, _, gran = method.partition("@")
            gran = "-" if name == "baseline" else (gran or "replica")
            print(f"| {preset} | {name} | {gran} | {ms:.1f} | {ms / base_ms:.2f} | {mb:.0f} | "
                  f"{mb / base_mb:.2f} |")


if __name__ == "__main__":
    app.run(main)
