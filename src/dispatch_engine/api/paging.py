"""How every list pages: `?limit=` (1–1000, default 100) and `?cursor=`, the next page named
in a `Link: <…>; rel="next"` header (RFC 8288) and in `X-Next-Cursor`.

Lists that answered a JSON array keep answering one, so clients written against them do
not break; the two lists that were pages from the start (audit, incidents) also carry
`next_cursor` in their body. A last page has no Link header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Response

from dispatch_engine.store.paging import DEFAULT_LIMIT, MAX_LIMIT, PageRequest

Limit = Annotated[
    int,
    Query(ge=1, le=MAX_LIMIT, description=f"Items per page (at most {MAX_LIMIT})."),
]
Cursor = Annotated[
    str | None,
    Query(
        description="Where the previous page ended: its `X-Next-Cursor` header (or the "
        "cursor in its `Link` header). Opaque; omit it for the first page."
    ),
]

NEXT_PAGE_HEADERS = {
    "Link": {
        "description": 'The next page, `<url>; rel="next"`; absent on the last page.',
        "schema": {"type": "string"},
    },
    "X-Next-Cursor": {
        "description": "The `cursor` of the next page; absent on the last page.",
        "schema": {"type": "string"},
    },
}


def link_next(request: Request, response: Response, next_cursor: str | None) -> None:
    """Name the next page in the response headers (nothing on the last page)."""
    if next_cursor is None:
        return
    url = request.url.include_query_params(cursor=next_cursor)
    # a relative reference: right behind any proxy, whatever host the client used
    response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    response.headers["X-Next-Cursor"] = next_cursor


@dataclass(frozen=True)
class Pager:
    """A list endpoint's page: what to read (`page`), and where to say what comes next."""

    page: PageRequest
    request: Request
    response: Response

    def next_page(self, next_cursor: str | None) -> None:
        link_next(self.request, self.response, next_cursor)


def _pager(
    request: Request, response: Response, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Pager:
    return Pager(PageRequest(limit, cursor), request, response)


PagerDep = Annotated[Pager, Depends(_pager)]
