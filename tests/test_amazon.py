"""Conversion of the real Amazon data in ../shared/data (skipped when it is absent)."""

import pytest

from conftest import SHARED_DATA
from recbole_llmplugin.data.amazon import convert_beauty, convert_games
from recbole_llmplugin.data.item_text import read_item_file

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "amazon-games").is_dir(), reason="../shared/data is absent")


def _inter_stats(path):
    users, items, rows = set(), set(), 0
    with open(path, encoding="utf-8") as handle:
        assert next(handle).startswith("user_id:token\titem_id:token\ttimestamp:float")
        for line in handle:
            user, item, _ = line.rstrip("\n").split("\t")
            users.add(user)
            items.add(item)
            rows += 1
    return len(users), len(items), rows


def test_games_matches_published_statistics(tmp_path):
    folder = convert_games(SHARED_DATA, tmp_path)
    assert _inter_stats(folder / "amazon-games-llmrank.inter") == (50546, 16859, 440264)
    _, _, rows = read_item_file(folder / "amazon-games-llmrank.item")
    assert len(rows) == 16859 and all(r["title"] for r in rows)
    assert not any("&amp;" in r["title"] or "  " in r["title"] for r in rows)


def test_beauty_matches_published_statistics(tmp_path):
    folder = convert_beauty(SHARED_DATA, tmp_path)
    assert _inter_stats(folder / "amazon-beauty-p5.inter") == (22363, 12101, 198502)
    _, _, rows = read_item_file(folder / "amazon-beauty-p5.item")
    titles = {r["item_id"]: r["title"] for r in rows}
    assert sum(1 for t in titles.values() if not t) == 7
    assert titles["B004756YJA"] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
