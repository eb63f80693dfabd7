"""The one error tree.

Two roots, as in Sawtooth: ``Invalid`` is a deterministic verdict on some input
(every honest node reaches the same one), ``NodeFault`` is this node's own
trouble (disk, corruption, a broken invariant) and must never be blamed on the
input. Every ``Invalid`` carries a stable machine-readable ``code`` and the HTTP
``status`` the node's API answers with when it refuses a request for that reason
(one middleware renders every refusal; ``HttpError`` is a refusal made at the API).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class LiveLedgerError(Exception):
    """Base of every error this project raises on purpose."""


class Invalid(LiveLedgerError):
    """Deterministic rejection of an input: a transaction, block, vote, proof or request."""

    code: str = "invalid"
    # What the HTTP API answers when this refuses a request: a bad request, unless a
    # subclass says otherwise (a view the viewer may not see is 403).
    status: int = 400

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class DecodeError(Invalid):
    """Bytes that are not the one canonical encoding of the expected object."""

    code = "malformed"


class InvalidSignature(Invalid):
    code = "bad_signature"


class InvalidTransaction(Invalid):
    """A transaction that may not enter a block (or that failed while executing)."""

    code = "invalid_tx"


class InvalidBlock(Invalid):
    code = "invalid_block"


class InvalidProof(Invalid):
    code = "invalid_proof"


class InvalidAddress(Invalid):
    code = "bad_address"


class HttpError(Invalid):
    """A request refused by the HTTP API: its status, stable code and message.

    Routes raise it (or any ``Invalid``, which carries its own status); the API's one
    middleware renders each as ``{"code", "message"}`` with the status and
    ``headers``. A 503 is refused for now, not for ever: ``Retry-After`` says when.
    """

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, code)
        self.status = status
        self.headers = dict(headers or {})


class NodeFault(LiveLedgerError):
    """Something is wrong with this node, not with its input. Usually fatal."""


class StorageError(NodeFault):
    """The database is unavailable, locked or inconsistent."""


class CannotListen(NodeFault):
    """A listening socket (``what``: HTTP or p2p) could not be bound: the port is taken,
    the address is not this machine's, or it needs privileges."""

    def __init__(self, what: str, host: str, port: int, cause: OSError) -> None:
        # asyncio's text repeats the address; the errno's own words are the reason (a
        # host that does not resolve has no errno of the kind, only its words).
        code = cause.errno
        known = isinstance(code, int) and code > 0
        reason = os.strerror(code).lower() if code and known else str(cause.strerror or cause)
        super().__init__(f"cannot listen for {what} on {host}:{port}: {reason}")
        self.what = what
