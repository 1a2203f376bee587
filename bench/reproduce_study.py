"""The plan of `bench/reproduce.py`: its sizes (`Setting`), its runs (`Run`, `plan`), their data
and the spec each worker subprocess gets (`run_spec`); the vocabulary the other pieces share.

    python bench/reproduce.py                      # the whole benchmark (see its docstring)

Two studies, one kind of run:
- 'signal': pre-train `sum` on the misaligned set, keep checkpoints along training, and at each
  one measure every probe clip's per-triplet gradients under two definitions (its own forward
  path = granularity group:1; its own loss terms through every path = the pfor Jacobian), per
  variable, so that the cosine over all weights, the backbone, the shared encoder, the heads or
  a top part S comes out of one measurement.
- 'effect': pre-train a method at a granularity (and statistics), then held-out retrieval and
  linear probes.

The pieces: this module (what to run), `reproduce_run` (one run, in its subprocess),
`reproduce_tables` (statistics and tables from the runs' result.json), `reproduce_figures`.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence

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
