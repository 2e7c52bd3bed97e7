"""The progress deadlines of every request, and the switch that cancels them all (``api``,
the lowest layer; the transport wraps each request's body and answer in them). Free of httpx:
the transport says which of its timeouts a cut request raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from containerfs.api.retrying import Patience
from containerfs.errors import ApiAborted


class Deadlines:
    """A request runs in a cancel scope until its answer arrives, whose deadline moves on as
    its body is sent; then every read of the answer's body waits at most what the call's
    ``Patience`` allows. A request cut there fails like an httpx timeout (connect: nothing was
    sent; write; read), so that the one error boundary maps it. ``abort`` cancels every wait
    in flight and refuses new requests.
    """

    def __init__(self) -> None:
        self._scopes: set[trio.CancelScope] = set()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        for scope in list(self._scopes):
            scope.cancel()

    @contextmanager
    def watch(self, patience: Patience) -> Iterator[trio.CancelScope]:
        """A cancel scope for one wait of a request, cut at the patience's deadline or by
        ``abort``; the caller checks ``cancelled_caught`` and raises ``cut``."""
        if self.aborted:
            raise ApiAborted("the mount is ending: no new requests")
        scope = trio.CancelScope(deadline=trio.current_time() + patience.time_left())
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def cut(
        self, patience: Patience, timeout: Callable[[str], Exception], *, answered: bool
    ) -> Exception:
        """The error a request cut by ``watch`` raises: ``timeout`` (the transport's own
        timeout class, for its error boundary), or ``ApiAborted`` once the mount ends."""
        if self.aborted:
            return ApiAborted("the mount is ending: request cancelled")
        policy = patience.policy
        if answered:
            return timeout(f"less than {policy.quota} bytes in {policy.window:g} s")
        return timeout(f"no answer and no progress in {policy.window:g} s")
