"""What the ``%dkron`` magics return: plain data with a rich display.

A magic returns one of these rather than printing, so ``x = %dkron jobs`` keeps the data and a
bare ``%dkron jobs`` shows it as an HTML table (a plain-text table elsewhere). They hold the
API's JSON as it came, so nothing is lost: ``Table`` is a list of row dicts, ``Record`` a dict.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

__all__ = ["Record", "Table", "Text"]

_CELL_LIMIT = 80  # characters of a value shown in a table cell


def _short(value: Any) -> str:
    if isinstance(value, Mapping):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(map(str, value))
    elif value is None:
        text = ""
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= _CELL_LIMIT else text[: _CELL_LIMIT - 1] + "…"


class Table(list[dict[str, Any]]):
    """Rows (API JSON objects) shown by ``columns``; ``to_pandas()`` for analysis."""

    def __init__(
        self, rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, title: str = ""
    ) -> None:
        super().__init__(dict(row) for row in rows)
        self.columns = list(columns)
        self.title = title

    def to_pandas(self) -> pandas.DataFrame:
        """Every field of every row (not only the shown columns) as a DataFrame."""
        import pandas

        return pandas.DataFrame(list(self))

    def _cells(self) -> list[list[str]]:
        return [[_short(row.get(column)) for column in self.columns] for row in self]

    def __repr__(self) -> str:
        rows = [self.columns, *self._cells()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.columns))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        head = [f"{self.title} ({len(self)})"] if self.title else []
        return "\n".join([*head, *(line.rstrip() for line in lines)])

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"
            for cells in self._cells()
        )
        caption = (
            f"<caption>{html.escape(self.title)} ({len(self)})</caption>" if self.title else ""
        )
        table = f"{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
        return f'<table class="dkron-table">{table}</table>'


class Record(dict[str, Any]):
    """One API object (a job, an execution, the node's status) shown as a two-column table."""

    def __init__(self, data: Mapping[str, Any], *, title: str = "") -> None:
        super().__init__(data)
        self.title = title

    def __repr__(self) -> str:
        width = max((len(k) for k in self), default=0)
        lines = [f"{key.ljust(width)}  {_short(value)}" for key, value in self.items()]
        return "\n".join([self.title, *lines] if self.title else lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(_short(v))}</td></tr>"
            for k, v in self.items()
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f'<table class="dkron-record">{caption}{rows}</table>'


class Text(str):
    """Output of an execution: shown as preformatted text, equal to the plain string."""

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"

    def __repr__(self) -> str:
        return str(self)
