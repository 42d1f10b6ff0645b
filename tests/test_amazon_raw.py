"""The raw Amazon 2018 converter on small synthetic raw files: gz and plain JSON lines, the ratings-only CSV, missing
titles, HTML entities, non-ASCII text, k-core modes, rating threshold, duplicates, a malformed line, and files that
RecBole loads."""

import gzip
import json

import numpy as np
import pytest

from recbole_llmplugin.data.amazon_raw import convert, kcore, main
from recbole_llmplugin.data.item_text import read_item_file
from recbole_llmplugin.utils.compat import recbole_warnings_quiet
from recbole_llmplugin.utils.errors import ConfigValueError


def _reviews():
    """Users u0..u5 and items i0..i5: everyone reviewed i0..i3 (time = 10 * position), u0 reviewed i4 once and
    i0 again, u1 rated i5 with 1 star."""
    rows = []
    for u in range(6):
        for position, item in enumerate(range(4)):
            rows.append(
                {
                    "reviewerID": f"u{u}",
                    "asin": f"i{(item + u) % 4}",
                    "overall": 5.0,
                    "unixReviewTime": 1000 * u + 10 * position,
                    "reviewText": "fine",
                }
            )
    rows.append({"reviewerID": "u0", "asin": "i4", "overall": 4.0, "unixReviewTime": 5})
    rows.append({"reviewerID": "u0", "asin": "i0", "overall": 3.0, "unixReviewTime": 99})
    rows.append({"reviewerID": "u1", "asin": "i5", "overall": 1.0, "unixReviewTime": 1001})
    return rows


META = [
    {
        "asin": "i0",
        "title": "Caf&eacute; &amp; Cr\u00e8me\tDeluxe",
        "description": ["", "First line\nsecond"],
        "category": ["Beauty", "Skin &amp; Care"],
        "brand": "\u6771\u4eac Co",
    },
    {"asin": "i1", "title": "  Plain   title "},
    {"asin": "i2", "title": "Ni\u00f1o \u00e9t\u00e9 \u2605"},
    {"asin": "i3", "title": ""},  # no title
    {"asin": "i5", "title": "Low rated"},
]  # i4 has no metadata at all


def _write(path, rows, gz):
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _inter(folder, name):
    lines = (folder / f"{name}.inter").read_text(encoding="utf-8").splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


@pytest.mark.parametrize("gz", [True, False])
def test_reviews_and_meta_become_atomic_files_with_clean_text(tmp_path, gz):
    suffix = ".json.gz" if gz else ".json"
    reviews = _write(tmp_path / f"Beauty{suffix}", _reviews(), gz)
    meta = _write(tmp_path / f"meta_Beauty{suffix}", META, gz)
    folder, stats = convert(
        reviews,
        meta,
        "beauty-18",
        tmp_path / "out",
        kcore_k=1,
        text_fields=("title", "description", "category", "brand"),
    )
    header, rows = _inter(folder, "beauty-18")
    assert header == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert len(rows) == 27 and stats["interactions"] == 27 and stats["users"] == 6 and stats["items"] == 6
    u0 = [r for r in rows if r[0] == "u0"]
    assert [r[1] for r in u0] == ["i0", "i4", "i1", "i2", "i3", "i0"]  # time order; the duplicate kept
    names, _, items = read_item_file(folder / "beauty-18.item")
    assert names == ["item_id", "title", "description", "category", "brand"]
    by_id = {row["item_id"]: row for row in items}
    assert by_id["i0"]["title"] == "Café & Crème Deluxe"
    assert by_id["i0"]["description"] == "First line second"
    assert by_id["i0"]["category"] == "Beauty > Skin & Care"
    assert by_id["i0"]["brand"] == "東京 Co"
    assert by_id["i1"]["title"] == "Plain title" and by_id["i2"]["title"] == "Niño été ★"
    assert by_id["i3"]["title"] == "" and by_id["i4"]["title"] == ""  # the plugin's placeholder at run time
    assert stats["items_without_title"] == 2


def test_options_follow_their_conventions(tmp_path):
    reviews = _write(tmp_path / "Beauty.json.gz", _reviews(), True)
    meta = _write(tmp_path / "meta_Beauty.json.gz", META, True)
    # UniSRec / LLMRank: titled items only, each review of an item once, then the iterative 5-core
    folder, stats = convert(
        reviews, meta, "strict", tmp_path / "out", kcore_k=3, missing_meta="drop", duplicates="first", min_rating=3
    )
    _, rows = _inter(folder, "strict")
    assert {r[1] for r in rows} == {"i0", "i1", "i2"}  # i3 (no title), i4 (no meta), i5 (1 star) gone
    assert stats["interactions"] == 18 and not [r for r in rows if r[0] == "u0" and r[3] == "99"]
    # official A-LLMRec: every review kept, one counting pass
    folder, stats = convert(reviews, meta, "official", tmp_path / "out", kcore_k=4, kcore_mode="single", min_rating=3)
    _, rows = _inter(folder, "official")
    assert {r[1] for r in rows} == {"i0", "i1", "i2", "i3"} and stats["interactions"] == 25


def test_single_pass_and_iterative_k_core_differ_where_they_should():
    # a user with 2 interactions, one of them on an item only it and one other user reach twice
    users = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    items = np.array([0, 1, 1, 2, 3, 1, 2, 3])
    single = kcore(users, items, 2, "single")
    iterative = kcore(users, items, 2, "iterative")
    assert single.tolist() == [False, True, True, True, True, True, True, True]  # user 0 still counted 2 items
    assert iterative.tolist() == [False, False, True, True, True, True, True, True]  # user 0 down to 1: dropped


def test_ratings_only_csv(tmp_path):
    lines = [f"i{(j + u) % 3},u{u},{4 + (j % 2)},{100 * u + j}" for u in range(3) for j in range(3)]
    reviews = tmp_path / "Beauty.csv"
    reviews.write_text("\n".join(lines) + "\n", encoding="utf-8")
    meta = _write(tmp_path / "meta_Beauty.json", META, False)
    folder, stats = convert(reviews, meta, "csv", tmp_path / "out", kcore_k=3)
    _, rows = _inter(folder, "csv")
    assert stats["interactions"] == 9 and rows[0][:3] == ["u0", "i0", "4"]


def test_a_malformed_line_is_one_error_naming_it(tmp_path):
    reviews = tmp_path / "Beauty.json"
    good = [json.dumps(row) for row in _reviews()[:3]]
    reviews.write_text("\n".join(good[:2] + ['{"reviewerID": "u9", "asin": '] + good[2:]) + "\n", encoding="utf-8")
    meta = _write(tmp_path / "meta_Beauty.json", META, False)
    with pytest.raises(ConfigValueError, match=r"Beauty.json, line 3: not a JSON object"):
        convert(reviews, meta, "bad", tmp_path / "out")
    reviews.write_text(json.dumps({"reviewerID": "u1", "asin": "i1"}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigValueError, match=r"line 1: no usable 'overall'"):
        convert(reviews, meta, "bad", tmp_path / "out")
    assert not (tmp_path / "out" / "bad" / "bad.inter").exists()


def test_the_command_prints_counts_and_recbole_loads_the_files(tmp_path, capsys, workdir):
    reviews = _write(tmp_path / "Beauty.json.gz", _reviews(), True)
    meta = _write(tmp_path / "meta_Beauty.json.gz", META, True)
    main(
        [
            "--reviews",
            str(reviews),
            "--meta",
            str(meta),
            "--name",
            "beauty-18",
            "--output",
            str(tmp_path / "data"),
            "--kcore",
            "4",
            "--text_fields",
            "title,brand",
        ]
    )
    printed = capsys.readouterr().out
    assert "6 users, 4 items (1 without a title), 25 interactions" in printed and "median 4" in printed
    from recbole.config import Config
    from recbole.data import create_dataset

    props = {
        "data_path": str(tmp_path / "data"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "train_neg_sample_args": None,
        "show_progress": False,
    }
    with recbole_warnings_quiet():  # RecBole's own pandas warning (docs/compat.md)
        config = Config(model="SASRec", dataset="beauty-18", config_dict=props)
        dataset = create_dataset(config)
    assert dataset.user_num == 7 and dataset.item_num == 5 and dataset.inter_num == 25  # [PAD] counted


def _command(tmp_path, name, output, *extra):
    reviews = _write(tmp_path / "Beauty.json.gz", _reviews(), True)
    meta = _write(tmp_path / "meta_Beauty.json.gz", META, True)
    args = ["--reviews", str(reviews), "--meta", str(meta), "--name", name, "--output", str(output), "--kcore", "4"]
    return main(args + list(extra))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("../escaped", "--name '../escaped' is not a plain folder name"),
        ("", "--name '' is not a plain folder name"),
        ("sub/dir", "--name 'sub/dir' is not a plain folder name"),
        (".hidden", "--name '.hidden' is not a plain folder name"),
    ],
)
def test_the_command_writes_only_inside_its_output(tmp_path, capsys, name, expected):
    assert _command(tmp_path, name, tmp_path / "out") == 2
    assert f"error: {expected}" in capsys.readouterr().err
    written = [p for p in tmp_path.rglob("*") if p.suffix in (".inter", ".item")]
    assert written == []


def test_the_command_refuses_outputs_it_cannot_use_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert _command(tmp_path, "beauty-18", blocker / "below") == 2  # cannot be made: a file is in the way
    assert "error: --output '" in capsys.readouterr().err
    (tmp_path / "out" / "taken").mkdir(parents=True)
    (tmp_path / "out" / "name-file").write_text("x")
    assert _command(tmp_path, "name-file", tmp_path / "out") == 2  # --name names an existing file
    assert "is a file; remove it or give another --name" in capsys.readouterr().err
    (tmp_path / "out" / "taken" / "taken.inter").mkdir()
    assert _command(tmp_path, "taken", tmp_path / "out") == 2  # a folder where taken.inter should go
    assert "taken.inter' is a folder" in capsys.readouterr().err


def test_a_converted_set_is_replaced_only_with_overwrite(tmp_path, capsys):
    assert _command(tmp_path, "beauty-18", tmp_path / "out") == 0
    capsys.readouterr()
    assert _command(tmp_path, "beauty-18", tmp_path / "out") == 2
    assert "already holds a converted set; add --overwrite" in capsys.readouterr().err
    assert _command(tmp_path, "beauty-18", tmp_path / "out", "--overwrite") == 0
