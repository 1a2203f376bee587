r"""Figure 5: t-SNE of the video and text embeddings (vt space) of a record set.

    python tools/plot_tsne.py --model_dir=/tmp/vatt_gh_demo \
        --pattern=/data/youcook2/val-*.tfrecord --output=/tmp/figure5.png --max_clips=500

Embeds every clip's video (windows averaged) and caption (one per clip) with the checkpoint, runs
scikit-learn t-SNE on the 2N L2-normalised points together, and plots them coloured by modality
and, when the records have labels, by class. Input sizes follow the run's operative config
(override with --gin_param=EvalConfig....). Also writes the 2-D points as CSV next to the PNG.
"""

import os

from absl import app, flags

from vatt_gh import console
from vatt_gh.evaluation import run_flags

run_flags.define_run_flags()
flags.adopt_module_key_flags(run_flags)  # listed by --help
flags.DEFINE_string("pattern", None, "Records to embed.")
flags.DEFINE_string("output", None, "PNG to write.")
flags.DEFINE_string("vocab_path", None, "Vocabulary of the run (default: found from the run).")
flags.DEFINE_integer("num_windows", 2, "Temporal windows per clip (averaged).")
flags.DEFINE_integer("batch_size", 8, "Clips per forward pass.")
flags.DEFINE_integer("max_clips", 500, "Embed at most this many clips (0 = all).")
flags.DEFINE_float("perplexity", 30.0, "t-SNE perplexity (lowered for small sets).")
flags.DEFINE_integer("seed", 0, "t-SNE random state.")
flags.DEFINE_string("title", None, "Figure title (default: run and step).")
for _name in ("model_dir", "pattern", "output"):
    flags.mark_flag_as_required(_name)
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS


def tsne_points(video, text, perplexity, seed):
    """(N, D) video, (N, D) text -> (2N, 2) t-SNE points (video first)."""
    import numpy as np
    from sklearn.manifold import TSNE

    points = np.concatenate([video, text], axis=0)
    perplexity = min(perplexity, max(1.0, (len(points) - 1) / 3.0))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine"
    ).fit_transform(points)


def run_tsne():
    import numpy as np

    from vatt_gh import configs
    from vatt_gh.data.eval_input import eval_dataset
    from vatt_gh.evaluation import features, figures, run

    run.check_pattern("pattern", FLAGS.pattern)
    model, step = configs.open_run(
        FLAGS.model_dir, FLAGS.checkpoint, FLAGS.gin_file, FLAGS.gin_param
    )
    try:
        vocab = features.resolve_vocab(FLAGS.model_dir, FLAGS.vocab_path)
    except ValueError as e:
        raise run.EvalError(str(e)) from None
    config = features.eval_config_for_run(
        FLAGS.pattern, vocab, num_windows=FLAGS.num_windows, num_captions=1
    )
    arrays = features.extract(
        model.vatt,
        eval_dataset(config, FLAGS.batch_size),
        ("video", "text"),
        FLAGS.max_clips or None,
    )
    keep = arrays["text_mask"].sum(axis=1) > 0
    if keep.sum() < 3:
        raise run.EvalError(f"--pattern: {int(keep.sum())} clip(s) with a caption; t-SNE needs 3")
    video = features.clip_embeddings(arrays["video_vt"][keep])
    text = features.text_embeddings(arrays["text_vt"][keep], arrays["text_mask"][keep])
    points = tsne_points(video, text, FLAGS.perplexity, FLAGS.seed)
    n = len(video)
    modality = np.array(["video"] * n + ["text"] * n)
    labels = np.concatenate([arrays["label"][keep]] * 2)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    title = (
        FLAGS.title
        or f"t-SNE of the vt space: {os.path.basename(FLAGS.model_dir.rstrip('/'))}"
        f" step {step}, {n} clips"
    )
    figures.tsne_scatter(
        points, modality, FLAGS.output, labels if (labels >= 0).any() else None, title
    )
    csv_path = os.path.splitext(FLAGS.output)[0] + ".csv"
    clip_ids = np.concatenate([arrays["clip_id"][keep]] * 2)
    with open(csv_path, "w") as f:
        f.write("clip_id,modality,label,x,y\n")
        for i in range(2 * n):
            f.write(
                f'"{clip_ids[i]}",{modality[i]},{int(labels[i])},'
                f"{points[i, 0]:.6g},{points[i, 1]:.6g}\n"
            )
    # How mixed are the modalities? Mean cosine of matching pairs vs all pairs.
    matching = float(np.mean(np.sum(video * text, axis=1)))
    overall = float(np.mean(video @ text.T))
    return n, step, matching, overall, csv_path


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    from vatt_gh.data.rejects import BadRecordError
    from vatt_gh.evaluation import run

    try:
        n, step, matching, overall, csv_path = run_tsne()
    except (run.EvalError, BadRecordError) as e:
        raise SystemExit(f"error: {e}") from None
    print(
        f"step {step}: {n} clips; mean video-text cosine {matching:+.3f} for matching pairs, "
        f"{overall:+.3f} over all pairs\nwrote {FLAGS.output} and {csv_path}"
    )


if __name__ == "__main__":
    app.run(main)
