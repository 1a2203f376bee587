"""The six Table 1 benchmarks as distributed -> a `Listing`: clips to encode and split membership.

Pure Python (no TensorFlow, no decoding): each `list_<name>(root)` reads the benchmark's own
files and finds its media, and returns

  tasks    one `Task` per media file: the file and its clip(s) (id, segment, labels, captions);
           one clip per video (UCF101, HMDB51, Kinetics-400, MSR-VTT), per .wav (ESC50) or per
           annotated validation segment (YouCook2)
  splits   {split: {"train": [clip ids], "test": [clip ids]}} as the lists say (a clip may sit
           in several splits: it is still encoded once)
  classes  class names, index = label
  missing  files a list names that are not on disk (listed, never fatal)

The layouts (`root` is the directory the archives were unpacked into):
  ucf101    UCF-101/<Class>/v_<Class>_gXX_cYY.avi; ucfTrainTestlist/classInd.txt ("1 Name", CRLF),
            trainlist0{1,2,3}.txt ("Class/v_..avi 1"), testlist0{1,2,3}.txt (path only). Files are
            matched by name without case: the folder HandstandPushups holds v_HandStandPushups_*.
  hmdb51    <class>/<name>.avi; testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt with
            lines "<name>.avi <tag> " (1 train, 2 test, 0 unused); classes sorted by name.
  esc50     meta/esc50.csv (filename,fold,target,category,...), audio/<filename>.wav; five
            folds, "fold<k>" tests on fold k and trains on the other four.
  youcook2  youcookii_annotations_trainval.json; raw_videos/<subset>/<recipe>/<vid>.<mp4|mkv|webm>;
            one clip per annotated "validation" segment, its sentence the caption.
  msrvtt    videos/all/video<N>.mp4 and MSRVTT_JSFUSION_test.csv (key,vid_key,video_id,sentence):
            the 1k-A test set, one sentence per video.
  kinetics400  annotations/{train,val}.csv (label,youtube_id,time_start,time_end,split);
            <split>/[<label>/]<youtube_id>_<start:06d>_<end:06d>.mp4 (any folder depth); shards
            per split (train-*, val-*) for tools/finetune.py; test.csv (no labels) is not read.

Tasks are the unit of work of `benchmark_build` ("list tasks -> encode one task -> write
shards"): the same three steps map onto a Beam pipeline (a Create of tasks, a Map, a sink).
"""

import csv
import dataclasses
import json
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm")
AUDIO_EXTENSIONS = (".wav",)


@dataclasses.dataclass(frozen=True)
class Clip:
    clip_id: str
    labels: Tuple[int, ...] = ()
    captions: Tuple[str, ...] = ()
    start: float = 0.0  # seconds into the file
    end: Optional[float] = None  # None: to the end


@dataclasses.dataclass(frozen=True)
class Task:
    """One media file and the clip(s) to cut from it; `group` names its output shards."""

    path: str
    clips: Tuple[Clip, ...]
    audio_only: bool = False
    group: str = "clips"


@dataclasses.dataclass
class Listing:
    benchmark: str
    kind: str  # "video_classification", "audio_classification", "retrieval", "finetune"
    tasks: List[Task]
    splits: Dict[str, Dict[str, List[str]]]
    classes: List[str] = dataclasses.field(default_factory=list)
    missing: List[str] = dataclasses.field(default_factory=list)

    def summary(self) -> List[str]:
        """What was found: classes, clips per split / fold, missing files."""
        lines = [
            f"{self.benchmark}: {len(self.tasks)} file(s), "
            f"{sum(len(t.clips) for t in self.tasks)} clip(s)"
            + (f", {len(self.classes)} classes" if self.classes else "")
        ]
        for name, parts in self.splits.items():
            counts = ", ".join(f"{len(ids)} {part}" for part, ids in parts.items())
            lines.append(f"  {name}: {counts}")
        if self.missing:
            lines.append(f"  {len(self.missing)} listed file(s) missing on disk:")
            lines.extend(f"    {m}" for m in self.missing[:20])
            if len(self.missing) > 20:
                lines.append(f"    ... and {len(self.missing) - 20} more")
        return lines


class LayoutError(ValueError):
    """A benchmark's list file is absent or malformed (the message names the file and line)."""


def _require(path: str) -> str:
    if not os.path.isfile(path):
        raise LayoutError(f"{path}: not found (is --root the unpacked benchmark?)")
    return path


def _read_lines(path: str) -> List[Tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines; CRLF and trailing spaces removed."""
    with open(_require(path), encoding="utf-8", newline="") as f:
        return [
            (i, line.strip()) for i, line in enumerate(f.read().splitlines(), 1) if line.strip()
        ]


def media_index(directory: str, extensions: Sequence[str]) -> Dict[str, str]:
    """{lower-case file name: path} of every media file under `directory` (one walk, sorted)."""
    index: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(tuple(extensions)):
                index.setdefault(name.lower(), os.path.join(dirpath, name))
    return index


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]


def _ensure_found(benchmark: str, tasks: List[Task], missing: List[str]) -> None:
    if not tasks:
        raise LayoutError(
            f"{benchmark}: none of the listed files was found on disk "
            f"({len(missing)} listed, e.g. {missing[:1]})"
        )


# ---------------------------------------------------------------------------------------------
def list_ucf101(root: str) -> Listing:
    lists = os.path.join(root, "ucfTrainTestlist")
    videos = os.path.join(root, "UCF-101")
    videos = videos if os.path.isdir(videos) else root
    class_ind = os.path.join(lists, "classInd.txt")
    names = []
    for number, line in _read_lines(class_ind):
        parts = line.split()
        if len(parts) != 2 or parts[0] != str(len(names) + 1):
            raise LayoutError(
                f"{class_ind}:{number}: expected '{len(names) + 1} <Class>', got {line!r}"
            )
        names.append(parts[1])  # 1-based in the file, 0-based labels here
    classes = {name.lower(): index for index, name in enumerate(names)}
    found = media_index(videos, VIDEO_EXTENSIONS)
    splits, labels, missing = {}, {}, []
    for k in (1, 2, 3):
        split = {}
        for part in ("train", "test"):
            path = os.path.join(lists, f"{part}list0{k}.txt")
            ids = []
            for number, line in _read_lines(path):
                relative = line.split()[0]
                folder = relative.replace("\\", "/").split("/")[0].lower()
                if folder not in classes:
                    raise LayoutError(f"{path}:{number}: class {folder!r} not in classInd.txt")
                clip_id = _stem(relative)
                labels[clip_id] = classes[folder]
                ids.append(clip_id)
                if os.path.basename(relative).lower() not in found:
                    missing.append(os.path.join(videos, relative))
            split[part] = ids
        splits[f"split{k}"] = split
    tasks = [
        Task(found[f"{clip_id.lower()}.avi"], (Clip(clip_id, (label,)),))
        for clip_id, label in sorted(labels.items())
        if f"{clip_id.lower()}.avi" in found
    ]
    _ensure_found("ucf101", tasks, missing)
    return Listing("ucf101", "video_classification", tasks, splits, names, sorted(set(missing)))


_HMDB_SPLIT = re.compile(r"^(.+)_test_split([123])\.txt$")


def list_hmdb51(root: str) -> Listing:
    lists = os.path.join(root, "testTrainMulti_7030_splits")
    if not os.path.isdir(lists):
        raise LayoutError(f"{lists}: not found (is --root the unpacked HMDB51?)")
    files = {}
    for name in os.listdir(lists):
        match = _HMDB_SPLIT.match(name)
        if match:
            files[(match.group(1), int(match.group(2)))] = os.path.join(lists, name)
    classes = sorted({c for c, _ in files})
    if not classes:
        raise LayoutError(f"{lists}: no <class>_test_split<k>.txt files")
    found = media_index(root, VIDEO_EXTENSIONS)
    splits = {f"split{k}": {"train": [], "test": []} for k in (1, 2, 3)}
    labels, missing = {}, []
    for (name, k), path in sorted(files.items()):
        for number, line in _read_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise LayoutError(f"{path}:{number}: expected '<name>.avi <0|1|2>', got {line!r}")
            clip_id = _stem(parts[0])
            labels[clip_id] = classes.index(name)
            if parts[0].lower() not in found:
                missing.append(os.path.join(root, name, parts[0]))
            if parts[1] != "0":
                splits[f"split{k}"]["train" if parts[1] == "1" else "test"].append(clip_id)
    tasks = [
        Task(found[f"{clip_id.lower()}.avi"], (Clip(clip_id, (label,)),))
        for clip_id, label in sorted(labels.items())
        if f"{clip_id.lower()}.avi" in found
    ]
    _ensure_found("hmdb51", tasks, missing)
    return Listing("hmdb51", "video_classification", tasks, splits, classes, sorted(set(missing)))


def _csv_rows(path: str, required: Sequence[str]) -> List[Tuple[int, dict]]:
    with open(_require(path), encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in required if c not in (reader.fieldnames or [])]
        if absent:
            raise LayoutError(f"{path}: missing column(s) {absent} (has {reader.fieldnames})")
        return [(number, row) for number, row in enumerate(reader, 2)]


def list_esc50(root: str) -> Listing:
    meta = os.path.join(root, "meta", "esc50.csv")
    rows = _csv_rows(meta, ("filename", "fold", "target", "category"))
    found = media_index(os.path.join(root, "audio"), AUDIO_EXTENSIONS)
    classes: Dict[int, str] = {}
    folds: Dict[str, int] = {}
    tasks, missing = [], []
    for number, row in rows:
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            raise LayoutError(f"{meta}:{number}: fold / target not integers: {row}") from None
        if not 1 <= fold <= 5 or target < 0:
            raise LayoutError(f"{meta}:{number}: fold {fold} not in 1..5 or target {target} < 0")
        classes[target] = row["category"]
        clip_id = _stem(row["filename"])
        folds[clip_id] = fold
        path = found.get(row["filename"].lower())
        if path is None:
            missing.append(os.path.join(root, "audio", row["filename"]))
            continue
        tasks.append(Task(path, (Clip(clip_id, (target,)),), audio_only=True))
    names = [classes.get(i, f"class{i}") for i in range(max(classes, default=-1) + 1)]
    splits = {
        f"fold{k}": {
            "train": sorted(c for c, f in folds.items() if f != k),
            "test": sorted(c for c, f in folds.items() if f == k),
        }
        for k in range(1, 6)
    }
    _ensure_found("esc50", tasks, missing)
    return Listing("esc50", "audio_classification", tasks, splits, names, sorted(missing))


def list_youcook2(root: str) -> Listing:
    path = os.path.join(root, "youcookii_annotations_trainval.json")
    with open(_require(path), encoding="utf-8") as f:
        try:
            database = json.load(f)["database"]
        except (ValueError, KeyError) as e:
            raise LayoutError(f"{path}: not the YouCook2 annotation JSON ({e})") from None
    found = media_index(os.path.join(root, "raw_videos"), VIDEO_EXTENSIONS[1:])
    by_stem = {_stem(name): p for name, p in found.items()}
    tasks, ids, missing = [], [], []
    for vid, entry in sorted(database.items()):
        if entry.get("subset") != "validation":
            continue
        clips = []
        for number, note in enumerate(entry.get("annotations", [])):
            try:
                start, end = (float(x) for x in note["segment"])
                sentence = str(note["sentence"]).strip()
            except (KeyError, TypeError, ValueError):
                raise LayoutError(f"{path}: video {vid} annotation {number} malformed") from None
            if not end > start >= 0 or not sentence:
                raise LayoutError(f"{path}: video {vid} annotation {number}: bad segment/sentence")
            clip_id = f"{vid}_{note.get('id', number)}"
            clips.append(Clip(clip_id, (), (sentence,), start, end))
            ids.append(clip_id)
        video = by_stem.get(vid.lower())
        if video is None:
            missing.append(
                os.path.join(root, "raw_videos", "validation", entry.get("recipe_type", "?"), vid)
            )
        elif clips:
            tasks.append(Task(video, tuple(clips)))
    _ensure_found("youcook2", tasks, missing)
    return Listing("youcook2", "retrieval", tasks, {"validation": {"test": ids}}, [], missing)


def _find_file(root: str, name: str) -> str:
    """root/name, else the first file called `name` below root (sorted walk)."""
    direct = os.path.join(root, name)
    if os.path.isfile(direct):
        return direct
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if name in filenames:
            return os.path.join(dirpath, name)
    raise LayoutError(f"{direct}: not found (nor anywhere below {root})")


def list_msrvtt(root: str) -> Listing:
    path = _find_file(root, "MSRVTT_JSFUSION_test.csv")
    rows = _csv_rows(path, ("video_id", "sentence"))
    found = media_index(root, VIDEO_EXTENSIONS)
    tasks, ids, missing = [], [], []
    for number, row in rows:
        vid, sentence = row["video_id"].strip(), row["sentence"].strip()
        if not vid or not sentence:
            raise LayoutError(f"{path}:{number}: empty video_id or sentence")
        ids.append(vid)
        video = found.get(f"{vid.lower()}.mp4")
        if video is None:
            missing.append(os.path.join(root, "videos", "all", f"{vid}.mp4"))
            continue
        tasks.append(Task(video, (Clip(vid, (), (sentence,)),)))
    _ensure_found("msrvtt", tasks, missing)
    return Listing("msrvtt", "retrieval", tasks, {"1k-A": {"test": ids}}, [], missing)


def kinetics_file_name(youtube_id: str, start: float, end: float) -> str:
    """The downloaders' name: <youtube_id>_<start:06d>_<end:06d>.mp4."""
    return f"{youtube_id}_{int(round(start)):06d}_{int(round(end)):06d}.mp4"


def list_kinetics400(root: str) -> Listing:
    annotations = os.path.join(root, "annotations")
    parts = ("train", "val")  # test.csv: no public labels, not part of Table 1
    for part in parts:
        _require(os.path.join(annotations, f"{part}.csv"))
    rows = {
        part: _csv_rows(os.path.join(annotations, f"{part}.csv"), ("youtube_id", "time_start"))
        for part in parts
    }
    classes = sorted({row["label"] for _, row in rows["train"] if row.get("label")})
    if not classes:
        raise LayoutError(f"{annotations}/train.csv: no labels")
    index = {name: i for i, name in enumerate(classes)}
    tasks, split, missing = [], {}, []
    for part in parts:
        found = media_index(os.path.join(root, part), (".mp4",))
        ids = []
        for number, row in rows[part]:
            try:
                name = kinetics_file_name(
                    row["youtube_id"], float(row["time_start"]), float(row["time_end"])
                )
            except (KeyError, TypeError, ValueError):
                raise LayoutError(f"{annotations}/{part}.csv:{number}: bad times") from None
            label = row.get("label") or ""
            if label and label not in index:
                raise LayoutError(
                    f"{annotations}/{part}.csv:{number}: label {label!r} not in train.csv"
                )
            clip_id = _stem(name)
            ids.append(clip_id)
            video = found.get(name.lower())
            if video is None:
                missing.append(os.path.join(root, part, label, name))
                continue
            labels = (index[label],) if label else ()
            tasks.append(Task(video, (Clip(clip_id, labels),), group=part))
        split["train" if part == "train" else "test"] = ids
    _ensure_found("kinetics400", tasks, missing)
    return Listing("kinetics400", "finetune", tasks, {"train/val": split}, classes, missing)


LISTERS = {
    "ucf101": list_ucf101,
    "hmdb51": list_hmdb51,
    "esc50": list_esc50,
    "youcook2": list_youcook2,
    "msrvtt": list_msrvtt,
    "kinetics400": list_kinetics400,
}


def list_benchmark(name: str, root: str) -> Listing:
    if name not in LISTERS:
        raise LayoutError(f"--benchmark={name!r}: choose from {sorted(LISTERS)}")
    if not os.path.isdir(root):
        raise LayoutError(f"--root={root!r} is not a directory")
    return LISTERS[name](root)
