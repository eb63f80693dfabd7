"""State key prefixes of consensus (range 0x10-0x1F, ``vm.prefixes.PREFIX_RANGES``).

Values are part of the protocol: never renumber. Key layout: docs/staking.md.
"""

from __future__ import annotations

from enum import IntEnum


class ConsensusPrefix(IntEnum):
    MEMBER = 0x10
    CANDIDATE = 0x11
    STAKER = 0x12
    UNBONDING_QUEUE = 0x13
    PRODUCER_SET = 0x14
    EVIDENCE = 0x15
    PROPOSAL = 0x16
    # Singletons: member and candidate lists, proposal counter, staking totals.
    STAKING_INDEX = 0x17
    # Governed chain parameters: the active set and the scheduled changes.
    CHAIN_PARAMS = 0x18
    # A member's network address (``set_member_address``): beside the member record,
    # whose encoding is in every state root and cannot grow a field.
    MEMBER_ADDRESS = 0x19
    # The last epoch whose producer set names an address's node key: while that producer
    # can still be slashed, its own unbonding entries are not paid out (docs/staking.md,
    # Accountability).
    PRODUCER_TERM = 0x1A
    # The height a node key's last membership ended (its removal): approvals of a
    # proposal about that key count only from then on, until it is admitted again
    # (docs/staking.md, Governance).
    MEMBER_REMOVED = 0x1B
