"""A bounded fuzzing campaign over p2p frame handling through a real connection.

Random and mutated frames of every message kind the node registers, behind valid
ones, are read by a ``Connection``: each stream must end with the peer dropped or
the stream over, nothing raised or logged as an error, every valid essential frame
handled. The long campaign is ``make fuzz`` (benches/fuzz_p2p.py).
"""

from __future__ import annotations

from benches.fuzz_p2p import run_campaign


def test_mutated_frames_cost_the_peer_never_the_node():
    tally = run_campaign(examples=200, mutants=3, seed=10)
    print(
        f"\n{tally.frames} frames in {tally.streams} streams, "
        f"{tally.dropped_for_misbehaviour} peers dropped, slowest {tally.slowest * 1000:.1f} ms"
    )
    assert tally.crashes == []
    assert tally.streams == 200
    assert tally.dropped_for_misbehaviour > 100
