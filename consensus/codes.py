"""Receipt codes that several consensus transaction types share, with their meanings.

A type's declaration picks the shared codes it may give with ``shared`` and adds its
own; ``consensus.ERROR_CODES`` is derived from the declarations (docs/staking.md).
"""

from __future__ import annotations

from vm.registry import shared_codes

SHARED: dict[str, str] = {
    "staking_disabled": "genesis has no staking section",
    "not_member": "the sender's node key is not a consortium member",
    "invalid_amount": "an amount of 0",
    "u64_overflow": "a bond or unbonding total would pass 2**64-1",
    "too_many_proposals": "the member has the most open proposals",
    # A passed proposal's action is checked again when it executes (vote_proposal).
    "invalid_name": "a member name that is blank or too long",
    "already_member": "the key is already a member",
    "too_many_members": "the member list is full",
    "unknown_member": "the key is not a member",
    "last_member": "the last member cannot be removed",
    "param_not_governable": "the parameter may not be changed by governance",
    "invalid_param": "the new value is out of the parameter's range",
    "too_many_pending": "too many parameter changes are pending",
}


def shared(*codes: str) -> dict[str, str]:
    """The shared ``codes`` with their meanings, for a declaration."""
    return shared_codes(SHARED, *codes)
