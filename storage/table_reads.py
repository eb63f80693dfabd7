"""LevelDB reads its table files with ``pread`` through its block cache, not ``mmap``.

On 64-bit hosts LevelDB maps up to 1,000 table files into memory and reads blocks
straight from the maps. A validator's state at a million accounts is hundreds of
MB of tables, and reads and compactions touch all of it: each page touched stays
in the process's resident set. Those pages are clean and the kernel can take them
back, but they count in RSS, which is what operators, cgroup limits and OOM
killers watch. Measured on ``benches.flashdeal``: 778-781 MB of mapped tables
beside 788-808 MB of the node's own memory, a peak RSS of 1.5 GB per validator.

LevelDB has no option for this, only the process-wide ``g_mmap_limit`` its own
tests set through ``EnvPosixTestHelper::SetReadOnlyMMapLimit``. Neither is
exported, but the library plyvel's wheel ships keeps its symbol table, so the
variable's address is found there and set to 0 before the first database opens
(the limit is read once, when LevelDB builds its default environment). Table
reads then copy each block into the bounded block cache (``storage.chain_store``
gives each database 32 MB), as LevelDB does on 32-bit hosts: measured on one
table set of 1M keys, a point read costs 3.3-4.0 us against 2.1-4.2 mapped, and
the mapped 150 MB of the process became 9 MB.

Every step is checked, and any surprise (another build of the library, a stripped
one, a value other than LevelDB's default of 1,000, an address outside the
library's writable data) leaves LevelDB as it is, with a warning: the node then
runs as before, with a larger RSS.
"""

from __future__ import annotations

import ctypes
import logging
import struct
from dataclasses import dataclass

log = logging.getLogger("storage.table_reads")

_SYMBOL = b"_ZN7leveldb12_GLOBAL__N_112g_mmap_limitE"
# LevelDB's kDefaultMmapLimit on 64-bit hosts.
_DEFAULT_LIMIT = 1000
_SHT_SYMTAB = 2
_STT_OBJECT = 1
_PT_LOAD = 1


@dataclass(frozen=True, slots=True)
class _Mapping:
    start: int
    end: int
    perms: str
    offset: int
    path: str


def _mappings() -> list[_Mapping]:
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) < 6:
                continue
            start, _, end = parts[0].partition("-")
            out.append(
                _Mapping(
                    int(start, 16), int(end, 16), parts[1], int(parts[2], 16), parts[5].strip()
                )
            )
    return out


def _symbol(image: bytes, name: bytes) -> tuple[int, int] | None:
    """(value, size) of data object ``name`` in an ELF64 little-endian image's symtab."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        return None
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", image, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * shentsize) for i in range(shnum)
    ]
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != _SHT_SYMTAB or entsize == 0:
            continue
        strings = sections[link][4]
        for index in range(size // entsize):
            st_name, st_info, _other, _shndx, value, sym_size = struct.unpack_from(
                "<IBBHQQ", image, offset + index * entsize
            )
            start = strings + st_name
            if image[start : start + len(name) + 1] == name + b"\0":
                return (value, sym_size) if st_info & 0xF == _STT_OBJECT else None
    return None


def _first_load_vaddr(image: bytes) -> int:
    (phoff,) = struct.unpack_from("<Q", image, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
    loads = []
    for i in range(phnum):
        kind, _flags, _offset, vaddr = struct.unpack_from("<IIQQ", image, phoff + i * phentsize)
        if kind == _PT_LOAD:
            loads.append(vaddr)
    return min(loads) if loads else 0


def _locate() -> ctypes.c_int | str:
    """The loaded LevelDB's ``g_mmap_limit``, or why it was not found."""
    maps = _mappings()
    paths = {m.path for m in maps if "libleveldb" in m.path.rsplit("/", 1)[-1]}
    if len(paths) != 1:
        return f"{len(paths)} LevelDB libraries loaded"
    path = paths.pop()
    with open(path, "rb") as lib:
        image = lib.read()
    found = _symbol(image, _SYMBOL)
    if found is None or found[1] != ctypes.sizeof(ctypes.c_int):
        return f"no {_SYMBOL.decode()} of an int's size in {path}"
    base = min((m.start for m in maps if m.path == path and m.offset == 0), default=None)
    if base is None:
        return f"{path} has no mapping at offset 0"
    address = base - _first_load_vaddr(image) + found[0]
    size = ctypes.sizeof(ctypes.c_int)
    writable = any(
        m.path == path and m.perms.startswith("rw") and m.start <= address < address + size <= m.end
        for m in maps
    )
    if not writable:
        return f"the limit's address is not in {path}'s writable data"
    cell = ctypes.c_int.from_address(address)
    if cell.value != _DEFAULT_LIMIT:
        return f"the limit reads {cell.value}, not LevelDB's default {_DEFAULT_LIMIT}"
    return cell


_done: bool | None = None


def read_tables_without_mmap() -> bool:
    """Before the first database opens: make LevelDB read tables through its block
    cache. Whether it will (once per process; later calls answer the same)."""
    global _done
    if _done is None:
        try:
            cell = _locate()
        except (OSError, struct.error, ValueError, IndexError) as exc:
            cell = f"{type(exc).__name__}: {exc}"
        if isinstance(cell, str):
            log.warning("LevelDB keeps reading tables through mmap: %s", cell)
            _done = False
        else:
            cell.value = 0
            _done = True
    return _done


__all__ = ["read_tables_without_mmap"]
