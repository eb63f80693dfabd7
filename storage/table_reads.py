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
(the limit is read once, when LevelDB builds its default environment, at the first
``leveldb::Options`` any call makes: a ``plyvel.DB``, ``destroy_db`` or
``repair_db``). Table reads then copy each block into the bounded block cache
(``storage.chain_store`` gives each database 8 MB), as LevelDB does on 32-bit
hosts: measured on one table set of 1M keys, a point read costs 3.3-4.0 us against
2.1-4.2 mapped, and the mapped 150 MB of the process became 9 MB.

Unmapped tables hold a descriptor each instead, up to a fifth of the soft
open-file limit as LevelDB reads it when it builds its environment (beyond that,
every read opens and closes its file). So the soft limit is raised to the hard
one first (``raise_open_file_limit``), in every process that opens a store: the
node, ``liveledger audit``, the benches.

Every step is checked, and any surprise (another build of the library, a stripped
one, a file other than the one mapped, a value other than LevelDB's default of
1,000, an address outside the library's writable data, an environment already
built) leaves LevelDB as it is, with a warning: the node then runs as before, with
a larger RSS.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import struct
import threading
from dataclasses import dataclass

log = logging.getLogger("storage.table_reads")

_SYMBOL = b"_ZN7leveldb12_GLOBAL__N_112g_mmap_limitE"
# LevelDB's kDefaultMmapLimit on 64-bit hosts.
_DEFAULT_LIMIT = 1000
# Its file budget, -1 until the environment is built (then a fifth of RLIMIT_NOFILE):
# how we know the mmap limit has not been read yet.
_FILE_LIMIT_SYMBOL = b"_ZN7leveldb12_GLOBAL__N_127g_open_read_only_file_limitE"
# The soft open-file limit asked for when the hard one is unlimited.
OPEN_FILES_WANTED = 1 << 20
_SHT_SYMTAB = 2
_STT_OBJECT = 1
_PT_LOAD = 1


@dataclass(frozen=True, slots=True)
class _Mapping:
    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str


def _mappings() -> list[_Mapping]:
    out = []
    # A mapped file's name need not be UTF-8: kept as it is, never a reason to fail.
    with open("/proc/self/maps", errors="surrogateescape") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) < 6:
                continue
            start, _, end = parts[0].partition("-")
            out.append(
                _Mapping(
                    int(start, 16),
                    int(end, 16),
                    parts[1],
                    int(parts[2], 16),
                    int(parts[4]),
                    parts[5].rstrip("\n"),
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


def _offset_zero_vaddr(image: bytes) -> int | None:
    """The virtual address of the loadable segment that starts the file, which the
    mapping at file offset 0 holds."""
    (phoff,) = struct.unpack_from("<Q", image, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
    for i in range(phnum):
        kind, _flags, offset, vaddr = struct.unpack_from("<IIQQ", image, phoff + i * phentsize)
        if kind == _PT_LOAD and offset == 0:
            return int(vaddr)
    return None


def _cell(
    image: bytes, name: bytes, base: int, path: str, maps: list[_Mapping]
) -> ctypes.c_int | str:
    """The int data object ``name`` of the library mapped at ``base``, or why not."""
    found = _symbol(image, name)
    if found is None or found[1] != ctypes.sizeof(ctypes.c_int):
        return f"no {name.decode()} of an int's size in {path}"
    address = base + found[0]
    size = ctypes.sizeof(ctypes.c_int)
    writable = any(
        m.path == path and m.perms.startswith("rw") and m.start <= address < address + size <= m.end
        for m in maps
    )
    if not writable:
        return f"{name.decode()} is not in {path}'s writable data"
    return ctypes.c_int.from_address(address)


def _locate() -> ctypes.c_int | str:
    """The loaded LevelDB's ``g_mmap_limit``, or why it was not found."""
    maps = _mappings()
    libraries = {(m.path, m.inode) for m in maps if "libleveldb" in m.path.rsplit("/", 1)[-1]}
    if len(libraries) != 1:
        return f"{len(libraries)} LevelDB libraries loaded"
    path, inode = libraries.pop()
    with open(path, "rb") as lib:
        if os.fstat(lib.fileno()).st_ino != inode:
            return f"{path} is not the file mapped (replaced since it was loaded)"
        image = lib.read()
    start = min((m.start for m in maps if m.path == path and m.offset == 0), default=None)
    vaddr = _offset_zero_vaddr(image) if start is not None else None
    if start is None or vaddr is None:
        return f"{path} has no mapping of its first loadable segment"
    base = start - vaddr
    file_limit = _cell(image, _FILE_LIMIT_SYMBOL, base, path, maps)
    if isinstance(file_limit, str):
        return file_limit
    if file_limit.value != -1:
        return "LevelDB's environment is built already (a database was opened before)"
    limit = _cell(image, _SYMBOL, base, path, maps)
    if isinstance(limit, str):
        return limit
    if limit.value != _DEFAULT_LIMIT:
        return f"the limit reads {limit.value}, not LevelDB's default {_DEFAULT_LIMIT}"
    return limit


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return it.

    LevelDB keeps a descriptor per table it reads, up to a fifth of this limit as it
    finds it when it builds its environment; a node's HTTP clients, WAL, signer and
    peers need theirs too (``node.run``). Under the usual soft limit of 1,024 a
    thousand idle HTTP connections left the signer unable to persist its state
    (EMFILE), which halted consensus: the hard limit (often 512k) lifts that far
    beyond what a client can hold open.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            # E.g. above the kernel's nr_open: keep what we have and say so.
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft
        soft = target
    return soft


_done: bool | None = None
# Two threads opening their first stores at once must not both patch: the second
# would read the limit the first set, warn, and answer False.
_lock = threading.Lock()


def read_tables_without_mmap() -> bool:
    """Before the first database opens: raise the open-file limit, and make LevelDB
    read tables through its block cache. Whether it will (once per process; later
    calls answer the same)."""
    global _done
    with _lock:
        if _done is None:
            raise_open_file_limit()
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


__all__ = ["OPEN_FILES_WANTED", "raise_open_file_limit", "read_tables_without_mmap"]
