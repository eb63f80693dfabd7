"""The wire types every layer shares: transactions, headers, blocks, votes, commits."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

import msgpack

from core.codec import Len, MaxItems, MaxLen, Wire, array_header, pack_raw
from core.errors import DecodeError, InvalidTransaction
from core.hashing import Domain, hash_bytes
from core.keys import PrivateKey, SignDomain, verify

Hash32 = Annotated[bytes, Len(32)]
PublicKey = Annotated[bytes, Len(32)]
Signature = Annotated[bytes, Len(64)]
Address = Annotated[bytes, Len(20)]

MAX_TX_TYPE = 64
MAX_PAYLOAD = 16 * 1024
MAX_TX_BODY = MAX_PAYLOAD + 256
MAX_BLOCK_TXS = 100_000
MAX_VALIDATORS = 256
# Latest block time, in ms since the Unix epoch (about the year 287,000). Every
# window that execution adds to block time is at most this long too, so a deadline
# (time + window) stays far inside u64; both are safe integers in JavaScript.
MAX_TIME_MS = 2**53 - 1


@dataclass(frozen=True, slots=True)
class TxBody(Wire):
    """What a sender signs. ``payload`` is the canonical encoding of the type's payload."""

    nonce: int
    fee: int
    # Last height at which the transaction may be included.
    expiry_height: int
    type: Annotated[str, MaxLen(MAX_TX_TYPE)]
    payload: Annotated[bytes, MaxLen(MAX_PAYLOAD)]

    MAX_ENCODED = MAX_TX_BODY


@dataclass(frozen=True, slots=True)
class SignedTx(Wire):
    """A transaction as carried: chain id, sender key, body bytes, and a signature over them.

    The chain id travels in the envelope so that a transaction meant for another
    chain is refused (``wrong_chain``) before any signature work; the signature
    still covers it. The body is decoded only after the signature verifies
    (see ``verify_tx``).
    """

    chain_id: Annotated[str, MaxLen(64)]
    sender: PublicKey
    body: Annotated[bytes, MaxLen(MAX_TX_BODY)]
    signature: Signature

    MAX_ENCODED = MAX_TX_BODY + 200

    @property
    def hash(self) -> bytes:
        return tx_hash(self.encode())


def tx_hash(encoded_signed_tx: bytes) -> bytes:
    return hash_bytes(Domain.TX, encoded_signed_tx)


def sign_tx(key: PrivateKey, chain_id: str, body: TxBody) -> SignedTx:
    raw = body.encode()
    return SignedTx(chain_id, key.public_key, raw, key.sign(SignDomain.TX, chain_id, raw))


def verify_tx(tx: SignedTx, chain_id: str) -> TxBody:
    """Check chain id and signature, then decode the body. Raises ``Invalid`` subclasses."""
    check_signed(tx, chain_id)
    return TxBody.decode(tx.body)


def check_signed(tx: SignedTx, chain_id: str) -> None:
    """Check chain id and signature (``wrong_chain``, ``bad_signature``)."""
    if tx.chain_id != chain_id:
        raise InvalidTransaction(
            f"transaction is for chain {tx.chain_id!r}, this is {chain_id!r}", "wrong_chain"
        )
    verify(tx.sender, SignDomain.TX, chain_id, tx.body, tx.signature)


class VoteType(IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


# Votes whose signature checked out, oldest first. A precommit is checked when it
# arrives, then again in the certificate the engine builds from it, when its block is
# stored, and in the next block's header; a signature cache (as Bitcoin Core keeps one
# for scripts) makes those later checks a lookup. The key is exactly what the check
# reads (chain id, signed body, key, signature), never the vote's fields compared
# with ``==`` (1.0 == 1 but packs otherwise): a hit proves what the check would. Only
# successes go in, so nothing a peer sends can make a bad vote pass; the bound keeps
# it to ~3 MB whatever arrives. Votes are checked on more than one thread: each
# operation here is one C call on bytes keys, and a rare race costs a repeated check.
_VERIFIED_VOTES: OrderedDict[tuple[str, bytes, bytes, bytes], None] = OrderedDict()
_VERIFIED_VOTES_MAX = 8192


def vote_signing_body(vote_type: int, height: int, round_: int, block_hash: bytes) -> bytes:
    return pack_raw([int(vote_type), height, round_, block_hash])


@dataclass(frozen=True, slots=True)
class Vote(Wire):
    """A signed prevote or precommit; an empty ``block_hash`` is a vote for nil."""

    type: int
    height: int
    round: int
    block_hash: Annotated[bytes, MaxLen(32)]
    validator: PublicKey
    signature: Signature

    MAX_ENCODED = 256

    def __post_init__(self) -> None:
        if self.type not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            raise DecodeError(f"vote type must be 1 or 2, got {self.type}")
        if len(self.block_hash) not in (0, 32):
            raise DecodeError(f"vote block hash must be 0 or 32 bytes, got {len(self.block_hash)}")

    @classmethod
    def create(
        cls,
        key: PrivateKey,
        chain_id: str,
        vote_type: VoteType,
        height: int,
        round_: int,
        block_hash: bytes,
    ) -> Vote:
        body = vote_signing_body(vote_type, height, round_, block_hash)
        sig = key.sign(SignDomain.VOTE, chain_id, body)
        return cls(int(vote_type), height, round_, block_hash, key.public_key, sig)

    def verify(self, chain_id: str) -> None:
        """Raise ``InvalidSignature`` unless ``validator`` signed this vote for
        ``chain_id`` (a vote that passed before is not checked again)."""
        body = vote_signing_body(self.type, self.height, self.round, self.block_hash)
        key = (chain_id, body, bytes(self.validator), bytes(self.signature))
        if key in _VERIFIED_VOTES:
            return
        verify(self.validator, SignDomain.VOTE, chain_id, body, self.signature)
        _VERIFIED_VOTES[key] = None
        if len(_VERIFIED_VOTES) > _VERIFIED_VOTES_MAX:
            try:
                _VERIFIED_VOTES.popitem(last=False)
            except KeyError:
                pass  # another thread emptied it meanwhile


@dataclass(frozen=True, slots=True)
class CommitSig(Wire):
    validator: PublicKey
    signature: Signature


@dataclass(frozen=True, slots=True)
class Commit(Wire):
    """Precommits of more than 2/3 of the producers for one block (a commit certificate)."""

    height: int
    round: int
    block_hash: Hash32
    signatures: Annotated[tuple[CommitSig, ...], MaxItems(MAX_VALIDATORS)]

    def votes(self) -> list[Vote]:
        return [
            Vote(
                int(VoteType.PRECOMMIT),
                self.height,
                self.round,
                self.block_hash,
                s.validator,
                s.signature,
            )
            for s in self.signatures
        ]


@dataclass(frozen=True, slots=True)
class BlockHeader(Wire):
    chain_id: Annotated[str, MaxLen(64)]
    height: int
    round: int
    time_ms: int
    prev_hash: Hash32
    tx_root: Hash32
    # Root of the state tree after executing this block.
    state_root: Hash32
    receipt_root: Hash32
    producer: PublicKey
    producer_set_hash: Hash32
    # Certificate that finalized the previous block (None only at height 1).
    last_commit: Commit | None

    MAX_ENCODED = 64 * 1024

    @property
    def hash(self) -> bytes:
        return hash_bytes(Domain.HEADER, self.encode())


EncodedTx = Annotated[bytes, MaxLen(SignedTx.MAX_ENCODED)]


@dataclass(frozen=True, slots=True)
class Block(Wire):
    """A header and its transactions, each carried as its canonical ``SignedTx`` encoding.

    The tx root and the tx hashes are computed over exactly these bytes, so a node
    that already holds a transaction (its mempool) finds it by hash and never
    decodes it again; one it lacks is decoded and verified from the bytes. That a
    block's bytes are valid transactions is checked by block validation, not here.
    """

    header: BlockHeader
    txs: Annotated[tuple[EncodedTx, ...], MaxItems(MAX_BLOCK_TXS)]

    MAX_ENCODED = 64 * 1024 * 1024

    @property
    def hash(self) -> bytes:
        return self.header.hash


def encode_block(header: BlockHeader, encoded_txs: Sequence[bytes]) -> bytes:
    """``Block(header, tuple(encoded_txs)).encode()`` without building the Block."""
    return b"".join((array_header(2), header.encode(), pack_raw(list(encoded_txs))))


def encoded_block_hash(encoded_block: bytes) -> bytes:
    """The hash of the block ``encoded_block`` encodes, read off its header's bytes.

    For a block held encoded and sent on as it is: its msgpack structure is walked in
    C, building no object (a tenth of a millisecond for 10,000 transactions, a fifth of
    a decode): two items, a header that parses, an array of at most ``MAX_BLOCK_TXS``
    items that parses, nothing after. What is inside is not checked (field types and
    bounds: the receiver's decode does that); compare the hash with what names the
    block (its certificate), which proves the header's bytes are the ones signed.
    Raises ``DecodeError`` when the bytes are not shaped as a block's encoding.
    """
    if encoded_block[:1] != array_header(2):
        raise DecodeError("not a block: the encoding does not start with a 2-item array")
    unpacker = msgpack.Unpacker(max_buffer_size=len(encoded_block))
    unpacker.feed(encoded_block)
    try:
        unpacker.read_array_header()
        unpacker.skip()
        header_end = unpacker.tell()
        txs = _array_length(encoded_block, header_end)
        if txs > MAX_BLOCK_TXS:
            raise DecodeError(f"not a block: {txs} transactions, at most {MAX_BLOCK_TXS}")
        unpacker.skip()
    except (ValueError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not a block: it does not parse ({exc!r})") from exc
    if unpacker.tell() != len(encoded_block):
        raise DecodeError("not a block: trailing bytes after its transactions")
    return hash_bytes(Domain.HEADER, encoded_block[1:header_end])


def _array_length(data: bytes, at: int) -> int:
    """The item count of the msgpack array whose header starts at ``data[at]``."""
    first = data[at : at + 1]
    if first and 0x90 <= first[0] <= 0x9F:
        return first[0] & 0x0F
    if first == b"\xdc" and len(data) >= at + 3:
        return int.from_bytes(data[at + 1 : at + 3], "big")
    if first == b"\xdd" and len(data) >= at + 5:
        return int.from_bytes(data[at + 1 : at + 5], "big")
    raise DecodeError("not a block: no array of transactions after its header")
