"""Network admission against running validators: only members connect, misbehaving peers are cut.

The client below speaks the real p2p handshake with p2p's own pieces
(``make_certificate``, ``NodeIdentity``, frames, ``CertOffer``/``Hello``), so a
refusal can only come from the node under test. Each refusal has a positive
control: the same steps with a member's real key do get through.
"""

from __future__ import annotations

import asyncio
import os
import ssl

from consensus import ConsensusMessage
from core import PrivateKey, Vote
from core.keystore import load_key
from core.types import VoteType
from genesis import create_localnet
from node.service import CONSENSUS_MESSAGE_TYPE
from p2p import NodeIdentity, P2PNode, PeerAddress, certificate_public_key, make_certificate
from p2p.frames import encode_frame, read_frame
from p2p.messages import CERT_OFFER_TYPE, HELLO_TYPE, PROTOCOL_VERSION, CertOffer, Hello
from tests.e2e.helpers import Cluster, assert_one_chain, wait_until

HOST = "127.0.0.1"
CLOSED = (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError)


class RawPeer:
    """One TCP connection to a node's p2p port, driven step by step."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def __aenter__(self) -> RawPeer:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.transport.abort()

    async def offer(self, cert: bytes) -> bytes | None:
        """Send our certificate in clear; the node's certificate, or None if it hung up."""
        self.writer.write(encode_frame(CERT_OFFER_TYPE, CertOffer(cert).encode()))
        try:
            async with asyncio.timeout(5):
                raw = await read_frame(self.reader, CERT_OFFER_TYPE, CertOffer.MAX_ENCODED)
        except CLOSED:
            return None
        return CertOffer.decode(raw).cert

    async def hello(
        self, identity: NodeIdentity, node_cert: bytes, chain_id: str, genesis_hash: bytes
    ) -> Hello | None:
        """Mutual TLS presenting ``identity``, then Hello both ways; None if the node refused."""
        try:
            async with asyncio.timeout(5):
                await self.writer.start_tls(identity.client_context(node_cert))
                hello = Hello(PROTOCOL_VERSION, chain_id, genesis_hash)
                self.writer.write(encode_frame(HELLO_TYPE, hello.encode()))
                return Hello.decode(await read_frame(self.reader, HELLO_TYPE, Hello.MAX_ENCODED))
        except (*CLOSED, TimeoutError):
            return None

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """Read (and ignore) whatever the node sends until it closes; False if it never does."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if not await self.reader.read(65536):
                        return True
        except CLOSED:
            return True
        except TimeoutError:
            return False


def test_non_members_refused_garbage_peers_dropped_network_keeps_going(tmp_path):
    layout = create_localnet(tmp_path / "net", 4, "", block_interval_ms=250)
    homes = [n.home for n in layout.nodes]
    chain_id, genesis_hash = layout.chain_id, layout.genesis_hash
    ports = [n.p2p_port for n in layout.nodes]
    member3 = load_key(layout.nodes[3].key_path, "")

    with Cluster(homes, timeout_propose_ms=600) as net:
        net.start()
        net.wait_height(2, timeout=60)

        async def admission() -> str:
            # 1. A certificate for a random key is refused at once, by every node,
            #    before any TLS: the node never even shows its own certificate.
            stranger = PrivateKey.generate()
            for port in ports:
                async with RawPeer(port) as peer:
                    assert await peer.offer(make_certificate(stranger)) is None
            # Control: a member's certificate gets the node's certificate back.
            async with RawPeer(ports[0]) as peer:
                theirs = await peer.offer(make_certificate(member3))
                assert theirs is not None
                assert certificate_public_key(theirs) == layout.nodes[0].public_key

            # 2. A member's certificate (public) offered without its key: TLS fails,
            #    the node never says Hello.
            async with RawPeer(ports[1]) as peer:
                theirs = await peer.offer(make_certificate(member3))
                assert theirs is not None
                impostor = NodeIdentity(stranger)
                try:
                    assert await peer.hello(impostor, theirs, chain_id, genesis_hash) is None
                finally:
                    impostor.close()

            # 3. A whole p2p node with a stranger's key, believing everyone a member,
            #    dials node 0 and never gets a connection.
            async def ignore(_peer: bytes, _msg: object) -> None:
                return None

            outsider = P2PNode(
                stranger,
                HOST,
                0,
                [PeerAddress(layout.nodes[0].public_key, HOST, ports[0])],
                lambda _pk: True,
                ignore,
                chain_id=chain_id,
                genesis_hash=genesis_hash,
            )
            async with outsider:
                await asyncio.sleep(2.5)
                assert outsider.peers() == []
            return stranger.public_key.hex()

        stranger_key = asyncio.run(admission())
        # Node 0 says why: the key is not a member's.
        log0 = (homes[0] / "test-node.log").read_text()
        assert f"key {stranger_key} is not a member" in log0
        statuses = [n.status() for n in net.nodes]
        for s in statuses:
            assert len(s["peers"]) == 3, s["peers"]

        # Node 3 goes down: its key now serves to check what a connected member may not do.
        net[3].kill()
        key3 = layout.nodes[3].public_key.hex()
        wait_until(lambda: key3 not in net[0].status()["peers"], 30, "node 0 to notice node 3 left")

        async def misbehaviour() -> None:
            identity = NodeIdentity(member3)
            try:
                # 4. Control: with the real key the handshake completes and node 0 lists us.
                async with RawPeer(ports[0]) as peer:
                    theirs = await peer.offer(identity.cert_der)
                    assert theirs is not None
                    hello = await peer.hello(identity, theirs, chain_id, genesis_hash)
                    assert hello is not None and hello.chain_id == chain_id
                    for _ in range(50):
                        if key3 in net[0].status()["peers"]:
                            break
                        await asyncio.sleep(0.1)
                    assert key3 in net[0].status()["peers"], "node 0 did not list the member"
                    # Garbage inside the authenticated channel: a consensus frame whose
                    # payload is not a canonical encoding. Node 0 hangs up.
                    peer.send(encode_frame(CONSENSUS_MESSAGE_TYPE, os.urandom(200)))
                    assert await peer.closed_by_peer(), "node 0 kept a peer that sent garbage"
                assert key3 not in net[0].status()["peers"]

                # 5. Well-formed but forged: votes in node 3's name with a bad signature,
                #    for the heights node 1 is at or about to reach. Node 1 hangs up.
                async with RawPeer(ports[1]) as peer:
                    theirs = await peer.offer(identity.cert_der)
                    assert theirs is not None
                    assert await peer.hello(identity, theirs, chain_id, genesis_hash) is not None
                    height = net[1].height()
                    forger = PrivateKey.generate()
                    for h in (height + 1, height + 2, height + 3):
                        vote = Vote.create(forger, chain_id, VoteType.PREVOTE, h, 0, b"\x11" * 32)
                        forged = Vote(
                            vote.type, h, 0, vote.block_hash, member3.public_key, vote.signature
                        )
                        frame = ConsensusMessage.wrap(forged).encode()
                        peer.send(encode_frame(CONSENSUS_MESSAGE_TYPE, frame))
                    assert await peer.closed_by_peer(10), "node 1 kept a peer that forged votes"

                # 6. Raw garbage on the port, no handshake at all: node 2 hangs up.
                async with RawPeer(ports[2]) as peer:
                    peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(512))
                    assert await peer.closed_by_peer(), "node 2 kept a garbage connection"
            finally:
                identity.close()

        asyncio.run(misbehaviour())
        logs = [(h / "test-node.log").read_text() for h in homes[:3]]
        assert "misbehaviour peer=" in logs[0], "node 0 did not log the garbage frame"
        assert "signature does not verify" in logs[1], "node 1 did not report the forged vote"
        assert f"misbehaviour peer={key3[:16]}" in logs[1]

        # The three honest validators are still connected to each other and keep finalizing.
        live = net.nodes[:3]
        before = max(net.heights(live))
        net.wait_height(before + 5, live, timeout=40)
        for i, node in enumerate(live):
            peers = set(node.status()["peers"])
            others = {layout.nodes[j].public_key.hex() for j in range(3) if j != i}
            assert others <= peers, (i, peers)
        assert_one_chain(live)
