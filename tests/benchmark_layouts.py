"""Tiny copies of the six Table 1 benchmarks in their published layouts, for the tests.

Each `write_<name>(root)` writes the list files byte for byte in the distributed format (CRLF in
UCF101's lists, HMDB51's trailing spaces, the CSVs and the JSON) and real media encoded with
PyAV / `wave` (tests/media.py), and returns what the converter must find. Video i of class c is
`SECONDS` long; the grey ramp of tests/media.py tells frames apart.
"""

import csv
import json
import os

import media

SECONDS = 1.2
FPS = 10
SIZE = (40, 32)


def _video(path, seconds=SECONDS, tone_hz=440.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    media.write_video(path, seconds=seconds, fps=FPS, size=SIZE, tone_hz=tone_hz)


def write_ucf101(root, missing=(), broken=()):
    """3 classes (one is the HandstandPushups quirk), 2 groups x 1 clip each = 6 videos."""
    classes = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    lists = os.path.join(root, "ucfTrainTestlist")
    os.makedirs(lists)
    with open(os.path.join(lists, "classInd.txt"), "wb") as f:
        f.write(b"".join(f"{i + 1} {c}\r\n".encode() for i, c in enumerate(classes)))
    videos = {}
    for label, name in enumerate(classes):
        file_class = "HandStandPushups" if name == "HandstandPushups" else name
        for group in (1, 2):
            stem = f"v_{file_class}_g{group:02d}_c01"
            videos[stem] = (name, label, group)
            path = os.path.join(root, "UCF-101", name, stem + ".avi")
            if stem in missing:
                continue
            if stem in broken:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(b"RIFF not really an avi")
            else:
                _video(path, tone_hz=300.0 + 100 * label)
    splits = {}
    for k in (1, 2, 3):
        test_group = 1 if k != 2 else 2  # splits 1, 3 test group 1; split 2 tests group 2
        train = [s for s, (_, _, g) in videos.items() if g != test_group]
        test = [s for s, (_, _, g) in videos.items() if g == test_group]
        with open(os.path.join(lists, f"trainlist0{k}.txt"), "wb") as f:
            f.write(
                b"".join(f"{videos[s][0]}/{s}.avi {videos[s][1] + 1}\r\n".encode() for s in train)
            )
        with open(os.path.join(lists, f"testlist0{k}.txt"), "wb") as f:
            f.write(b"".join(f"{videos[s][0]}/{s}.avi\r\n".encode() for s in test))
        splits[f"split{k}"] = {"train": sorted(train), "test": sorted(test)}
    labels = {s: label for s, (_, label, _) in videos.items()}
    return dict(classes=classes, labels=labels, splits=splits)


def write_hmdb51(root, missing=()):
    """2 classes x 3 videos; per split: one train (1), one test (2), one unused (0)."""
    classes = ["brush_hair", "cartwheel"]
    lists = os.path.join(root, "testTrainMulti_7030_splits")
    os.makedirs(lists)
    labels, splits = {}, {f"split{k}": {"train": [], "test": []} for k in (1, 2, 3)}
    for label, name in enumerate(classes):
        stems = [f"{name}_video_{i}" for i in range(3)]
        for stem in stems:
            labels[stem] = label
            if stem not in missing:
                _video(os.path.join(root, name, stem + ".avi"), tone_hz=500.0 + 200 * label)
        for k in (1, 2, 3):
            tags = [(i + k) % 3 for i in range(3)]  # a rotation of 0 / 1 / 2
            with open(os.path.join(lists, f"{name}_test_split{k}.txt"), "w", newline="") as f:
                f.write("".join(f"{s}.avi {t} \n" for s, t in zip(stems, tags)))
            for stem, tag in zip(stems, tags):
                if tag:
                    splits[f"split{k}"]["train" if tag == 1 else "test"].append(stem)
    for split in splits.values():
        for part in split.values():
            part.sort()
    return dict(classes=classes, labels=labels, splits=splits)


def write_esc50(root, per_fold=2, missing=(), seconds=1.0):
    """2 classes; `per_fold` clips per fold (alternating class), 44.1 kHz mono .wav."""
    os.makedirs(os.path.join(root, "meta"))
    os.makedirs(os.path.join(root, "audio"))
    categories = ["dog", "rain"]
    rows, labels, folds = [], {}, {}
    for fold in range(1, 6):
        for i in range(per_fold):
            target = i % 2
            name = f"{fold}-{100 + i}-A-{target}.wav"
            rows.append([name, fold, target, categories[target], "False", 100 + i, "A"])
            labels[name[:-4]], folds[name[:-4]] = target, fold
            if name[:-4] not in missing:
                media.write_wav(
                    os.path.join(root, "audio", name), seconds=seconds, tone_hz=300 + 700 * target
                )
    with open(os.path.join(root, "meta", "esc50.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return dict(classes=categories, labels=labels, folds=folds)


def write_youcook2(root, missing=()):
    """2 validation videos with 2 segments each, 1 training video (not converted)."""
    database = {
        "vidA": ("validation", "101", [[0.2, 0.8, "crack the eggs"], [0.5, 1.2, "stir the pan"]]),
        "vidB": ("validation", "202", [[0.0, 0.6, "slice the bread"], [0.6, 1.1, "add butter"]]),
        "vidT": ("training", "101", [[0.0, 1.0, "a training segment"]]),
    }
    data = {"database": {}}
    for vid, (subset, recipe, notes) in database.items():
        data["database"][vid] = {
            "subset": subset,
            "duration": SECONDS,
            "recipe_type": recipe,
            "annotations": [
                {"segment": [s, e], "id": i, "sentence": text}
                for i, (s, e, text) in enumerate(notes)
            ],
        }
        if vid not in missing:
            _video(os.path.join(root, "raw_videos", subset, recipe, vid + ".mp4"))
    with open(os.path.join(root, "youcookii_annotations_trainval.json"), "w") as f:
        json.dump(data, f)
    segments = {
        f"{vid}_{i}": (s, e, text)
        for vid, (subset, _, notes) in database.items()
        if subset == "validation"
        for i, (s, e, text) in enumerate(notes)
    }
    return dict(segments=segments)


def write_msrvtt(root, num_videos=3, missing=()):
    os.makedirs(os.path.join(root, "videos", "all"))
    rows, sentences = [], {}
    for i in range(num_videos):
        vid = f"video{7010 + i}"
        sentences[vid] = f"a person does thing {i}"
        rows.append([f"ret{i}", f"msr{7010 + i}", vid, sentences[vid]])
        if vid not in missing:
            _video(os.path.join(root, "videos", "all", vid + ".mp4"))
    with open(os.path.join(root, "MSRVTT_JSFUSION_test.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        w.writerows(rows)
    return dict(sentences=sentences)


def write_kinetics400(root, missing=()):
    """2 classes; train: 2 per class (one in a <label>/ folder, one flat), val: 1 per class."""
    classes = ["abseiling", "air drumming"]
    os.makedirs(os.path.join(root, "annotations"))
    labels, splits = {}, {"train": [], "val": []}
    for part, count in (("train", 2), ("val", 1)):
        rows = []
        for label, name in enumerate(classes):
            for i in range(count):
                yid, start = f"{part[:2]}{label}{i}xxxxxxx", 10 * i
                stem = f"{yid}_{start:06d}_{start + 10:06d}"
                rows.append([name, yid, start, start + 10, part])
                labels[stem] = label
                splits[part].append(stem)
                folder = os.path.join(root, part, name) if i == 0 else os.path.join(root, part)
                if stem not in missing:
                    _video(os.path.join(folder, stem + ".mp4"))
        with open(os.path.join(root, "annotations", f"{part}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            w.writerows(rows)
    return dict(classes=classes, labels=labels, splits=splits)
