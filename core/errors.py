"""The one error tree.

Two roots, as in Sawtooth: ``Invalid`` is a deterministic verdict on some input
(every honest node reaches the same one), ``NodeFault`` is this node's own
trouble (disk, corruption, a broken invariant) and must never be blamed on the
input. Every ``Invalid`` carries a stable machine-readable ``code``.
"""

from __future__ import annotations


class LiveLedgerError(Exception):
    """Base of every error this project raises on purpose."""


class Invalid(LiveLedgerError):
    """Deterministic rejection of an input: a transaction, block, vote, proof or request."""

    code: str = "invalid"

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


class NodeFault(LiveLedgerError):
    """Something is wrong with this node, not with its input. Usually fatal."""


class StorageError(NodeFault):
    """The database is unavailable, locked or inconsistent."""
