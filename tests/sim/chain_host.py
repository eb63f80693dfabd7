"""The node's real application in the simulation: ``ChainApplication`` over a real
``Chain`` (LevelDB ``ChainStore`` under ``tmp_path``, the real ``Executor`` with the
node's full registry, staking and commerce in genesis) and a real ``Mempool``.

The mempool's admission is async (stateless checks go to a thread pool). Here it
runs its real ``submit`` on one event loop per run with an executor that runs each
chunk inline, so verification happens synchronously at the virtual instant the
transactions arrive: no thread, no wall clock, the same verdicts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apps.commerce import CommerceGenesis, check_invariants
from consensus import GenesisStaking, ValidatorSet
from consensus.bft import Application
from consensus.evidence import SubmitEvidence
from consensus.messages import DuplicateVoteEvidence
from consensus.staking_state import MODULE_ACCOUNTS
from core import Block, Commit, PrivateKey, TxBody, sign_tx
from genesis import Genesis, GenesisAccount, GenesisValidator
from node.chain import Chain, ExecutedBlock
from node.consensus import EVIDENCE_TX, ChainApplication, EvidencePool
from node.mempool import Mempool, MempoolConfig, SubmitResult
from node.service import build_registry
from storage import ChainStore
from vm import ChainParams, Registry, VerifiedTx, get_account

if TYPE_CHECKING:
    from tests.sim.harness import Ledger, SimNode

BALANCE = 10**12
SELF_BOND = 10**6
FEE = 1_000
# Few transactions per block keep runs cheap and make selection matter.
MAX_BLOCK_TXS = 20


class InlineExecutor(concurrent.futures.Executor):
    """Runs every submitted call at once, on the caller's thread."""

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


_REGISTRY: list[Registry] = []


def registry() -> Registry:
    """The node's registry (vm, staking, commerce), built once per process."""
    if not _REGISTRY:
        _REGISTRY.append(build_registry())
    return _REGISTRY[0]


@dataclass
class ChainWorld:
    """What every node of one run shares: genesis, the client's accounts, one event loop."""

    genesis: Genesis
    # Every address that can hold tokens in this run (for token conservation).
    accounts: list[bytes]
    supply: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    pool: InlineExecutor = field(default_factory=InlineExecutor)

    def submit(self, mempool: Mempool, txs: list[bytes], *, client: bool) -> list[SubmitResult]:
        return self.loop.run_until_complete(mempool.submit(txs, client=client))

    def close(self) -> None:
        self.loop.close()


def make_world(
    chain_id: str,
    genesis_time_ms: int,
    validator_keys: list[PrivateKey],
    client_keys: list[PrivateKey],
    synchrony_ms: tuple[int, int],
    treasury: bytes,
) -> ChainWorld:
    """Genesis with staking and commerce: validators bonded, client accounts funded."""
    precision_ms, delay_ms = synchrony_ms
    params = ChainParams(
        min_fee=FEE,
        max_block_txs=MAX_BLOCK_TXS,
        time_precision_ms=precision_ms,
        time_message_delay_ms=delay_ms,
    )
    funded = [k.address for k in validator_keys] + [k.address for k in client_keys]
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms,
        params=params,
        accounts=tuple(GenesisAccount(a, BALANCE) for a in dict.fromkeys(funded)),
        validators=tuple(
            GenesisValidator(f"v{i}", k.public_key, 1) for i, k in enumerate(validator_keys)
        ),
        staking=GenesisStaking(self_bond=SELF_BOND),
        # The client's first key is the registrar.
        commerce=CommerceGenesis(registrars=(client_keys[0].address,), treasury=treasury),
    )
    accounts = list(dict.fromkeys([*funded, treasury, *MODULE_ACCOUNTS]))
    return ChainWorld(genesis, accounts)


class ChainHost:
    """One node's real application: its store survives crashes, its mempool does not."""

    def __init__(self, index: int, key: PrivateKey, home: Path, world: ChainWorld, ledger: Ledger):
        self.index = index
        self.key = key
        self.home = home
        self.world = world
        self.ledger = ledger
        self.store: ChainStore | None = None
        self.chain: Chain | None = None
        self.mempool: Mempool | None = None
        self.app: ChainApplication | None = None
        self.node: SimNode | None = None
        # Called after each commit (the client workload watches honest nodes).
        self.commit_listeners: list[Callable[[ChainHost], None]] = []
        self.evidence: EvidencePool | None = None
        self.included = 0
        # The store's height as of the last close (a node down, or not booted yet).
        self._closed_height = 0

    # --- AppHost ---------------------------------------------------------------------

    def open(self, node: SimNode) -> Application:
        self.node = node
        self.store = ChainStore(self.home / "data")
        self.chain = Chain(self.store, self.world.genesis, registry())
        self.mempool = Mempool(
            chain_id=self.chain.chain_id,
            registry=self.chain.registry,
            executor=self.chain.executor,
            params=self.chain.params,
            state=self.chain.state,
            height_fn=lambda: self.store.height if self.store else 0,
            config=MempoolConfig(shards=2, verify_threads=1),
            verify_pool=self.world.pool,
        )
        if not self.world.supply:
            self.world.supply = self.tokens()
        self.evidence = EvidencePool(self._submit_evidence)
        self.app = ChainApplication(self.chain, self.key, self, self._committed)
        return self.app

    def close(self) -> None:
        if self.store is not None:
            self._closed_height = self.store.height
            self.store.close()
        self.store = self.chain = self.mempool = self.app = self.evidence = None

    def height(self) -> int:
        return self._closed_height if self.chain is None else self.chain.height

    def committed(self, height: int) -> tuple[Block, Commit] | None:
        chain = self._chain()
        block, commit = chain.store.get_block(height), chain.store.get_commit(height)
        return None if block is None or commit is None else (block, commit)

    def validators(self, height: int) -> ValidatorSet:
        return self._chain().validators_for(height)

    def on_evidence(self, node: SimNode, evidence: DuplicateVoteEvidence) -> None:
        """As the node does: through its ``EvidencePool`` into ``submit_evidence``
        transactions signed with the node key."""
        if self.evidence is not None and self.chain is not None:
            self.evidence.add(evidence, self.chain.height)

    def _submit_evidence(self, evidence: DuplicateVoteEvidence) -> None:
        """``Node.submit_own_tx`` for evidence: sign with the node key, submit, gossip."""
        assert self.mempool is not None and self.chain is not None and self.node is not None
        nonce = self.mempool.next_nonce(self.key.address)
        if nonce is None:
            nonce = get_account(self.chain.state, self.key.address).nonce
        body = TxBody(
            nonce=nonce,
            fee=FEE,
            expiry_height=self.chain.height + 100,
            type=EVIDENCE_TX,
            payload=SubmitEvidence(evidence.vote_a, evidence.vote_b).encode(),
        )
        raw = sign_tx(self.key, self.chain.chain_id, body).encode()
        self.submit(self.node, [raw], client=False)

    def receive_txs(self, node: SimNode, txs: list[bytes]) -> None:
        if self.mempool is not None:
            self.world.submit(self.mempool, txs, client=False)

    # --- TxSource (ChainApplication) ---------------------------------------------------

    def select(self, max_txs: int, max_bytes: int) -> list[VerifiedTx]:
        assert self.mempool is not None
        return self.mempool.select(max_txs, max_bytes)

    def get(self, tx_hash: bytes) -> VerifiedTx | None:
        return None if self.mempool is None else self.mempool.get(tx_hash)

    def reject(self, tx_hashes: list[bytes]) -> None:
        if self.mempool is not None:
            self.mempool.on_block_committed((), tx_hashes)

    def _committed(self, executed: ExecutedBlock, commit: Commit, seconds: float) -> None:
        """What ``Node.after_commit`` does for the mempool, then the run's checks."""
        assert self.mempool is not None and self.chain is not None
        result = executed.result
        self.mempool.set_params(self.chain.params)
        self.mempool.on_block_committed((), included=result.included)
        self.included += len(result.included)
        self.ledger.record(self.index, executed.block)
        assert self.evidence is not None
        self.evidence.committed(executed.block.header.height)
        for listener in self.commit_listeners:
            listener(self)

    # --- the client's side -------------------------------------------------------------

    def submit(self, node: SimNode, txs: list[bytes], *, client: bool = True) -> list[SubmitResult]:
        """Admit transactions here and gossip the accepted ones to every peer."""
        if self.mempool is None:
            return []
        results = self.world.submit(self.mempool, txs, client=client)
        accepted = [raw for raw, r in zip(txs, results, strict=True) if r.accepted]
        if accepted:
            for other in node.net.nodes:
                if other.index != node.index:
                    node.net.send_txs(node.index, other.index, accepted)
        return results

    # --- checks ----------------------------------------------------------------------

    def tokens(self) -> int:
        """Balances of every account of the run (escrow counted by the invariants)."""
        state = self._chain().state
        return sum(get_account(state, a).balance for a in self.world.accounts)

    def invariant_problems(self) -> list[str]:
        """The commerce invariants and token conservation on this node's state."""
        chain = self._chain()
        return check_invariants(chain.state, self.world.accounts, self.world.supply)

    def _chain(self) -> Chain:
        if self.chain is None:
            # A crashed node's store, read as a restarted node would see it.
            raise RuntimeError(f"node {self.index} is down")
        return self.chain
