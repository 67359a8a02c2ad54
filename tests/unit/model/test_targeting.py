import random

import pytest

from dkron_lab.model.targeting import Candidate, cardinality, select_targets

NODES = [
    Candidate(name="a", tags={"role": "web", "dc": "east"}),
    Candidate(name="b", tags={"role": "web", "dc": "west"}),
    Candidate(name="c", tags={"role": "db", "dc": "east"}),
    Candidate(name="d", tags={"role": "web"}, region="other"),
]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({}, ["a", "b", "c"]),
        ({"role": "web"}, ["a", "b"]),
        ({"role": "web", "dc": "east"}, ["a"]),
        ({"role": "web", "dc": "north"}, []),
        ({"role": "nope"}, []),
        ({"role": "web:5"}, ["a", "b"]),
        ({"role": "web:0"}, []),
        ({"role": "web:x"}, []),
    ],
)
def test_dkron_tag_rules(tags, expected):
    assert select_targets(tags, NODES, region="global", rng=random.Random(1)) == expected


def test_cardinality_takes_the_smallest_n():
    assert cardinality({"role": "web:3", "dc": "east:1"}) == ({"role": "web", "dc": "east"}, 1)
    assert cardinality({"role": "web"}) == ({"role": "web"}, None)


def test_value_n_picks_uniformly_at_random():
    rng = random.Random(42)
    counts = {"a": 0, "b": 0}
    for _ in range(2000):
        (picked,) = select_targets({"role": "web:1"}, NODES, region="global", rng=rng)
        counts[picked] += 1
    assert 850 < counts["a"] < 1150
