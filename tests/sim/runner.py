"""One seeded run of a scenario: build the network, plan the faults, run, check.

Every run asserts, besides safety at each commit (``Ledger``):

- liveness: after the faults stop, every honest node reaches the target height within
  ``liveness_bound_ms`` of virtual time;
- every honest node's chain links up, under the producers of each height, with
  certificates that verify;
- each honest node's stored state root at its height is its
  head's, and its final state keeps the commerce invariants and conserves tokens;
- ``on_bad_peer`` only ever names Byzantine nodes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from consensus import ValidatorSet, validate_header, verify_commit
from consensus.messages import DuplicateVoteEvidence
from consensus.staking_state import get_candidate
from core import BlockHeader, Domain, PrivateKey, hash_bytes
from tests.sim.chain_host import ChainHost, make_world
from tests.sim.harness import (
    CHAIN_ID,
    EPOCH_MS,
    GENESIS_TIME_MS,
    SIM_SYNCHRONY,
    Ledger,
    NetParams,
    Network,
    Scheduler,
    SimNode,
)
from tests.sim.workload import Client, client_keys


@dataclass
class Scenario:
    """A seeded fault schedule. Faults happen in [0, heal_at); afterwards all is well
    (but for Byzantine nodes, which misbehave to the end)."""

    n: int
    net: NetParams
    heal_at_ms: int = 0
    partitions: int = 0
    crashes: int = 0
    # Allow crashing more than f nodes at once (the chain must halt, not fork).
    crash_beyond_f: bool = False
    # One behaviour per Byzantine producer (byzantine.BEHAVIOURS; at most f).
    byzantine: tuple[str, ...] = ()
    # One behaviour per extra connected member outside the producer set.
    members: tuple[str, ...] = ()
    # Blocks every honest node must reach after healing, beyond the highest height then.
    extra_heights: int = 4
    min_height: int = 8
    liveness_bound_ms: int = 60_000


@dataclass
class SimResult:
    seed: int
    heights: list[int]
    heal_height: int
    target: int
    finished_ms: int
    heal_at_ms: int
    messages: int
    # Per node: whether it is honest, its key and the evidence it produced.
    honest: list[bool]
    behaviours: list[str | None]
    keys: list[bytes]
    evidence: list[list[DuplicateVoteEvidence]]
    restarts: int
    max_round: int
    validators: ValidatorSet
    reports: list[tuple[int, int, str]]
    head_hashes: list[bytes]
    # Real application only: transactions the client sent, that blocks included, and
    # whether the live session finished (every phase on chain).
    submitted: int = 0
    included: int = 0
    session_done: bool = False
    byzantine_keys: set[bytes] = field(default_factory=set)
    # Byzantine validators whose conflicting votes (one step, two blocks) an honest node
    # received while at that height, with the lowest such height.
    conflicts: dict[bytes, int] = field(default_factory=dict)
    # Real application only: producers jailed in the final state of an honest node.
    jailed: set[bytes] = field(default_factory=set)


def run(seed: int, sc: Scenario, tmp_path: Path) -> SimResult:
    rng = random.Random(seed)
    sched = Scheduler()
    net = Network(sched, rng, sc.net)
    f = (sc.n - 1) // 3
    assert len(sc.byzantine) <= f, f"{len(sc.byzantine)} Byzantine producers, f is {f}"
    keys = [PrivateKey(hash_bytes(Domain.ADDRESS, f"sim-{seed}-{i}".encode())) for i in range(sc.n)]
    vs = ValidatorSet.of(k.public_key for k in keys)
    byzantine = dict(zip(rng.sample(range(sc.n), len(sc.byzantine)), sc.byzantine, strict=True))
    # Node specs: the producers, a second node for each twin, the extra members.
    specs: list[tuple[PrivateKey, str | None]] = [(k, byzantine.get(i)) for i, k in enumerate(keys)]
    specs += [(keys[i], b) for i, b in sorted(byzantine.items()) if b == "twins"]
    specs += [
        (PrivateKey(hash_bytes(Domain.ADDRESS, f"sim-{seed}-member-{j}".encode())), b)
        for j, b in enumerate(sc.members)
    ]
    # Honest clocks differ by less than the precision: each within +-P/2 of true time.
    half = SIM_SYNCHRONY.precision_ms // 2 - 1
    skews = [rng.randint(-half, half) for _ in specs]
    honest_skew = max(s for s, (_, b) in zip(skews, specs, strict=True) if b is None)
    ledger = Ledger(lambda: EPOCH_MS + sched.now + honest_skew, SIM_SYNCHRONY.precision_ms)

    treasury = hash_bytes(Domain.ADDRESS, b"sim treasury")[:20]
    world = make_world(
        CHAIN_ID,
        GENESIS_TIME_MS,
        keys,
        client_keys(seed),
        (SIM_SYNCHRONY.precision_ms, SIM_SYNCHRONY.message_delay_ms),
        treasury,
    )
    root = tmp_path / f"seed{seed}"
    hosts = [
        ChainHost(i, key, root / f"node{i}", world, ledger) for i, (key, _) in enumerate(specs)
    ]
    nodes = [
        SimNode(
            index=i,
            key=key,
            home=root / f"node{i}",
            sched=sched,
            net=net,
            host=hosts[i],
            behaviour=behaviour,
            skew_ms=skews[i],
        )
        for i, (key, behaviour) in enumerate(specs)
    ]
    net.nodes = nodes
    twinned: set[bytes] = set()
    byzantine_keys = frozenset(n.key.public_key for n in nodes if not n.honest) & set(vs.keys)
    for node in nodes:
        node.byzantine_keys = byzantine_keys
        if node.behaviour == "tamper":
            net.fast.add(node.index)
        if node.behaviour == "twins" and node.key.public_key not in twinned:
            # Twins (Bano et al.): the second copy of the identity talks to half of the
            # others only, so the two see different things and sign conflicting
            # messages; that half hears both copies.
            twinned.add(node.key.public_key)
            second = [o.index for o in nodes if o.key.public_key == node.key.public_key][1]
            others = [o.index for o in nodes if o.key.public_key != node.key.public_key]
            net.only[second] = frozenset(rng.sample(others, len(others) // 2))
        if node.behaviour == "selective":
            others = [o.index for o in nodes if o.index != node.index]
            node.vote_peers = frozenset(rng.sample(others, len(others) // 2))
    client = Client(seed, rng, sched, nodes, hosts, CHAIN_ID, GENESIS_TIME_MS)
    try:
        return _run(seed, sc, rng, sched, net, nodes, vs, ledger, client, hosts)
    finally:
        for node in nodes:
            node.crash()
        world.close()


def _run(
    seed: int,
    sc: Scenario,
    rng: random.Random,
    sched: Scheduler,
    net: Network,
    nodes: list[SimNode],
    vs: ValidatorSet,
    ledger: Ledger,
    client: Client,
    hosts: list[ChainHost],
) -> SimResult:
    max_round = [0]

    def watch_rounds() -> None:
        for node in nodes:
            if node.engine is not None:
                max_round[0] = max(max_round[0], node.engine.round)
        sched.call_at(sched.now + 100, watch_rounds)

    # Start times differ a little, as real processes do.
    for node in nodes:
        sched.call_at(rng.randint(0, 50), node.start)
    sched.call_at(0, watch_rounds)
    client.start()
    _plan_faults(sc, rng, sched, net, nodes)

    sched.run(sc.heal_at_ms)
    # Everyone is back and connected from here on.
    net.heal()
    for node in nodes:
        if not node.alive:
            node.restart()
    honest = [node for node in nodes if node.honest]
    heal_height = max(node.host.height() for node in honest)
    target = max(heal_height + sc.extra_heights, sc.min_height)
    deadline = sc.heal_at_ms + sc.liveness_bound_ms

    def done() -> bool:
        return all(node.host.height() >= target for node in honest)

    sched.run(deadline, done)
    heights = [node.host.height() for node in nodes]
    heads = []
    for node in nodes:
        head = node.host.committed(node.host.height())
        heads.append(head[0].hash if head is not None else b"")
    result = SimResult(
        seed=seed,
        heights=heights,
        heal_height=heal_height,
        target=target,
        finished_ms=sched.now,
        heal_at_ms=sc.heal_at_ms,
        messages=net.sent,
        honest=[node.honest for node in nodes],
        behaviours=[node.behaviour for node in nodes],
        keys=[node.key.public_key for node in nodes],
        evidence=[node.evidence for node in nodes],
        restarts=sum(node.restarts for node in nodes),
        max_round=max_round[0],
        validators=vs,
        reports=net.reports,
        head_hashes=heads,
        byzantine_keys={node.key.public_key for node in nodes if not node.honest},
        conflicts=_conflicts(nodes),
    )
    # LIVENESS: after healing, every honest node reaches the target within the bound.
    assert done(), (
        f"seed {seed}: liveness: heights {heights} at {sched.now} ms, "
        f"target {target} (healed at {sc.heal_at_ms} ms with height {heal_height})"
    )
    for node in honest:
        _check_chain(node, hosts[node.index])
    _check_reports(nodes, net.reports)
    result.submitted = client.submitted
    result.session_done = client.session_done
    for node in honest:
        host = hosts[node.index]
        result.included = max(result.included, host.included)
        _check_state(node, host)
    ref = hosts[honest[0].index]
    assert ref.chain is not None
    result.jailed = {
        key
        for key in vs.keys
        if (cand := get_candidate(ref.chain.state, key)) is not None and cand.jailed
    }
    return result


def _conflicts(nodes: list[SimNode]) -> dict[bytes, int]:
    """Byzantine validators whose conflicting votes some honest node received while at
    their height (it must then have caught them), and the lowest such height."""
    found: dict[bytes, int] = {}
    for node in nodes:
        for (validator, _, height, _), hashes in sorted(node.byzantine_votes.items()):
            if node.honest and len(hashes) > 1:
                found[validator] = min(found.get(validator, height), height)
    return found


def _plan_faults(
    sc: Scenario, rng: random.Random, sched: Scheduler, net: Network, nodes: list[SimNode]
) -> None:
    n = sc.n
    f = (n - 1) // 3
    window = sc.heal_at_ms
    for _ in range(sc.partitions):
        start = rng.randint(0, max(0, window - 1))
        end = rng.randint(start, window)
        members = list(range(len(nodes)))
        rng.shuffle(members)
        cut = rng.randint(1, len(nodes) - 1)
        groups = [set(members[:cut]), set(members[cut:])]
        sched.call_at(start, lambda g=groups: net.partition(g))
        sched.call_at(end, net.heal)
    if sc.crashes:
        limit = n if sc.crash_beyond_f else f
        victims = rng.sample(range(n), min(limit, sc.crashes))
        for v in victims:
            # Crash and restart once (or twice) inside the fault window.
            t = rng.randint(100, max(100, window // 2))
            for _ in range(rng.randint(1, 2)):
                down = rng.randint(100, max(101, window // 4))
                power_loss = rng.random() < 0.5
                sched.call_at(t, lambda v=v, p=power_loss: nodes[v].crash(p))
                if t + down < window:
                    sched.call_at(t + down, nodes[v].restart)
                t = min(window, t + down + rng.randint(100, 1000))


def _check_chain(node: SimNode, host: ChainHost) -> None:
    """The node's chain links up and carries verifying certificates."""
    assert host.chain is not None
    prev: BlockHeader | None = None
    for h in range(1, host.height() + 1):
        found = host.committed(h)
        assert found is not None, f"node {node.index}: block {h} missing"
        block, commit = found
        validators = host.validators(h)
        validate_header(
            block.header,
            chain_id=CHAIN_ID,
            prev=prev,
            genesis_hash=host.chain.genesis_hash,
            genesis_time_ms=GENESIS_TIME_MS,
            validators=validators,
            prev_validators=host.validators(h - 1) if h > 1 else None,
        )
        verify_commit(commit, CHAIN_ID, h, block.hash, validators)
        prev = block.header


def _check_state(node: SimNode, host: ChainHost) -> None:
    """State root, commerce invariants and token conservation on the final state."""
    assert host.chain is not None
    height = host.height()
    head = host.committed(height)
    if head is not None:
        root = host.chain.store.state_root(height)
        assert root == head[0].header.state_root, (
            f"node {node.index}: stored state root at {height} is {root.hex()}, "
            f"the header says {head[0].header.state_root.hex()}"
        )
    problems = host.invariant_problems()
    assert problems == [], f"node {node.index} at height {height}: {problems}"


def _check_reports(nodes: list[SimNode], reports: list[tuple[int, int, str]]) -> None:
    """Honest nodes report only Byzantine peers."""
    for reporter, peer, reason in reports:
        if nodes[reporter].honest:
            assert not nodes[peer].honest, (
                f"honest node {reporter} reported honest node {peer}: {reason}"
            )
