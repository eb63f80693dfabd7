"""Tests assert behaviour through public surfaces: no test reads or writes ``obj._x``.

A test that reaches into a private attribute breaks when the internals change
while the behaviour stays, and passes while the behaviour breaks behind it.
This scans every test module (and the ``benches/`` helpers tests import) with
``ast`` and fails on attribute access to a single-underscore name on anything
but ``self`` or ``cls`` (a test's own helper classes keep private state like
any class), also through ``getattr``/``setattr``/``delattr``/``hasattr`` and
``monkeypatch.setattr`` with a constant name.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# Files not checked yet, each with the reason.
ALLOWED_FILES: set[str] = set()

# Private names of the standard library or a dependency that a test truly needs.
ALLOWED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        # ssl.SSLObject's C object, which holds the OpenSSL SSL *: a hostile peer's
        # KeyUpdates are sent through it (tests/p2p/helpers.py, send_key_updates),
        # since Python's ssl has no call that sends one.
        "_sslobj",
    }
)

_NAMED_ACCESS = {"getattr", "setattr", "delattr", "hasattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in ALLOWED_ATTRIBUTES


def _constant_name(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def private_accesses(source: str, filename: str = "<test>") -> list[str]:
    """Each private attribute access in ``source``, as ``line: expression``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call):
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if called not in _NAMED_ACCESS or not node.args:
                continue
            # getattr(obj, "_x"), monkeypatch.setattr(obj, "_x", v)
            name = _constant_name(node.args[1]) if len(node.args) > 1 else None
            # monkeypatch.setattr("package.module.Class._x", v)
            dotted = _constant_name(node.args[0])
            if dotted is not None and "." in dotted:
                name = dotted.rsplit(".", 1)[1]
            if name is not None and _private(name):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda access: (int(access.split(":")[0]), access))


def _bench_modules_used_by_tests() -> set[Path]:
    """The ``benches/`` modules a test imports (their helpers run as part of the test)."""
    used = set()
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benches."):
                used.add(REPO / (node.module.replace(".", "/") + ".py"))
    return used


def test_no_test_reads_a_private_attribute():
    benches = _bench_modules_used_by_tests()
    assert benches  # the scan of imports works (tests do use bench helpers today)
    offences = []
    for path in sorted(TESTS.rglob("*.py")) + sorted(benches):
        relative = path.relative_to(REPO).as_posix()
        if relative.removeprefix("tests/") in ALLOWED_FILES:
            continue
        for access in private_accesses(path.read_text(), relative):
            offences.append(f"{relative}:{access}")
    assert not offences, "tests read private attributes:\n" + "\n".join(offences)


def test_allowed_files_exist():
    # An allowance outliving its file would silently cover a new one of that name.
    for relative in ALLOWED_FILES:
        assert (TESTS / relative).is_file(), relative


def test_the_scan_finds_private_access():
    source = """
node._conns[key].writer
pool = v._pool
getattr(ident, "_path")
monkeypatch.setattr(store._db, "get", spy)
monkeypatch.setattr("p2p.node.P2PNode._frame", spy)
self._inner.committed(1)
cls._registry
obj.__dict__
obj.public
getattr(obj, "name")
"""
    assert private_accesses(source) == [
        "2: node._conns",
        "3: v._pool",
        "4: getattr(ident, '_path')",
        "5: store._db",
        "6: monkeypatch.setattr('p2p.node.P2PNode._frame', spy)",
    ]
