"""TLS record counting beneath the TLS layer (``p2p.limits.TlsRecordCounter``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2p.limits import TlsRecordCounter


class _Inner:
    """Stands in for the TLS protocol: a buffer that received bytes land in."""

    def __init__(self) -> None:
        self.buffer = bytearray(64)
        self.received = bytearray()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.received += self.buffer[:nbytes]


def _record(body: bytes) -> bytes:
    return b"\x17\x03\x03" + len(body).to_bytes(2, "big") + body


@given(
    bodies=st.lists(st.binary(max_size=40), max_size=30),
    reads=st.lists(st.integers(min_value=1, max_value=64), min_size=1),
)
def test_records_are_counted_however_reads_cut_them(bodies, reads):
    stream = b"".join(_record(b) for b in bodies)
    inner = _Inner()
    counter = TlsRecordCounter(inner)  # type: ignore[arg-type]  # duck-typed like uvloop's
    at, turn = 0, 0
    while at < len(stream):
        buf = counter.get_buffer(-1)
        n = min(reads[turn % len(reads)], len(stream) - at)
        buf[:n] = stream[at : at + n]
        counter.buffer_updated(n)
        at, turn = at + n, turn + 1
    # Every byte reaches the TLS layer, and every record is counted once.
    assert bytes(inner.received) == stream
    assert counter.records == len(bodies)
