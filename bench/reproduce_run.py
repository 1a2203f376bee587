"""One run of `bench/reproduce.py`, in its fresh subprocess: pre-train, then measure.

One run = one pre-training (gin files + bindings, exactly what tools/pretrain.py parses) followed,
in the same process, by its measurements; gin never leaks between runs. Everything a run
measures goes to <results_dir>/runs/<name>/result.json, which the tables are made from (a run
whose result exists is not repeated, so an interrupted benchmark resumes). The signal study's
measurement (per-triplet statistics per part of the model and per top part S) and the effect
study's (held-out retrieval and linear probes) are here.
"""

import json
import os
import shutil
from typing import Dict, Sequence

import numpy as np
from reproduce_study import DEFINITIONS, PARTS


def execute(spec: dict) -> dict:
    """In a fresh process: pre-train, then measure; writes and returns result.json's dict."""
    import tensorflow as tf

    import gin
    from vatt_gh import configs, pretraining

    configs.parse_gin(spec["gin_files"], spec["gin_params"])
    model = pretraining.pretrain(spec["model_dir"], tf.distribute.get_strategy())
    result = {"run": spec["run"]}
    result.update(training_record(spec["model_dir"]))
    if spec["run"]["study"] == "signal":
        result.update(signal_along_training(model, spec))
    else:
        result.update(held_out_metrics(model, spec))  # gin still holds the run's PretrainConfig
    gin.clear_config()
    with open(os.path.join(spec["model_dir"], "result.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)
    if not spec.get("keep_checkpoints", True):  # events, config and result.json stay
        shutil.rmtree(os.path.join(spec["model_dir"], "checkpoints"), ignore_errors=True)
    return result


def training_record(model_dir: str) -> dict:
    """From the run's TensorBoard events: the step reached, seconds per step (first summary,
    which holds the tracing, excluded) and the share of negative per-triplet cosines over all
    logged steps."""
    import tensorflow as tf

    from vatt_gh.evaluation import histories

    times = []
    log_dir = os.path.join(model_dir, "train")
    for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "train/loss_va" for v in event.summary.value):
                times.append((event.step, event.wall_time))
    times.sort()
    seconds = (
        (times[-1][1] - times[0][1]) / (times[-1][0] - times[0][0])
        if len(times) > 1
        else float("nan")
    )
    history = histories.read_histograms(log_dir)
    weights = history.counts / max(history.counts.sum(), 1.0)
    return {
        "step": int(times[-1][0]) if times else None,
        "seconds_per_step": seconds,
        "negative_share_training": float((history.fraction_negative * weights).sum()),
    }


# ------------------------------------------------------------------- the signal study
def part_of(name: str) -> str:
    """Which PART a variable belongs to, by its name."""
    if "fac_head" in name:
        return "head"
    if "word_embedding" in name:
        return "word_table"
    if "encoder" in name:
        return "encoder"
    return "tokenizers"  # tokenizers, positional embeddings, aggregation tokens


def top_parts(vatt, statistics: Sequence[str]) -> Dict[str, list]:
    """{statistics: S's variables} (`group_stats.top_variables`, the very set the run's
    `Harmonization.statistics` takes its cosines over) for each of `statistics` the model has
    (a 'top:K' deeper than its encoder is left out)."""
    from vatt_gh import group_stats

    out = {}
    for name in statistics:
        try:
            out[name] = group_stats.top_variables(vatt, vatt.trainable_variables, name)
        except ValueError:
            continue
    return out


def make_part_stats(model, statistics: Sequence[str] = ()):
    """A pre-training batch -> {definition: (B, len(PARTS), 3)} per-triplet
    (g_va . g_vt, |g_va|^2, |g_vt|^2) summed over each PART's variables; nothing applied.
    Under 'top', per definition (B, len(S), 3): the same sums over each top part S of
    `top_parts(model.vatt, statistics)` (its keys, in order), from the same measurement: at
    group:1 the own-path sums over S are exactly the statistics a run with
    `Harmonization.statistics` = S harmonizes with (both are the per-variable group_stats terms
    of S's variables, whose output gradients do not depend on the layers below).

    own_path: each clip's contribution through its own forward path (what group:1 harmonizes),
    per variable from `vatt_gh.group_stats`' per-layer statistics at group size 1 (no
    per-example gradient formed). own_loss: each clip's own loss terms through every path, materialised, one
    backward pass per clip and loss (the independent, simple reference; B x parameters: the
    tiny model only). Both in training mode (DropToken on, BatchNorm batch statistics), one
    forward each, as in `PretrainModel.gradient_stats`. Eager on purpose: tracing these graphs
    costs minutes on a busy 2-core machine, running them eagerly a few seconds a batch."""
    import tensorflow as tf

    from vatt_gh import group_stats

    variables = list(model.trainable_variables)
    parts = [PARTS.index(part_of(v.name)) for v in variables]
    zero = tf.UnconnectedGradients.ZERO
    tops = top_parts(model.vatt, statistics)
    in_top = np.array(  # (V, S): 1 where the variable is in S
        [[float(any(v is t for t in top)) for top in tops.values()] for v in variables],
        np.float32,
    ).reshape(len(variables), len(tops))

    def to_parts(per_var):  # (V, B, 3) -> (B, P, 3)
        per_var = tf.convert_to_tensor(per_var)
        return tf.transpose(tf.math.unsorted_segment_sum(per_var, parts, len(PARTS)), [1, 0, 2])

    def to_tops(per_var):  # (V, B, 3) -> (B, S, 3)
        return tf.einsum("vbk,vs->bsk", tf.convert_to_tensor(per_var), in_top)

    def triple(a, b):  # a trainable word table's gradients are IndexedSlices
        a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
        return tf.stack([tf.reduce_sum(a * b), tf.reduce_sum(a * a), tf.reduce_sum(b * b)])

    def stats(data):
        fwd = group_stats.forward(model.loss_fn(data), variables, model.vatt)
        batch = fwd.batch
        pairs = group_stats.group_pairs(fwd, variables, 1).pairs  # per variable, groups of 1
        own_path = [
            tf.zeros([batch, 3]) if p is None else tf.stack([p.dot, p.nva, p.nvt], 1) for p in pairs
        ]
        with tf.GradientTape(persistent=True) as tape:
            loss_va, loss_vt, _ = model.loss_fn(data)()
            rows = [(loss_va[i], loss_vt[i]) for i in range(batch)]
        own_loss = []  # (B, V, 3)
        for va, vt in rows:
            g_va = tape.gradient(va, variables, unconnected_gradients=zero)
            g_vt = tape.gradient(vt, variables, unconnected_gradients=zero)
            own_loss.append(tf.stack([triple(a, b) for a, b in zip(g_va, g_vt)]))
        del tape
        own_loss = tf.transpose(tf.stack(own_loss), [1, 0, 2])
        return {
            "own_path": to_parts(own_path).numpy(),
            "own_loss": to_parts(own_loss).numpy(),
            "top": {
                "own_path": to_tops(own_path).numpy(),
                "own_loss": to_tops(own_loss).numpy(),
            },
        }

    stats.top_names = list(tops)
    return stats


def signal_along_training(model, spec: dict) -> dict:
    """At every kept checkpoint (oldest first), the part statistics of the first
    `signal_clips` training clips (batches of the training batch size, file order), with each
    clip's ground truth read from the records."""
    import tensorflow as tf

    from vatt_gh.data import synthetic
    from vatt_gh.data.configs import PretrainConfig
    from vatt_gh.data.eval_input import eval_dataset
    from vatt_gh.evaluation import conflicts, features

    truth = synthetic.read_truth(spec["train_pattern"])
    config = features.eval_config_for_run(
        spec["train_pattern"],
        spec["vocab"],
        num_windows=1,
        num_captions=PretrainConfig().num_captions,
    )
    batches = [
        b
        for b in eval_dataset(config, spec["batch"]).take(
            max(1, spec["signal_clips"] // spec["batch"])
        )
        if int(b["video"].shape[0]) == spec["batch"]
    ]
    clip_ids = [c.decode("utf-8") for b in batches for c in b["clip_id"].numpy()]
    stats_fn = make_part_stats(model, spec.get("signal_statistics", ()))
    ckpt_dir = os.path.join(spec["model_dir"], "checkpoints")
    checkpoints = list(tf.train.get_checkpoint_state(ckpt_dir).all_model_checkpoint_paths)
    along = []
    for path in checkpoints:
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        per_def = {d: [] for d in DEFINITIONS}
        per_top = {d: [] for d in DEFINITIONS}
        for batch in batches:
            out = stats_fn(conflicts.pretrain_style(batch))
            for d in DEFINITIONS:
                per_def[d].append(out[d])
                per_top[d].append(out["top"][d])
        along.append(
            {
                "step": int(path.rsplit("-", 1)[-1]),
                "parts": {d: np.concatenate(v).tolist() for d, v in per_def.items()},
                "top": {d: np.concatenate(v).tolist() for d, v in per_top.items()},
            }
        )
    return {
        "clips": [
            {"clip_id": c, "kind": truth[c]["misalign_kind"], "label": truth[c]["label"]}
            for c in clip_ids
        ],
        "part_names": list(PARTS),
        "top_names": stats_fn.top_names,
        "along_training": along,
    }


# ------------------------------------------------------------------- the effect study
def retrieval_ceiling(labels: np.ndarray, recall_at=(1, 5, 10)) -> dict:
    """Expected t2v R@K and median rank of an oracle that knows each clip's class but not which
    clip of the class (its narration names only the class): per query with n clips of its class,
    the right clip is uniform among the first n ranks."""
    labels = np.asarray(labels)
    counts = np.array([np.sum(labels == c) for c in labels])
    out = {f"t2v/R@{k}": float(100 * np.mean(np.minimum(1.0, k / counts))) for k in recall_at}
    out["t2v/median_rank"] = float(np.median((counts + 1) / 2))
    return out


def held_out_metrics(model, spec: dict) -> dict:
    """Zero-shot text-to-video retrieval (and its class-oracle ceiling) and linear probes
    (video, audio) on clean clips, with the final weights."""
    from vatt_gh.data.eval_input import eval_dataset
    from vatt_gh.evaluation import features, probe, retrieval

    def extract(file_pattern, modalities):
        config = features.eval_config_for_run(
            file_pattern, spec["vocab"], num_windows=spec["num_windows"]
        )
        return features.extract(model.vatt, eval_dataset(config, spec["batch"]), modalities)

    test = extract(spec["test_pattern"], ("video", "audio", "text"))
    train = extract(spec["probe_train_pattern"], ("video", "audio"))
    r = retrieval.retrieval_metrics(
        features.clip_embeddings(test["video_vt"]),
        features.text_embeddings(test["text_vt"], test["text_mask"]),
    )
    out = {
        "retrieval": {k: v for k, v in r.items() if k.startswith("t2v/") or k == "num_clips"},
        "retrieval_ceiling": retrieval_ceiling(test["label"]),
    }
    for modality in ("video", "audio"):
        key = f"{modality}_features"
        out[f"probe_{modality}"] = probe.linear_probe_metrics(
            train[key], train["label"], test[key], test["label"], num_classes=spec["num_classes"]
        )
    return out
