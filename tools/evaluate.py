r"""Evaluate a pre-trained checkpoint: zero-shot retrieval and linear probes (paper Section 4.3).

Table 1's whole row from benchmarks converted by tools/build_benchmark.py into
<benchmarks_dir>/<name>/ (README "Table 1"):
    python tools/evaluate.py --model_dir=/tmp/vatt_gh_demo --benchmarks_dir=/data/benchmarks \
        [--finetune_dir=/tmp/vatt_gh_demo/finetune_k400]
writes <model_dir>/eval/table1.json, table1.md (the paper's columns, its own rows beside ours)
and TensorBoard scalars eval/table1/<benchmark>/<split>/<metric>.

One record set at a time:

    python tools/evaluate.py --model_dir=/tmp/vatt_gh_demo \
        --retrieval_pattern=/tmp/vatt_gh_demo/data/synthetic-*.tfrecord --retrieval_name=synthetic \
        --probe_train_pattern=/data/ucf101/train-*.tfrecord \
        --probe_test_pattern=/data/ucf101/test-*.tfrecord --probe_name=ucf101

Retrieval (YouCook2 / MSR-VTT style, one caption per clip): vt-space embeddings, windows
averaged; text-to-video and video-to-text Recall@1/5/10 and median rank (ties pessimistic, see
vatt_gh/evaluation/retrieval.py). Linear probes (UCF101 / HMDB51 / ESC50 style): frozen pooled
video and/or audio features, softmax regression, top-1 / top-5 with windows averaged.
Writes --output_json (default <model_dir>/eval/metrics-<step>.json) and TensorBoard scalars
eval/<name>/... at the checkpoint's step in <model_dir>/eval. Input sizes follow the run's
operative config; override with --gin_param=EvalConfig.num_frames=... (fps / stride of the record
set: EvalConfig.fps, EvalConfig.stride).
"""

import os

from absl import app, flags, logging

from vatt_gh import console
from vatt_gh.evaluation import run_flags

run_flags.define_run_flags(gin_param_help="Gin bindings applied last, e.g. EvalConfig.fps=25.")
flags.adopt_module_key_flags(run_flags)  # listed by --help
flags.DEFINE_string(
    "benchmarks_dir", None, "Converted benchmarks (<dir>/<name>/index.json): Table 1's row."
)
flags.DEFINE_string(
    "finetune_dir", None, "tools/finetune.py --output_dir of Kinetics-400 (joins Table 1)."
)
flags.DEFINE_string("table_dir", None, "Where table1.json / .md go (default <model_dir>/eval).")
flags.DEFINE_string("retrieval_pattern", None, "Records for zero-shot text-video retrieval.")
flags.DEFINE_string("retrieval_name", "retrieval", "Name of the retrieval set in the outputs.")
flags.DEFINE_string("probe_train_pattern", None, "Labelled records to train the linear probe.")
flags.DEFINE_string("probe_test_pattern", None, "Labelled records to test the linear probe.")
flags.DEFINE_string("probe_name", "probe", "Name of the probe data set in the outputs.")
flags.DEFINE_list("probe_features", ["video", "audio"], "Pooled features to probe.")
flags.DEFINE_integer("num_classes", 0, "Probe classes; 0 = 1 + the largest label seen.")
flags.DEFINE_float("probe_c", 1.0, "Inverse L2 strength of the probe (LogisticRegression C).")
flags.DEFINE_enum(
    "probe_classifier",
    "logistic",
    ["logistic", "vatt"],
    "Linear probe: logistic regression, or VATT's head (Dense 128, dropout 0.9, Adam).",
)
flags.DEFINE_integer("probe_epochs", 1000, "Epochs of --probe_classifier=vatt (VATT: 1000).")
flags.register_validator("probe_epochs", lambda v: v >= 1, message="--probe_epochs must be >= 1")
flags.DEFINE_integer("num_windows", 4, "Temporal windows per clip (averaged).")
flags.DEFINE_integer("batch_size", 8, "Clips per forward pass.")
flags.DEFINE_integer("max_clips", 0, "Use at most this many clips per record set (0 = all).")
flags.DEFINE_string("vocab_path", None, "Vocabulary of the run (default: found from the run).")
flags.DEFINE_string("output_json", None, "Metrics file (default <model_dir>/eval/...).")
flags.DEFINE_bool("summaries", True, "Write TensorBoard scalars to <model_dir>/eval.")
flags.mark_flag_as_required("model_dir")
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS


def _extract(vatt, pattern, vocab, modalities):
    from vatt_gh.data.eval_input import eval_dataset
    from vatt_gh.evaluation import features

    config = features.eval_config_for_run(pattern, vocab, num_windows=FLAGS.num_windows)
    dataset = eval_dataset(config, FLAGS.batch_size)
    return features.extract(vatt, dataset, modalities, FLAGS.max_clips or None)


def _probe_kwargs():
    return dict(
        regularization=FLAGS.probe_c,
        classifier_kind=FLAGS.probe_classifier,
        epochs=FLAGS.probe_epochs,
    )


def _table1(vatt, vocab, step):
    from vatt_gh.evaluation import benchmark_eval, results, run, table1

    try:
        table = benchmark_eval.evaluate_benchmarks(
            vatt,
            FLAGS.benchmarks_dir,
            vocab,
            num_windows=FLAGS.num_windows,
            batch_size=FLAGS.batch_size,
            finetune_dir=FLAGS.finetune_dir,
            max_clips=FLAGS.max_clips or None,
            say=console.say,
            **_probe_kwargs(),
        )
    except ValueError as e:
        raise run.EvalError(str(e)) from None
    out_dir = FLAGS.table_dir or os.path.join(FLAGS.model_dir, "eval")
    results.write_json(os.path.join(out_dir, "table1.json"), dict(table, step=step))
    with open(os.path.join(out_dir, "table1.md"), "w") as f:
        f.write(table1.markdown(table, label=f"ours (step {step})"))
    return table


def evaluate():  # noqa: C901  (flag checks, then one block per metric, in report order)
    from vatt_gh import configs
    from vatt_gh.evaluation import features, probe, results, retrieval, run

    if FLAGS.num_windows < 1:
        raise run.EvalError(f"--num_windows={FLAGS.num_windows}: need at least 1")
    if not (FLAGS.retrieval_pattern or FLAGS.probe_train_pattern or FLAGS.benchmarks_dir):
        raise run.EvalError(
            "nothing to evaluate: give --benchmarks_dir, --retrieval_pattern and/or "
            "--probe_train_pattern with --probe_test_pattern"
        )
    if FLAGS.benchmarks_dir and not os.path.isdir(FLAGS.benchmarks_dir):
        raise run.EvalError(f"--benchmarks_dir={FLAGS.benchmarks_dir!r} is not a directory")
    if bool(FLAGS.probe_train_pattern) != bool(FLAGS.probe_test_pattern):
        raise run.EvalError("--probe_train_pattern and --probe_test_pattern go together")
    bad = set(FLAGS.probe_features) - {"video", "audio"}
    if bad:
        raise run.EvalError(f"--probe_features: {sorted(bad)} not in ['video', 'audio']")
    for flag in ("retrieval_pattern", "probe_train_pattern", "probe_test_pattern"):
        if FLAGS[flag].value:
            run.check_pattern(flag, FLAGS[flag].value)
    model, step = configs.open_run(
        FLAGS.model_dir, FLAGS.checkpoint, FLAGS.gin_file, FLAGS.gin_param
    )
    try:
        vocab = features.resolve_vocab(FLAGS.model_dir, FLAGS.vocab_path)
    except ValueError as e:
        raise run.EvalError(str(e)) from None
    metrics = {"step": step}
    if FLAGS.benchmarks_dir:
        metrics["table1"] = _table1(model.vatt, vocab, step)

    if FLAGS.retrieval_pattern:
        arrays = _extract(model.vatt, FLAGS.retrieval_pattern, vocab, ("video", "text"))
        has_text = arrays["text_mask"].sum(axis=1) > 0
        video = features.clip_embeddings(arrays["video_vt"][has_text])
        text = features.text_embeddings(arrays["text_vt"][has_text], arrays["text_mask"][has_text])
        result = retrieval.retrieval_metrics(video, text)
        result["num_windows"] = FLAGS.num_windows
        metrics[FLAGS.retrieval_name] = result

    if FLAGS.probe_train_pattern:
        modalities = tuple(FLAGS.probe_features)
        train = _extract(model.vatt, FLAGS.probe_train_pattern, vocab, modalities)
        test = _extract(model.vatt, FLAGS.probe_test_pattern, vocab, modalities)
        for name, arrays in (("probe_train_pattern", train), ("probe_test_pattern", test)):
            if (arrays["label"] < 0).any():
                raise run.EvalError(
                    f"--{name}: {(arrays['label'] < 0).sum()} clip(s) have no clip/label/index"
                )
        result = {}
        for modality in modalities:
            if modality == "audio" and (train["audio_mask"] == 0).all():
                logging.warning("no audio in --probe_train_pattern: skipping the audio probe")
                continue
            key = f"{modality}_features"
            result[modality] = probe.linear_probe_metrics(
                train[key],
                train["label"],
                test[key],
                test["label"],
                FLAGS.num_classes or None,
                **_probe_kwargs(),
            )
        # --probe_name may equal --retrieval_name: both results share the entry
        metrics[FLAGS.probe_name] = {**metrics.get(FLAGS.probe_name, {}), **result}

    output = FLAGS.output_json or os.path.join(FLAGS.model_dir, "eval", f"metrics-{step}.json")
    results.write_json(output, metrics)
    if FLAGS.summaries:
        results.write_scalars(
            os.path.join(FLAGS.model_dir, "eval"),
            step,
            {k: v for k, v in metrics.items() if k != "step"},
        )
    return metrics, output


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    from vatt_gh.data.rejects import BadRecordError
    from vatt_gh.evaluation import run

    try:
        metrics, output = evaluate()
    except (run.EvalError, BadRecordError) as e:
        raise SystemExit(f"error: {e}") from None
    from vatt_gh.evaluation import results

    print(f"\nstep {metrics['step']} of {FLAGS.model_dir}")
    if "table1" in metrics:
        from vatt_gh.evaluation import table1

        table_dir = FLAGS.table_dir or os.path.join(FLAGS.model_dir, "eval")
        print(table1.our_table(metrics["table1"], label=f"ours (step {metrics['step']})"))
        print(f"Table 1 written to {os.path.join(table_dir, 'table1.md')} (and table1.json)")
    if FLAGS.retrieval_pattern:
        print(results.retrieval_table(FLAGS.retrieval_name, metrics[FLAGS.retrieval_name]))
    if FLAGS.probe_train_pattern:
        probes = {k: v for k, v in metrics[FLAGS.probe_name].items() if isinstance(v, dict)}
        if probes:
            print(results.probe_table(FLAGS.probe_name, probes))
    print(f"metrics written to {output}")


if __name__ == "__main__":
    app.run(main)
