"""The statistics and tables of `bench/reproduce.py`, from the runs' result.json: ROC AUCs of
the cosine, the agreement of a top part S's cosines and decisions with all weights', the effect
study's retrieval and probes with paired differences; means with 95% t-intervals over seeds.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
from reproduce_study import (
    AGREEMENT_GAMMAS,
    FILTER_PARTS,
    FILTERS,
    MODALITIES,
    PARTS,
)


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


def synthetic_kinds() -> tuple:
    from vatt_gh.data import synthetic

    return synthetic.HOWTO_KINDS
