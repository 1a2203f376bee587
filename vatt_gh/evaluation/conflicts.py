"""Gradient conflicts per triplet, the measure of paper Figure 3 (Section 3.1).

    rows = triplet_cosines(model, config, batch_size=64)   # one row per clip, file order
    top, bottom = select_extremes(rows["cosine"], fraction=0.05)
    auc = alignment_auc(rows["cosine"], rows["aligned_va"], rows["aligned_vt"])

For every clip, cos(g_va, g_vt) of its own two loss terms (per-example gradients of the
contrastive losses, `PretrainModel.gradient_stats(granularity='example')`, nothing applied), with
the other clips of its batch as negatives, the model in training mode (DropToken on) as during
pre-training. Batches come from the evaluation pipeline with one central window and the run's K
central narrations, in file order, so each cosine stays with its clip id and ground truth. The last
partial batch is filled up with the set's first clips (real negatives and BatchNorm statistics);
their rows are dropped.
"""

import base64
import html
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from vatt_gh.data import schema
from vatt_gh.data.configs import EvalConfig
from vatt_gh.data.eval_input import eval_dataset
from vatt_gh.data.read import list_files

ROW_KEYS = ("cosine", "dot", "norm_va", "norm_vt")
TRUTH_KEYS = ("label", "aligned_va", "aligned_vt", "audio_mask")


def pretrain_style(batch: dict) -> dict:
    """Eval batch with one window -> the pre-training batch layout `gradient_stats` takes."""
    return {
        "video": batch["video"][:, 0],
        "audio": batch["audio"][:, 0],
        "text": batch["text"],
        "audio_mask": batch["audio_mask"],
        "text_mask": batch["text_mask"],
    }


def _fill(batch: dict, filler: dict, batch_size: int) -> dict:
    """Appends the first rows of `filler` so that every tensor has `batch_size` rows."""
    missing = batch_size - int(batch["video"].shape[0])
    return {k: tf.concat([v, filler[k][:missing]], 0) for k, v in batch.items()}


def triplet_cosines(
    model,
    config: EvalConfig,
    batch_size: int,
    max_clips: Optional[int] = None,
    granularity: str = "example",
) -> Dict[str, np.ndarray]:
    """Per-clip gradient statistics over a record set, in file order.

    `granularity`: 'example', the gradient of the clip's own loss terms (per-example Jacobians:
    batch x parameters in memory; one device), or 'group:1', the clip's contribution through its
    own forward path, the training definition (per-layer statistics: the memory of one step;
    `vatt_gh.group_stats`). The two differ because the other clips are the negatives.

    Returns arrays over clips: 'clip_id' (str), 'cosine', 'dot', 'norm_va', 'norm_vt', 'label',
    'aligned_va', 'aligned_vt', 'audio_mask', 'text_count' (narrations used).
    """
    if config.num_windows != 1 or config.num_crops != 1:
        raise ValueError("triplet_cosines needs EvalConfig.num_windows = 1 and num_crops = 1")
    if granularity not in ("example", "group:1"):
        raise ValueError(f"granularity {granularity!r}: choose 'group:1' or 'example'")
    stats_fn = tf.function(lambda data: model.gradient_stats(data, granularity=granularity))
    chunks: Dict[str, List[np.ndarray]] = {}
    filler, count = None, 0
    for batch in eval_dataset(config, batch_size):
        data = pretrain_style(batch)
        real = int(data["video"].shape[0])
        if filler is None:
            filler = data
        if real < batch_size:
            if int(filler["video"].shape[0]) < batch_size:
                raise ValueError(
                    f"the record set has {real} clip(s), fewer than --batch_size="
                    f"{batch_size}: lower the batch size"
                )
            data = _fill(data, filler, batch_size)
        stats = stats_fn(data)
        rows = {k: stats[k].numpy()[:real] for k in ROW_KEYS}
        rows.update({k: batch[k].numpy() for k in TRUTH_KEYS})
        rows["text_count"] = batch["text_mask"].numpy().sum(axis=1)
        rows["clip_id"] = np.array([c.decode("utf-8") for c in batch["clip_id"].numpy()])
        for key, value in rows.items():
            chunks.setdefault(key, []).append(value)
        count += real
        if max_clips is not None and count >= max_clips:
            break
    if not chunks:
        raise ValueError("the record set yielded no clips")
    return {k: np.concatenate(v)[:max_clips] for k, v in chunks.items()}


def select_extremes(cosines: np.ndarray, fraction: float = 0.05) -> Tuple[np.ndarray, np.ndarray]:
    """(N,) cosines -> (top, bottom) clip indices: the ceil(fraction * N) highest (descending)
    and lowest (ascending) cosines, at least one each, ties broken by position."""
    cosines = np.asarray(cosines)
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must lie in (0, 0.5], got {fraction}")
    n = max(1, int(np.ceil(fraction * len(cosines))))
    order = np.argsort(cosines, kind="stable")  # ascending
    return order[::-1][:n], order[:n]


def separation_auc(positive, negative) -> Optional[float]:
    """ROC AUC (scikit-learn) that a `positive` score is HIGHER than a `negative` one, ties 1/2:
    0.5 = no signal, 1 = perfectly separated, < 0.5 = the wrong way round; None when either
    side is empty."""
    from sklearn.metrics import roc_auc_score

    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not positive.size or not negative.size:
        return None
    labels = np.r_[np.ones(positive.size, int), np.zeros(negative.size, int)]
    return float(roc_auc_score(labels, np.r_[positive, negative]))


def alignment_auc(
    cosines: np.ndarray, aligned_va: np.ndarray, aligned_vt: np.ndarray
) -> Optional[float]:
    """ROC AUC of the cosine separating aligned triplets (both pairs aligned) from the others;
    None when only one kind is present (e.g. real data, where every flag is 1)."""
    aligned = (np.asarray(aligned_va) > 0.5) & (np.asarray(aligned_vt) > 0.5)
    cosines = np.asarray(cosines)
    return separation_auc(cosines[aligned], cosines[~aligned])


def write_csv(path: str, rows: Dict[str, np.ndarray]) -> str:
    """One line per clip: clip_id, cosine, dot, norms, label, aligned flags, masks."""
    columns = ("clip_id",) + ROW_KEYS + TRUTH_KEYS + ("text_count",)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(",".join(columns) + "\n")
        for i in range(len(rows["clip_id"])):
            values = []
            for key in columns:
                value = rows[key][i]
                if key == "clip_id":
                    values.append('"' + str(value).replace('"', '""') + '"')
                elif key in ("label", "aligned_va", "aligned_vt", "audio_mask", "text_count"):
                    values.append(str(int(value)))
                else:
                    values.append(f"{float(value):.6g}")
            f.write(",".join(values) + "\n")
    return path


def read_clips(file_pattern: str, clip_ids: Sequence[str], num_frames: int = 8) -> Dict[str, dict]:
    """{clip_id: {'frames': [JPEG bytes] (num_frames evenly spaced), 'captions': [str]}} for the
    requested clips, read straight from the records (all narrations, in time order)."""
    wanted = set(clip_ids)
    found = {}
    for path in list_files(file_pattern):
        for record in tf.data.TFRecordDataset(path):
            parsed = schema.parse_sequence_example(record)
            clip_id = parsed["clip_id"].numpy().decode("utf-8")
            if clip_id not in wanted:
                continue
            frames = parsed["frames"].numpy()
            picks = np.unique(np.linspace(0, len(frames) - 1, num_frames).round().astype(int))
            found[clip_id] = {
                "frames": [frames[i] for i in picks],
                "captions": [c.decode("utf-8") for c in parsed["captions"].numpy()],
            }
            if len(found) == len(wanted):
                return found
    return found


def _truth(rows, i) -> str:
    if rows["aligned_va"][i] > 0.5 and rows["aligned_vt"][i] > 0.5:
        flags = "aligned"
    else:
        bad = [m for m, k in (("audio", "aligned_va"), ("text", "aligned_vt")) if rows[k][i] < 0.5]
        flags = "misaligned " + " + ".join(bad)
    label = f"class {int(rows['label'][i])}, " if rows["label"][i] >= 0 else ""
    return label + flags


def write_html(
    path: str,
    rows: Dict[str, np.ndarray],
    groups: Dict[str, np.ndarray],
    clips: Dict[str, dict],
    title: str,
    synthetic: bool,
    auc: Optional[float] = None,
) -> str:
    """A self-contained page (frames inline as JPEG data URIs): for each group (e.g. 'top 5%'),
    one row per clip with its id, cosine, a few frames and its narrations side by side."""
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        "</title><style>body{font-family:sans-serif} td{vertical-align:top;padding:4px} "
        "img{width:96px;height:96px;image-rendering:pixelated;margin:1px} "
        ".cos{font-weight:bold}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(rows['clip_id'])} triplets; cos(g_va, g_vt) per triplet (paper Figure 3).",
    ]
    if auc is not None:
        out.append(f" ROC AUC of the cosine for aligned vs misaligned triplets: {auc:.3f}.")
    out.append("</p>")
    for name, indices in groups.items():
        out.append(f"<h2>{html.escape(name)} ({len(indices)} triplets)</h2><table>")
        for i in indices:
            clip_id = str(rows["clip_id"][i])
            clip = clips.get(clip_id, {"frames": [], "captions": []})
            images = "".join(
                f"<img src='data:image/jpeg;base64,{base64.b64encode(f).decode('ascii')}'>"
                for f in clip["frames"]
            )
            captions = "<br>".join(html.escape(c) for c in clip["captions"])
            truth = f"<br>{html.escape(_truth(rows, i))}" if synthetic else ""
            out.append(
                f"<tr><td><code>{html.escape(clip_id)}</code><br><span class='cos'>"
                f"cos = {rows['cosine'][i]:+.4f}</span>{truth}</td><td>{images}</td>"
                f"<td>{captions}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("\n".join(out))
    return path


def contact_sheet_rows(rows, indices, clips, synthetic: bool = False) -> List[dict]:
    """Rows for `figures.contact_sheet`: decoded frames, narrations, a title per clip (with the
    ground truth for synthetic data)."""
    sheet = []
    for i in indices:
        clip = clips.get(str(rows["clip_id"][i]), {"frames": [], "captions": []})
        truth = f"\n{_truth(rows, i)}" if synthetic else ""
        sheet.append(
            {
                "title": f"{rows['clip_id'][i]}  cos = {rows['cosine'][i]:+.3f}{truth}",
                "frames": [tf.io.decode_jpeg(f).numpy() for f in clip["frames"]],
                "captions": clip["captions"],
            }
        )
    return sheet
