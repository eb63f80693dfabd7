"""Rating peers during a state sync: whom to ask first, whom only now and then."""

from __future__ import annotations

from node.sync_rates import PeerRates

FAST, SLOW, NEW = b"f" * 32, b"s" * 32, b"n" * 32


def rated() -> PeerRates:
    rates = PeerRates()
    rates.asked(FAST)
    rates.answered(FAST, 1 << 20, 0.25)  # 4 MiB/s: an honest peer at its read budget
    rates.asked(SLOW)
    rates.answered(SLOW, 100, 0.9)  # a node per request, just before the timeout
    return rates


def test_untried_peers_come_first_then_the_fastest_and_the_slow_are_left_out():
    rates = rated()
    assert rates.slow(SLOW, [FAST, SLOW]) and not rates.slow(FAST, [FAST, SLOW])
    assert rates.order([SLOW, FAST, NEW], [SLOW, FAST, NEW]) == [NEW, FAST]


def test_a_slow_peer_is_asked_once_its_probe_is_due_or_when_no_one_else_works():
    rates = rated()
    rates.asked(SLOW)
    for _ in range(PeerRates.PROBE_AFTER - 1):
        rates.answered(FAST, 1 << 20, 0.25)
    assert rates.order([SLOW], [SLOW, FAST]) == []
    assert rates.order([SLOW], [SLOW, FAST], anyone=True) == [SLOW]
    rates.answered(FAST, 1 << 20, 0.25)
    assert rates.order([SLOW], [SLOW, FAST]) == [SLOW]
    rates.asked(SLOW)
    assert rates.order([SLOW], [SLOW, FAST]) == []
    # Alone, it is the fastest there is: not slow.
    assert rates.order([SLOW], [SLOW]) == [SLOW]


def test_a_peer_that_got_faster_is_seen_within_a_few_answers():
    rates = rated()
    for _ in range(6):
        rates.answered(SLOW, 1 << 20, 0.25)
    assert not rates.slow(SLOW, [FAST, SLOW])


def test_only_a_much_faster_peer_asks_again_what_another_holds():
    rates = rated()
    assert rates.outpaces(FAST, SLOW) and not rates.outpaces(SLOW, FAST)
    assert rates.outpaces(NEW, SLOW) is False  # unrated, it knows of nothing better
    assert rates.outpaces(FAST, NEW) and rates.outpaces(NEW, b"m" * 32)
    rates.answered(SLOW, 1 << 20, 0.3)
    rates.answered(SLOW, 1 << 20, 0.3)
    rates.answered(SLOW, 1 << 20, 0.3)
    rates.answered(SLOW, 1 << 20, 0.3)
    assert not rates.outpaces(FAST, SLOW)  # about one speed: no duplicates
