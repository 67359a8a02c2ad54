import pytest

from dkron_lab.errors import BadRequest
from dkron_lab.model.limits import LimitChange


def test_a_limit_groups_or_both():
    assert LimitChange.from_json({"limit": 3}) == LimitChange(overall=3)
    assert LimitChange.from_json({"groups": {"etl-1.x": 0}}) == LimitChange(groups={"etl-1.x": 0})
    both = LimitChange.from_json({"limit": 0, "groups": {"a": 2}})
    assert (both.overall, dict(both.groups)) == (0, {"a": 2})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "send"),
        ([], "send"),
        ({"limit": 1, "other": 2}, "send"),
        ({"limit": -1}, "whole number >= 0"),
        ({"limit": True}, "whole number >= 0"),
        ({"limit": 1.5}, "whole number >= 0"),
        ({"groups": {"bad name": 1}}, "group names"),
        ({"groups": {"etl": "2"}}, "group names"),
        ({"groups": ["etl"]}, "group names"),
    ],
)
def test_bad_changes_are_refused_saying_what_to_send(body, says):
    with pytest.raises(BadRequest, match=says):
        LimitChange.from_json(body)
