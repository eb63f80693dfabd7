"""Fuzzing the canonical codec and transaction envelopes (issue 10).

Every ``Wire`` class of the project (discovered by importing every package) is
fed valid encodings of random objects (Hypothesis builds them from the field
annotations) and mutations of them: bit flips, msgpack marker bytes, inserted,
deleted, duplicated and spliced ranges, big length fields, truncation, plus
plain random bytes. ``decode`` must return an object whose ``encode()`` is the
input, or raise ``DecodeError``; anything else (another exception, a decode
slower than ``HANG_SECONDS``) is a crash. Signed transactions of every
registered type go through ``check_envelope`` and ``verify_signed_tx`` the same
way, with payloads mutated and signed again so that the body and payload
decoders see the mutations too (those may raise any ``Invalid``).

    python -m benches.fuzz_codec --inputs 1000000

prints inputs tried, time, crashes and peak memory; exits 1 on a crash.
``tests/core/test_codec_fuzz.py`` runs a small campaign of the same checks.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
import random
import resource
import sys
import time
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.codec import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_STR,
    Len,
    MaxItems,
    MaxLen,
    Wire,
)
from core.errors import DecodeError, Invalid
from core.keys import PrivateKey
from core.types import TxBody, sign_tx

PACKAGES = ("core", "storage", "vm", "consensus", "p2p", "apps", "genesis", "node")
# A single decode slower than this counts as a hang.
HANG_SECONDS = 1.0
# Generated values stay small: the bounds are checked by mutating length headers.
MAX_GEN_BYTES = 48
MAX_GEN_ITEMS = 3
CHAIN_ID = "fuzz-chain"

# msgpack markers: fixint/fixmap/fixarray/fixstr edges, nil, the unused 0xc1, bool,
# bin, ext, float, uint, int, fixext, str, array, map, negative fixint.
MARKERS = bytes(
    [0x00, 0x01, 0x7F, 0x80, 0x8F, 0x90, 0x91, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3]
    + list(range(0xC4, 0xE0))
    + [0xE0, 0xFF]
)
# Invariants across fields that random values almost never meet (a whole genesis,
# parameter sets, two conflicting votes): these classes get random bytes and their mutants.
RARELY_VALID = {"CommerceGenesis", "CommerceParams", "DuplicateVoteEvidence", "Genesis"}
BIG = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]


def wire_classes() -> list[type[Wire]]:
    """Every ``Wire`` dataclass defined in the project's packages, by name."""
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            importlib.import_module(info.name)
    found: dict[str, type[Wire]] = {}
    stack: list[type] = [Wire]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            module = sys.modules.get(sub.__module__)
            # ``dataclass(slots=True)`` replaces the class; keep the one the module holds.
            if (
                dataclasses.is_dataclass(sub)
                and sub.__module__.split(".")[0] in PACKAGES
                and getattr(module, sub.__qualname__, None) is sub
            ):
                found[f"{sub.__module__}.{sub.__qualname__}"] = sub
    return [found[name] for name in sorted(found)]


# --- valid objects, from the annotations ---------------------------------------------


def _meta(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *rest = typing.get_args(hint)
        return base, tuple(rest)
    return hint, ()


def value_strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values the codec accepts for a field annotated ``hint`` (small ones, and edges)."""
    base, meta = _meta(hint)
    origin = typing.get_origin(base)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(base) if a is not type(None)][0]
        inner = typing.Annotated[inner, *meta] if meta else inner
        return st.none() | value_strategy(inner)
    if base is bool:
        return st.booleans()
    if base is int:
        # Small values often: enumerations and counts (a vote type is 1 or 2).
        return (
            st.integers(0, 3)
            | st.sampled_from(BIG + [2**32, 2**63, 2**64 - 1])
            | (st.integers(0, 2**64 - 1))
        )
    if base is bytes:
        exact = next((m.n for m in meta if isinstance(m, Len)), None)
        if exact is not None:
            return st.binary(min_size=exact, max_size=exact)
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_BYTES)
        # Empty and full often: fields such as a vote's block hash are either.
        full = st.binary(min_size=limit, max_size=limit) if limit <= 64 else st.nothing()
        return st.just(b"") | full | st.binary(max_size=min(limit, MAX_GEN_BYTES))
    if base is str:
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_STR)
        return st.text(max_size=min(limit, MAX_GEN_BYTES) // 4)
    if origin is tuple:
        limit = next((m.n for m in meta if isinstance(m, MaxItems)), DEFAULT_MAX_ITEMS)
        item = value_strategy(typing.get_args(base)[0])
        return st.lists(item, max_size=min(limit, MAX_GEN_ITEMS)).map(tuple)
    if isinstance(base, type) and issubclass(base, Wire):
        return instances(base)
    raise TypeError(f"no strategy for {hint!r}")


_INSTANCES: dict[type, st.SearchStrategy[Any]] = {}


def instances(cls: type[Wire]) -> st.SearchStrategy[Any]:
    """Objects of ``cls`` (those its ``__post_init__`` refuses are skipped)."""
    cached = _INSTANCES.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # every Wire is a dataclass

    def build(values: tuple[Any, ...]) -> Any:
        try:
            return cls(*values)
        except Invalid:
            return None

    # Deferred: classes may nest themselves through optional fields.
    strategy = st.deferred(
        lambda: (
            st.tuples(*[value_strategy(hints[n]) for n in fields])
            .map(build)
            .filter(lambda obj: obj is not None)
        )
    )
    _INSTANCES[cls] = strategy
    return strategy


# --- mutations -----------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """One to three random edits of ``data`` (sometimes plain random bytes instead)."""
    if rng.random() < 0.03:
        return rng.randbytes(rng.randrange(0, 64))
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        n = len(buf)
        pos = rng.randrange(n + 1)
        op = rng.randrange(10)
        if op == 0 and n:
            buf[pos % n] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[pos % n] = rng.choice(MARKERS)
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3 and n:
            del buf[pos : pos + rng.randrange(1, 9)]
        elif op == 4 and n:
            end = min(n, pos + rng.randrange(1, 17))
            buf[pos:pos] = buf[pos:end]
        elif op == 5:
            del buf[pos:]
        elif op == 6:
            buf += rng.randbytes(rng.randrange(1, 5))
        elif op == 7 and corpus:
            other = rng.choice(corpus)
            start = rng.randrange(len(other) + 1)
            buf[pos : pos + rng.randrange(0, 9)] = other[start : start + rng.randrange(1, 33)]
        elif op == 8 and n:
            # A length or integer field made huge, tiny or off by one.
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(BIG) + rng.choice((-1, 0, 1))
            buf[pos : pos + width] = (value % (1 << (8 * width))).to_bytes(width, "big")
        elif n:
            buf[pos % n] = rng.randrange(256)
    return bytes(buf)


# --- the checks ----------------------------------------------------------------------


class Crash(AssertionError):
    """An input that made a decoder do something other than accept it canonically or refuse it."""


@dataclass
class Tally:
    inputs: int = 0
    accepted: int = 0
    slowest: float = 0.0
    crashes: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.inputs += other.inputs
        self.accepted += other.accepted
        self.slowest = max(self.slowest, other.slowest)
        self.crashes += other.crashes


def check_decode(cls: type[Wire], data: bytes, tally: Tally) -> bool:
    """``cls.decode(data)`` round-trips exactly (True) or raises ``DecodeError`` (False);
    anything else raises ``Crash``."""
    tally.inputs += 1
    start = time.perf_counter()
    try:
        obj = cls.decode(data)
    except DecodeError:
        obj = None
    except Exception as exc:
        raise Crash(f"{cls.__name__}.decode({data.hex()}) raised {exc!r}") from exc
    elapsed = time.perf_counter() - start
    tally.slowest = max(tally.slowest, elapsed)
    if elapsed > HANG_SECONDS:
        raise Crash(f"{cls.__name__}.decode({data.hex()}) took {elapsed:.2f} s")
    if obj is None:
        return False
    tally.accepted += 1
    if obj.encode() != data:
        raise Crash(f"{cls.__name__}.decode({data.hex()}) accepted a non-canonical encoding")
    return True


def fuzz_encoding(
    cls: type[Wire],
    encoded: bytes,
    rng: random.Random,
    mutations: int,
    others: list[type[Wire]],
    tally: Tally,
) -> None:
    """A valid encoding, then ``mutations`` mutants of it, decoded as ``cls`` (and some
    as another class: a frame of one type read as another)."""
    if not check_decode(cls, encoded, tally):
        raise Crash(f"{cls.__name__}: a valid encoding was refused: {encoded.hex()}")
    corpus = [encoded]
    for _ in range(mutations):
        data = mutate(encoded, rng, corpus)
        check_decode(cls, data, tally)
        if rng.random() < 0.1:
            check_decode(rng.choice(others), data, tally)


def check_tx(data: bytes, registry: Any, tally: Tally) -> None:
    """``check_envelope`` and ``verify_signed_tx`` refuse with ``Invalid`` or accept."""
    from vm.executor import check_envelope, verify_signed_tx

    tally.inputs += 1
    start = time.perf_counter()
    for fn in (
        lambda: check_envelope(data, CHAIN_ID, 32 * 1024),
        lambda: verify_signed_tx(data, CHAIN_ID, registry, 32 * 1024),
    ):
        try:
            fn()
        except Invalid:
            continue
        except Exception as exc:
            raise Crash(f"transaction {data.hex()} raised {exc!r}") from exc
    tally.slowest = max(tally.slowest, time.perf_counter() - start)


def tx_seeds(registry: Any) -> Iterator[tuple[str, st.SearchStrategy[Any]]]:
    for tx_type in registry.tx_types:
        payload_cls, _ = registry.lookup(tx_type)
        yield tx_type, instances(payload_cls)


def fuzz_tx(
    key: PrivateKey,
    tx_type: str,
    payload: Wire,
    body_ints: tuple[int, int, int],
    rng: random.Random,
    mutations: int,
    registry: Any,
    tally: Tally,
) -> None:
    """A signed transaction, mutants of its envelope, and mutants of its payload signed again."""
    body = TxBody(*body_ints, tx_type, payload.encode())
    encoded = sign_tx(key, CHAIN_ID, body).encode()
    check_tx(encoded, registry, tally)
    corpus = [encoded, body.payload]
    for i in range(mutations):
        if i % 4 == 0:
            # Past the signature: the body and payload decoders see the mutation.
            mutated = dataclasses.replace(body, payload=mutate(body.payload, rng, corpus))
            try:
                check_tx(sign_tx(key, CHAIN_ID, mutated).encode(), registry, tally)
            except (ValueError, OverflowError):
                pass  # the mutated payload is too large for a body: nothing to sign
        else:
            check_tx(mutate(encoded, rng, corpus), registry, tally)


# --- campaigns -----------------------------------------------------------------------


def codec_campaign(
    examples: int, mutations: int, seed: int, progress: Callable[[str], None] | None = None
) -> Tally:
    """``examples`` valid objects per class, each with ``mutations`` mutants."""
    from node.service import build_registry

    classes = wire_classes()
    for cls in classes:
        # The first decode of a class compiles its codec; keep that out of "slowest".
        try:
            cls.decode(b"")
        except DecodeError:
            pass
    total = Tally()
    fast = settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    # Each example draws the seed of its mutations, so Hypothesis can replay and shrink it.
    seeds = st.integers(0, 2**32).map(lambda n: random.Random(n + seed))
    for cls in classes:
        tally = Tally()
        _run_collecting(
            _codec_test(fast, seeds, cls, classes, mutations, tally), tally, cls.__name__
        )
        total.add(tally)
        if progress:
            progress(f"{cls.__module__}.{cls.__qualname__}: {tally.inputs} inputs")
    registry = build_registry()
    key = PrivateKey.generate()
    for tx_type, payloads in tx_seeds(registry):
        tally = Tally()
        test = _tx_test(fast, seeds, key, tx_type, payloads, mutations, registry, tally)
        _run_collecting(test, tally, f"tx {tx_type}")
        total.add(tally)
        if progress:
            progress(f"tx {tx_type}: {tally.inputs} inputs")
    return total


def _codec_test(
    fast: settings,
    seeds: st.SearchStrategy[random.Random],
    cls: type[Wire],
    classes: list[type[Wire]],
    mutations: int,
    tally: Tally,
) -> Callable[[], None]:
    if cls.__name__ in RARELY_VALID:

        @fast
        @given(data=st.binary(max_size=256), rng=seeds)
        def run_raw(data: bytes, rng: random.Random) -> None:
            check_decode(cls, data, tally)
            for _ in range(mutations):
                check_decode(cls, mutate(data, rng, [data]), tally)

        return run_raw

    @fast
    @given(obj=instances(cls), rng=seeds)
    def run(obj: Wire, rng: random.Random) -> None:
        fuzz_encoding(cls, obj.encode(), rng, mutations, classes, tally)

    return run


def _tx_test(
    fast: settings,
    seeds: st.SearchStrategy[random.Random],
    key: PrivateKey,
    tx_type: str,
    payloads: st.SearchStrategy[Any],
    mutations: int,
    registry: Any,
    tally: Tally,
) -> Callable[[], None]:
    ints = st.tuples(*[value_strategy(int)] * 3)

    @fast
    @given(payload=payloads, body_ints=ints, rng=seeds)
    def run(payload: Wire, body_ints: tuple[int, int, int], rng: random.Random) -> None:
        fuzz_tx(key, tx_type, payload, body_ints, rng, mutations, registry, tally)

    return run


def _run_collecting(test: Callable[[], None], tally: Tally, what: str) -> None:
    try:
        test()
    except Exception as exc:
        # Hypothesis has shrunk it to a small example: record it and go on.
        tally.crashes.append(f"{what}: {type(exc).__name__}: {str(exc)[:2000]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="about this many")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    classes = len(wire_classes())
    tx_types = 0
    from node.service import build_registry

    tx_types = len(build_registry().tx_types)
    # Each example is its valid encoding and its mutants (plus ~10% decoded as another
    # class); transactions are decoded twice. Enough examples to reach the target.
    mutations = 100
    examples = max(1, args.inputs // ((classes + tx_types) * (mutations + 1)))
    start = time.monotonic()
    tally = codec_campaign(examples, mutations, args.seed, print if args.verbose else None)
    elapsed = time.monotonic() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"python -m benches.fuzz_codec --inputs {args.inputs} --seed {args.seed}")
    print(f"{'wire classes':<24}{classes:>12}")
    print(f"{'transaction types':<24}{tx_types:>12}")
    print(f"{'inputs tried':<24}{tally.inputs:>12}")
    print(f"{'accepted (canonical)':<24}{tally.accepted:>12}")
    print(f"{'seconds':<24}{elapsed:>12.1f}")
    print(f"{'inputs per second':<24}{tally.inputs / elapsed:>12.0f}")
    print(f"{'slowest input (ms)':<24}{tally.slowest * 1000:>12.2f}")
    print(f"{'peak RSS (MiB)':<24}{peak_mib:>12.0f}")
    print(f"{'crashes':<24}{len(tally.crashes):>12}")
    for crash in tally.crashes:
        print(crash)
    return 1 if tally.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
