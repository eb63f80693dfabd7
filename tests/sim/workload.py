"""A seeded client: real signed transactions of one live session, plus transfers.

The session runs phase by phase, as it must happen on a chain: register the merchant;
the registrar approves it; the merchant lists an item, opens a live session, pins the
listing and opens a flash deal; buyers order from the deal and tip the host; the
merchant ships every order; buyers confirm delivery and review. Every phase also
carries a few transfers, and once the session is done only transfers follow.

Each phase goes to one random live node, which gossips it to the others through the
simulated network. The next phase is signed once an honest node's chain holds every
transaction of the current one (their senders' nonces moved on); a phase not
committed in ``RETRY_MS`` is sent again to another random node (a crash may have
lost it with a mempool). Order ids are read back from the chain, as a real client
would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from apps.commerce import payloads as tx
from apps.commerce.sealing import encryption_keypair
from apps.commerce.views import get_order
from core import PrivateKey, TxBody, sign_tx
from core.codec import Wire
from vm import TRANSFER, Transfer, get_account

if TYPE_CHECKING:
    from tests.sim.chain_host import ChainHost
    from tests.sim.harness import Scheduler, SimNode

# The buyers' shipping address ("1 Sim Road", zero salt) sealed once to the merchant's
# key (X25519 of bytes([7]) * 32): sealing is randomized (an ephemeral key per box), and
# a run must sign the same bytes every time.
SEALED_ADDRESS = bytes.fromhex(
    "d64bed0d4cae9f113447fd9d0fd7a7306962549f21a00ed85a7298eeee7dbe56a5a5ade7b1304dcb75"
    "ef96f5d644bf97ec589bec728bdb3480f7fe86dd368d6ef3a73507317321b7474ba52b7a0f7aad0ebf"
    "928ec305ec58a391debbc6c2"
)
ADDRESS_COMMITMENT = bytes.fromhex(
    "579d8133a38007c81bcd3b3b9d2962b3a8bcfc3ac63f22de03248e1542318a85"
)

RETRY_MS = 1_500
TICK_MS = 250
BUYERS = 3
PAYERS = 3
DEAL_PRICE = 5_000


def client_keys(seed: int) -> list[PrivateKey]:
    """registrar, merchant, host, buyers..., payers... (deterministic per seed)."""
    count = 3 + BUYERS + PAYERS
    return [PrivateKey(((seed + 1) * 1_000_003 + i).to_bytes(32, "big")) for i in range(count)]


class Client:
    def __init__(
        self,
        seed: int,
        rng: random.Random,
        sched: Scheduler,
        nodes: list[SimNode],
        hosts: list[ChainHost],
        chain_id: str,
        genesis_time_ms: int,
    ) -> None:
        self.rng = rng
        self.sched = sched
        self.nodes = nodes
        self.hosts = hosts
        self.chain_id = chain_id
        self.genesis_time_ms = genesis_time_ms
        keys = client_keys(seed)
        self.registrar, self.merchant, self.host = keys[0], keys[1], keys[2]
        self.buyers = keys[3 : 3 + BUYERS]
        self.payers = keys[3 + BUYERS :]
        _, self.enc_public = encryption_keypair(bytes([7]) * 32)
        self.nonces: dict[bytes, int] = {}
        self.phases: list[Callable[[ChainHost], list[bytes]]] = [
            self._register,
            self._approve,
            self._open_shop,
            self._order,
            self._ship,
            self._settle,
        ]
        self.phase = 0
        # Phases whose transactions are all on chain (the session is done at 6).
        self.completed = -1
        # The current phase: its transactions, and when it was last sent.
        self.pending: list[bytes] = []
        self.expect: dict[bytes, int] = {}
        self.sent_at = 0
        self.submitted = 0
        for h in hosts:
            h.commit_listeners.append(self._on_commit)

    @property
    def session_done(self) -> bool:
        return self.completed >= len(self.phases)

    def start(self) -> None:
        self.sched.call_at(self.rng.randint(20, 120), self._tick)

    def _tick(self) -> None:
        ref = self._reference()
        if ref is not None:
            self._advance(ref)
            if self.pending and self.sched.now - self.sent_at >= RETRY_MS:
                self._send(self.pending)
        self.sched.call_at(self.sched.now + TICK_MS, self._tick)

    def _on_commit(self, host: ChainHost) -> None:
        ref = self._reference()
        if ref is host:
            self._advance(host)

    def _reference(self) -> ChainHost | None:
        """The honest live node with the highest chain (lowest index on ties)."""
        best: ChainHost | None = None
        for node, host in zip(self.nodes, self.hosts, strict=True):
            if node.honest and node.alive and (best is None or host.height() > best.height()):
                best = host
        return best

    def _advance(self, ref: ChainHost) -> None:
        assert ref.chain is not None
        state = ref.chain.state
        if any(get_account(state, a).nonce < n for a, n in self.expect.items()):
            return
        self.completed += 1
        if self.phase < len(self.phases):
            txs = self.phases[self.phase](ref)
        else:
            txs = []
        self.phase += 1
        txs += self._transfers()
        self.pending = txs
        self._send(txs)

    def _send(self, txs: list[bytes]) -> None:
        live = [node for node in self.nodes if node.alive]
        if not live:
            return
        node = self.rng.choice(live)
        host = self.hosts[node.index]
        host.submit(node, txs)
        self.sent_at = self.sched.now
        self.submitted += len(txs)

    # --- signing -----------------------------------------------------------------------

    def _sign(self, key: PrivateKey, tx_type: str, payload: Wire) -> bytes:
        nonce = self.nonces.get(key.address, 0)
        self.nonces[key.address] = nonce + 1
        self.expect[key.address] = nonce + 1
        body = TxBody(nonce, 1_000, 1_000, tx_type, payload.encode())
        return sign_tx(key, self.chain_id, body).encode()

    def _transfers(self) -> list[bytes]:
        out = []
        everyone = [self.merchant, self.host, *self.buyers, *self.payers]
        for payer in self.rng.sample(self.payers, 2):
            to = self.rng.choice(everyone).address
            out.append(self._sign(payer, TRANSFER, Transfer(to, self.rng.randint(1, 10_000))))
        return out

    # --- the live session, phase by phase -------------------------------------------------

    def _register(self, ref: ChainHost) -> list[bytes]:
        payload = tx.RegisterMerchant("Sim shop", "sim.example", self.enc_public)
        return [self._sign(self.merchant, tx.REGISTER_MERCHANT, payload)]

    def _approve(self, ref: ChainHost) -> list[bytes]:
        payload = tx.ApproveMerchant(self.merchant.address, True)
        return [self._sign(self.registrar, tx.APPROVE_MERCHANT, payload)]

    def _open_shop(self, ref: ChainHost) -> list[bytes]:
        assert ref.chain is not None and ref.chain.head is not None
        head_ms = ref.chain.head.time_ms
        m = self.merchant
        deal = tx.OpenDeal(1, 1, DEAL_PRICE, BUYERS, 1, self.genesis_time_ms, head_ms + 3_600_000)
        return [
            self._sign(m, tx.CREATE_LISTING, tx.CreateListing("Tea pot", "", 9_000, 10, b"")),
            self._sign(m, tx.OPEN_SESSION, tx.OpenSession(self.host.address, 1_000, "live")),
            self._sign(m, tx.PIN, tx.PinListing(1, 1)),
            self._sign(m, tx.OPEN_DEAL, deal),
        ]

    def _order(self, ref: ChainHost) -> list[bytes]:
        order = tx.PlaceOrder(
            1, 1, 1, DEAL_PRICE, 1, 1, self.enc_public, ADDRESS_COMMITMENT, SEALED_ADDRESS
        )
        out = []
        for b in self.buyers:
            out.append(self._sign(b, tx.PLACE_ORDER, order))
            out.append(self._sign(b, tx.TIP, tx.Tip(1, 100, "")))
        return out

    def _orders(self, ref: ChainHost) -> list[tuple[int, bytes]]:
        assert ref.chain is not None
        found = []
        for order_id in range(1, BUYERS + 1):
            order = get_order(ref.chain.state, order_id)
            if order is not None:
                found.append((order_id, order.buyer))
        return found

    def _ship(self, ref: ChainHost) -> list[bytes]:
        return [
            self._sign(
                self.merchant,
                tx.SHIP_ORDER,
                tx.ShipOrder(order_id, order_id.to_bytes(32, "big"), ()),
            )
            for order_id, _ in self._orders(ref)
        ]

    def _settle(self, ref: ChainHost) -> list[bytes]:
        by_address = {b.address: b for b in self.buyers}
        out = []
        for order_id, buyer in self._orders(ref):
            key = by_address[buyer]
            out.append(self._sign(key, tx.CONFIRM_DELIVERY, tx.OrderRef(order_id)))
            out.append(self._sign(key, tx.REVIEW, tx.WriteReview(order_id, 5, "great deal")))
        return out
