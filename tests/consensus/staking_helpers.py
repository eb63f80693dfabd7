"""A small in-memory chain for the staking tests: genesis state, signed txs, blocks."""

from __future__ import annotations

from dataclasses import replace

from consensus import GenesisStaking, params_for_height, producers_for_height, register_staking
from consensus.governance import PROPOSE_ADMIT_MEMBER, ProposeAdmitMember
from consensus.prefixes import ConsensusPrefix
from consensus.staking import (
    BOND,
    REGISTER_CANDIDATE,
    VOTE_PRODUCERS,
    Bond,
    RegisterCandidate,
    VoteProducers,
)
from consensus.staking_state import (
    BONDED_POOL,
    COMMUNITY_POOL,
    UNBONDING_POOL,
    Candidate,
    ReleaseQueue,
    Staker,
    candidate_key,
    get_candidate,
    get_staker,
    get_totals,
)
from core import PrivateKey, TxBody, address_of, sign_tx
from core.codec import Wire
from genesis import Genesis, GenesisAccount, GenesisValidator, genesis_state
from vm import (
    Account,
    BlockContext,
    BlockResult,
    ChainParams,
    Executor,
    Receipt,
    VerifiedTx,
    default_registry,
    get_account,
    verify_signed_tx,
)
from vm.prefixes import KeyPrefix

CHAIN = "staking-test"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(10)]
PUB = [k.public_key for k in KEYS]
ADDR = [k.address for k in KEYS]
FUNDS = 10**9
SELF_BOND = 1_000
PRODUCER = bytes([0xEE]) * 20
T0 = 1_700_000_000_000
PARAMS = ChainParams(
    min_fee=10,
    max_expiry_blocks=100,
    epoch_length=4,
    max_producers=3,
    max_votes=3,
    unbonding_blocks=9,
    min_self_bond=100,
    slash_bps=1_000,
    max_missed_slots=2,
    # The least check_staking_params allows (epoch_length): a jail outlasts an election.
    jail_blocks=4,
    max_evidence_age_blocks=4,
    proposal_voting_blocks=6,
    param_change_delay_blocks=2,
)


def set_params(producers: int, epoch_length: int, max_missed_slots: int) -> ChainParams:
    """PARAMS for ``producers`` producers and epochs of ``epoch_length`` blocks: a vote
    and a jail last an epoch, and unbonding outlasts an epoch plus the evidence age (the
    bounds ``check_staking_params`` holds)."""
    return PARAMS.replace(
        max_producers=producers,
        epoch_length=epoch_length,
        proposal_voting_blocks=epoch_length,
        jail_blocks=epoch_length,
        max_missed_slots=max_missed_slots,
        unbonding_blocks=epoch_length + PARAMS.max_evidence_age_blocks + 1,
    )


REGISTRY = default_registry()
register_staking(REGISTRY)
# Every transaction is held to its type's declaration (codes, events, key prefixes).
EXECUTOR = Executor(REGISTRY, check_declarations=True)


def make_genesis(
    validators: int = 3, params: ChainParams = PARAMS, staking: bool = True, funded: int = 10
) -> Genesis:
    return Genesis(
        chain_id=CHAIN,
        genesis_time_ms=T0,
        params=params,
        accounts=tuple(GenesisAccount(ADDR[i], FUNDS) for i in range(funded)),
        validators=tuple(GenesisValidator(f"v{i}", PUB[i], 1) for i in range(validators)),
        staking=GenesisStaking(SELF_BOND) if staking else None,
    )


class Chain:
    """Executes blocks on a dict state, one after another, strictly."""

    def __init__(self, genesis: Genesis | None = None) -> None:
        self.genesis = genesis or make_genesis()
        self.state: dict[bytes, bytes] = genesis_state(self.genesis)
        self.height = 0
        self._nonces: dict[bytes, int] = {}
        self.last: BlockResult | None = None

    def tx(
        self, key: PrivateKey, tx_type: str, payload: Wire, fee: int | None = None
    ) -> VerifiedTx:
        """Signed for the next block: the minimum fee and an expiry the parameters allow."""
        nonce = self._nonces.get(key.public_key, 0)
        self._nonces[key.public_key] = nonce + 1
        params = self.params()
        fee = params.min_fee if fee is None else fee
        expiry = self.height + min(50, params.max_expiry_blocks)
        body = TxBody(nonce, fee, expiry, tx_type, payload.encode())
        raw = sign_tx(key, CHAIN, body).encode()
        return verify_signed_tx(raw, CHAIN, REGISTRY, 16 * 1024)

    def params(self, height: int | None = None) -> ChainParams:
        h = self.height + 1 if height is None else height
        return params_for_height(self.state, h, self.genesis.params)

    def block(
        self,
        *txs: VerifiedTx,
        signers: tuple[bytes, ...] | None = None,
        proposer: bytes | None = None,
        commit_round: int = 0,
    ) -> BlockResult:
        """Execute the next block; with ``signers`` (its last_commit, of ``commit_round``),
        produced by ``proposer`` (default: the scheduled proposer of round 0), else by
        PRODUCER."""
        height = self.height + 1
        producer = PRODUCER
        if signers is not None or proposer is not None:
            if proposer is None:
                proposer = producers_for_height(self.state, height).proposer(height, 0)
            producer = address_of(proposer)
        ctx = BlockContext(
            CHAIN, height, T0 + height, producer, self.params(height), signers, commit_round
        )
        result = EXECUTOR.execute_block(self.state, list(txs), ctx, strict=True)
        for vtx, receipt in zip(result.included, result.receipts, strict=True):
            # Every failure carries a code its type declares (so clients may rely on the list).
            declared = REGISTRY.declaration(vtx.body.type).codes
            assert receipt.ok or receipt.code in declared, (vtx.body.type, receipt.code)
        for k, v in result.changes.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = v
        self.height = height
        self.last = result
        return result

    def run(self, key: PrivateKey, tx_type: str, payload: Wire) -> Receipt:
        """One tx in its own block; returns its receipt."""
        return self.block(self.tx(key, tx_type, payload)).receipts[0]

    def advance_to(self, height: int) -> None:
        """Empty blocks until ``height`` is the last executed one."""
        while self.height < height:
            self.block()

    def balance(self, address: bytes) -> int:
        return get_account(self.state, address).balance

    def staker(self, address: bytes) -> Staker:
        return get_staker(self.state, address)

    def candidate(self, key: bytes) -> Candidate:
        cand = get_candidate(self.state, key)
        assert cand is not None
        return cand


def set_candidate(state: dict[bytes, bytes], key: bytes, **changes: object) -> None:
    cand = Candidate.decode(state[candidate_key(key)])
    state[candidate_key(key)] = replace(cand, **changes).encode()


def check_invariants(state: dict[bytes, bytes], supply: int) -> None:
    """Tokens conserved; each pool equals its total and the sum it stands for; tallies add up."""
    balances = sum(Account.decode(v).balance for k, v in state.items() if k[0] == KeyPrefix.ACCOUNT)
    assert balances == supply
    stakers = [
        (k[1:], Staker.decode(v)) for k, v in state.items() if k[0] == ConsensusPrefix.STAKER
    ]
    totals = get_totals(state)
    bonded = sum(s.bonded for _, s in stakers)
    unbonding = sum(s.unbonding_total for _, s in stakers)
    assert get_account(state, BONDED_POOL).balance == bonded == totals.bonded
    assert get_account(state, UNBONDING_POOL).balance == unbonding == totals.unbonding
    assert get_account(state, COMMUNITY_POOL).balance == totals.slashed
    for k, v in state.items():
        if k[0] == ConsensusPrefix.CANDIDATE:
            expected = sum(s.bonded for _, s in stakers if k[1:] in s.votes)
            assert Candidate.decode(v).weight == expected, k[1:].hex()
    for _, s in stakers:
        assert not s.is_empty
        assert list(s.votes) == sorted(set(s.votes))
    check_queues(state)


def check_queues(state: dict[bytes, bytes]) -> None:
    """Each release queue links exactly ``count`` stakers, each with one entry for that
    height, and every pending entry is in the queue of its height (held ones included)."""
    queued: set[tuple[bytes, int]] = set()
    for k, v in state.items():
        if k[0] != ConsensusPrefix.UNBONDING_QUEUE:
            continue
        height = int.from_bytes(k[1:], "big")
        queue = ReleaseQueue.decode(v)
        address: bytes | None = queue.first
        for _ in range(queue.count):
            assert address is not None, f"queue {height} ends before {queue.count}"
            entries = [
                u for u in get_staker(state, address).unbonding if u.release_height == height
            ]
            assert len(entries) == 1, (height, address.hex())
            assert (address, height) not in queued, (height, address.hex())
            queued.add((address, height))
            address = entries[0].next
        assert address is None, f"queue {height} is longer than {queue.count}"
    for k, v in state.items():
        if k[0] == ConsensusPrefix.STAKER:
            for u in Staker.decode(v).unbonding:
                assert (k[1:], u.release_height) in queued, (k[1:].hex(), u.release_height)


KEY_OF = {k.public_key: k for k in KEYS}


def pass_proposal(chain: Chain, tx_type: str, payload: Wire, proposer: PrivateKey = KEYS[0]) -> int:
    """Propose and have the active producers approve until it passes; returns the id."""
    from consensus import producers_for_height
    from consensus.governance import VOTE_PROPOSAL, VoteProposal, get_proposal

    receipt = chain.run(proposer, tx_type, payload)
    assert receipt.ok, receipt
    pid = int(receipt.events[0].get("proposal_id"))
    while not get_proposal(chain.state, pid).passed_height:
        voters = get_proposal(chain.state, pid).voters
        active = producers_for_height(chain.state, chain.height + 1)
        key = next(KEY_OF[k] for k in active.keys if k not in voters)
        assert chain.run(key, VOTE_PROPOSAL, VoteProposal(pid)).ok
    return pid


def add_candidate(chain: Chain, index: int, self_bond: int = SELF_BOND) -> None:
    """Admit KEYS[index], register it, bond ``self_bond`` and approve itself."""
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[index], f"m{index}"))
    key = KEYS[index]
    chain.block(
        chain.tx(key, REGISTER_CANDIDATE, RegisterCandidate()),
        chain.tx(key, BOND, Bond(self_bond)),
        chain.tx(key, VOTE_PRODUCERS, VoteProducers((PUB[index],))),
    )
    assert all(r.ok for r in chain.last.receipts), chain.last.receipts
