"""A member's network address on chain: set by the member's node key, checked at entry,
one per member, gone with the member."""

import pytest

from consensus.governance import PROPOSE_REMOVE_MEMBER, ProposeRemoveMember
from consensus.staking import SET_MEMBER_ADDRESS, SetMemberAddress
from consensus.staking_state import member_address, member_address_key
from core import DecodeError, PrivateKey, pack_raw
from core.netaddr import MAX_NET_ADDRESS
from tests.consensus.staking_helpers import KEYS, PARAMS, PUB, Chain, make_genesis, pass_proposal
from vm import Event


def set_address(chain: Chain, key: PrivateKey, address: str):
    return chain.run(key, SET_MEMBER_ADDRESS, SetMemberAddress(address))


def test_a_member_sets_and_replaces_its_address():
    chain = Chain()
    assert member_address(chain.state, PUB[1]) is None
    receipt = set_address(chain, KEYS[1], "brand.example:26656")
    assert receipt.ok, receipt
    assert receipt.events == (
        Event.of(SET_MEMBER_ADDRESS, member=PUB[1], address="brand.example:26656"),
    )
    assert member_address(chain.state, PUB[1]) == "brand.example:26656"
    # One address per member: the next replaces it.
    assert set_address(chain, KEYS[1], "[2001:db8::7]:9000").ok
    assert member_address(chain.state, PUB[1]) == "[2001:db8::7]:9000"
    assert [k for k in chain.state if k[:1] == member_address_key(PUB[1])[:1]] == [
        member_address_key(PUB[1])
    ]
    # Others' records are their own.
    assert member_address(chain.state, PUB[0]) is None


@pytest.mark.parametrize(
    "address, message",
    [
        ("0.0.0.0:26656", "listen-on-all"),
        ("[::]:26656", "listen-on-all"),
        ("node.example", "must be host:port"),
        ("node.example:0", "must be host:port"),
        ("node.example:65536", "port must be in 1..65535"),
        ("node.example:026656", "must be host:port"),
        ("nöde.example:26656", "must be host:port"),
        ("node.example:２６６５６", "must be host:port"),
        ("[1:2:3]:1", "not an IPv6 address"),
        ("a b:1", "must be host:port"),
        ("", "must be host:port"),
        ("a" * 300 + ":1", "must be host:port"),
        ("http://node.example:1", "must be host:port"),
        # What the resolver would read as 0.0.0.0 or 127.0.0.1 (inet_aton spellings).
        ("0:26656", "neither a DNS name nor an IPv4"),
        ("0177.0.0.1:26656", "neither a DNS name nor an IPv4"),
        ("0x7f000001:26656", "neither a DNS name nor an IPv4"),
        ("127.1:26656", "neither a DNS name nor an IPv4"),
        ("node.example.1:26656", "neither a DNS name nor an IPv4"),
    ],
)
def test_hostile_addresses_are_refused_with_a_code(address, message):
    chain = Chain()
    receipt = set_address(chain, KEYS[0], address[:MAX_NET_ADDRESS])
    assert receipt.code == "invalid_address" and message in receipt.message, receipt
    assert member_address(chain.state, PUB[0]) is None


def test_only_a_member_sets_an_address():
    chain = Chain()
    receipt = set_address(chain, KEYS[5], "stranger.example:1")
    assert (receipt.code, receipt.message) == (
        "not_member",
        f"{PUB[5].hex()} is not a consortium member",
    )
    assert member_address(chain.state, PUB[5]) is None


def test_removing_a_member_removes_its_address():
    chain = Chain(make_genesis(validators=4, params=PARAMS.replace(max_producers=4)))
    assert set_address(chain, KEYS[3], "logistics.example:26656").ok
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[3]))
    assert member_address(chain.state, PUB[3]) is None
    assert member_address_key(PUB[3]) not in chain.state
    # And it can no longer publish one.
    assert set_address(chain, KEYS[3], "logistics.example:26656").code == "not_member"


def test_an_address_over_the_bound_never_decodes():
    # The payload's bound holds before any handler runs: the transaction is malformed.
    longest = SetMemberAddress("a" * MAX_NET_ADDRESS)
    assert pack_raw([longest.address]) == longest.encode()
    assert SetMemberAddress.decode(longest.encode()) == longest
    with pytest.raises(DecodeError, match="at most 261 bytes"):
        SetMemberAddress.decode(pack_raw(["a" * (MAX_NET_ADDRESS + 1)]))


def test_a_dialable_address_too_long_for_its_event_fails_only_its_transaction():
    # A 253-character DNS name is dialable, but "name:port" is then over the 256 bytes an
    # event value holds: the event could not be made, and the block would not execute.
    host = ".".join(["a" * 63] * 3 + ["a" * 61])
    chain = Chain()
    receipt = set_address(chain, KEYS[1], f"{host}:26656")
    assert (receipt.code, receipt.message) == (
        "invalid_address",
        "network address must be at most 256 bytes, got 259",
    )
    assert member_address(chain.state, PUB[1]) is None
    # The longest that fits is taken as it is.
    longest = f"{host[: 256 - len(':26656')]}:26656"
    assert len(longest) == 256 and set_address(chain, KEYS[1], longest).ok
    assert member_address(chain.state, PUB[1]) == longest


@pytest.mark.parametrize(
    "address", ["10.0.0.9:26656", "node0:26656", "localhost:1", "a-1.example.org:65535"]
)
def test_names_and_dotted_ipv4_addresses_are_taken(address):
    chain = Chain()
    assert set_address(chain, KEYS[0], address).ok
    assert member_address(chain.state, PUB[0]) == address
