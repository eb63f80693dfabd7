"""The OpenAPI 3.1 document of the node's HTTP API, served at ``GET /v1/openapi.json``.

``build_openapi()`` describes every route ``node.api.create_app`` mounts: the core
routes (``node/api.py``), the commerce reads and feeds (``apps/commerce/http.py``)
and the staking reads (``node/staking_api.py``). Every refusal is the shared
``Error`` schema ``{"code", "message"}``; each error response lists the stable
codes that route answers in its text and, machine-readable, in ``x-codes``.

The schemas of the commerce views and state objects are derived from their
dataclasses (``apps.commerce.views``, ``apps.commerce.model``), so a field added
there appears here; the other answers are written out by hand.
``tests/node/test_openapi.py`` checks the document against the OpenAPI 3.1
schema, that every route of the router is in it (an undocumented route fails),
and real answers of a node against the schemas.

WebSocket feeds have no OpenAPI form: they are described as GETs carrying
``Upgrade: websocket`` and answered by 101, their messages in the text and, as
schemas, under the operation's ``x-websocket``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from enum import Enum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated, Any

from aiohttp import web

from apps.commerce import feed, views
from apps.commerce.codes import ERROR_CODES as COMMERCE_CODES
from apps.commerce.events import FEED_KINDS
from apps.commerce.http import KEY_HEADER, READ_WINDOW_MS, SIGNATURE_HEADER, TIME_HEADER
from apps.commerce.model import (
    DealCloseReason,
    DealStatus,
    Disclosure,
    ItemStatus,
    ListingStatus,
    MerchantStatus,
    OrderState,
    ProvenanceEvent,
    Review,
    Role,
    SessionStatus,
)
from apps.commerce.params import CommerceGenesis
from core.codec import Len, MaxItems, MaxLen
from node.config import NodeConfig
from storage import MAX_KEY_SIZE
from vm import ChainParams

OPENAPI_PATH = "/v1/openapi.json"

# --- stable codes ---

# Codes of refused requests (the HTTP status is in the text).
HTTP_CODES: dict[str, str] = {
    "malformed": "400: the body is not JSON, has the wrong shape, is not hex or msgpack, "
    "or a transaction is not a canonical encoding",
    "too_large": "400: the body is over the node's `max_request_bytes`, a batch over its "
    "cap, or a transaction over `max_tx_bytes`",
    "bad_hash": "400: a hash that is not 64 hex characters",
    "bad_height": "400: a height that is neither a number nor `latest`",
    "bad_address": "400: not a bech32m `ll1…` address",
    "bad_key": f"400: a state key that is not 1..{MAX_KEY_SIZE} bytes of hex",
    "bad_param": "400: a query or path parameter out of its range",
    "invalid_gtin": "400: not 14 digits with a valid GS1 check digit",
    "invalid_serial": "400: a serial that is not 1..20 characters",
    "replay_too_long": "400: a feed resumed from too far back; read a snapshot and resume from "
    "its height",
    "unauthenticated": "401: a signed read without its signature headers",
    "bad_signature": "401: a signed read whose key or signature is malformed or does not "
    "verify (400 for a transaction whose signature does not verify)",
    "stale_request": f"401: a signed read more than {READ_WINDOW_MS} ms from the server's clock",
    "forbidden": "403: the signer may not see this order",
    "private_state": "403: a state key of order data private to its parties (prefixes 0x29, "
    "0x2A-0x2D), refused by the generic state route whether it exists or not",
    "not_found": "404: no such route, object or transaction at the height read",
    "commerce_disabled": "404: the chain's genesis has no commerce section",
    "staking_disabled": "404: the chain's genesis has no staking section",
    "method_not_allowed": "405: the route exists for another method",
    "internal": "500: a bug in the node (logged)",
    "unavailable": "503: the node is starting or stopping, or no block is final yet "
    "(with `Retry-After`)",
    "http_error": "any other HTTP error, e.g. a plain GET on a WebSocket route",
}

# Refusals of a submitted transaction (it never enters the mempool nor a block).
TX_REFUSAL_CODES: dict[str, str] = {
    "malformed": "not the canonical encoding of a SignedTx, its body or its type's payload",
    "too_large": "encoded transaction over `max_tx_bytes`",
    "wrong_chain": "signed for another chain id",
    "bad_signature": "the signature does not verify",
    "unknown_type": "no handler registered for the body's type",
    "expired": "`expiry_height` below the next height or too far past it",
    "fee_too_low": "fee below `min_fee`",
    "nonce_too_low": "nonce already used (a replay)",
    "nonce_gap": "nonce too far above the account's next nonce (beyond the mempool's window)",
    "insufficient_fee": "balance below the fee, with the fees already queued",
    "duplicate": "already known, or its (sender, nonce) is queued without a large enough fee bump",
    "mempool_full": "the mempool is full: 503 with `Retry-After` (seconds) for a single "
    "transaction; in a batch, that item's code, and the answer carries `Retry-After`",
    "account_queue_full": "the sender has the most pending transactions a node queues",
}

# Execution results in receipts, besides the commerce codes (apps.commerce.codes).
VM_CODES: dict[str, str] = {
    "ok": "executed",
    "insufficient_funds": "balance after the fee below the amount",
    "invalid_amount": "an amount of 0 (or over what is held)",
    "module_account": "a payment to a module account (a staking pool)",
    "state_limit": "a write no node could store: a record over its bounds, an amount beyond u64",
    "u64_overflow": "a running total or amount would pass 2**64-1",
    "tx_failed": "a handler's failure without a code of its own",
}

# Execution failures of the staking and governance transactions (docs/staking.md).
STAKING_CODES: dict[str, str] = {
    "staking_disabled": "genesis has no staking section",
    "not_member": "the sender's node key is not a consortium member",
    "already_candidate": "the node key is already a candidate",
    "too_many_candidates": "the candidate list is full",
    "insufficient_bond": "unbonding more than is bonded",
    "too_many_unbonding": "the staker has the most pending unbonding entries",
    "release_queue_full": "too many releases due at that height",
    "invalid_votes": "a ballot not in strictly ascending order",
    "too_many_votes": "a ballot over `max_votes`",
    "unknown_candidate": "a ballot names a key that is not a candidate",
    "no_stake": "a non-empty ballot without a bond",
    "not_candidate": "unjail from a key that is not a candidate",
    "not_jailed": "unjail of a candidate that is not jailed",
    "still_jailed": "unjail before `jailed_until`",
    "invalid_evidence": "two votes that are not a double signature",
    "future_evidence": "evidence for a height not below the including block",
    "evidence_too_old": "evidence older than `max_evidence_age_blocks`",
    "duplicate_evidence": "the offence was already punished",
    "not_a_producer": "the signer was not a producer at that height",
    "bad_evidence_signature": "a vote's signature does not verify for this chain",
    "invalid_name": "a member name that is blank or too long",
    "already_member": "the key is already a member",
    "too_many_members": "the member list is full",
    "unknown_member": "the key is not a member",
    "last_member": "the last member cannot be removed",
    "param_not_governable": "the parameter may not be changed by governance",
    "invalid_param": "the new value is out of the parameter's range",
    "too_many_pending": "too many parameter changes are pending",
    "too_many_proposals": "the member has the most open proposals",
    "unknown_proposal": "no such proposal",
    "proposal_closed": "the proposal already passed",
    "proposal_expired": "the proposal's voting period is over",
    "not_producer": "the voter is not an active producer",
    "already_voted": "the producer already approved the proposal",
}


def _code_table(codes: dict[str, str]) -> str:
    rows = "\n".join(f"| `{code}` | {meaning} |" for code, meaning in codes.items())
    return f"| code | meaning |\n|---|---|\n{rows}"


# --- schema helpers ---

_HEX_CHARS = "[0-9a-f]"
_BECH32_CHARS = "[qpzry9x8gf2tvdw0s3jn54khce6mua7l]"
_UINT: dict[str, Any] = {"type": "integer", "minimum": 0}
_STR: dict[str, Any] = {"type": "string"}
_BOOL: dict[str, Any] = {"type": "boolean"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _hex(size: int) -> dict[str, Any]:
    """Exactly ``size`` bytes as lowercase hex."""
    return {"type": "string", "pattern": f"^{_HEX_CHARS}{{{2 * size}}}$"}


def _with(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


def _object(
    properties: dict[str, dict[str, Any]],
    *,
    optional: tuple[str, ...] = (),
    description: str | None = None,
) -> dict[str, Any]:
    """An object whose properties are all present, except those named ``optional``."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }
    if description is not None:
        out["description"] = description
    return out


HASH = _with(_hex(32), "32-byte hash, hex")
PUBLIC_KEY = _with(_hex(32), "Ed25519 public key, hex")
HEIGHT = _with(_UINT, "final height this answer is read at")

# Plain ``bytes`` fields of the views that always hold an address: ``jsonable``
# writes 20-byte values as ``ll1…`` addresses and every other byte string as hex.
_VIEW_ADDRESS_FIELDS = frozenset(
    {
        "address",
        "merchant",
        "buyer",
        "host",
        "maker",
        "custodian",
        "pending_to",
        "opened_by",
        "ruled_by",
    }
)


def _names(enum: type[Enum]) -> list[str]:
    return [member.name.lower() for member in enum]


# String fields of the views that hold an enum's name, lowercased.
_VIEW_ENUMS: dict[tuple[type, str], list[str]] = {
    (views.MerchantView, "status"): _names(MerchantStatus),
    (views.ListingView, "status"): _names(ListingStatus),
    (views.SessionView, "status"): _names(SessionStatus),
    (views.DealView, "status"): _names(DealStatus),
    # Empty while the deal is open.
    (views.DealView, "close_reason"): ["", *_names(DealCloseReason)],
    (views.OrderView, "state"): _names(OrderState),
    (views.ItemView, "status"): _names(ItemStatus),
}


class _Schemas:
    """``components.schemas``, with schemas derived from dataclasses as they are referenced."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self._classes: dict[str, type] = {}

    def add(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        if name in self.schemas:
            raise ValueError(f"schema {name} defined twice")
        self.schemas[name] = schema
        return _ref(name)

    def of(self, cls: type) -> dict[str, Any]:
        """A reference to the schema of dataclass ``cls`` as ``views.jsonable`` writes it."""
        name = cls.__name__
        known = self._classes.get(name)
        if known is None:
            self._classes[name] = cls
            self.schemas[name] = self._dataclass(cls)
        elif known is not cls:
            raise ValueError(f"two classes named {name}: {known!r} and {cls!r}")
        return _ref(name)

    def _dataclass(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)
        properties = {
            f.name: (
                {"type": "string", "enum": _VIEW_ENUMS[cls, f.name]}
                if (cls, f.name) in _VIEW_ENUMS
                else self._field(hints[f.name], f.name)
            )
            for f in fields
        }
        out = _object(properties)
        doc = (cls.__doc__ or "").strip()
        # A dataclass without a docstring gets its signature as one: not a description.
        if doc and not doc.startswith(f"{cls.__name__}("):
            out["description"] = " ".join(doc.split())
        return out

    def _field(self, hint: Any, name: str) -> dict[str, Any]:
        metadata: list[Any] = []
        if typing.get_origin(hint) is Annotated:
            hint, *metadata = typing.get_args(hint)
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"{name}: only X | None unions are described, got {hint}")
            return _nullable(self._field(args[0], name))
        if origin is tuple:
            item, _ellipsis = typing.get_args(hint)
            out = _array(self._field(item, name))
            out.update(("maxItems", m.n) for m in metadata if isinstance(m, MaxItems))
            return out
        if hint is bool:
            return dict(_BOOL)
        if hint is int:
            return dict(_UINT)
        if hint is str:
            # MaxLen counts UTF-8 bytes: a bound on characters too.
            out = dict(_STR)
            out.update(("maxLength", m.n) for m in metadata if isinstance(m, MaxLen))
            return out
        if hint is bytes:
            exact = next((m.n for m in metadata if isinstance(m, Len)), None)
            most = next((m.n for m in metadata if isinstance(m, MaxLen)), None)
            if exact == 20 or (not metadata and name in _VIEW_ADDRESS_FIELDS):
                return _ref("Address")
            if exact is not None:
                return _hex(exact)
            if most is not None:
                return {"type": "string", "pattern": f"^({_HEX_CHARS}{{2}}){{0,{most}}}$"}
            return _ref("Hex")
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.of(hint)
        raise TypeError(f"{name}: no schema for {hint!r}")


# --- responses and parameters ---


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, *codes: str) -> dict[str, Any]:
    listed = ", ".join(f"`{c}`" for c in codes)
    out = _json(f"{description} Codes: {listed}.", _ref("Error"))
    out["x-codes"] = list(codes)
    return out


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _param_ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/parameters/{name}"}


_DEFAULT_ERROR = "DefaultError"
_UNAVAILABLE = "Unavailable"


def _responses(
    ok: dict[str, Any],
    *errors: tuple[int, dict[str, Any]],
    ready: bool = True,
    ok_status: int = 200,
) -> dict[str, Any]:
    """``ok``, the route's errors, 503 while the node starts (if ``ready``), and the rest."""
    out: dict[str, Any] = {str(ok_status): ok}
    for status, response in errors:
        out[str(status)] = response
    if ready:
        out.setdefault("503", {"$ref": f"#/components/responses/{_UNAVAILABLE}"})
    out["default"] = {"$ref": f"#/components/responses/{_DEFAULT_ERROR}"}
    return out


def _op(
    op_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
    }
    if parameters:
        out["parameters"] = parameters
    out["responses"] = responses
    out.update(extra)
    return out


# --- the document ---


def _package_version() -> str:
    try:
        return package_version("liveledger")
    except PackageNotFoundError:
        return "0.0.0"


def _common_schemas(s: _Schemas) -> None:
    s.add(
        "Error",
        {
            "type": "object",
            "description": "Every refusal, whatever the route: a stable `code` that clients "
            "branch on and a `message` for people (it names expected and actual values). "
            "HTTP codes:\n\n"
            + _code_table(HTTP_CODES)
            + "\n\n`POST /v1/txs` answers a refused transaction with its admission code:\n\n"
            + _code_table(TX_REFUSAL_CODES),
            "properties": {
                "code": _with(_STR, "stable error code"),
                "message": _with(_STR, "what went wrong, for people"),
            },
            "required": ["code", "message"],
            "x-codes": sorted(HTTP_CODES.keys() | TX_REFUSAL_CODES.keys()),
        },
    )
    s.add(
        "Address",
        {
            "type": "string",
            "pattern": f"^ll1{_BECH32_CHARS}{{38}}$",
            "description": "account address: 20 bytes in bech32m with the prefix `ll1`",
            "examples": ["ll1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq6yvv9t"],
        },
    )
    s.add(
        "Hex",
        {
            "type": "string",
            "pattern": f"^({_HEX_CHARS}{{2}})*$",
            "description": "bytes as lowercase hex (empty for none)",
        },
    )
    s.add(
        "ReceiptCode",
        {
            "type": "string",
            "description": "`ok` or the stable code of an execution failure (the transaction "
            "is in its block and paid its fee; nothing else changed). Core:\n\n"
            + _code_table(VM_CODES)
            + "\n\nCommerce (`apps.commerce.codes.ERROR_CODES`):\n\n"
            + _code_table(COMMERCE_CODES)
            + "\n\nStaking and governance:\n\n"
            + _code_table(STAKING_CODES),
            "x-codes": sorted(VM_CODES.keys() | COMMERCE_CODES.keys() | STAKING_CODES.keys()),
        },
    )
    s.add(
        "Event",
        _object(
            {
                "kind": _with(_STR, "e.g. `transfer`, `commerce.order_placed`"),
                "attrs": {
                    "type": "object",
                    "additionalProperties": _STR,
                    "description": "string attributes: integers in decimal, bytes in hex",
                },
            }
        ),
    )
    s.add(
        "Receipt",
        _object(
            {
                "tx_hash": HASH,
                "code": _ref("ReceiptCode"),
                "message": _with(_STR, "empty on success; else names expected and actual values"),
                "fee": _UINT,
                "events": _array(_ref("Event")),
            }
        ),
    )
    s.add(
        "Commit",
        _object(
            {
                "height": _UINT,
                "round": _UINT,
                "block_hash": HASH,
                "signatures": _array(
                    _object({"validator": PUBLIC_KEY, "signature": _with(_hex(64), "Ed25519")})
                ),
                "encoded": _with(_ref("Hex"), "the canonical encoding, for verifying clients"),
            },
            description="commit certificate: more than 2/3 of the producers' precommits",
        ),
    )
    s.add(
        "Header",
        _object(
            {
                "hash": HASH,
                "chain_id": _STR,
                "height": _UINT,
                "round": _UINT,
                "time_ms": _with(_UINT, "block time, unix ms"),
                "prev_hash": HASH,
                "tx_root": HASH,
                "state_root": HASH,
                "receipt_root": HASH,
                "producer": PUBLIC_KEY,
                "producer_set_hash": HASH,
                "last_commit": _nullable(_ref("Commit")),
                "encoded": _with(_ref("Hex"), "the canonical encoding (its hash is `hash`)"),
            }
        ),
    )
    s.add(
        "TxSummary",
        _object(
            {
                "hash": HASH,
                "sender": _ref("Address"),
                "size": _with(_UINT, "encoded bytes"),
                "type": _STR,
                "nonce": _UINT,
                "fee": _UINT,
                "expiry_height": _UINT,
            },
            optional=("type", "nonce", "fee", "expiry_height"),
        ),
    )
    s.add(
        "Block",
        _object(
            {
                "header": _ref("Header"),
                "num_txs": _UINT,
                "commit": _with(
                    _nullable(_ref("Commit")), "this block's certificate (null if not stored)"
                ),
                "txs": _with(_array(_ref("TxSummary")), "without `?txs=false|hashes`"),
                "tx_hashes": _with(_array(HASH), "with `?txs=hashes`"),
            },
            optional=("txs", "tx_hashes"),
        ),
    )


def _node_paths(s: _Schemas, max_batch: int, msgpack_types: tuple[str, ...]) -> dict[str, Any]:
    status = s.add(
        "Status",
        _object(
            {
                "chain_id": _STR,
                "genesis_hash": HASH,
                "moniker": _STR,
                "validator": _with(PUBLIC_KEY, "this node's key"),
                "height": _with(_UINT, "latest final height"),
                "finalized_height": _with(_UINT, "equal to `height`: every block is final"),
                "latest_block_hash": _nullable(HASH),
                "latest_block_time_ms": _nullable(_UINT),
                "round": _with(_UINT, "consensus round at the next height"),
                "producers": _with(_array(PUBLIC_KEY), "the active producer set"),
                "peers": _with(_array(PUBLIC_KEY), "connected member nodes"),
                "mempool_size": _UINT,
            }
        ),
    )
    submit_one = s.add("SubmitResult", _object({"hash": HASH}))
    submit_batch = s.add(
        "SubmitBatchResult",
        _object(
            {
                "accepted": _with(_UINT, "how many were accepted"),
                "results": _with(
                    _array(
                        _object(
                            {
                                "hash": _with(_nullable(HASH), "null if it did not decode"),
                                "code": _with(_STR, "`accepted` or an admission code (`Error`)"),
                                "message": _STR,
                            }
                        )
                    ),
                    "one per transaction, in order",
                ),
            }
        ),
    )
    tx_status = s.add(
        "TxStatus",
        {
            "oneOf": [
                _object(
                    {
                        "hash": HASH,
                        "status": {"const": "committed"},
                        "height": _UINT,
                        "index": _with(_UINT, "position in the block"),
                        "receipt": _nullable(_ref("Receipt")),
                    }
                ),
                _object({"hash": HASH, "status": {"const": "pending"}}),
            ]
        },
    )
    account = s.add(
        "Account",
        _object(
            {
                "address": _ref("Address"),
                "height": HEIGHT,
                "balance": _UINT,
                "nonce": _with(_UINT, "the next nonce the account must use"),
                "state_root": _with(HASH, "with `?proof=true`: the root at `height`"),
                "key": _with(_ref("Hex"), "with `?proof=true`: the state key"),
                "value": _with(_nullable(_ref("Hex")), "with `?proof=true`: null if absent"),
                "proof": _with(_ref("Hex"), "with `?proof=true`: the encoded StateProof"),
            },
            optional=("state_root", "key", "value", "proof"),
        ),
    )
    state_value = s.add(
        "StateValue",
        _object(
            {
                "key": _ref("Hex"),
                "height": _UINT,
                "state_root": _with(HASH, "the state root after block `height`"),
                "value": _with(_nullable(_ref("Hex")), "null if the key is absent"),
                "proof": _with(_ref("Hex"), "the encoded StateProof (of absence too)"),
            }
        ),
    )
    genesis = s.add(
        "GenesisDocument",
        _object(
            {
                "chain_id": _STR,
                "genesis_time_ms": _UINT,
                "params": s.of(ChainParams),
                "accounts": _array(_object({"address": _ref("Address"), "balance": _UINT})),
                "validators": _array(
                    _object({"name": _STR, "public_key": PUBLIC_KEY, "power": _UINT})
                ),
                "staking": _object({"self_bond": _UINT}),
                "commerce": s.of(CommerceGenesis),
            },
            optional=("staking", "commerce"),
            description="`genesis.json` as the node holds it",
        ),
    )
    hash_param = _path("hash", _hex(32), "transaction hash, hex")
    retry_after = {
        "description": "seconds to wait before submitting again (on 503, and on a batch's "
        "200 when some items were refused as `mempool_full`)",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
    bad_tx_codes = tuple(TX_REFUSAL_CODES)
    tx_schema = _with(_ref("Hex"), "an encoded SignedTx, hex")
    msgpack_body = {
        "schema": {
            "type": "string",
            "contentMediaType": "application/msgpack",
            "description": "a msgpack array of bin items, each an encoded SignedTx; always a batch",
        }
    }
    return {
        "/v1/status": {
            "get": _op(
                "getStatus",
                "node",
                "Node and chain status",
                "Chain id, heights, the latest block, the producers, peers and mempool size.",
                _responses(_json("Status.", status)),
            )
        },
        "/v1/txs": {
            "post": _op(
                "submitTxs",
                "node",
                "Submit transactions",
                'JSON `{"tx": "<hex>"}` submits one transaction and answers `{"hash"}`, or 400 '
                'with its admission code. JSON `{"txs": ["<hex>", ...]}` or a msgpack array '
                f"of encoded transactions (`Content-Type: {msgpack_types[0]}`; also "
                f"{', '.join(f'`{t}`' for t in msgpack_types[1:])}) is a batch of at most "
                f"{max_batch:,}: it answers 200 with one result per transaction. An accepted "
                "transaction is in the mempool and gossiped to the producers; read its fate "
                "with `GET /v1/txs/{hash}`. A batch's length is checked from the msgpack "
                "array header (or the JSON body's separators) before anything is unpacked. "
                "A full mempool is not the transaction's fault: a single transaction is "
                "answered 503 `mempool_full` with `Retry-After`; a batch keeps its 200 with "
                "`mempool_full` on the items refused and `Retry-After` on the answer.",
                _responses(
                    {
                        **_json(
                            "One transaction accepted, or a batch's results.",
                            {"oneOf": [submit_one, submit_batch]},
                        ),
                        "headers": {"Retry-After": retry_after},
                    },
                    (
                        400,
                        _error(
                            "Bad input (a body over the node's `max_request_bytes`, "
                            f"{NodeConfig().max_request_bytes // 2**20} MiB by default, is "
                            f"`too_large`), an empty batch, more than {max_batch:,} "
                            "transactions, or a single transaction refused.",
                            *(c for c in bad_tx_codes if c != "mempool_full"),
                        ),
                    ),
                    (
                        503,
                        {
                            **_error(
                                "The mempool is full (a single transaction): submit the same "
                                "bytes again after `Retry-After` seconds; or the node is "
                                "starting or stopping.",
                                "mempool_full",
                                "unavailable",
                            ),
                            "headers": {"Retry-After": retry_after},
                        },
                    ),
                ),
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "properties": {"tx": tx_schema},
                                        "required": ["tx"],
                                        "additionalProperties": False,
                                    },
                                    {
                                        "type": "object",
                                        "properties": {
                                            "txs": {
                                                **_array(tx_schema),
                                                "minItems": 1,
                                                "maxItems": max_batch,
                                            }
                                        },
                                        "required": ["txs"],
                                        "additionalProperties": False,
                                    },
                                ]
                            }
                        },
                        **{t: msgpack_body for t in msgpack_types},
                    },
                },
            )
        },
        "/v1/txs/{hash}": {
            "get": _op(
                "getTx",
                "node",
                "A transaction's status",
                "`committed` with its height, index and receipt, or `pending` while it is in "
                "this node's mempool.",
                _responses(
                    _json("Committed or pending.", tx_status),
                    (400, _error("Not a hash.", "bad_hash")),
                    (404, _error("Neither pending nor committed.", "not_found")),
                ),
                [hash_param],
            )
        },
        "/v1/blocks/{height}": {
            "get": _op(
                "getBlock",
                "node",
                "A finalized block",
                "Header, commit certificate and transactions of the block at `height` (or the "
                "latest). `?txs=false` leaves the transactions out without decoding them; "
                "`?txs=hashes` lists their hashes only.",
                _responses(
                    _json("The block.", _ref("Block")),
                    (400, _error("Not a height.", "bad_height")),
                    (404, _error("No block at that height.", "not_found")),
                ),
                [
                    _path(
                        "height",
                        {"type": "string", "pattern": "^([0-9]{1,19}|latest)$"},
                        "a height, or `latest`",
                    ),
                    _query(
                        "txs",
                        {"type": "string", "enum": ["true", "false", "hashes"], "default": "true"},
                        "`true`: transaction summaries; `false` (also `0`, `no`): none; "
                        "`hashes`: their hashes",
                    ),
                ],
            )
        },
        "/v1/accounts/{address}": {
            "get": _op(
                "getAccount",
                "node",
                "An account's balance and nonce",
                "With `?proof=true`, a state proof of the account at `height` against that "
                "height's state root: check the root against the header (`GET "
                "/v1/blocks/{height}`) and its commit against the genesis producers.",
                _responses(
                    _json("The account (zero balance and nonce if absent).", account),
                    (400, _error("Not an address.", "bad_address")),
                ),
                [
                    _path("address", _ref("Address"), "account address"),
                    _query(
                        "proof",
                        {"type": "string", "enum": ["true", "false"], "default": "false"},
                        "`true` (also `1`, `yes`) adds the state proof",
                    ),
                ],
            )
        },
        "/v1/state/{key}": {
            "get": _op(
                "getState",
                "node",
                "Any state key with its proof",
                "The value of any public state key (or its absence) at `height` (default: the "
                "head), with a state proof against that height's state root: check the root "
                "against the header (`GET /v1/blocks/{height}`) and its commit against the "
                "producers. Order data is private to its parties and refused here (403 "
                "`private_state`, by prefix), so a `null` value is always a true absence.",
                _responses(
                    _json("The value and its proof.", state_value),
                    (400, _error("Not a key or not a height.", "bad_key", "bad_height")),
                    (
                        403,
                        _error(
                            "A key of order data private to its parties (prefixes 0x29 deal "
                            "buyer counts, 0x2A orders, 0x2B party indexes, 0x2C disputes, "
                            "0x2D disclosures), whether it exists or not; the parties read "
                            "orders with the signed order routes.",
                            "private_state",
                        ),
                    ),
                    (404, _error("A height above the head.", "not_found")),
                ),
                [
                    _path(
                        "key",
                        {
                            "type": "string",
                            "pattern": f"^({_HEX_CHARS}{{2}}){{1,{MAX_KEY_SIZE}}}$",
                        },
                        "state key, hex (a `KeyPrefix` byte, then the key)",
                    ),
                    _query(
                        "height",
                        {"type": "integer", "minimum": 0, "maximum": 10**19 - 1},
                        "height to read at (default: the head)",
                    ),
                ],
            )
        },
        "/v1/genesis": {
            "get": _op(
                "getGenesis",
                "node",
                "The genesis document and its hash",
                "What a client needs to verify the chain offline.",
                _responses(
                    _json("The genesis document.", _object({"hash": HASH, "genesis": genesis})),
                    ready=False,
                ),
            )
        },
        "/metrics": {
            "get": _op(
                "getMetrics",
                "node",
                "Prometheus metrics",
                "The node's metrics in the Prometheus text format.",
                _responses(
                    {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": _STR}},
                    },
                    ready=False,
                ),
            )
        },
        OPENAPI_PATH: {
            "get": _op(
                "getOpenapi",
                "node",
                "This document",
                "The OpenAPI 3.1 document of every route.",
                _responses(_json("The document.", {"type": "object"}), ready=False),
            )
        },
    }


def _commerce_components(s: _Schemas) -> dict[str, Any]:
    """Commerce answers' schemas, and the signed-read header parameters."""
    for cls in (
        views.ListingView,
        views.MerchantView,
        views.SessionView,
        views.DealView,
        views.OrderView,
        views.ItemView,
        Review,
        ProvenanceEvent,
        Disclosure,
        CommerceGenesis,
    ):
        s.of(cls)
    s.add(
        "Escrow",
        _object({"held": _UINT, "open_orders": _UINT}, description="tokens held for open orders"),
    )
    s.add(
        "ItemProof",
        _object(
            {
                "height": _UINT,
                "state_root": HASH,
                "header": _with(_nullable(_ref("Hex")), "the encoded BlockHeader at `height`"),
                "commit": _with(_nullable(_ref("Hex")), "its encoded commit certificate"),
                "entries": _array(
                    _object(
                        {
                            "key": _ref("Hex"),
                            "value": _nullable(_ref("Hex")),
                            "proof": _with(_ref("Hex"), "encoded StateProof"),
                        }
                    )
                ),
            },
            description="The item record, then each provenance event, each with its state "
            "proof at `height`; check with `apps.commerce.http.verify_item_proof`.",
        ),
    )
    s.add(
        "FeedEvent",
        _object(
            {
                "type": {"const": "event"},
                "height": _UINT,
                "index": _with(_UINT, "position of the event in its block (all events counted)"),
                "time_ms": _with(_UINT, "block time"),
                "session": _UINT,
                "kind": {"type": "string", "enum": sorted(FEED_KINDS)},
                "attrs": {"type": "object", "additionalProperties": _STR},
            },
            description="A session's feed event; `(height, index)` is its position.",
        ),
    )
    s.add(
        "FeedBlock",
        _object(
            {
                "type": {"const": "block"},
                "height": _UINT,
                "hash": HASH,
                "time_ms": _UINT,
                "num_txs": _UINT,
            },
            description="One finalized block.",
        ),
    )
    s.add(
        "FeedReady",
        _object(
            {"type": {"const": "ready"}, "height": _UINT},
            description="End of the replay: events up to `height` came from storage, later "
            "ones are live.",
        ),
    )
    signing = (
        f"Order reads are signed by the viewer's Ed25519 account key: `{KEY_HEADER}`, "
        f"`{TIME_HEADER}` and `{SIGNATURE_HEADER}` carry the public key, the time (unix ms) "
        "and the signature over `0xF0 || len(chain_id) || chain_id || msgpack([method, "
        "path_with_query, time_ms])` (`apps.commerce.http.sign_read_request`). A time more "
        f"than {READ_WINDOW_MS // 1000} s from the server's clock is refused."
    )
    return {
        "ReadKey": {
            "name": KEY_HEADER,
            "in": "header",
            "required": True,
            "description": f"The viewer's Ed25519 public key, hex. {signing}",
            "schema": _hex(32),
        },
        "ReadTime": {
            "name": TIME_HEADER,
            "in": "header",
            "required": True,
            "description": "The time of the request, unix ms (decimal).",
            "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"},
        },
        "ReadSignature": {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": True,
            "description": "The Ed25519 signature of the read, hex.",
            "schema": _hex(64),
        },
    }


def _commerce_paths(s: _Schemas) -> dict[str, Any]:
    max_id = 2**64 - 1
    id_schema = {"type": "integer", "minimum": 1, "maximum": max_id}
    limit = _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": views.MAX_PAGE, "default": 50},
        "page size",
    )
    before = _query(
        "before",
        {"type": "integer", "minimum": 0, "maximum": max_id, "default": 0},
        "page on from the previous page's `next_before` (0: newest)",
    )
    address = _path("address", _ref("Address"), "account address")
    bad_param = (400, _error("A parameter out of range.", "bad_param"))
    bad_address = (400, _error("A bad address.", "bad_address"))
    signed = [_param_ref("ReadKey"), _param_ref("ReadTime"), _param_ref("ReadSignature")]
    refused = (
        401,
        _error(
            "The signed read is refused: headers missing, signature malformed or not "
            f"verifying, or a time more than {READ_WINDOW_MS // 1000} s off.",
            "unauthenticated",
            "bad_signature",
            "stale_request",
        ),
    )
    not_found = (404, _error("No such object at the height read.", "not_found"))
    unavailable = (
        503,
        _error("The node is starting or stopping, or no block is final yet.", "unavailable"),
    )

    def doc(**fields: dict[str, Any]) -> dict[str, Any]:
        return _object({"height": HEIGHT, **fields})

    reviews = _json(
        "Reviews, newest first.",
        doc(
            reviews=_array(s.of(Review)),
            next_before=_with(_nullable(_UINT), "`before` of the next page; null at the end"),
        ),
    )
    from_param = _query(
        "from",
        {"type": "string", "pattern": "^[0-9]{1,19}(:[0-9]{1,19})?$"},
        "resume after `<height>:<index>` (a position), or after the whole block `<height>` "
        "(a snapshot's height); without it the feed starts with the next final block",
    )
    upgrade = {
        "name": "Upgrade",
        "in": "header",
        "required": True,
        "description": "WebSocket handshake (with `Connection: Upgrade` and the "
        "`Sec-WebSocket-*` headers a client library sends)",
        "schema": {"const": "websocket"},
    }
    defaults = feed.FeedLimits()
    feed_rules = (
        f"Replay of the stored blocks after `from` (at most {defaults.max_replay_blocks:,} "
        'blocks back by default) ends with `{"type": "ready", "height": H}`; live messages '
        "follow as each block becomes final. A client keeps the position of the last message "
        "it handled and reconnects with it: nothing missed, nothing twice. Close codes: "
        "**1000** after `commerce.session_closed` (session feed), **1001** when the server "
        f"stops, **{feed.CLOSE_SLOW_CONSUMER}** when a client's unsent messages pass "
        f"{feed.MAX_QUEUE_BYTES // 2**20} MiB (resume from the last position), "
        f"**{feed.CLOSE_TRY_AGAIN_LATER}** at once when the node already serves "
        f"{defaults.max_connections:,} feed sockets or the client's address "
        f"{defaults.max_per_address} (node config `feeds`; reconnect later), "
        f"**{feed.CLOSE_POLICY_VIOLATION}** when a client sends more than "
        f"{defaults.max_client_messages_per_s} messages a second. At most "
        f"{feed.REPLAY_SLOTS} replays run at once; a later one waits its turn. The server "
        f"pings every {feed.HEARTBEAT_S:g} s; client messages are ignored."
    )
    close_codes = {
        "1000": "the session closed (session feed)",
        "1001": "the server is stopping",
        str(feed.CLOSE_SLOW_CONSUMER): "the client read too slowly; resume from its position",
        str(feed.CLOSE_TRY_AGAIN_LATER): "too many feed connections on the node or from the "
        "client's address; reconnect later",
        str(feed.CLOSE_POLICY_VIOLATION): "the client sent messages too fast",
    }
    switching = {"description": "Switching Protocols: the feed's messages follow."}
    feed_refused = (
        400,
        _error(
            "A bad `from` or id, a resume from too far back, or not a WebSocket handshake.",
            "bad_param",
            "replay_too_long",
            "http_error",
        ),
    )
    return {
        "/v1/commerce": {
            "get": _op(
                "getCommerceConfig",
                "commerce",
                "Commerce configuration and escrow",
                "The genesis commerce section (registrars, treasury, parameters), the escrow "
                "held for open orders and the number of orders.",
                _responses(
                    _json(
                        "Configuration.",
                        doc(
                            config=s.of(CommerceGenesis),
                            escrow=_ref("Escrow"),
                            orders=_with(_UINT, "orders placed so far"),
                        ),
                    ),
                    (404, _error("No commerce section in genesis.", "commerce_disabled")),
                    unavailable,
                ),
            )
        },
        "/v1/listings": {
            "get": _op(
                "listListings",
                "commerce",
                "Listings by id",
                "A page of listings from id `start` (ids are dense, 1..count).",
                _responses(
                    _json(
                        "A page.",
                        doc(
                            listings=_array(s.of(views.ListingView)),
                            next_start=_with(_nullable(_UINT), "`start` of the next page"),
                        ),
                    ),
                    bad_param,
                    unavailable,
                ),
                [
                    _query(
                        "start",
                        {"type": "integer", "minimum": 1, "maximum": max_id, "default": 1},
                        "first listing id",
                    ),
                    limit,
                ],
            )
        },
        "/v1/listings/{id}": {
            "get": _op(
                "getListing",
                "commerce",
                "A listing",
                "Terms of the current version, stock (`total`, `available`, `reserved`, "
                "`sold`) and rating.",
                _responses(
                    _json("The listing.", doc(listing=s.of(views.ListingView))),
                    bad_param,
                    not_found,
                    unavailable,
                ),
                [_path("id", id_schema, "listing id")],
            )
        },
        "/v1/listings/{id}/reviews": {
            "get": _op(
                "listListingReviews",
                "commerce",
                "A listing's reviews",
                "Newest first; page on with `before=next_before`.",
                _responses(reviews, bad_param, unavailable),
                [_path("id", id_schema, "listing id"), before, limit],
            )
        },
        "/v1/merchants/{address}": {
            "get": _op(
                "getMerchant",
                "commerce",
                "A merchant",
                "Profile, status, encryption key (buyers seal addresses to it) and rating.",
                _responses(
                    _json("The merchant.", doc(merchant=s.of(views.MerchantView))),
                    bad_address,
                    not_found,
                    unavailable,
                ),
                [address],
            )
        },
        "/v1/merchants/{address}/reviews": {
            "get": _op(
                "listMerchantReviews",
                "commerce",
                "A merchant's reviews",
                "Newest first; page on with `before=next_before`.",
                _responses(
                    reviews,
                    (400, _error("A bad address or parameter.", "bad_address", "bad_param")),
                    unavailable,
                ),
                [address, before, limit],
            )
        },
        "/v1/roles/{address}": {
            "get": _op(
                "getRoles",
                "commerce",
                "An account's commerce roles",
                "Role names, the role bit mask and the X25519 key of an auditor.",
                _responses(
                    _json(
                        "The roles (none: an empty list and mask 0).",
                        doc(
                            address=_with(_STR, "as given"),
                            roles=_array({"type": "string", "enum": _names(Role)}),
                            mask=_UINT,
                            enc_key=_ref("Hex"),
                        ),
                    ),
                    bad_address,
                    unavailable,
                ),
                [address],
            )
        },
        "/v1/sessions/{id}": {
            "get": _op(
                "getSession",
                "commerce",
                "A live session",
                "Pinned active listings and open deals with the stock they have left and "
                "whether they are live, judged at the block time `time_ms` of `height`.",
                _responses(
                    _json(
                        "The session.",
                        doc(time_ms=_nullable(_UINT), session=s.of(views.SessionView)),
                    ),
                    bad_param,
                    not_found,
                    unavailable,
                ),
                [_path("id", id_schema, "session id")],
            )
        },
        "/v1/deals/{id}": {
            "get": _op(
                "getDeal",
                "commerce",
                "A flash deal",
                "Price, allocation, sold, left, per-buyer cap and window, live at `time_ms`.",
                _responses(
                    _json(
                        "The deal.",
                        doc(time_ms=_nullable(_UINT), deal=s.of(views.DealView)),
                    ),
                    bad_param,
                    not_found,
                    unavailable,
                ),
                [_path("id", id_schema, "deal id")],
            )
        },
        "/v1/orders": {
            "get": _op(
                "listOrders",
                "commerce",
                "The signer's own orders (signed read)",
                "The signer's orders as buyer (default) or merchant, newest first, as the "
                "signer may see them.",
                _responses(
                    _json(
                        "A page.",
                        doc(
                            role={"type": "string", "enum": ["buyer", "merchant"]},
                            total=_with(_UINT, "the signer's orders in that role"),
                            orders=_array(s.of(views.OrderView)),
                            next_before=_with(_nullable(_UINT), "`before` of the next page"),
                        ),
                    ),
                    bad_param,
                    refused,
                    unavailable,
                ),
                [
                    _query(
                        "role",
                        {"type": "string", "enum": ["buyer", "merchant"], "default": "buyer"},
                        "the signer's side of the orders",
                    ),
                    before,
                    limit,
                    *signed,
                ],
            )
        },
        "/v1/orders/{id}": {
            "get": _op(
                "getOrder",
                "commerce",
                "An order (signed read)",
                "Buyer and merchant see everything, including the sealed address (ciphertext "
                "only); host, registrars and (once disputed) arbiters see the order without "
                "it; an auditor sees the disclosures sealed to it; anyone else gets 403.",
                _responses(
                    _json("The order as the signer may see it.", doc(order=s.of(views.OrderView))),
                    bad_param,
                    refused,
                    (403, _error("Not the signer's order to see.", "forbidden")),
                    not_found,
                    unavailable,
                ),
                [_path("id", id_schema, "order id"), *signed],
            )
        },
        "/v1/items/01/{gtin}/21/{serial}": {
            "get": _op(
                "getItem",
                "commerce",
                "An item's provenance with a state proof",
                "The path is GS1 Digital Link's (`/01/<gtin>/21/<serial>`). The answer holds "
                "the item with its full EPCIS-shaped history and a proof bundle: with the "
                "genesis document a client verifies it offline (the commit finalizes the "
                "header, whose state root proves every entry).",
                _responses(
                    _json(
                        "The item and its proof.",
                        doc(item=s.of(views.ItemView), proof=_ref("ItemProof")),
                    ),
                    (400, _error("A bad GTIN or serial.", "invalid_gtin", "invalid_serial")),
                    not_found,
                    unavailable,
                ),
                [
                    _path("gtin", {"type": "string", "pattern": "^[0-9]{14}$"}, "GTIN-14"),
                    _path(
                        "serial",
                        {"type": "string", "minLength": 1, "maxLength": 20},
                        "serial number",
                    ),
                ],
            )
        },
        "/v1/sessions/{id}/events": {
            "get": _op(
                "sessionEvents",
                "feeds",
                "A live session's feed (WebSocket)",
                "WebSocket (`GET` with `Upgrade: websocket`, answered by 101). Sends the "
                "session's feed events (pins, deals opened and closed, stock left after each "
                "order, orders without buyer, tips, session closed), each once its block is "
                "final, in block order, as JSON text messages:\n\n"
                '`{"type": "event", "height": 812, "index": 3, "time_ms": 1767000000000, '
                '"session": 1, "kind": "commerce.stock_left", "attrs": {"session": "1", '
                '"listing": "1", "deal": "1", "left": "41"}}`\n\n'
                "`(height, index)` is the event's position: `index` counts every event of the "
                "block (begin-block events first, then each receipt's), so a feed's indexes "
                f"have gaps; positions strictly increase. {feed_rules}",
                _responses(
                    switching,
                    feed_refused,
                    (404, _error("No such session.", "not_found")),
                    ok_status=101,
                ),
                [_path("id", id_schema, "session id"), from_param, upgrade],
                **{
                    "x-websocket": {
                        "messages": {
                            "oneOf": [
                                _ref("FeedEvent"),
                                _ref("FeedReady"),
                            ]
                        },
                        "close-codes": close_codes,
                    }
                },
            )
        },
        "/v1/blocks/ws": {
            "get": _op(
                "blocksFeed",
                "feeds",
                "Finalized blocks (WebSocket)",
                "WebSocket (`GET` with `Upgrade: websocket`, answered by 101). One JSON text "
                'message per finalized block: `{"type": "block", "height", "hash", "time_ms", '
                f'"num_txs"}}`. `?from=<height>` resumes after that block. {feed_rules}',
                _responses(switching, feed_refused, ok_status=101),
                [from_param, upgrade],
                **{
                    "x-websocket": {
                        "messages": {"oneOf": [_ref("FeedBlock"), _ref("FeedReady")]},
                        "close-codes": {k: v for k, v in close_codes.items() if k != "1000"},
                    }
                },
            )
        },
    }


def _staking_paths(s: _Schemas) -> dict[str, Any]:
    producer_set = s.add(
        "ProducerSet",
        _object(
            {
                "epoch": _UINT,
                "elected_height": _UINT,
                "producers": _with(_array(PUBLIC_KEY), "sorted node keys"),
                "weights": _with(_array(_UINT), "vote weights, aligned with `producers`"),
            }
        ),
    )
    candidate = s.add(
        "Candidate",
        _object(
            {
                "public_key": PUBLIC_KEY,
                "member": _with(_nullable(_STR), "member name; null once removed"),
                "registered_height": _UINT,
                "weight": _with(_UINT, "bonded stake of the ballots that approve it"),
                "self_bond": _UINT,
                "jailed": _BOOL,
                "jailed_until": _UINT,
                "missed_epoch": _UINT,
                "missed": _with(_UINT, "missed commit signatures in `missed_epoch`"),
            }
        ),
    )
    disabled = (404, _error("No staking section in genesis.", "staking_disabled"))
    # These routes raise aiohttp's 503, which the middleware answers as "unavailable".
    unavailable = (503, _error("The node is starting or stopping.", "unavailable"))
    return {
        "/v1/staking/candidates": {
            "get": _op(
                "getStakingCandidates",
                "staking",
                "Candidates and stake totals",
                "Each candidate's weight, self-bond, jail state and missed slots, and the "
                "bonded, unbonding and slashed totals, from the latest committed state.",
                _responses(
                    _json(
                        "Candidates.",
                        _object(
                            {
                                "height": _with(_UINT, "head height (read first)"),
                                "candidates": _array(candidate),
                                "totals": _object(
                                    {"bonded": _UINT, "unbonding": _UINT, "slashed": _UINT}
                                ),
                            }
                        ),
                    ),
                    disabled,
                    unavailable,
                ),
            )
        },
        "/v1/staking/producers": {
            "get": _op(
                "getStakingProducers",
                "staking",
                "Producer sets",
                "The producer set of the next block's epoch and, once elected, of the "
                "following one.",
                _responses(
                    _json(
                        "Producer sets.",
                        _object(
                            {
                                "height": _with(_UINT, "head height"),
                                "epoch": _with(_UINT, "epoch of the next block"),
                                "epoch_length": _UINT,
                                "max_producers": _UINT,
                                "current": _nullable(producer_set),
                                "next": _with(_nullable(producer_set), "null until elected"),
                            }
                        ),
                    ),
                    disabled,
                    unavailable,
                ),
            )
        },
    }


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``node.api.create_app`` (a fresh dict)."""
    # node.api mounts this module's route, so it is imported here, not at the top.
    from node.api import MAX_BATCH, MSGPACK_TYPES

    s = _Schemas()
    _common_schemas(s)
    paths = _node_paths(s, MAX_BATCH, MSGPACK_TYPES)
    read_headers = _commerce_components(s)
    paths.update(_commerce_paths(s))
    paths.update(_staking_paths(s))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LiveLedger node API",
            "version": _package_version(),
            "summary": "A permissioned blockchain for live-stream commerce",
            "description": "Versioned JSON routes under `/v1/`, WebSocket feeds, and "
            'Prometheus metrics at `/metrics`. Every error is JSON `{"code", "message"}` '
            "with a stable `code` (schema `Error`; each error response lists its codes, also "
            "in `x-codes`). Amounts are integers, addresses bech32m `ll1…`, other bytes "
            "lowercase hex. Commerce answers carry `height`: every value in one answer is "
            "read from the state at that final height, and a feed resumed with "
            "`?from=<height>` continues right after it. See docs/node.md and "
            "docs/commerce.md (Interfaces).",
        },
        "tags": [
            {"name": "node", "description": "Chain, transactions, accounts, metrics."},
            {
                "name": "commerce",
                "description": "Reads of the commerce app. Order reads are signed by the viewer.",
            },
            {"name": "feeds", "description": "WebSocket feeds of sessions and blocks."},
            {"name": "staking", "description": "Read-only views of staking state."},
        ],
        "paths": paths,
        "components": {
            "schemas": s.schemas,
            "parameters": read_headers,
            "responses": {
                _UNAVAILABLE: _error("The node is starting or stopping.", "unavailable"),
                _DEFAULT_ERROR: _error(
                    "Any other refusal: an unknown route, a method the route does not take, "
                    "a bug in the node.",
                    "not_found",
                    "method_not_allowed",
                    "internal",
                    "http_error",
                ),
            },
        },
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as served (built once per process)."""
    return json.dumps(build_openapi(), separators=(",", ":")).encode()


async def get_openapi(_request: web.Request) -> web.Response:
    return web.Response(body=openapi_json(), content_type="application/json")


def add_openapi_route(app: web.Application) -> None:
    """Mount ``GET /v1/openapi.json`` (the document is built now, so a broken one fails early)."""
    openapi_json()
    app.router.add_get(OPENAPI_PATH, get_openapi)


__all__ = [
    "HTTP_CODES",
    "OPENAPI_PATH",
    "STAKING_CODES",
    "TX_REFUSAL_CODES",
    "VM_CODES",
    "add_openapi_route",
    "build_openapi",
    "get_openapi",
    "openapi_json",
]
