"""Length-prefixed frames: ``length (4 bytes, big-endian) | type (1 byte) | payload``.

``length`` counts the type byte and the payload. The reader checks the length
against the cap for that type before it reads (or allocates) the payload, so a
peer cannot make us buffer more than the cap.
"""

from __future__ import annotations

import asyncio
import struct

from core.errors import Invalid

HEADER = struct.Struct(">IB")
HEADER_SIZE = HEADER.size


class ProtocolViolation(Invalid):
    """A peer broke the wire protocol; the connection is dropped."""

    code = "protocol_violation"


def encode_frame(type_id: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload) + 1, type_id) + payload


async def read_header(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Read a frame header; return (type id, payload size). Raises IncompleteReadError at EOF."""
    length, type_id = HEADER.unpack(await reader.readexactly(HEADER_SIZE))
    if length < 1:
        raise ProtocolViolation("frame length 0 (no type byte)")
    return type_id, length - 1


async def read_frame(reader: asyncio.StreamReader, expected_type: int, max_size: int) -> bytes:
    """Read one frame that must be of ``expected_type`` and at most ``max_size`` bytes."""
    type_id, size = await read_header(reader)
    if type_id != expected_type:
        raise ProtocolViolation(f"expected message type {expected_type:#x}, got {type_id:#x}")
    check_size(type_id, size, max_size)
    return await reader.readexactly(size)


def check_size(type_id: int, size: int, max_size: int) -> None:
    if size > max_size:
        raise ProtocolViolation(
            f"frame of type {type_id:#x} too large: max {max_size} bytes, got {size}"
        )
