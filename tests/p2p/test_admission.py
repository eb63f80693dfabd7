"""The inbound handshake gate and the refusal log, without sockets."""

from __future__ import annotations

import logging

from core.netaddr import source_of
from p2p.admission import HandshakeGate, RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s():
    assert source_of("127.0.0.2") == "127.0.0.2"
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::7")
    assert source_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:10.0.0.1") == "10.0.0.1"
    assert source_of("not-an-ip") == "not-an-ip"


def test_per_source_cap_refuses_and_full_gate_evicts_strangers_first():
    gate = HandshakeGate(max_pending=4, max_per_source=2, tls_rate=1.0, tls_burst=1.0)
    aborted: list[str] = []

    def admit(source: str, name: str):
        return gate.admit(source, lambda: aborted.append(name))

    member = admit("10.0.0.1", "member")
    gate.identify(member)
    s1 = admit("10.0.0.2", "s1")
    assert admit("10.0.0.2", "s2") is not None
    # A third from one source is refused; the gate did not change.
    assert admit("10.0.0.2", "s3") is None and len(gate) == 3
    admit("10.0.0.3", "s4")
    # Full: the oldest stranger (no certificate offered yet) makes room, not the member.
    admit("10.0.0.4", "s5")
    assert aborted == ["s1"] and s1.evicted and not member.evicted
    assert len(gate) == 4 and gate.evicted == 1 and gate.pending_from("10.0.0.2") == 1
    gate.release(s1)  # the evicted handshake ends: nothing is counted twice
    assert gate.pending_from("10.0.0.2") == 1
    gate.release(member)
    gate.release(member)
    assert len(gate) == 3 and gate.pending_from("10.0.0.1") == 0


def test_tls_rate_per_source():
    clock = Clock()
    gate = HandshakeGate(8, 8, tls_rate=2.0, tls_burst=3.0, clock=clock)
    assert [gate.allow_tls("a") for _ in range(4)] == [True, True, True, False]
    assert gate.allow_tls("b")
    clock.now += 0.5
    assert gate.allow_tls("a") and not gate.allow_tls("a")


def test_refusal_log_writes_a_few_lines_then_a_count(caplog):
    caplog.set_level(logging.INFO, logger="p2p-test")
    clock = Clock()
    refusals = RefusalLog(logging.getLogger("p2p-test"), interval=10.0, burst=3, clock=clock)
    for i in range(100):
        refusals.log(logging.WARNING, "refused %d", i)
    assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused 1", "refused 2"]
    clock.now += 10.0
    refusals.log(logging.WARNING, "refused %d", 100)
    assert caplog.records[3].getMessage().startswith("97 more inbound connections refused")
    assert caplog.records[4].getMessage() == "refused 100"


def test_refusal_log_keeps_a_budget_per_level_and_errors_their_traceback(caplog):
    # A stranger's flood of warnings must not use up the lines that show an error of
    # ours; those keep their traceback, and the ones left out are counted at ERROR.
    caplog.set_level(logging.INFO, logger="p2p-test")
    clock = Clock()
    refusals = RefusalLog(logging.getLogger("p2p-test"), interval=10.0, burst=2, clock=clock)
    for i in range(50):
        refusals.log(logging.WARNING, "refused %d", i)
    bug = RuntimeError("a bug of ours")
    for i in range(5):
        refusals.log(logging.ERROR, "unexpected %d", i, exc_info=bug)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["unexpected 0", "unexpected 1"]
    assert all(r.exc_info is not None and r.exc_info[1] is bug for r in errors)
    refusals.flush()
    assert [(r.levelno, r.getMessage().split(" more ")[0]) for r in caplog.records[-2:]] == [
        (logging.WARNING, "48"),
        (logging.ERROR, "3"),
    ]
