"""A fake chain whose producers change twice, served as a node serves it: for the light
client's tests in Python (tests/cli/test_light_skip.py) and in the browser's code
(tests/e2e/test_web_crypto.py), which must accept and refuse the same answers."""

from __future__ import annotations

from cli.client import NodeError
from cli.light import Checkpoint
from consensus import ValidatorSet, epoch_of, make_commit
from consensus.staking_state import ProducerSet, producer_set_key
from core import BlockHeader, PrivateKey
from genesis import Genesis
from storage.state_tree import ZERO_REF, MemoryNodeStore, StateTree
from vm import ChainParams

LENGTH = 3
EPOCHS_OF_3 = ChainParams.default().replace(epoch_length=LENGTH)
# The last epoch of the fake chain (its head is the last block of it).
LAST = 12


class FakeChain:
    """A chain's headers and epoch records as a node serves them (``get`` and ``block``,
    as ``NodeClient``), every boundary's state holding the next epoch's set, every
    header certified by its epoch's producers; it counts the records it answers.

    The producers: genesis's key for epochs 0-3, two new keys for 4-7, three for 8 on.
    ``lie``: how a hostile node answers the next-change route (None: honestly)."""

    def __init__(self, genesis: Genesis, first: PrivateKey, lie: str | None = None) -> None:
        self.genesis = genesis
        self.lie = lie
        second = [PrivateKey.generate() for _ in range(2)]
        third = [PrivateKey.generate() for _ in range(3)]
        self.keys = {e: [first] if e < 4 else second if e < 8 else third for e in range(LAST + 2)}
        self.url = "http://fake.example"
        self.records: list[int] = []
        self.paths: list[str] = []

    def set_of(self, epoch: int) -> ValidatorSet:
        return ValidatorSet.of(k.public_key for k in self.keys[epoch])

    def changes(self) -> list[int]:
        return [e for e in range(1, LAST + 1) if self.set_of(e) != self.set_of(e - 1)]

    def header(
        self, height: int, state: dict[bytes, bytes], names: ValidatorSet | None = None
    ) -> tuple[BlockHeader, str, str]:
        """A header of ``height`` over ``state``, naming ``names`` (by default its
        epoch's set), certified by its epoch's producers; and the state proof maker."""
        epoch = epoch_of(height, LENGTH)
        nodes = MemoryNodeStore()
        update = StateTree(nodes).update(ZERO_REF, state, version=height)
        nodes.nodes.update(update.nodes)
        self.tree, self.ref = StateTree(nodes), update.ref
        signers = sorted(self.keys[epoch], key=lambda k: k.public_key)
        named = (names or self.set_of(epoch)).hash
        roots = (bytes(32), bytes(32), update.root, bytes(32))
        header = BlockHeader(
            self.genesis.chain_id, height, 0, 1, *roots, signers[0].public_key, named, None
        )
        commit = make_commit(signers, self.genesis.chain_id, height, 0, header.hash)
        return header, header.encode().hex(), commit.encode().hex()

    def record(self, epoch: int, names: ValidatorSet | None = None) -> dict:
        self.records.append(epoch)
        key = producer_set_key(epoch)
        keys = tuple(sorted(k.public_key for k in self.keys[epoch]))
        value = ProducerSet(epoch, epoch * LENGTH, keys, (1,) * len(keys)).encode()
        _, header, commit = self.header(epoch * LENGTH, {key: value}, names)
        proof = self.tree.prove(self.ref, key).encode().hex()
        return {
            "epoch": epoch,
            "height": epoch * LENGTH,
            "header": header,
            "commit": commit,
            "producers": value.hex(),
            "proof": proof,
        }

    def get(self, path: str) -> dict:
        self.paths.append(path)
        parts = path.split("/")
        epoch = int(parts[3])
        if len(parts) == 4:
            return self.record(epoch)
        assert parts[4] == "next-change", path
        if self.lie == "no-route":
            raise NodeError("not_found", "404: Not Found", 404)
        if self.lie == "proxy-404":
            # A proxy in front of an older node: its own page, not the node's JSON.
            raise NodeError("http_error", "HTTP 404: b'<html>Not Found</html>'", 404)
        later = [c for c in self.changes() if c > epoch]
        if self.lie == "hide":
            later = []
        elif self.lie == "skip" and len(later) > 1:
            later = later[1:]
        if not later:
            raise NodeError("no_set_change", f"no change after epoch {epoch}", 404)
        if self.lie == "other-set":
            # The true next change's record, its header naming a set it was not signed
            # by (the next one's), yet certified by the right keys.
            return self.record(later[0], names=self.set_of(later[0]))
        return self.record(later[0])

    def block(self, which: str) -> dict:
        height = int(which.split("?")[0])
        _, header, commit = self.header(height, {b"\x01x": b"y"})
        return {"header": {"encoded": header}, "commit": {"encoded": commit}}


def height_of(epoch: int) -> int:
    """A height inside ``epoch``, not its first or last block."""
    return epoch * LENGTH + 2


def answers(chain: FakeChain, height: int) -> dict[str, object]:
    """Every answer a client may ask of ``chain`` to prove ``height``: path -> the
    document, or {"error": {"status", "code"}} for a refusal."""
    paths = [f"/v1/epochs/{e}" for e in range(1, LAST + 1)]
    paths += [f"/v1/epochs/{e}/next-change" for e in range(LAST + 1)]
    out: dict[str, object] = {}
    for path in paths:
        try:
            out[path] = chain.get(path)
        except NodeError as exc:
            out[path] = {"error": {"status": exc.status, "code": exc.code}}
    out[f"/v1/blocks/{height}?txs=false"] = chain.block(f"{height}?txs=false")
    chain.records.clear()
    chain.paths.clear()
    return out


class MemoryStore:
    """A CheckpointStore in memory that records what it is asked to keep."""

    def __init__(self) -> None:
        self.saved: list[Checkpoint] = []

    def load(self, genesis: Genesis) -> Checkpoint | None:
        return self.saved[-1] if self.saved else None

    def save(self, genesis: Genesis, checkpoint: Checkpoint) -> None:
        self.saved.append(checkpoint)
