"""Narrations and labels as users have them, for the dataset builder.

Three ways a video gets its narrations (time-stamped lines of speech):
- a table for the whole set: CSV `video_id,start,end,text` or HowTo100M's `raw_caption.json`
  (`load_table`);
- a subtitle file next to the video, WebVTT or SRT, e.g. the automatic (ASR) captions that
  YouTube downloaders write as `<id>.en.vtt` (`sidecar_file`, `read_subtitles`), parsed by
  webvtt-py. YouTube's automatic captions roll: each cue shows the previous cue's line again above
  the new one (and a 10 ms cue in between repeats it alone); `rolling_to_narrations` keeps each
  line once, timed by the cue that first showed it, i.e. when it was spoken;
- none (AudioSet): the clips carry no text.

A clip gets the narrations overlapping it plus `neighbours` on each side (`clip_captions`), as
for HowTo100M. Video-level labels (YouTube-8M's vocabulary indices) come from a CSV
`video_id,labels` (indices separated by spaces) or JSON `{video_id: [index, ...]}` (`load_labels`).
Bad input raises ValueError naming the file (and the row).
"""

import csv
import html
import io
import json
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf
import webvtt
from absl import logging
from webvtt import errors as webvtt_errors

Narration = Tuple[float, float, str]  # (start seconds, end seconds, text)
# A cue timing webvtt-py reads: [hh:]mm:ss.ttt --> [hh:]mm:ss.ttt (SRT: a comma before ttt).
_TIMING = re.compile(r"^\s*(\d+:)?\d{2}:\d{2}[.,]\d{3}\s+-->\s+(\d+:)?\d{2}:\d{2}[.,]\d{3}")
SUBTITLE_EXTENSIONS = (".vtt", ".srt")


def _narration(path: str, where: str, start, end, text) -> Narration:
    try:
        start, end = float(start), float(end)
    except (TypeError, ValueError):
        raise ValueError(f"{path} {where}: start/end {start!r}/{end!r} are not numbers") from None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
        raise ValueError(f"{path} {where}: bad time span [{start}, {end}]")
    return start, end, str(text)


def load_table(path: str) -> Dict[str, List[Narration]]:
    """video id -> [(start, end, text)] sorted by start, from one CSV or JSON file.

    CSV: columns video_id, start, end, text (one row per narration). JSON: HowTo100M's
    `{video_id: {"start": [...], "end": [...], "text": [...]}}` or `{video_id: [{start, end, text}]}`.
    """
    out: Dict[str, List[Narration]] = {}
    with tf.io.gfile.GFile(path) as f:
        if path.endswith(".json"):
            try:
                table = json.load(f)
                for vid, value in table.items():
                    if isinstance(value, dict):
                        rows = list(zip(value["start"], value["end"], value["text"]))
                    else:
                        rows = [(r["start"], r["end"], r["text"]) for r in value]
                    out[vid] = [_narration(path, f"video {vid!r}", s, e, t) for s, e, t in rows]
            except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}: not a narration table ({type(e).__name__}: {e})"
                ) from None
        else:
            reader = csv.DictReader(f)
            missing = {"video_id", "start", "end", "text"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: CSV lacks the column(s) {sorted(missing)}")
            for n, row in enumerate(reader, start=2):
                out.setdefault(row["video_id"], []).append(
                    _narration(path, f"line {n}", row["start"], row["end"], row["text"])
                )
    return {vid: sorted(rows) for vid, rows in out.items()}


def _cue_lines(text: str) -> List[str]:
    """The non-empty lines of a cue's text (tags already stripped), entities decoded."""
    lines = (" ".join(html.unescape(line).split()) for line in text.splitlines())
    return [line for line in lines if line]


def rolling_to_narrations(cues: Sequence[Tuple[float, float, str]]) -> List[Narration]:
    """Cues (start, end, text) in file order -> narrations, each spoken line once.

    A line that the previous cue already showed is a repeat (rolling captions), not new speech.
    A line that extends a line of the previous cue word by word (captions that grow as words are
    spoken) replaces it. A new line is timed by its cue: (cue start, cue end, line).
    """
    out: List[Narration] = []
    previous: Dict[str, Optional[int]] = {}  # lines of the previous cue -> index in `out`
    for start, end, text in cues:
        current: Dict[str, Optional[int]] = {}
        for line in _cue_lines(text):
            if line in previous:
                current[line] = previous[line]
                continue
            grown = [i for p, i in previous.items() if i is not None and line.startswith(p + " ")]
            if grown:
                i = grown[-1]
                out[i] = (out[i][0], max(out[i][1], end), line)
            else:
                out.append((start, end, line))
                i = len(out) - 1
            current[line] = i
        previous = current
    return sorted(out, key=lambda n: n[:2])


def read_subtitles(path: str) -> List[Narration]:
    """Narrations of one WebVTT (.vtt) or SRT (.srt) file, rolling duplicates removed."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUBTITLE_EXTENSIONS:
        raise ValueError(
            f"{path}: not a subtitle file (expected {' or '.join(SUBTITLE_EXTENSIONS)})"
        )
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
        parsed = webvtt.from_buffer(io.StringIO(text), format=ext[1:])
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    except (webvtt_errors.MalformedFileError, webvtt_errors.MalformedCaptionError) as e:
        raise ValueError(f"{path}: not a valid {ext[1:].upper()} file: {e}") from None
    cues = []
    for caption in parsed.captions:
        start = caption.start_time.in_milliseconds() / 1000.0
        end = caption.end_time.in_milliseconds() / 1000.0
        cues.append((start, max(start, end), caption.text))
    if not cues and "-->" in text:
        raise ValueError(f"{path}: no cue could be read (malformed cue timings?)")
    bad = [line.strip() for line in text.splitlines() if "-->" in line and not _TIMING.match(line)]
    if bad:  # webvtt-py skips such cues without a word
        logging.warning(
            "%s: %d cue(s) left out, their timings cannot be read (e.g. a negative start): %r",
            path,
            len(bad),
            bad[0],
        )
    return rolling_to_narrations(cues)


def sidecar_file(video_path: str, language: str = "en") -> Optional[str]:
    """The subtitle file next to a video: <stem>.<language>.vtt|srt, then <stem>.vtt|srt."""
    stem = os.path.splitext(video_path)[0]
    names = [f"{stem}.{language}{ext}" for ext in SUBTITLE_EXTENSIONS] if language else []
    names += [stem + ext for ext in SUBTITLE_EXTENSIONS]
    for name in names:
        if tf.io.gfile.exists(name):
            return name
    return None


def clip_captions(
    narrations: Sequence[Narration], t0: float, t1: float, neighbours: int
) -> List[str]:
    """Narrations overlapping [t0, t1) plus `neighbours` on each side; [] if none overlaps."""
    hits = [i for i, (s, e, text) in enumerate(narrations) if s < t1 and e > t0 and text.strip()]
    if not hits:
        return []
    lo, hi = max(hits[0] - neighbours, 0), min(hits[-1] + neighbours + 1, len(narrations))
    return [text for _, _, text in narrations[lo:hi] if text.strip()]


def _label_list(path: str, where: str, values) -> List[int]:
    if isinstance(values, str):
        values = values.split()
    try:
        labels = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{path} {where}: labels {values!r} are not integers") from None
    if any(v < 0 for v in labels):
        raise ValueError(f"{path} {where}: negative label in {labels}")
    return labels


def load_labels(path: str) -> Dict[str, List[int]]:
    """video id -> class indices (e.g. YouTube-8M's vocabulary), from CSV or JSON.

    CSV: columns video_id, labels (indices separated by spaces). JSON: {video_id: [indices]}.
    """
    with tf.io.gfile.GFile(path) as f:
        if path.endswith(".json"):
            try:
                table = json.load(f)
                items = table.items()
            except (json.JSONDecodeError, AttributeError) as e:
                raise ValueError(f"{path}: not a label table ({e})") from None
            return {str(v): _label_list(path, f"video {v!r}", x) for v, x in items}
        reader = csv.DictReader(f)
        missing = {"video_id", "labels"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: CSV lacks the column(s) {sorted(missing)}")
        return {
            row["video_id"]: _label_list(path, f"line {n}", row["labels"])
            for n, row in enumerate(reader, start=2)
        }
