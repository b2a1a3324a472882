"""Opening the source a mapping names (the SQL reader is imported only when needed)."""

from __future__ import annotations

import os

from adapters.delimited import CsvSource
from adapters.errors import SourceError
from adapters.jsonl import JsonlSource
from adapters.mapping import SourceSpec
from adapters.source import Source
from adapters.xlsx import XlsxSource

__all__ = ["open_source"]


def open_source(spec: SourceSpec, *, sql_batch_size: int = 1000) -> Source:
    """Build the reader for a [source] table; nothing is read until `columns()` or `rows()`.

    Refuses an SQL source whose `url_env` variable is not set.
    """
    if spec.kind == "csv":
        assert spec.path is not None
        return CsvSource(
            spec.path,
            encoding=spec.encoding,
            delimiter=spec.delimiter,
            header_row=spec.header_row,
            name=spec.name,
        )
    if spec.kind == "xlsx":
        assert spec.path is not None
        return XlsxSource(
            spec.path,
            sheet=spec.sheet,
            header_row=spec.header_row,
            header_rows=spec.header_rows,
            name=spec.name,
        )
    if spec.kind == "jsonl":
        assert spec.path is not None
        return JsonlSource(spec.path, name=spec.name)
    # SQLAlchemy is slow to import; only SQL sources pay for it.
    from adapters.sql import SqlSource  # noqa: PLC0415

    url = spec.url
    if spec.url_env is not None:
        url = os.environ.get(spec.url_env)
        if not url:
            raise SourceError(spec.name, f"environment variable {spec.url_env} is not set")
    assert url is not None
    assert spec.key is not None
    return SqlSource(
        url,
        key=spec.key,
        table=spec.table,
        query=spec.query,
        watermark=spec.watermark,
        batch_size=sql_batch_size,
        name=spec.name,
    )
