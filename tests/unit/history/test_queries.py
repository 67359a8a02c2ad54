"""The SQL of the history's own reads (history/queries.py), without a database."""

from __future__ import annotations

import pytest

from dkron_lab.errors import BadRequest
from dkron_lab.history import queries
from dkron_lab.model.execution import OUTPUT_CUT


def test_a_page_query_sorts_cuts_and_pages_with_parameters_only() -> None:
    sql, params = queries.list_query("j'; DROP", "attempt", "asc", 10, 30, 100)
    assert "j'; DROP" not in sql and "ORDER BY attempt ASC NULLS LAST" in sql
    assert params == [100, 100, OUTPUT_CUT, "j'; DROP", 20, 10]


def test_a_page_query_without_end_or_output_limit() -> None:
    sql, params = queries.list_query("j", "", "", 0, None, None)
    assert "LIMIT" not in sql and "ORDER BY started_at DESC" in sql
    assert params == [OUTPUT_CUT, "j", 0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", "ASC", 0, None, None), "_sort='nope'"),
        (("", "sideways", 0, None, None), "_order='sideways'"),
        (("", "ASC", -1, None, None), "_start=-1"),
        (("", "ASC", 5, 4, None), "_end=4"),
        (("", "ASC", 0, None, -1), "output_size_limit=-1"),
    ],
)
def test_a_page_query_refuses_what_it_cannot_answer(
    args: tuple[str, str, int, int | None, int | None], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        queries.list_query("j", *args)
