"""One API call with its retries: send through the ``Transport``, parse the answer, and on
failure wait by the one ``Backoff`` (or the server's retry-after) and send again, within the
call's ``Patience``; a create whose answer was lost is looked for before it is sent again
(``api``, the lowest layer, used by ``ApiClient`` only).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from containerfs.api.retrying import Backoff, Patience
from containerfs.api.transport import Request, Response, Transport, json_body
from containerfs.errors import ApiError, NotFound

log = logging.getLogger("containerfs.api.client")  # the client's log, as before the split

T = TypeVar("T")

# Distinct bad items logged at warning level once each; past that, each is logged every time
# (a server sending ever new bad items must not grow the set without bound).
_REJECTED_LOGGED = 4096


class Caller:
    """Sends calls with retries and counts what happened: retries, final errors by type,
    results adopted after an ambiguous failure."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_retries: int,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
        patience: Callable[[], Patience],
    ) -> None:
        self._transport = transport
        self._max_retries = max_retries
        self._backoff = backoff
        self._sleep = sleep
        self._rng = rng
        self._patience = patience
        self.errors: Counter[str] = Counter()
        self.retries = 0
        self.adopted = 0
        self._rejected: set[str] = set()

    async def json(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        gone_ok: bool = False,
        idempotent: bool = True,
    ) -> Any:
        return await self.call(
            endpoint,
            lambda: self._transport.request(method, url, params=params, json=json),
            json_body,
            idempotent=idempotent,
            on_gone=(lambda: None) if gone_ok else None,
        )

    async def call(
        self,
        endpoint: str,
        build: Callable[[], Request],
        parse: Callable[[Response], T],
        *,
        stream: bool = False,
        idempotent: bool = True,
        recover: Callable[[], Awaitable[T | None]] | None = None,
        on_gone: Callable[[], T] | None = None,
        patience: Patience | None = None,
    ) -> T:
        """Send with retries and ``parse`` the successful answer.

        Not ``idempotent``: after an ambiguous failure, ``recover`` finds what the lost
        attempt created (None: nothing, send again); without ``recover``, no resend.
        ``on_gone``: the result when a retry after an ambiguous attempt answers 404.
        ``patience``: the call's progress deadline; no retry starts past its budget.
        """
        patience = patience or self._patience()
        attempt = 0
        was_ambiguous = False
        while True:
            try:
                response = await self._transport.send(
                    endpoint, build(), stream=stream, patience=patience
                )
                return self._transport.parse(endpoint, response, parse)
            except ApiError as err:
                error = err
            if on_gone is not None and was_ambiguous and isinstance(error, NotFound):
                log.info("%s: gone after an ambiguous attempt; taking it as done", endpoint)
                return on_gone()
            if error.ambiguous and not idempotent and recover is not None:
                found = await self._adopt(endpoint, error, recover)
                if found is not None:
                    return found
            resend = not (error.ambiguous and not idempotent and recover is None)
            delay = self._retry_delay(endpoint, error, attempt, patience, resend=resend)
            if delay is None:
                self.errors[type(error).__name__] += 1
                raise error
            was_ambiguous = was_ambiguous or error.ambiguous
            attempt += 1
            self.retries += 1
            await self._sleep(delay)

    async def _adopt(
        self, endpoint: str, error: ApiError, recover: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        """What the attempt lost to ``error`` created, found by ``recover`` (None: nothing).
        Looked for even with no retries left: finding the result beats reporting a failure."""
        if self._transport.aborted:
            return None
        found = await recover()
        if found is not None:
            self.adopted += 1
            log.info("%s: %s; adopted what the lost attempt created", endpoint, error)
        return found

    def _retry_delay(
        self, endpoint: str, error: ApiError, attempt: int, patience: Patience, *, resend: bool
    ) -> float | None:
        """The wait before the next attempt, or None: no retry (the error is final, the
        retries are used up, or the wait would outlast the call's patience)."""
        if not (error.retryable and resend and attempt < self._max_retries):
            return None
        delay = self._backoff.delay(attempt, self._rng, retry_after=error.retry_after)
        if delay >= patience.remaining():
            log.info("%s: %s; no retry: no progress for too long", endpoint, error)
            return None
        retries = self._max_retries
        log.info("%s: %s; retry %d/%d in %.2f s", endpoint, error, attempt + 1, retries, delay)
        return delay

    def reject(self, endpoint: str, rejected: tuple[str, ...]) -> None:
        """Log each item a listing set aside, once per mount (a listing is fetched often)."""
        for reason in rejected:
            if reason not in self._rejected:
                if len(self._rejected) < _REJECTED_LOGGED:
                    self._rejected.add(reason)
                log.warning("%s: skipped an item the server listed: %s", endpoint, reason)
            self.errors["BadItem"] += 1
