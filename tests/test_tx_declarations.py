"""Every transaction type's declaration says exactly what its handler's code can do.

The dynamic check (``Executor(check_declarations=True)``, on in the commerce and
staking tests) catches a stray only on the paths the tests run. This test reads
the source instead: from each handler it follows calls by name through vm,
consensus and apps/commerce, and collects the receipt codes (``TxFailed``), the
event kinds (``Event.of``, ``events.make``) and the key prefixes (the prefix enums,
and module constants built from them) it can reach. They must equal what the type
declares: nothing missing (a client would meet an undocumented code; a parallel
scheduler would miss a conflict), nothing stale.

Name-based, so it over-approximates a little: a flag passed as a constant
(``checked=True``, or a string such as ``currency=NATIVE``, by its truth) prunes the
branch it decides (``if flag:``), nothing else does; an argument passed but not
known (``currency=order.currency``) decides nothing, whatever the default. ``state_limit``
is the executor's, for any type. A ``TxFailed`` outside a module-level function
would escape the walk, so there must be none.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import apps.commerce
import consensus
import vm
from apps.commerce.keys import CommercePrefix
from consensus.prefixes import ConsensusPrefix
from vm import KeyPrefix, TxType, prefix_owner
from vm.registry import STATE_LIMIT

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("vm", "consensus", "apps/commerce")
PREFIX_ENUMS = {
    "vm.prefixes.KeyPrefix": KeyPrefix,
    "consensus.prefixes.ConsensusPrefix": ConsensusPrefix,
    "apps.commerce.keys.CommercePrefix": CommercePrefix,
}
EVENT_MAKERS = {"vm.receipts.Event.of", "vm.receipts.Event", "apps.commerce.events.make"}
PACKAGES = {
    "vm": vm.TX_TYPES,
    "consensus": consensus.TX_TYPES,
    "apps.commerce": apps.commerce.TX_TYPES,
}


@dataclass
class Module:
    name: str
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)
    funcs: dict[str, ast.FunctionDef] = field(default_factory=dict)
    strings: dict[str, str] = field(default_factory=dict)
    # Module constants that name prefixes (``_MEMBER = bytes([ConsensusPrefix.MEMBER])``).
    prefixes: dict[str, set[int]] = field(default_factory=dict)
    # ``_event = constructor(Event)``: calls to these build events.
    event_aliases: set[str] = field(default_factory=set)


def _load() -> dict[str, Module]:
    mods = {}
    for source in SOURCES:
        for path in sorted((ROOT / source).glob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = Module(name, ast.parse(path.read_text()))
    for m in mods.values():
        for node in m.tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                m.imports.update(
                    {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
                )
            elif isinstance(node, ast.FunctionDef):
                m.funcs[node.name] = node
            elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                target, value = node.targets[0].id, node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    m.strings[target] = value.value
    for m in mods.values():
        for node in m.tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                target = node.targets[0].id
                found = _prefix_attrs(mods, m, node.value)
                if found:
                    m.prefixes[target] = found
                call = node.value
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "constructor":
                    if _resolve(mods, m, call.args[0]) == ("name", "vm.receipts.Event"):
                        m.event_aliases.add(target)
    return mods


def _resolve(mods: dict[str, Module], m: Module, expr: ast.expr) -> tuple[str, object] | None:
    """What ``expr`` names: ("func", qualname), ("str", value), ("prefixes", set),
    ("module", name), ("name", qualname) for anything else of ours, or None."""
    if isinstance(expr, ast.Name):
        return _lookup(mods, m.name, expr.id)
    if isinstance(expr, ast.Attribute):
        base = _resolve(mods, m, expr.value)
        if base and base[0] == "module":
            return _lookup(mods, str(base[1]), expr.attr)
        if base and base[0] == "name":
            return ("name", f"{base[1]}.{expr.attr}")
    return None


def _lookup(mods: dict[str, Module], module: str, name: str, depth: int = 0):
    m = mods.get(module)
    if m is None or depth > 8:
        qual = f"{module}.{name}"
        return ("module", qual) if qual in mods else ("name", qual)
    if name in m.funcs:
        return ("func", f"{module}.{name}")
    if name in m.strings:
        return ("str", m.strings[name])
    if name in m.prefixes:
        return ("prefixes", m.prefixes[name])
    if name in m.imports:
        target = m.imports[name]
        if target in mods:
            return ("module", target)
        owner, _, attr = target.rpartition(".")
        return _lookup(mods, owner, attr, depth + 1)
    return ("name", f"{module}.{name}")


def _prefix_attrs(mods: dict[str, Module], m: Module, node: ast.AST) -> set[int]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute):
            base = _resolve(mods, m, n.value)
            if base and base[0] == "name" and base[1] in PREFIX_ENUMS:
                out.add(int(PREFIX_ENUMS[str(base[1])][n.attr]))
    return out


@dataclass
class Reach:
    codes: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    prefixes: set[int] = field(default_factory=set)
    unknown: list[str] = field(default_factory=list)

    def add(self, other: Reach) -> None:
        self.codes |= other.codes
        self.events |= other.events
        self.prefixes |= other.prefixes
        self.unknown += other.unknown


class Walker:
    """Follows calls from a function; each function once per binding of its parameters."""

    def __init__(self, mods: dict[str, Module]) -> None:
        self.mods = mods
        self.done: dict[tuple[str, frozenset], Reach] = {}

    def reach(self, qual: str, env: frozenset = frozenset()) -> Reach:
        key = (qual, env)
        if key not in self.done:
            self.done[key] = Reach()  # a recursive call adds nothing new
            module, _, name = qual.rpartition(".")
            m, fn = self.mods[module], self.mods[module].funcs[name]
            bound = dict(env)
            for param, default in _defaults(fn).items():
                if param not in bound:
                    value = self._value(m, default, {})
                    if value is not None:
                        bound[param] = value
            out = Reach()
            # The body only: the decorator holds the declaration itself.
            self._block(m, fn.body, bound, out)
            self.done[key] = out
        return self.done[key]

    def _value(self, m: Module, expr: ast.expr | None, env: dict) -> object:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str | bool):
            return expr.value
        if isinstance(expr, ast.Name) and expr.id in env:
            return env[expr.id]
        r = _resolve(self.mods, m, expr) if expr is not None else None
        return r[1] if r and r[0] == "str" else None

    def _block(self, m: Module, stmts: list[ast.stmt], env: dict, out: Reach) -> bool:
        """Walk ``stmts``; True if they surely end (raise or return) before falling through."""
        for stmt in stmts:
            if isinstance(stmt, ast.If):
                test = self._value(m, stmt.test, env) if isinstance(stmt.test, ast.Name) else None
                if isinstance(test, bool | str):
                    # A flag passed as a constant decides its branch.
                    if self._block(m, stmt.body if test else stmt.orelse, env, out):
                        return True
                    continue
                self._exprs(m, stmt.test, env, out)
                ends = self._block(m, stmt.body, env, out)
                if self._block(m, stmt.orelse, env, out) and ends:
                    return True
            elif isinstance(stmt, ast.For | ast.While | ast.With | ast.Try):
                for part in ("iter", "test", "items"):
                    if hasattr(stmt, part):
                        self._exprs(m, getattr(stmt, part), env, out)
                for part in ("body", "orelse", "finalbody"):
                    self._block(m, getattr(stmt, part, []), env, out)
                for handler in getattr(stmt, "handlers", []):
                    self._block(m, handler.body, env, out)
            else:
                self._exprs(m, stmt, env, out)
                if isinstance(stmt, ast.Raise | ast.Return):
                    return True
        return False

    def _exprs(self, m: Module, node: ast.AST | list, env: dict, out: Reach) -> None:
        nodes = node if isinstance(node, list) else [node]
        calls = {id(c.func) for n in nodes for c in ast.walk(n) if isinstance(c, ast.Call)}
        for n in (x for top in nodes for x in ast.walk(top)):
            if isinstance(n, ast.Call):
                self._call(m, n, env, out)
            elif isinstance(n, ast.Name | ast.Attribute) and id(n) not in calls:
                r = _resolve(self.mods, m, n)
                if r and r[0] == "prefixes":
                    out.prefixes |= r[1]  # type: ignore[arg-type]  # a set of prefixes
                elif r and r[0] == "func":
                    # A function passed on (a callback, a partial) may run.
                    out.add(self.reach(str(r[1])))
                if isinstance(n, ast.Attribute):
                    out.prefixes |= _prefix_attrs(self.mods, m, n)

    def _call(self, m: Module, call: ast.Call, env: dict, out: Reach) -> None:
        func = call.func
        r = _resolve(self.mods, m, func)
        if getattr(func, "id", getattr(func, "attr", "")) == "TxFailed":
            code = call.args[1] if len(call.args) > 1 else None
            code = next((k.value for k in call.keywords if k.arg == "code"), code)
            value = "tx_failed" if code is None else self._value(m, code, env)
            if isinstance(value, str):
                out.codes.add(value)
            else:
                out.unknown.append(f"{m.name}: code {ast.unparse(call)}")
        elif (r and r[0] in ("func", "name") and r[1] in EVENT_MAKERS) or (
            isinstance(func, ast.Name) and func.id in m.event_aliases
        ):
            kind = self._value(m, call.args[0], env) if call.args else None
            if isinstance(kind, str):
                out.events.add(kind)
            else:
                out.unknown.append(f"{m.name}: event {ast.unparse(call)}")
        elif r and r[0] == "func":
            module, _, name = str(r[1]).rpartition(".")
            callee = self.mods[module].funcs[name]
            params = [a.arg for a in callee.args.posonlyargs + callee.args.args]
            bound = {}
            for i, arg in enumerate(call.args):
                if i < len(params) and not isinstance(arg, ast.Starred):
                    bound[params[i]] = self._value(m, arg, env)
            for kw in call.keywords:
                if kw.arg:
                    bound[kw.arg] = self._value(m, kw.value, env)
            # A value passed but not known stands in for its default too: it decides nothing.
            env_of = frozenset((k, UNKNOWN if v is None else v) for k, v in bound.items())
            out.add(self.reach(str(r[1]), env_of))


class _Unknown:
    """An argument's value the walk cannot know (neither a flag nor a string)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def _defaults(fn: ast.FunctionDef) -> dict[str, ast.expr]:
    a = fn.args
    positional = a.posonlyargs + a.args
    out = {
        p.arg: d
        for p, d in zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True)
    }
    out.update(
        {k.arg: d for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None}
    )
    return out


MODS = _load()
WALKER = Walker(MODS)
DECLARED = [(package, t) for package, types in PACKAGES.items() for t in types]


def _reach(t: TxType) -> Reach:
    handler = t.handler
    return WALKER.reach(f"{handler.__module__}.{handler.__name__}")


@pytest.mark.parametrize(("package", "decl"), DECLARED, ids=[t.name for _, t in DECLARED])
def test_a_declaration_says_what_its_handler_can_do(package, decl):
    found = _reach(decl)
    assert found.unknown == []
    assert found.codes - {STATE_LIMIT} == set(decl.codes)
    assert found.events == set(decl.events)
    assert found.prefixes == set(decl.reads | decl.writes)


FAST = [t for _, t in DECLARED if t.fast_path is not None]


@pytest.mark.parametrize("decl", FAST, ids=[t.name for t in FAST])
def test_a_fast_path_can_do_what_its_handler_can(decl):
    # ``TxType.fast_path``: the executor's path around the handler, in one function.
    # It writes its receipt's encoding directly, events included, which this walk
    # cannot read: tests/vm/test_fast_path.py and tests/apps/commerce/test_tip_fast_path.py
    # hold those receipts byte for byte to the generic path's, which runs there under
    # the declaration check.
    fast = decl.fast_path
    fast = getattr(fast, "func", fast)  # bound like the handler (functools.partial)
    found = WALKER.reach(f"{fast.__module__}.{fast.__name__}")
    assert found.unknown == []
    assert found.codes - {STATE_LIMIT} == set(decl.codes)
    assert found.prefixes == set(decl.reads | decl.writes)


def test_the_flood_types_have_fast_paths():
    assert sorted(t.name for t in FAST) == ["commerce.tip", "transfer"]


@pytest.mark.parametrize(("package", "decl"), DECLARED, ids=[t.name for _, t in DECLARED])
def test_a_type_touches_its_own_packages_state_and_accounts(package, decl):
    owners = {prefix_owner(p) for p in decl.reads | decl.writes}
    assert owners <= {package, "vm"}, owners


def test_the_walk_sees_every_failure():
    # Codes raised in a method or a class body would be invisible to it.
    for m in MODS.values():
        top = {id(n) for fn in m.funcs.values() for n in ast.walk(fn)}
        stray = [
            n.lineno
            for n in ast.walk(m.tree)
            if isinstance(n, ast.Call)
            and getattr(n.func, "id", "") == "TxFailed"
            and id(n) not in top
        ]
        assert stray == [], (m.name, stray)


def test_the_walk_finds_what_it_should():
    # A check of the checker: known facts of the source.
    place = next(t for t in apps.commerce.TX_TYPES if t.name == "commerce.place_order")
    found = _reach(place)
    assert {"sold_out", "insufficient_funds", "u64_overflow", "invalid_amount"} <= found.codes
    assert KeyPrefix.ACCOUNT in found.prefixes and CommercePrefix.ESCROW in found.prefixes
    unbond = next(t for t in consensus.TX_TYPES if t.name == "unbond")
    # move_tokens(..., checked=True): a pool shortfall is a node fault, not a receipt.
    assert "insufficient_funds" not in _reach(unbond).codes
