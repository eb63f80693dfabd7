"""Each package's state key prefixes lie in the range reserved for it, and none collide."""

from apps.commerce.keys import CommercePrefix
from consensus.prefixes import ConsensusPrefix
from storage.state_tree import ACCOUNT_PREFIX, key_group
from vm import PREFIX_RANGES, KeyPrefix, prefix_owner
from vm.accounts import account_key

# Every package that owns state, with its prefixes.
OWNED = {"vm": KeyPrefix, "consensus": ConsensusPrefix, "apps.commerce": CommercePrefix}


def test_every_prefix_is_in_its_owners_range():
    for owner, prefixes in OWNED.items():
        assert [p for p in prefixes if prefix_owner(p) != owner] == [], owner


def test_no_two_prefixes_share_a_byte():
    values = [int(p) for prefixes in OWNED.values() for p in prefixes]
    assert len(values) == len(set(values))
    assert 0 not in values


def test_ranges_are_disjoint_and_each_has_an_owner_here():
    taken = [b for r in PREFIX_RANGES for b in range(r.first, r.last + 1)]
    assert len(taken) == len(set(taken))
    assert {r.owner for r in PREFIX_RANGES} == set(OWNED)


def test_the_values_are_the_protocols():
    # State roots depend on them (tests/apps/commerce/VECTORS.md, docs/staking.md).
    assert KeyPrefix.ACCOUNT == 0x01
    assert (ConsensusPrefix.MEMBER, ConsensusPrefix.CHAIN_PARAMS) == (0x10, 0x18)
    assert (CommercePrefix.CONFIG, CommercePrefix.ORDER, CommercePrefix.REVIEW) == (
        0x20,
        0x2A,
        0x34,
    )
    assert prefix_owner(0x50) is None and prefix_owner(0x00) is None


def test_the_state_tree_keeps_accounts_out_of_address_groups():
    # storage.state_tree.key_group groups an address's records by the address that
    # follows their prefix, but not its account, which every transaction writes.
    assert ACCOUNT_PREFIX == KeyPrefix.ACCOUNT == account_key(bytes(20))[0]
    assert key_group(account_key(bytes(20))) == account_key(bytes(20))
