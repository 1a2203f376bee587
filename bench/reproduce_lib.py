"""The pieces of `bench/reproduce.py`: the plan of runs, one run (train + measure), the tables.

    python bench/reproduce.py                      # the whole benchmark (see its docstring)

Two studies, one kind of run:
- 'signal': pre-train `sum` on the misaligned set, keep checkpoints along training, and at each
  one measure every probe clip's per-triplet gradients under two definitions (its own forward
  path = granularity group:1; its own loss terms through every path = the pfor Jacobian), per
  variable, so that the cosine over all weights, the backbone, the shared encoder or the heads
  comes out of one measurement.
- 'effect': pre-train a method at a granularity, then held-out retrieval and linear probes.

One run = one pre-training (gin files + bindings, exactly what tools/pretrain.py parses) followed,
in the same fresh subprocess, by its measurements; gin never leaks between runs. Everything a run
measures goes to <results_dir>/runs/<name>/result.json, which the tables are made from (a run
whose result exists is not repeated, so an interrupted benchmark resumes).
"""

import dataclasses
import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Table 1 rows: label -> method gin file (labels, not harmonize.METHODS' method names).
METHOD_GIN = {
    "sum": "gin/baseline.gin",
    "RW-VA": "gin/reweight_va.gin",
    "RW-VT": "gin/reweight_vt.gin",
    "realign": "gin/realign.gin",
    "curriculum": "gin/curriculum.gin",
    "both": "gin/both.gin",
    "gradvac": "gin/gradvac.gin",
}
STUDY_METHODS = ("sum", "realign", "curriculum", "both")
# Labels of the rows whose update does not depend on the granularity (harmonize.CONSTANT_WEIGHTS:
# one backward pass of w_va loss_va + w_vt loss_vt); only the monitored cosines differ.
CONSTANT_WEIGHT_LABELS = ("sum", "RW-VA", "RW-VT")
ABLATION_STARTS = (-0.3, -0.2, -0.1, 0.0)  # Table 2: curriculum (gamma_start, 0)
WORD_TABLES = ("frozen", "trainable")
VARIANTS = ("agnostic", "specific")  # VATT-MA, VATT-MS
DEFINITIONS = ("own_path", "own_loss")  # group:1 / the pfor-Jacobian own-loss-term gradient
# Variable filters for the cosine: which parameters the three numbers are summed over.
FILTERS = ("all", "backbone", "encoder", "heads")
PARTS = ("head", "encoder", "word_table", "tokenizers")  # every variable is in exactly one
FILTER_PARTS = {
    "all": PARTS,
    "backbone": ("encoder", "word_table", "tokenizers"),  # everything below the FAC head
    "encoder": ("encoder",),  # the Transformer (shared by the modalities in VATT-MA)
    "heads": ("head",),  # the FAC head
}
MODALITIES = ("text", "audio", "both")  # what is wrong in a misaligned triplet
# The paper's curriculum thresholds (start, middle, end of gamma's schedule) at which the
# decisions of `both` (drop / project / sum) from S's cosine are compared with all weights'.
AGREEMENT_GAMMAS = (-0.3, -0.15, 0.0)
DECISIONS = ("drop", "project", "sum")


@dataclasses.dataclass(frozen=True)
class Setting:
    """The sizes of one benchmark (flags of bench/reproduce.py)."""

    # the training-effect study
    steps: int = 200
    batch: int = 16
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    levels: Sequence[float] = (0.0, 0.4)
    methods: Sequence[str] = STUDY_METHODS
    granularities: Sequence[str] = ("group:8", "group:1")
    ablation: bool = True  # Table 2 at the most misaligned level, granularity granularities[0]
    # Harmonization.statistics values; each one but 'all' adds runs of every harmonizing method
    statistics: Sequence[str] = ("all",)
    word_table: str = "frozen"
    variant: str = "agnostic"
    # the data
    num_classes: int = 16
    train_clips: int = 512
    test_clips: int = 128
    probe_train_clips: int = 256
    num_windows: int = 1
    kinds: Sequence[str] = ()  # misalignment kinds of the training sets; () = every kind
    words_per_caption: int = 2  # one class word + fillers (see the module docstring)
    word_norm: float = 25.0  # norm of every vector of the fixed random word table
    # the optimiser (gin/demo.gin's schedule: 50 warm-up steps, linear decay to lr / 10)
    learning_rate: float = 5e-3
    # the signal study
    signal: bool = True
    signal_seeds: Sequence[int] = (0, 1, 2)
    signal_steps: int = 200
    signal_checkpoints: int = 3
    signal_clips: int = 64
    signal_granularity: str = "group:1"  # what `sum` monitors (its training is the same)
    signal_word_tables: Sequence[str] = WORD_TABLES
    signal_variants: Sequence[str] = VARIANTS
    # the top parts S whose (dot, |g_va|^2, |g_vt|^2) are recorded beside the parts ('top:K'
    # deeper than the encoder is skipped)
    signal_statistics: Sequence[str] = ("heads", "top:1", "top:2")
    effect: bool = True
    preset: str = "tiny"
    extra_gin: Sequence[str] = ()  # more --gin_param bindings for every run
    keep_checkpoints: bool = False  # the iterator state makes them large


@dataclasses.dataclass(frozen=True)
class Run:
    """One pre-training + its measurements."""

    name: str
    study: str  # 'effect' | 'signal'
    method: str  # a METHOD_GIN label
    level: float  # misaligned fraction of the training set
    seed: int
    granularity: str
    word_table: str = "frozen"
    variant: str = "agnostic"
    gamma_start: Optional[float] = None  # ablation only
    statistics: str = "all"  # Harmonization.statistics


def level_tag(level: float) -> str:
    return f"mis{int(round(100 * level)):02d}"


def _gran_tag(granularity: str) -> str:
    return granularity.replace(":", "")


def _statistics_tag(statistics: str) -> str:
    return "" if statistics == "all" else "-" + statistics.replace(":", "")


def _trained(setting: Setting, g: int) -> List[tuple]:
    """(method, statistics) of the effect runs at the g-th granularity: the constant-weight
    methods train the same at every granularity and use no statistics, so once, at the first."""
    return [
        (method, statistics)
        for method in setting.methods
        for statistics in setting.statistics
        if method not in CONSTANT_WEIGHT_LABELS or (g == 0 and statistics == "all")
    ]


def plan(setting: Setting) -> List[Run]:
    """The signal runs first (every variant x word table x seed), then every (level,
    granularity, method, seed) of the effect study, then the Table 2 starts not already in it."""
    runs = []
    top = max(setting.levels)
    if setting.signal:
        runs += [
            Run(
                f"signal-{variant}-{words}-s{seed}",
                "signal",
                "sum",
                top,
                seed,
                setting.signal_granularity,
                words,
                variant,
            )
            for variant in setting.signal_variants
            for words in setting.signal_word_tables
            for seed in setting.signal_seeds
        ]
    if not setting.effect:
        return runs
    common = dict(word_table=setting.word_table, variant=setting.variant)
    for level in sorted(setting.levels, reverse=True):
        for g, granularity in enumerate(setting.granularities):
            for method, statistics in _trained(setting, g):
                runs += [
                    Run(
                        f"{level_tag(level)}-{_gran_tag(granularity)}-{method}"
                        f"{_statistics_tag(statistics)}-s{seed}",
                        "effect",
                        method,
                        level,
                        seed,
                        granularity,
                        statistics=statistics,
                        **common,
                    )
                    for seed in setting.seeds
                ]
    if setting.ablation:
        granularity = setting.granularities[0]
        for start in ABLATION_STARTS:
            if start == -0.3 and "curriculum" in setting.methods:
                continue  # the main table's curriculum row (gin/curriculum.gin starts at -0.3)
            runs += [
                Run(
                    f"{level_tag(top)}-{_gran_tag(granularity)}-curriculum_g{start:+.1f}-s{seed}",
                    "effect",
                    "curriculum",
                    top,
                    seed,
                    granularity,
                    gamma_start=start,
                    **common,
                )
                for seed in setting.seeds
            ]
    return runs


# --------------------------------------------------------------------------------- data
def data_paths(results_dir: str) -> Dict[str, str]:
    data = os.path.join(results_dir, "data")
    return {
        "root": data,
        "test": os.path.join(data, "test_clean"),
        "probe_train": os.path.join(data, "probe_train_clean"),
    }


def train_dir(results_dir: str, level: float) -> str:
    return os.path.join(data_paths(results_dir)["root"], f"train_{level_tag(level)}")


def data_jobs(results_dir: str, setting: Setting) -> List[dict]:
    """write_synthetic keyword sets: one training set per level (same seed, so the same videos;
    only the misaligned pairs differ), clean held-out test and probe-training sets (other seeds).
    """
    from vatt_gh.data import synthetic

    kinds = tuple(setting.kinds) or synthetic.HOWTO_KINDS
    common = dict(
        num_classes=setting.num_classes,
        num_frames=16,
        frame_size=40,
        num_shards=4,
        words_per_caption=setting.words_per_caption,
        misalign_kinds=kinds,
    )
    levels = set(setting.levels) | ({max(setting.levels)} if setting.signal else set())
    jobs = [
        dict(
            out_dir=train_dir(results_dir, level),
            num_clips=setting.train_clips,
            misaligned_fraction=level,
            seed=0,
            **common,
        )
        for level in sorted(levels)
    ]
    paths = data_paths(results_dir)
    if setting.effect:
        for key, clips, seed in (
            ("test", setting.test_clips, 1001),
            ("probe_train", setting.probe_train_clips, 1002),
        ):
            jobs.append(
                dict(
                    out_dir=paths[key],
                    num_clips=clips,
                    misaligned_fraction=0.0,
                    seed=seed,
                    **common,
                )
            )
    return jobs


def write_word_vectors(results_dir: str, setting: Setting) -> str:
    """The word table of every run: `word_vectors.random_table` (seed 0, every vector of norm
    `setting.word_norm`; its docstring says why random and why that norm), loaded through
    `build_vatt.word_vectors_path`, frozen or as the starting value of a trainable table."""
    from vatt_gh.data import word_vectors
    from vatt_gh.models import presets

    config = presets.get_config(setting.preset)
    return word_vectors.random_table(
        data_paths(results_dir)["root"], config.vocab_size, config.word_dim, setting.word_norm
    )


def word_table_bindings(word_table: str, vectors_path: str) -> List[str]:
    """Gin bindings for a frozen or a trainable word table; both start from `vectors_path`."""
    if word_table not in WORD_TABLES:
        raise ValueError(f"word table {word_table!r}: choose one of {WORD_TABLES}")
    return [
        f"build_vatt.word_vectors_path='{vectors_path}'",
        f"build_vatt.trainable_word_vectors={word_table == 'trainable'}",
    ]


def pattern(out_dir: str) -> str:
    return os.path.join(out_dir, "synthetic-*.tfrecord")


# ------------------------------------------------------------------------------ one run
def run_spec(run: Run, setting: Setting, results_dir: str) -> dict:
    """What the worker subprocess needs: gin files and bindings, data, measurement sizes."""
    data = train_dir(results_dir, run.level)
    signal = run.study == "signal"
    steps = setting.signal_steps if signal else setting.steps
    checkpoints = setting.signal_checkpoints if signal else 1
    paths = data_paths(results_dir)
    params = [
        f"TRAIN_STEPS={steps}",
        f"GLOBAL_BATCH={setting.batch}",
        "pretrain.synthetic_data=None",
        "PretrainConfig.sources=(@train/SourceConfig(),)",
        f"train/SourceConfig.file_pattern='{pattern(data)}'",
        "train/SourceConfig.name='synthetic'",
        f"PretrainConfig.vocab_path='{os.path.join(data, 'vocab.txt')}'",
        f"PretrainConfig.seed={run.seed}",
        f"pretrain.seed={run.seed}",
        f"Harmonization.granularity='{run.granularity}'",
        f"build_vatt.preset='{setting.preset}'",
        f"build_vatt.variant='{run.variant}'",
        f"pretrain.checkpoint_every={max(1, steps // checkpoints)}",
        f"pretrain.keep_checkpoints={checkpoints + 1}",
        f"pretrain.summary_every={max(1, min(25, steps // 4))}",
        "pretrain.progress=False",
        f"make_optimizer.learning_rate={setting.learning_rate}",
        f"make_optimizer.end_learning_rate={setting.learning_rate / 10}",
    ]
    params += word_table_bindings(run.word_table, write_word_vectors(results_dir, setting))
    if run.gamma_start is not None:
        params += [f"Harmonization.gamma_start={run.gamma_start}", "Harmonization.gamma_end=0.0"]
    if run.statistics != "all":
        params.append(f"Harmonization.statistics='{run.statistics}'")
    params += list(setting.extra_gin)
    return dict(
        run=dataclasses.asdict(run),
        model_dir=os.path.join(results_dir, "runs", run.name),
        gin_files=[METHOD_GIN[run.method], "gin/demo.gin"],
        gin_params=params,
        vocab=os.path.join(data, "vocab.txt"),
        train_pattern=pattern(data),
        test_pattern=pattern(paths["test"]),
        probe_train_pattern=pattern(paths["probe_train"]),
        signal_clips=setting.signal_clips,
        signal_statistics=list(setting.signal_statistics),
        batch=setting.batch,
        num_windows=setting.num_windows,
        num_classes=setting.num_classes,
        keep_checkpoints=setting.keep_checkpoints,
    )


def result_path(results_dir: str, run: Run) -> str:
    return os.path.join(results_dir, "runs", run.name, "result.json")


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


def filter_cosines(parts: np.ndarray, filter_name: str) -> np.ndarray:
    """(N, P, 3) part statistics -> (N,) cosines over the filter's parts."""
    index = [PARTS.index(p) for p in FILTER_PARTS[filter_name]]
    dot, nva, nvt = np.asarray(parts)[:, index].sum(axis=1).T
    return dot / np.maximum(np.sqrt(nva * nvt), 1e-30)


def auc(scores_aligned: np.ndarray, scores_misaligned: np.ndarray) -> Optional[float]:
    """ROC AUC that an aligned triplet has a HIGHER cosine than a misaligned one (ties 1/2;
    `conflicts.separation_auc`): 0.5 = no signal, 1 = the cosine separates them perfectly."""
    from vatt_gh.evaluation.conflicts import separation_auc

    return separation_auc(scores_aligned, scores_misaligned)


def signal_aucs(result: dict) -> List[dict]:
    """One row per (checkpoint step, definition, filter): AUC aligned vs each modality kind
    (text / audio / both wrong) and vs each fine misalignment kind."""
    from vatt_gh.data import synthetic

    kinds = np.array([c["kind"] for c in result["clips"]])
    modality = np.array([synthetic.kind_modality(k) for k in kinds])
    aligned = modality == "aligned"
    rows = []
    for point in result["along_training"]:
        for definition, parts in point["parts"].items():
            for name in FILTERS:
                cos = filter_cosines(np.asarray(parts), name)
                row = {"step": point["step"], "definition": definition, "filter": name}
                row["any"] = auc(cos[aligned], cos[~aligned])
                for m in MODALITIES:
                    row[m] = auc(cos[aligned], cos[modality == m])
                for k in synthetic.HOWTO_KINDS:
                    row[k] = auc(cos[aligned], cos[kinds == k])
                rows.append(row)
    return rows


# ---------------------------------------------- agreement of S's statistics with all weights'
def spearman(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman's rank correlation (ties: mid-ranks); None when either side is constant."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(stats.spearmanr(a, b).statistic)


def decisions(stats: np.ndarray, gamma: float) -> np.ndarray:
    """(N, 3) (dot, |g_va|^2, |g_vt|^2) -> (N,) index into DECISIONS of what `both` does with
    each triplet at threshold gamma (`harmonize.weights`: drop when cos <= gamma, project when
    gamma < cos < 0, sum when cos >= 0)."""
    from vatt_gh import harmonize

    dot, nva, nvt = np.asarray(stats, np.float32).T
    w = harmonize.weights(dot, nva, nvt, harmonize.Harmonization(method="both"), gamma)
    dropped, projected = w.dropped.numpy() > 0.5, w.projected.numpy() > 0.5
    return np.where(dropped, 0, np.where(projected, 1, 2))


def agreement_rows(result: dict) -> List[dict]:
    """One row per (checkpoint step, definition, top part S): the per-triplet cosine over S
    against the one over all weights: Spearman correlation, the fraction of triplets whose
    decision under `both` differs at each of AGREEMENT_GAMMAS, the fraction dropped by each at
    the middle gamma, and the ROC AUC aligned vs misaligned from each cosine."""
    from vatt_gh.data import synthetic

    names = result.get("top_names", [])
    modality = np.array([synthetic.kind_modality(c["kind"]) for c in result["clips"]])
    aligned = modality == "aligned"
    middle = AGREEMENT_GAMMAS[len(AGREEMENT_GAMMAS) // 2]
    rows = []
    for point in result["along_training"]:
        for definition, parts in point["parts"].items():
            full = np.asarray(parts).sum(axis=1)  # (N, 3) over every part
            cos_all = filter_cosines(np.asarray(parts), "all")
            for j, name in enumerate(names):
                top = np.asarray(point["top"][definition])[:, j]  # (N, 3) over S
                cos_top = top[:, 0] / np.maximum(np.sqrt(top[:, 1] * top[:, 2]), 1e-30)
                row = {
                    "step": point["step"],
                    "definition": definition,
                    "statistics": name,
                    "spearman": spearman(cos_top, cos_all),
                    "auc S": auc(cos_top[aligned], cos_top[~aligned]),
                    "auc all": auc(cos_all[aligned], cos_all[~aligned]),
                    f"dropped all {middle:g}": float(np.mean(decisions(full, middle) == 0)),
                    f"dropped S {middle:g}": float(np.mean(decisions(top, middle) == 0)),
                }
                if row["auc S"] is not None and row["auc all"] is not None:
                    row["auc S - all"] = row["auc S"] - row["auc all"]
                for gamma in AGREEMENT_GAMMAS:
                    row[f"differ {gamma:g}"] = float(
                        np.mean(decisions(top, gamma) != decisions(full, gamma))
                    )
                rows.append(row)
    return rows


def agreement_summary(results: List[dict]) -> Dict[str, dict]:
    """{'<variant>|<word table>|<definition>|<S>|<step>': {column: interval over seeds}}."""
    cells: Dict[str, Dict[str, list]] = {}
    for r in results:
        run = r["run"]
        for row in agreement_rows(r):
            key = "|".join(
                [run["variant"], run["word_table"], row["definition"], row["statistics"]]
                + [str(row["step"])]
            )
            cell = cells.setdefault(key, {})
            for k, v in row.items():
                if k not in ("step", "definition", "statistics"):
                    cell.setdefault(k, []).append(v)
    return {key: {k: interval(v) for k, v in cell.items()} for key, cell in cells.items()}


def agreement_table(summary: Dict[str, dict], definition: str = "own_path") -> str:
    """A row per (variant, word table, S, step) of one definition; 'mean [95% t-interval]'."""
    middle = AGREEMENT_GAMMAS[len(AGREEMENT_GAMMAS) // 2]
    columns = [("spearman", "Spearman S vs all", 2)]
    columns += [(f"differ {g:g}", f"decision differs, gamma {g:g}", 3) for g in AGREEMENT_GAMMAS]
    columns += [
        (f"dropped all {middle:g}", f"dropped (all), gamma {middle:g}", 3),
        (f"dropped S {middle:g}", f"dropped (S), gamma {middle:g}", 3),
        ("auc S", "AUC from S", 2),
        ("auc all", "AUC from all", 2),
        ("auc S - all", "AUC S - all (paired)", 2),
    ]
    headers = ["VATT", "word table", "S", "step", "seeds"] + [h for _, h, _ in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    order = lambda k: (k.split("|")[:3], k.split("|")[3], int(k.split("|")[4]))
    for key in sorted(summary, key=order):
        variant, words, d, name, step = key.split("|")
        if d != definition:
            continue
        cells = summary[key]
        n = max((c["n"] for c in cells.values() if c), default=0)
        row = [{"agnostic": "MA", "specific": "MS"}[variant], words, f"`{name}`", step, str(n)]
        row += [fmt(cells.get(k), digits) for k, _, digits in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


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


# ---------------------------------------------------------------------------- statistics
def interval(values: Sequence[Optional[float]]) -> Optional[dict]:
    """Mean and two-sided 95% Student-t interval over seeds (n = 1: no interval)."""
    from scipy import stats

    values = np.array([v for v in values if v is not None and np.isfinite(v)], float)
    if not len(values):
        return None
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": 1}
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(len(values))}


def fmt(stats: Optional[dict], digits: int = 1) -> str:
    if stats is None:
        return "n/a"
    if stats["lo"] is None:
        return f"{stats['mean']:.{digits}f} (n=1)"
    return f"{stats['mean']:.{digits}f} [{stats['lo']:.{digits}f}, {stats['hi']:.{digits}f}]"


EFFECT_COLUMNS = (  # (header, getter over a result dict, digits)
    ("t2v R@1", lambda r: r["retrieval"]["t2v/R@1"], 1),
    ("t2v R@5", lambda r: r["retrieval"]["t2v/R@5"], 1),
    ("t2v R@10", lambda r: r["retrieval"]["t2v/R@10"], 1),
    ("t2v MedR", lambda r: r["retrieval"]["t2v/median_rank"], 1),
    ("probe video top1", lambda r: r["probe_video"]["top1"], 1),
    ("probe audio top1", lambda r: r["probe_audio"]["top1"], 1),
    ("ms/step", lambda r: 1000.0 * r["seconds_per_step"], 0),
)
PAIRED = ("t2v R@5", "t2v R@10")  # the paired differences to sum shown in the table


def row_label(run: dict) -> str:
    if run.get("gamma_start") is not None:
        return f"curriculum ({run['gamma_start']:+.1f}, 0)"
    if run.get("statistics", "all") != "all":
        return f"{run['method']} [{run['statistics']}]"
    return run["method"]


def _get(get, result):
    try:
        return get(result)
    except (KeyError, IndexError, TypeError):
        return None


def effect_summary(results: List[dict]) -> Dict[str, dict]:
    """{'<level>|<granularity>|<row>': {column: interval, 'diff <column>': paired interval}}:
    the paired difference to `sum` at the same level and granularity, seed by seed."""
    getters = {h: g for h, g, _ in EFFECT_COLUMNS}
    groups: Dict[tuple, Dict[int, dict]] = {}
    for r in results:
        run = r["run"]
        key = (run["level"], run["granularity"], row_label(run))
        groups.setdefault(key, {})[run["seed"]] = r
    summary = {}
    for (level, granularity, label), by_seed in groups.items():
        cells = {h: interval([_get(g, r) for r in by_seed.values()]) for h, g in getters.items()}
        base = groups.get((level, granularity, "sum")) or next(
            (v for (lv, _, lb), v in groups.items() if lv == level and lb == "sum"), {}
        )  # sum trains the same at every granularity (CONSTANT_WEIGHT_LABELS): run at the first
        for h in getters:
            diffs = [
                _get(getters[h], by_seed[s]) - _get(getters[h], base[s])
                for s in sorted(set(by_seed) & set(base))
                if _get(getters[h], by_seed[s]) is not None
                and _get(getters[h], base[s]) is not None
            ]
            cells[f"diff {h}"] = interval(diffs) if label != "sum" else None
        if " [" in label:  # statistics from S: paired with the same method over all weights
            full = groups.get((level, granularity, label.split(" [")[0]), {})
            for h in getters:
                pairs = [
                    (_get(getters[h], by_seed[s]), _get(getters[h], full[s]))
                    for s in by_seed
                    if s in full
                ]
                cells[f"vs all {h}"] = interval([a - b for a, b in pairs if None not in (a, b)])
        cells["seeds"] = sorted(by_seed)
        ceiling = [r.get("retrieval_ceiling") for r in by_seed.values()]
        cells["ceiling"] = ceiling[0] if ceiling else None
        summary[f"{level}|{granularity}|{label}"] = cells
    return summary


def effect_table(summary: Dict[str, dict], keys: Sequence[str]) -> str:
    """Rows 'level|granularity|label' in the given order; cells 'mean [95% t-interval]'."""
    headers = ["misaligned", "granularity", "method", "seeds"]
    headers += [h for h, _, _ in EFFECT_COLUMNS] + [f"{h} - sum (paired)" for h in PAIRED]
    digits = {h: d for h, _, d in EFFECT_COLUMNS}
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for key in keys:
        level, granularity, label = key.split("|", 2)
        cells = summary[key]
        row = [f"{100 * float(level):.0f}%", f"`{granularity}`", label, str(len(cells["seeds"]))]
        row += [fmt(cells.get(h), digits[h]) for h, _, _ in EFFECT_COLUMNS]
        row += [fmt(cells.get(f"diff {h}"), 1) if label != "sum" else "-" for h in PAIRED]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def statistics_table(summary: Dict[str, dict]) -> str:
    """The rows whose statistics come from a top part S: each column's paired difference to
    the same method, level, granularity and seed with statistics over all weights."""
    headers = ["misaligned", "granularity", "method [S]", "seeds"]
    headers += [f"{h}: S - all (paired)" for h, _, _ in EFFECT_COLUMNS]
    digits = {h: d for h, _, d in EFFECT_COLUMNS}
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for key, cells in summary.items():
        level, granularity, label = key.split("|", 2)
        if " [" not in label:
            continue
        row = [f"{100 * float(level):.0f}%", f"`{granularity}`", label, str(len(cells["seeds"]))]
        row += [fmt(cells.get(f"vs all {h}"), digits[h]) for h, _, _ in EFFECT_COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def signal_summary(results: List[dict]) -> Dict[str, dict]:
    """{'<variant>|<word table>|<definition>|<filter>|<step>': {kind: interval over seeds}}."""
    cells: Dict[str, Dict[str, list]] = {}
    for r in results:
        run = r["run"]
        for row in signal_aucs(r):
            key = "|".join(
                [run["variant"], run["word_table"], row["definition"], row["filter"]]
                + [str(row["step"])]
            )
            cell = cells.setdefault(key, {})
            for k, v in row.items():
                if k not in ("step", "definition", "filter"):
                    cell.setdefault(k, []).append(v)
    return {key: {k: interval(v) for k, v in cell.items()} for key, cell in cells.items()}


def signal_table(summary: Dict[str, dict], step: int, columns=("text", "audio", "both")) -> str:
    """At one checkpoint step: a row per (variant, word table, definition, filter)."""
    headers = ["VATT", "word table", "gradient of a triplet", "weights", "seeds"]
    headers += [f"AUC {c}" for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for key in sorted(summary):
        variant, words, definition, name, at = key.split("|")
        if int(at) != step:
            continue
        cells = summary[key]
        n = max((c["n"] for c in cells.values() if c), default=0)
        row = [
            {"agnostic": "MA", "specific": "MS"}[variant],
            words,
            {"own_path": "own path (group:1)", "own_loss": "own loss term (Jacobian)"}[definition],
            name,
            str(n),
        ]
        row += [fmt(cells.get(c), 2) for c in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def signal_figure(summary: Dict[str, dict], path: str, lines: Sequence[tuple], title: str) -> str:
    """AUC over training, one panel per modality kind (text / audio / both wrong), a line with
    its 95% t-interval band per (variant, word table, definition, filter) in `lines`; the legend
    sits below the panels, clear of the data."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(MODALITIES), figsize=(5 * len(MODALITIES), 4.2), sharey=True)
    colours = plt.get_cmap("tab10")
    seeds = set()
    for i, line in enumerate(lines):
        prefix = "|".join(line) + "|"
        steps = sorted(int(k.rsplit("|", 1)[1]) for k in summary if k.startswith(prefix))
        if not steps:
            continue
        for ax, kind in zip(axes, MODALITIES):
            cells = [summary[f"{prefix}{s}"].get(kind) for s in steps]
            ok = [(s, c) for s, c in zip(steps, cells) if c]
            if not ok:
                continue
            xs = [s for s, _ in ok]
            mean = [c["mean"] for _, c in ok]
            seeds.add(max(c["n"] for _, c in ok))
            label = (
                f"{'MA' if line[0] == 'agnostic' else 'MS'}, {line[1]} words, "
                f"{'own path' if line[2] == 'own_path' else 'own loss (Jacobian)'}, {line[3]}"
            )
            style = "-" if line[2] == "own_path" else "--"
            ax.plot(xs, mean, style, marker="o", color=colours(i % 10), label=label)
            if all(c["lo"] is not None for _, c in ok):
                ax.fill_between(
                    xs,
                    [c["lo"] for _, c in ok],
                    [c["hi"] for _, c in ok],
                    color=colours(i % 10),
                    alpha=0.15,
                    linewidth=0,
                )
    for ax, kind in zip(axes, MODALITIES):
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set_title(f"aligned vs {kind} wrong")
        ax.set_xlabel("training step")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ROC AUC of cos(g_va, g_vt) (0.5 = chance)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    n = ", ".join(str(s) for s in sorted(seeds)) or "0"
    fig.suptitle(f"{title}\n(mean over n = {n} seeds; band: 95% t-interval; dotted: chance)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def effect_figure(summary: Dict[str, dict], path: str, column: str, title: str) -> str:
    """Left: `column` per method (mean, 95% t-interval), one group per (level, granularity),
    with the class-oracle ceiling; right: the paired difference to `sum` per seed's pair."""
    plt = _plt()
    keys = list(summary)
    groups = list(dict.fromkeys(k.rsplit("|", 1)[0] for k in keys))
    labels = list(dict.fromkeys(k.rsplit("|", 1)[1] for k in keys))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    colours = plt.get_cmap("tab10")
    width = 0.8 / max(len(labels), 1)
    ns = set()
    for j, label in enumerate(labels):
        for side, name in ((left, column), (right, f"diff {column}")):
            xs, ys, err = [], [], []
            for g, group in enumerate(groups):
                cell = summary.get(f"{group}|{label}", {}).get(name)
                if not cell:
                    continue
                ns.add(cell["n"])
                xs.append(g + (j - (len(labels) - 1) / 2) * width)
                ys.append(cell["mean"])
                lo = cell["lo"] if cell["lo"] is not None else cell["mean"]
                hi = cell["hi"] if cell["hi"] is not None else cell["mean"]
                err.append((cell["mean"] - lo, hi - cell["mean"]))
            if xs:
                side.errorbar(
                    xs,
                    ys,
                    yerr=np.array(err).T,
                    fmt="o",
                    capsize=3,
                    color=colours(j % 10),
                    label=label,
                )
    metric = column.split()[-1]
    for g, group in enumerate(groups):
        ceiling = next(
            (
                summary[k]["ceiling"]
                for k in keys
                if k.startswith(group + "|") and summary[k]["ceiling"]
            ),
            None,
        )
        if ceiling and f"t2v/{metric}" in ceiling:
            left.hlines(ceiling[f"t2v/{metric}"], g - 0.45, g + 0.45, color="grey", linestyle="--")
    names = [f"{100 * float(g.split('|')[0]):.0f}% misaligned\n{g.split('|')[1]}" for g in groups]
    for side in (left, right):
        side.set_xticks(range(len(groups)))
        side.set_xticklabels(names)
        side.grid(axis="y", alpha=0.3)
    left.set_ylabel(f"{column} on clean held-out clips (%)")
    left.set_title(f"{column} (dashed grey: class-oracle ceiling)")
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_ylabel(f"{column}: method - sum, same seed (points)")
    right.set_title("paired difference to sum")
    handles, texts = left.get_legend_handles_labels()
    fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels))
    n = ", ".join(str(s) for s in sorted(ns)) or "0"
    fig.suptitle(f"{title}\n(mean and 95% t-interval over n = {n} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def synthetic_kinds() -> tuple:
    from vatt_gh.data import synthetic

    return synthetic.HOWTO_KINDS
