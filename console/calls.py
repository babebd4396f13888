"""The calls page and its CSV: ``GET /calls``, ``GET /calls.csv`` (docs/console.md).

Every filter, the sort and the page are in the query string (console/search.py);
the rows come from the calls index (console/index.py), the total is counted with the
same filters, and a transcript search adds highlighted snippets that link to that
moment of the call. Each search and CSV is written to the audit trail.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from console.core import ConsoleCore, arrow
from console.search import CallQuery, count_sql, encode_token, highlight, page_sql, snippets_sql


class CallsPages:
    """Search and list the calls."""

    def __init__(self, core: ConsoleCore) -> None:
        self.core = core

    def routes(self) -> list[Route]:
        return [Route("/calls", self.calls_page), Route("/calls.csv", self.calls_csv)]

    def _search(self, query: CallQuery) -> dict[str, Any]:
        index = self.core.index
        cur = index.cursor()
        size = self.core.settings.console_page_size
        sql, args = page_sql(query, index.columns, size)
        rows = arrow(cur, sql, args).to_pylist()
        more = len(rows) > size
        rows = rows[:size]
        count_q, count_args = count_sql(query, index.columns)
        total = cur.execute(count_q, count_args).fetchone()
        snippets: dict[str, list[dict[str, Any]]] = {}
        if query.q and rows:
            s_sql, s_args = snippets_sql(query, [r["recording_id"] for r in rows])
            for rec, start_ms, speaker, text in cur.execute(s_sql, s_args).fetchall():
                snippets.setdefault(rec, []).append(
                    {"start_ms": start_ms, "speaker": speaker, "pieces": highlight(text, query.q)}
                )
        next_url = ""
        if more:
            last = rows[-1]
            token = encode_token(_plain(last["sort_value"]), last["recording_id"])
            next_url = query.url(next=token)
        return {
            "rows": rows,
            "total": total[0] if total else 0,
            "snippets": snippets,
            "next_url": next_url,
        }

    async def calls_page(self, request: Request) -> Response:
        core = self.core
        identity = await core.require(request, "viewer", "search")
        if isinstance(identity, Response):
            return identity
        if (waiting := core.index_ready(request)) is not None:
            return waiting
        query = CallQuery.parse(request.query_params)
        result = await run_in_threadpool(self._search, query)
        await core.audit(
            request,
            identity,
            "search",
            "calls",
            detail={"query": urlencode(query.params()), "total": str(result["total"])},
        )
        columns = core.index.columns
        return core.render(
            request,
            "calls.html",
            identity=identity,
            query=query,
            **result,
            csv_url=query.url("/calls.csv", next=""),
            first_url=query.url(next="") if query.next else "",
            has_numbers=all(c in columns for c in ("from_number", "to_number")),
            has_direction="direction" in columns,
            held=core.index.held,
            sort_url=lambda col: query.url(
                sort=col,
                next="",
                order="asc" if query.sort == col and query.order == "desc" else "desc",
            ),
        )

    async def calls_csv(self, request: Request) -> Response:
        core = self.core
        identity = await core.require(request, "viewer", "download", "calls.csv")
        if isinstance(identity, Response):
            return identity
        if (waiting := core.index_ready(request)) is not None:
            return waiting
        query = CallQuery.parse(request.query_params)
        await core.audit(
            request, identity, "download", "calls.csv", detail={"query": urlencode(query.params())}
        )
        limit = core.settings.console_csv_max_rows

        def lines() -> Iterator[str]:
            sql, args = page_sql(query, core.index.columns, limit - 1)
            table = arrow(core.index.cursor(), sql, args)
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            header = [c for c in table.column_names if c != "sort_value"]
            writer.writerow(header)
            for batch in table.to_batches(2000):
                for row in batch.to_pylist():
                    writer.writerow([_csv_cell(row[c]) for c in header])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue()

        return StreamingResponse(
            iterate_in_threadpool(lines()),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="calls.csv"'},
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    return value


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    text = str(value)
    # A cell a spreadsheet would run as a formula (call ids come from outside) is quoted.
    return "'" + text if isinstance(value, str) and text[:1] in ("=", "+", "-", "@") else text
