"""What the API client checks before it sends a request or believes an answer.

Part of the API layer, used by the client and its transport: the headers every request
carries (who is asking), the one builder of resource URLs (which
refuses an id that is not a plain token, ``models.plain_id``), the check that a file belongs
to the container asked about, and the one pagination, which ends a listing that loops or
never ends. Knows nothing about httpx, FUSE, inodes or caches.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import quote

from containerfs import __version__
from containerfs.config import ApiConfig
from containerfs.errors import MalformedAnswer, UnsafeId
from containerfs.models import ContainerFile, ContainerId, Page, plain_id

T = TypeVar("T")
Item = TypeVar("Item")


def request_headers(config: ApiConfig) -> dict[str, str]:
    """The headers of every request: who is asking, and for which organization and project."""
    headers = {"User-Agent": f"containerfs/{__version__}", "Accept": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    if config.organization:
        headers["OpenAI-Organization"] = config.organization
    if config.project:
        headers["OpenAI-Project"] = config.project
    return headers


def url(collection: str, container_id: str, *rest: str) -> str:
    """``containers/{id}[/files[/{id}[/content]]]``. Refuses (``UnsafeId``, nothing sent) an id
    that is not a plain token, whatever the caller: ``..`` would be resolved away by the URL
    and turn ``DELETE …/files/..`` into ``DELETE /containers/{id}`` (``models.plain_id``)."""
    ids = [container_id, *rest[1:2]]  # rest: "files", then a file id, then "content"
    for ident in ids:
        if not plain_id(ident):
            raise UnsafeId(f"refusing to use the id {ident!r:.80} in a request")
    return "/".join(quote(p, safe="") for p in (collection, container_id, *rest))


def in_container(found: ContainerFile, container_id: ContainerId) -> ContainerFile:
    """A file the server gave for ``container_id``: one of another container is malformed."""
    if not found.container_id:
        return replace(found, container_id=container_id)
    if found.container_id != container_id:
        raise ValueError(f"file {found.id} of {found.container_id}, not of {container_id}")
    return found


def parsed(endpoint: str, build: Callable[[], T]) -> T:
    """``build()``, an object made from an answer; a rule it breaks is ``MalformedAnswer``."""
    try:
        return build()
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedAnswer(f"{endpoint}: malformed answer: {exc}") from exc


async def paginate(
    fetch: Callable[[str | None], Awaitable[Page[Item]]], *, max_pages: int
) -> AsyncGenerator[Item, None]:
    """Every item of a listing, page after page, following ``after`` (the one pagination).

    A server that paginates forever ends the listing with ``MalformedAnswer`` (EIO): a cursor
    seen before in this listing, or more than ``max_pages`` pages.
    """
    after: str | None = None
    seen: set[str] = set()
    for _ in range(max_pages):
        page = await fetch(after)
        for item in page.data:
            yield item
        after = next_cursor(page, seen)
        if after is None:
            return
        seen.add(after)
    raise MalformedAnswer(f"listing still had more after {max_pages} pages")


def next_cursor(page: Page[Any], seen: set[str]) -> str | None:
    """The ``after`` for the next page, or None when the listing is complete."""
    if not page.has_more:
        return None
    cursor = page.last_id
    if cursor is None:
        if not page.data and not page.rejected:
            return None  # an empty page ends a listing, whatever has_more says
        raise MalformedAnswer("listing has more, but gave no cursor to continue from")
    if cursor in seen:
        raise MalformedAnswer(f"listing cursor {cursor!r} did not advance: seen before")
    return cursor
