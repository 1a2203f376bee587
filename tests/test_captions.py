"""Narrations as users have them: WebVTT / SRT files (YouTube's rolling automatic captions),
HowTo100M's tables, label files; each against hand-written expected values."""

import pytest

from vatt_gh.data import captions

# YouTube automatic captions as yt-dlp writes them: a blank first line, word timing tags, each cue
# repeating the previous line, 10 ms cues that repeat a line alone, an HTML entity.
AUTO_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.000 --> 00:00:02.350 align:start position:0%
<blank>
so<00:00:00.320><c> today</c><00:00:00.640><c> we</c>

00:00:02.350 --> 00:00:02.360 align:start position:0%
so today we
<blank>

00:00:02.360 --> 00:00:04.890 align:start position:0%
so today we
make<00:00:02.560><c> bread</c>

00:00:04.890 --> 00:00:04.900 align:start position:0%
make bread
<blank>

00:00:04.900 --> 00:00:07.000 align:start position:0%
make bread
salt<00:00:05.100><c> &amp;</c><00:00:05.300><c> flour</c>
""".replace("<blank>", " ")  # whitespace-only lines, as in real files
AUTO_SRT = """1
00:00:00,000 --> 00:00:02,350
so today we

2
00:00:02,350 --> 00:00:02,360
so today we

3
00:00:02,360 --> 00:00:04,890
so today we
make bread

4
00:00:04,890 --> 00:00:04,900
make bread

5
00:00:04,900 --> 00:00:07,000
make bread
salt &amp; flour
"""
SPOKEN = [(0.0, 2.35, "so today we"), (2.36, 4.89, "make bread"), (4.9, 7.0, "salt & flour")]


@pytest.mark.parametrize("name,content", [("v.en.vtt", AUTO_VTT), ("v.srt", AUTO_SRT)])
def test_auto_captions_keep_each_spoken_line_once(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    assert captions.read_subtitles(str(path)) == SPOKEN


def test_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "v.srt"
    path.write_bytes(b"\xef\xbb\xbf" + AUTO_SRT.replace("\n", "\r\n").encode())
    assert captions.read_subtitles(str(path)) == SPOKEN


def test_words_appearing_one_by_one_become_one_line():
    cues = [
        (0.0, 1.0, "we"),
        (1.0, 2.0, "we knead"),
        (2.0, 3.0, "we knead the dough"),
        (3.0, 4.0, "we knead the dough\nfor ten"),
        (4.0, 5.0, "we knead the dough\nfor ten minutes"),
    ]
    assert captions.rolling_to_narrations(cues) == [
        (0.0, 3.0, "we knead the dough"),
        (3.0, 5.0, "for ten minutes"),
    ]


def test_hand_made_captions_pass_unchanged():
    cues = [(0.0, 1.0, "Hello."), (1.5, 2.0, "Two\nlines"), (3.0, 4.0, "Hello.")]
    assert captions.rolling_to_narrations(cues) == [
        (0.0, 1.0, "Hello."),
        (1.5, 2.0, "Two"),
        (1.5, 2.0, "lines"),
        (3.0, 4.0, "Hello."),  # said again later, not a rolling repeat
    ]


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("bad.vtt", "no header\n", "not a valid VTT file"),
        ("bad.srt", "1\n00:00:01,000 --> soon\nhi\n", "no cue could be read"),
        ("cue.vtt", "WEBVTT\n\n00:00:01.000 --> later\nhi\n", "no cue could be read"),
        ("v.txt", "hello", "not a subtitle file"),
    ],
)
def test_bad_subtitle_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        captions.read_subtitles(str(path))
    assert str(path) in str(e.value)


def test_not_utf8_is_named(tmp_path):
    path = tmp_path / "v.vtt"
    path.write_bytes(b"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n\xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        captions.read_subtitles(str(path))


def test_sidecar_file_prefers_the_language(tmp_path):
    video = tmp_path / "abc.mp4"
    assert captions.sidecar_file(str(video)) is None
    (tmp_path / "abc.srt").write_text(AUTO_SRT)
    assert captions.sidecar_file(str(video)) == str(tmp_path / "abc.srt")
    (tmp_path / "abc.en.vtt").write_text(AUTO_VTT)
    (tmp_path / "abc.de.vtt").write_text(AUTO_VTT)
    assert captions.sidecar_file(str(video)) == str(tmp_path / "abc.en.vtt")
    assert captions.sidecar_file(str(video), "de") == str(tmp_path / "abc.de.vtt")
    assert captions.sidecar_file(str(video), "fr") == str(tmp_path / "abc.srt")


def test_clip_captions_overlap_plus_neighbours():
    narrations = [(0.0, 1.0, "a"), (2.0, 3.0, "b"), (4.0, 5.0, "c"), (6.0, 7.0, "d")]
    assert captions.clip_captions(narrations, 2.5, 4.5, 1) == ["a", "b", "c", "d"]
    assert captions.clip_captions(narrations, 2.5, 3.5, 0) == ["b"]
    assert captions.clip_captions(narrations, 1.2, 1.8, 2) == []


def test_load_table_json_layouts(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        '{"v1": {"start": [2.0, 0.0], "end": [3.0, 1.0], "text": ["b", "a"]},'
        ' "v2": [{"start": 1, "end": 2, "text": "x"}]}'
    )
    assert captions.load_table(str(path)) == {
        "v1": [(0.0, 1.0, "a"), (2.0, 3.0, "b")],
        "v2": [(1.0, 2.0, "x")],
    }


@pytest.mark.parametrize(
    "content,message",
    [
        ("video_id,start,end,text\nv,0,1,a\nv,2,nan,b\n", "line 3: bad time span"),
        ("video_id,start,end,text\nv,3,1,a\n", "line 2: bad time span"),
        ("video_id,start,text\nv,0,a\n", "lacks the column"),
    ],
)
def test_bad_table_rows_are_named(tmp_path, content, message):
    path = tmp_path / "c.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        captions.load_table(str(path))
    assert str(path) in str(e.value)


def test_load_labels(tmp_path):
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("video_id,labels\nabc,3 17\nxyz,\n")
    assert captions.load_labels(str(csv_path)) == {"abc": [3, 17], "xyz": []}
    json_path = tmp_path / "l.json"
    json_path.write_text('{"abc": [3, 17]}')
    assert captions.load_labels(str(json_path)) == {"abc": [3, 17]}
    csv_path.write_text("video_id,labels\nabc,3 x\n")
    with pytest.raises(ValueError, match="l.csv line 2: labels"):
        captions.load_labels(str(csv_path))
    json_path.write_text('{"abc": [-1]}')
    with pytest.raises(ValueError, match="negative label"):
        captions.load_labels(str(json_path))
