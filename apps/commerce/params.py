"""Commerce parameters and the commerce section of genesis.

Deadlines, fees, commissions and text limits are chain parameters: every node
must apply the same ones, so they come from genesis (``CommerceGenesis``) and
are written to state at ``COMMERCE_CONFIG`` before block 1. Handlers read them
from state, never from a module constant.

The JSON form (``to_json`` / ``from_json``) mirrors ``genesis.json``'s style:
addresses in bech32m, every parameter by name, nothing missing, nothing unknown.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any

from core.codec import UINT64_MAX, MaxItems, Wire
from core.errors import DecodeError, Invalid, InvalidAddress
from core.keys import format_address, parse_address
from core.types import MAX_TIME_MS, Address

BPS = 10_000
MAX_REGISTRARS = 64

# Hard ceilings of the payload codecs; a parameter may lower a limit, never raise
# it past these (a longer text could not even be decoded).
NAME_CAP = 128
PROFILE_CAP = 1024
TITLE_CAP = 256
DESCRIPTION_CAP = 4096
TEXT_CAP = 2048
SEALED_CAP = 1024
# Tip messages ride in feed events, whose attribute values are at most 256 bytes.
TIP_CAP = 200
# A tx emits at most 64 events: settling an order emits one per item plus two,
# closing a session one per open deal plus one.
MAX_ITEMS_CAP = 32
MAX_PINNED_CAP = 64
MAX_DEALS_CAP = 32
# Deals end within max_deal_ms, at most this many deal-clock buckets ahead: the hook
# that closes ended deals never has more buckets to look at after a pause.
MAX_DEAL_BUCKETS = 4096
# A deal-end bucket is one state value, rewritten by every deal that opens or closes
# in it: at 4096 ids (~20 KiB) the write check costs ~0.5 ms, ~4x a whole order.
MAX_BUCKET_CAP = 4096
# Open deals of one merchant, whatever its number of sessions.
MAX_MERCHANT_DEALS_CAP = 1024
# Open auctions of one session (closing a session waits for them; each is in its view).
MAX_AUCTIONS_CAP = 32
# Open auctions of one merchant, whatever its number of sessions.
MAX_MERCHANT_AUCTIONS_CAP = 1024
# Auctions end within auction_max_lead_ms + auction_max_ms + auction_max_extension_ms of
# starting, at most this many auction-clock buckets ahead (as for deals).
MAX_AUCTION_BUCKETS = 4096
# An auction-end bucket may fill to max_auctions_per_bucket when auctions start; the
# end hook moves an extended auction to the bucket of its new end up to this hard cap.
MAX_AUCTION_BUCKET_CAP = 4096
# Rows of the bid increment table.
MAX_INCREMENT_ROWS = 16
# Upper bound of each begin-block hook's work budget (max_deadlines_per_block,
# max_auction_ends_per_block). After a pause every deadline and auction end of the
# pause is due at once, and each hook spends its whole budget in one block on every
# node. Its events (two per unit, under 300 bytes) go into the block's one BlockEvents,
# which readers decode within 2**20 events and 64 MiB: past those, the feed of every
# session stops at that block for good. At this bound both budgets together, with the
# staking release hook's (100,000), stay within them (~600k events, ~60 MB).
MAX_HOOK_WORK_PER_BLOCK = 100_000
# Disclosures of one order's address (each is a record keyed by a 4-byte seq).
MAX_DISCLOSURES = 64
# Listing versions and provenance events are keyed by a 4-byte seq.
MAX_SEQ = 2**32 - 1

_HOUR = 3_600_000
_DAY = 24 * _HOUR


class InvalidCommerceGenesis(Invalid):
    """A commerce section that no node may start from (genesis wraps it)."""

    code = "invalid_genesis"


@dataclass(frozen=True, slots=True)
class CommerceParams(Wire):
    # Merchant must accept a (non-deal) order within this long, or it is refunded.
    accept_window_ms: int = _DAY
    # An accepted order must be shipped within this long, or it is refunded.
    ship_window_ms: int = 3 * _DAY
    # A shipped order not confirmed (nor disputed) within this long is released.
    confirm_window_ms: int = 7 * _DAY
    # A dispute may be opened for this long after shipping (at most confirm_window_ms).
    dispute_window_ms: int = 7 * _DAY
    # An arbiter must rule within this long, or the dispute escalates to a registrar.
    ruling_window_ms: int = 5 * _DAY
    # The chain's share of every release, in basis points, paid to the treasury.
    fee_bps: int = 100
    # Highest host commission a session may promise, in basis points.
    max_commission_bps: int = 3_000
    # A flash deal must end within this long of being opened.
    max_deal_ms: int = 24 * _HOUR
    # Width of the deal clock's buckets (deal ends are found bucket by bucket).
    deal_bucket_ms: int = 60_000
    max_pinned: int = 16
    max_open_deals: int = 8
    max_order_quantity: int = 100
    # Serialized items a shipment may carry (their custody passes to the buyer).
    max_items_per_order: int = 16
    # Deadline work per block at most (a deadline is one, and one more per item it settles),
    # a quarter per kind first (orders.run_deadlines); the rest carry over to the next block.
    max_deadlines_per_block: int = 10_000
    # Text limits, in UTF-8 bytes.
    name_max_bytes: int = 64
    profile_max_bytes: int = 512
    title_max_bytes: int = 128
    description_max_bytes: int = 2_048
    review_max_bytes: int = 1_024
    reply_max_bytes: int = 1_024
    reason_max_bytes: int = 512
    tip_message_max_bytes: int = 140
    field_max_bytes: int = 64
    sealed_address_max_bytes: int = 512
    # Open deals one merchant may hold across all its sessions, so that one merchant
    # cannot fill a deal-end bucket that every other merchant's deals share.
    max_open_deals_per_merchant: int = 64
    # Open deals ending in one deal-clock bucket (bucket width deal_bucket_ms).
    max_deals_per_bucket: int = 512
    # Live auctions: a duration in auction_min_ms..auction_max_ms; a start at most
    # auction_max_lead_ms ahead (bids placed before it are pre-bids).
    auction_min_ms: int = 5_000
    auction_max_ms: int = 300_000
    auction_max_lead_ms: int = _HOUR
    # Anti-snipe (timed mode): a bid with less than this left resets the clock to it...
    auction_counter_ms: int = 10_000
    # ...but never past the scheduled end plus this (two accounts of one bidder could
    # otherwise hold the unit, and the auction clock's horizon, without end).
    auction_max_extension_ms: int = 120_000
    # Width of the auction clock's buckets (auction ends are found bucket by bucket).
    auction_bucket_ms: int = 1_000
    # Open auctions ending in one bucket when they start, and per session.
    max_auctions_per_bucket: int = 256
    max_open_auctions: int = 4
    # Open auctions one merchant may hold across all its sessions (sessions are not
    # bounded), so that one merchant cannot fill the auction-end buckets every other
    # merchant's auctions share (as max_open_deals_per_merchant for deals).
    max_open_auctions_per_merchant: int = 64
    # Auction records and buckets the end hook reads per block; the rest wait a block.
    max_auction_ends_per_block: int = 1_000
    # Bid increments: below bid_increment_bounds[i] a bid raises by bid_increment_steps[i],
    # from the last bound on by the last step (one more step than bounds).
    bid_increment_bounds: Annotated[tuple[int, ...], MaxItems(MAX_INCREMENT_ROWS)] = (
        30,
        50,
        100,
        300,
        1_000,
        2_000,
    )
    bid_increment_steps: Annotated[tuple[int, ...], MaxItems(MAX_INCREMENT_ROWS + 1)] = (
        1,
        2,
        3,
        5,
        10,
        20,
        50,
    )

    MAX_ENCODED = 1536

    def increment(self, price: int) -> int:
        """The step a bid must add to ``price`` (the increment table)."""
        for bound, step in zip(self.bid_increment_bounds, self.bid_increment_steps, strict=False):
            if price < bound:
                return step
        return self.bid_increment_steps[-1]

    def __post_init__(self) -> None:
        windows = ("accept_window_ms", "ship_window_ms", "confirm_window_ms", "ruling_window_ms")
        for name in windows:
            # A zero window would expire every order in the block that created it; a
            # window beyond MAX_TIME_MS could overflow a deadline (block time + window).
            if not 1 <= getattr(self, name) <= MAX_TIME_MS:
                raise DecodeError(f"{name} must be in 1..{MAX_TIME_MS}, got {getattr(self, name)}")
        # A dispute window past the auto-release would name a moment no order can reach.
        if not 1 <= self.dispute_window_ms <= self.confirm_window_ms:
            raise DecodeError(
                f"dispute_window_ms must be in 1..confirm_window_ms ({self.confirm_window_ms}), "
                f"got {self.dispute_window_ms}"
            )
        # Fee and the largest commission come out of one release: together at most 100%.
        if self.fee_bps + self.max_commission_bps > BPS:
            raise DecodeError(
                f"fee_bps + max_commission_bps must be at most {BPS}, "
                f"got {self.fee_bps + self.max_commission_bps}"
            )
        # A bucket of 0 ms would divide by zero.
        if self.deal_bucket_ms < 1:
            raise DecodeError(f"deal_bucket_ms must be at least 1, got {self.deal_bucket_ms}")
        # Bounds the deal clock's list of pending buckets.
        if not 1 <= self.max_deal_ms <= MAX_DEAL_BUCKETS * self.deal_bucket_ms:
            raise DecodeError(
                f"max_deal_ms must be in 1..{MAX_DEAL_BUCKETS} * deal_bucket_ms "
                f"({MAX_DEAL_BUCKETS * self.deal_bucket_ms}), got {self.max_deal_ms}"
            )
        self._check_auctions()
        caps = {
            "max_pinned": MAX_PINNED_CAP,
            "max_open_deals": MAX_DEALS_CAP,
            "max_items_per_order": MAX_ITEMS_CAP,
            "name_max_bytes": NAME_CAP,
            "profile_max_bytes": PROFILE_CAP,
            "title_max_bytes": TITLE_CAP,
            "description_max_bytes": DESCRIPTION_CAP,
            "review_max_bytes": TEXT_CAP,
            "reply_max_bytes": TEXT_CAP,
            "reason_max_bytes": TEXT_CAP,
            "tip_message_max_bytes": TIP_CAP,
            "field_max_bytes": NAME_CAP,
            "sealed_address_max_bytes": SEALED_CAP,
            "max_open_deals_per_merchant": MAX_MERCHANT_DEALS_CAP,
            "max_deals_per_bucket": MAX_BUCKET_CAP,
            "max_auctions_per_bucket": MAX_AUCTION_BUCKET_CAP // 2,
            "max_open_auctions": MAX_AUCTIONS_CAP,
            "max_open_auctions_per_merchant": MAX_MERCHANT_AUCTIONS_CAP,
            # A block runs at least one, or the queue never drains; at most what its
            # events can hold (MAX_HOOK_WORK_PER_BLOCK).
            "max_deadlines_per_block": MAX_HOOK_WORK_PER_BLOCK,
            "max_auction_ends_per_block": MAX_HOOK_WORK_PER_BLOCK,
        }
        for name, cap in caps.items():
            # Payload codecs cannot carry more than their cap; 0 would forbid the feature.
            if not 1 <= getattr(self, name) <= cap:
                raise DecodeError(f"{name} must be in 1..{cap}, got {getattr(self, name)}")
        # An order of 0 units is no order.
        if not 1 <= self.max_order_quantity <= 1_000_000:
            raise DecodeError(
                f"max_order_quantity must be in 1..1000000, got {self.max_order_quantity}"
            )

    def _check_auctions(self) -> None:
        # Durations and the anti-snipe time are positive; a time past MAX_TIME_MS could
        # overflow an end time (block time + lead + duration + extension).
        for name in ("auction_min_ms", "auction_max_ms", "auction_counter_ms"):
            if not 1 <= getattr(self, name) <= MAX_TIME_MS:
                raise DecodeError(f"{name} must be in 1..{MAX_TIME_MS}, got {getattr(self, name)}")
        if self.auction_min_ms > self.auction_max_ms:
            raise DecodeError(
                f"auction_min_ms ({self.auction_min_ms}) must be at most auction_max_ms "
                f"({self.auction_max_ms})"
            )
        # A bucket of 0 ms would divide by zero.
        if self.auction_bucket_ms < 1:
            raise DecodeError(f"auction_bucket_ms must be at least 1, got {self.auction_bucket_ms}")
        # Bounds the auction clock's horizon: every end is within it of the start tx.
        horizon = self.auction_max_lead_ms + self.auction_max_ms + self.auction_max_extension_ms
        if horizon > MAX_AUCTION_BUCKETS * self.auction_bucket_ms:
            raise DecodeError(
                f"auction_max_lead_ms + auction_max_ms + auction_max_extension_ms ({horizon}) "
                f"must be at most {MAX_AUCTION_BUCKETS} * auction_bucket_ms "
                f"({MAX_AUCTION_BUCKETS * self.auction_bucket_ms})"
            )
        bounds, steps = self.bid_increment_bounds, self.bid_increment_steps
        # One step per row plus the step above the last bound.
        if len(steps) != len(bounds) + 1:
            raise DecodeError(
                f"bid_increment_steps needs {len(bounds) + 1} steps for {len(bounds)} bounds, "
                f"got {len(steps)}"
            )
        # Rows in increasing order; a step of 0 would let a bid not raise the price.
        if any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)) or (
            bounds and bounds[0] < 1
        ):
            raise DecodeError(f"bid_increment_bounds must increase from 1, got {list(bounds)}")
        if any(not 1 <= s <= MAX_TIME_MS for s in steps):
            raise DecodeError(f"bid_increment_steps must be in 1..{MAX_TIME_MS}, got {list(steps)}")


@dataclass(frozen=True, slots=True)
class CommerceGenesis(Wire):
    """The commerce section of genesis: who registers, where fees go, and the parameters."""

    # Addresses holding the registrar role: they approve merchants, arbiters and
    # attestors and rule escalated disputes (consortium governance's stand-in).
    registrars: Annotated[tuple[Address, ...], MaxItems(MAX_REGISTRARS)]
    # Receives the chain's fee (fee_bps) of every release.
    treasury: Address
    params: CommerceParams = CommerceParams()

    MAX_ENCODED = 4096

    def __post_init__(self) -> None:
        # Without a registrar no merchant could ever be approved.
        if not self.registrars:
            raise DecodeError("commerce needs at least one registrar, got 0")
        # Each registrar counts once; a duplicate is a typo.
        if len(set(self.registrars)) != len(self.registrars):
            raise DecodeError("commerce registrars must be distinct")
        for addr in (*self.registrars, self.treasury):
            # A constructor call in Python bypasses the codec's length check.
            if len(addr) != 20:
                raise DecodeError(f"commerce addresses must be 20 bytes, got {len(addr)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "registrars": [format_address(a) for a in self.registrars],
            "treasury": format_address(self.treasury),
            "params": {f.name: _json_value(getattr(self.params, f.name)) for f in _param_fields()},
        }

    @classmethod
    def from_json(cls, doc: Any) -> CommerceGenesis:
        """Parse the JSON form; raises ``InvalidCommerceGenesis`` naming the field."""
        obj = _object(doc, "commerce", ("registrars", "treasury", "params"))
        registrars = obj["registrars"]
        if not isinstance(registrars, list) or len(registrars) > MAX_REGISTRARS:
            raise InvalidCommerceGenesis(
                f"commerce.registrars: expected a list of at most {MAX_REGISTRARS} addresses"
            )
        addrs = tuple(_address(a, f"commerce.registrars[{i}]") for i, a in enumerate(registrars))
        treasury = _address(obj["treasury"], "commerce.treasury")
        names = tuple(f.name for f in _param_fields())
        pobj = _object(obj["params"], "commerce.params", names)
        # Each value checked as its field's kind: an integer, or the table's integers.
        values: dict[str, Any] = {}
        for name in names:
            value = pobj[name]
            if name in TABLE_PARAMS:
                # The increment table: a list of integers.
                if not isinstance(value, list) or len(value) > MAX_INCREMENT_ROWS + 1:
                    raise InvalidCommerceGenesis(
                        f"commerce.params.{name}: expected a list of at most "
                        f"{MAX_INCREMENT_ROWS + 1} integers"
                    )
                values[name] = tuple(_uint(v, f"commerce.params.{name}") for v in value)
            else:
                values[name] = _uint(value, f"commerce.params.{name}")
        try:
            return cls(addrs, treasury, CommerceParams(**values))
        except DecodeError as exc:
            raise InvalidCommerceGenesis(f"commerce: {exc.message}") from None


# Parameters that are lists of integers in genesis.json, not integers.
TABLE_PARAMS = frozenset({"bid_increment_bounds", "bid_increment_steps"})


def _json_value(value: int | tuple[int, ...]) -> int | list[int]:
    return list(value) if isinstance(value, tuple) else value


def _uint(value: Any, where: str) -> int:
    # bool is an int in Python, not in our files.
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise InvalidCommerceGenesis(f"{where}: expected an integer in 0..2**64-1, got {value!r}")
    return value


def _param_fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(CommerceParams)


def _object(value: Any, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidCommerceGenesis(f"{where}: expected an object")
    missing = [f for f in fields if f not in value]
    if missing:
        raise InvalidCommerceGenesis(f"{where}: missing field(s): {', '.join(missing)}")
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        raise InvalidCommerceGenesis(f"{where}: unknown field(s): {', '.join(unknown)}")
    return value


def _address(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidCommerceGenesis(f"{where}: expected an address string")
    try:
        raw = parse_address(value)
    except InvalidAddress as exc:
        raise InvalidCommerceGenesis(f"{where}: bad address {value!r}: {exc.message}") from None
    # One spelling per address.
    if format_address(raw) != value:
        raise InvalidCommerceGenesis(f"{where}: address must be lower case, got {value!r}")
    return raw
