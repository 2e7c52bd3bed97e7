"""Typed API errors, one class per status family, each carrying the errno the FUSE edge uses.

The client raises these (with the transport's exception as ``__cause__``); ``operations``
turns them into ``FUSEError(err.errno)`` in one place. Nothing here imports httpx.
"""

from __future__ import annotations

import errno as _errno


class ContainerFsError(Exception):
    """Base of every error containerfs raises on purpose."""

    errno: int = _errno.EIO

    @classmethod
    def with_errno(cls, code: int, message: str = "") -> ContainerFsError:
        err = cls(message or _errno.errorcode.get(code, str(code)))
        err.errno = code
        return err


class ConfigError(ContainerFsError):
    """Missing or invalid configuration (for example no ``OPENAI_API_KEY``)."""

    errno = _errno.EINVAL


class ApiError(ContainerFsError):
    """An answer (or a failure to get one) from the Containers API.

    ``ambiguous`` is true when the request may have been carried out although no answer came
    back (a timeout or a broken connection after the request was sent), or although the answer
    was an error that does not say the request was refused (408, 5xx: a server or gateway can
    fail after the work was done). A 429 is not ambiguous: it says the request was not
    processed, so it is simply sent again.
    """

    status: int | None = None
    retryable: bool = False
    ambiguous: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"HTTP {self.status}: " if self.status else ""
        return f"{where}{self.message}"


class BadRequest(ApiError):
    status = 400
    errno = _errno.EINVAL


class ContainerExpired(BadRequest):
    """400 "Container is expired.": the container keeps its metadata, its files are gone."""

    errno = _errno.EROFS


class AuthenticationError(ApiError):
    status = 401
    errno = _errno.EACCES


class PermissionDenied(ApiError):
    status = 403
    errno = _errno.EACCES


class NotFound(ApiError):
    status = 404
    errno = _errno.ENOENT


class RequestTimeout(ApiError):
    status = 408
    errno = _errno.ETIMEDOUT
    retryable = True
    # sent by proxies too, possibly after the origin got (and acted on) the whole request
    ambiguous = True


class Conflict(ApiError):
    status = 409
    errno = _errno.EBUSY
    retryable = True


class PayloadTooLarge(ApiError):
    status = 413
    errno = _errno.EFBIG


class Unprocessable(ApiError):
    status = 422
    errno = _errno.EINVAL


class RateLimited(ApiError):
    status = 429
    errno = _errno.EAGAIN
    retryable = True


class ServerError(ApiError):
    status = 500
    errno = _errno.EIO
    retryable = True
    # a 5xx may come after the server stored the upload or created the container
    ambiguous = True


class ApiTimeout(ApiError):
    """No answer in time (connect, read or write timeout)."""

    errno = _errno.ETIMEDOUT
    retryable = True


class ApiConnectionError(ApiError):
    """The endpoint could not be reached, or the connection broke mid-request.

    EIO, not a routing errno: "No route to host" for a reset connection would send a user
    looking at the network, and programs treat EIO as the I/O failure it is.
    """

    errno = _errno.EIO
    retryable = True


class ApiAborted(ApiConnectionError):
    """The mount is ending: requests in flight were cancelled, and no new one is sent."""

    retryable = False


class MalformedAnswer(ApiError):
    """A successful status with a body that breaks the API's rules: not the object asked for,
    a list answer without a list, a pagination that loops or never ends."""

    errno = _errno.EIO


class UnsafeId(ApiError):
    """An id that is not a plain token: no URL is built with it, so no request is sent."""

    errno = _errno.EIO


class ContentMismatch(ApiError):
    """A content body that disagrees with the size listed or announced for it, or that looks
    like an error page rather than the file; worth another attempt."""

    errno = _errno.EIO
    retryable = True


STATUS_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
    429: RateLimited,
}


def error_class_for(status: int, message: str = "") -> type[ApiError]:
    """The error class for an HTTP status (and, for 400, the expired-container message)."""
    if status == 400 and "expired" in message.lower():
        return ContainerExpired
    if status >= 500:
        return ServerError
    return STATUS_ERRORS.get(status, ApiError)


class CacheError(ContainerFsError):
    """The local cache failed (disk full, files removed behind our back, download abandoned)."""

    def __init__(self, message: str, *, errno_: int = _errno.EIO) -> None:
        super().__init__(message)
        self.errno = errno_


class CacheFull(CacheError):
    """The cache disk cannot hold a file even after evicting: it is read past the cache."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno_=_errno.ENOSPC)


class SpoolError(ContainerFsError):
    """A spool file could not be written (a full or failing state disk): the write, or the
    close that would upload it, fails with the disk's errno (ENOSPC, EDQUOT, EIO)."""

    def __init__(self, message: str, *, errno_: int = _errno.EIO) -> None:
        super().__init__(message)
        self.errno = errno_


class MountError(ContainerFsError):
    """The mount cannot start: a bad mountpoint, credentials or endpoint."""


class StatusError(ContainerFsError):
    """The status file is missing a field or holds a value of the wrong type."""


class StateError(ContainerFsError):
    """The state directory cannot be used."""


class ControlError(ContainerFsError):
    """A ``containerfs new``/``import`` request that cannot be carried out: a bad option, a
    name taken, no daemon to ask. The message is the one line the user sees."""

    def __init__(self, message: str, *, errno_: int = _errno.EINVAL) -> None:
        super().__init__(message)
        self.errno = errno_


class SizeUnknown(ContainerFsError):
    """The size of a file listed without one could not be learned."""

    def __init__(self, message: str, *, errno_: int = _errno.EIO) -> None:
        super().__init__(message)
        self.errno = errno_


class CliError(Exception):
    """A one-line message for the user of the command line; exit status 1 unless given."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class StreamAborted(ContainerFsError):
    """A streaming upload was given up before its body ended (the file was rewritten,
    truncated or closed elsewhere): the request breaks off, so the server creates nothing."""
