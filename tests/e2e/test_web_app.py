"""The web app the node serves, in headless Chromium against a real node (issue 15).

One single-validator node process (real LevelDB, real sockets, 200 ms blocks) serves the
module; the merchant's side runs through the CLI in this process (click's runner). The
browser reaches the node through a test proxy on loopback, which can drop the session
feed's WebSockets (and refuse new ones for a while) and flip one byte of an item's
answer. Every page is saved as a phone-sized screenshot under
``test-artifacts/web/`` (LIVELEDGER_ARTIFACTS overrides the folder).

Debian's chromium (``make system-deps``) and the built app (``make web``) are needed;
without either the module skips and says which.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import nacl.secret
import pytest
from aiohttp import ClientSession, WSMsgType, web
from click.testing import CliRunner

from apps.commerce.auctions import bidder_tag
from apps.commerce.payloads import PlaceOrder
from apps.commerce.provenance import gtin_check_digit
from apps.commerce.sealing import SealError, encryption_keypair, open_plaintext
from cli.keyring import Keyring
from cli.main import main
from core.keys import PrivateKey, format_address, parse_address
from core.types import SignedTx, TxBody
from genesis import create_localnet
from genesis.document import Genesis
from node.web import WEB_DIST
from tests.e2e.helpers import REPO, NodeProcess, http_json
from vm import Receipt

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
ARTIFACTS = Path(os.environ.get("LIVELEDGER_ARTIFACTS", REPO / "test-artifacts")) / "web"
# A 13-digit EAN as printed on the package; the chain (and the link) hold it as GTIN-14.
EAN13 = "950600013435" + str(gtin_check_digit("0950600013435"))
GTIN14 = "0" + EAN13
SHIP_TO = "Ada Lovelace, 12 Harbour Street, 80-001 Gdansk"
# Timeouts of page expectations (ms): a block is 200 ms, proofs are checked in the page.
WAIT_MS = 20_000
# A hostile answer's length: far past the longest the page reads (web/src/lib/api.js,
# MAX_ANSWER_BYTES: 4 MiB), and past what loopback's socket buffers hold.
FLOOD_BYTES = 64 * 1024 * 1024
# A slow answer: a byte every TRICKLE_S seconds (each in time for any idle timeout), for
# TRICKLE_BYTES bytes (a minute and a half).
TRICKLE_S = 0.2
TRICKLE_BYTES = 450
# A hostile feed message's length: past the longest a page reads (web/src/lib/feed.js,
# MAX_FEED_MESSAGE: 128 KiB), and a position past any real one (2**40).
HUGE_MESSAGE = 200_000
FAR = 2**40

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (dev extras)"
)
sync_api.expect.set_options(timeout=WAIT_MS)
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is absent: `make system-deps` installs Debian's chromium as root",
    ),
    pytest.mark.skipif(
        not (WEB_DIST / "index.html").exists(),
        reason=f"the web app is not built in {WEB_DIST}: run `make web`",
    ),
]


class Proxy:
    """An HTTP and WebSocket proxy to the node, in a thread of its own, with two faults:
    ``drop_feeds()`` cuts every WebSocket as a network would (and refuses new ones while
    ``hold`` is set), ``tamper`` flips one byte of every item answer, and ``rewrite``, if
    set, rewrites every answer (path, body -> body) as a hostile node would; ``answer``,
    if set, answers a path itself ((status, JSON body), or None to pass it on); ``forward``,
    if set, asks the node for ``forward(path and query)`` instead of what was asked (a
    node answering another page than the one asked for); ``flood``, if set and true of
    a path, answers it with a body that does not end (``Proxy.flooding``); ``trickle``,
    if set and true of a path, answers it a byte at a time (``Proxy.trickling``);
    ``inject``, if set, is sent once to the next WebSocket opened, before anything the
    node sends; ``full``, while set, answers every WebSocket as a node at its feed cap
    does (opened, then closed with 1013)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.tamper = False
        self.rewrite: Callable[[str, bytes], bytes] | None = None
        self.answer: Callable[[str], tuple[int, dict] | None] | None = None
        self.forward: Callable[[str], str] | None = None
        self.flood: Callable[[str], bool] | None = None
        # Bytes of the last flood the page took (written to its connection), and whether
        # that flood is over (the page let go, or all FLOOD_BYTES went).
        self.flooded = 0
        self.flood_over = threading.Event()
        self.trickle: Callable[[str], bool] | None = None
        # Bytes of the last trickle the page took, and whether that trickle is over.
        self.trickled = 0
        self.trickle_over = threading.Event()
        self.inject: str | None = None
        # The close code of the WebSocket ``inject`` went to, once it closed (None: it
        # closed without one), and whether it did.
        self.injected_close: int | None = None
        self.injected_over = threading.Event()
        self.hold = False
        # Answer every WebSocket as a node at its feed cap does (``_websocket``).
        self.full = False
        # Every POST's path and body, in order (what the page sent the node).
        self.posted: list[tuple[str, bytes]] = []
        # The open WebSockets' connections, by request.
        self.feeds: dict[int, asyncio.BaseTransport] = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.session = ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        if self.flood is not None and self.flood(request.path):
            return await self.flooding(request)
        if self.trickle is not None and self.trickle(request.path):
            return await self.trickling(request)
        own = None if self.answer is None else self.answer(request.path)
        if own is not None:
            return web.json_response(own[1], status=own[0])
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "accept-encoding")
        }
        target = request.path_qs if self.forward is None else self.forward(request.path_qs)
        data = await request.read()
        if request.method == "POST":
            self.posted.append((request.path, data))
        async with self.session.request(
            request.method, self.upstream + target, headers=headers, data=data
        ) as resp:
            body = await resp.read()
            if self.tamper and request.path.startswith("/v1/items/") and resp.status == 200:
                body = flip_one_byte(body)
            if self.rewrite is not None and resp.status == 200:
                body = self.rewrite(request.path, body)
            out = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() in ("content-type", "cache-control", "content-security-policy")
            }
            return web.Response(status=resp.status, body=body, headers=out)

    async def flooding(self, request: web.Request) -> web.StreamResponse:
        """An answer with no length that goes on (chunked), as a hostile node may send:
        JSON that opens a string and fills it; after FLOOD_BYTES it ends (well-formed), so
        a page that reads it all parses it."""
        self.flooded = 0
        self.flood_over.clear()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            await resp.write(b'{"padding": "')
            while self.flooded < FLOOD_BYTES:
                await resp.write(chunk)
                self.flooded += len(chunk)
            await resp.write(b'"}')
            await resp.write_eof()
        except ConnectionError:
            pass  # the page let go
        finally:
            self.flood_over.set()
        return resp

    async def trickling(self, request: web.Request) -> web.StreamResponse:
        """An answer that comes a byte every TRICKLE_S seconds, as a slow or hostile node
        may send it: never idle for long, never done for a minute and more; then it ends
        (well-formed JSON)."""
        self.trickled = 0
        self.trickle_over.clear()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            await resp.write(b'{"padding": "')
            while self.trickled < TRICKLE_BYTES:
                await asyncio.sleep(TRICKLE_S)
                await resp.write(b"x")
                self.trickled += 1
            await resp.write(b'"}')
            await resp.write_eof()
        except ConnectionError:
            pass  # the page let go
        finally:
            self.trickle_over.set()
        return resp

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if self.hold:
            return web.Response(status=503, text="held")
        if self.full:
            # As a node at its feed cap answers: the socket opens, then closes with 1013.
            full = web.WebSocketResponse()
            await full.prepare(request)
            await full.close(code=1013, message=b"the node serves as many feeds as it can")
            return full
        ws_up = await self.session.ws_connect(self.upstream.replace("http", "ws") + request.path_qs)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert request.transport is not None
        self.feeds[id(request)] = request.transport
        injected, self.inject = self.inject, None
        if injected is not None:
            await ws.send_str(injected)

        async def down() -> None:
            async for msg in ws_up:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
            await ws.close(code=ws_up.close_code or 1000)

        task = asyncio.ensure_future(down())
        try:
            async for _msg in ws:
                pass
        finally:
            self.feeds.pop(id(request), None)
            task.cancel()
            await ws_up.close()
            if injected is not None:
                self.injected_close = ws.close_code
                self.injected_over.set()
        return ws

    def drop_feeds(self) -> None:
        """Cut every open WebSocket without a closing handshake (the browser sees 1006)."""

        def cut() -> None:
            for transport in list(self.feeds.values()):
                transport.abort()

        self.loop.call_soon_threadsafe(cut)

    def stop(self) -> None:
        async def close() -> None:
            await self.session.close()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def flip_one_byte(body: bytes) -> bytes:
    """The answer with one byte changed: a hex digit inside the first proven value (the
    item's own record), so the answer is still well-formed JSON."""
    at = body.index(b'"value": "', body.index(b'"entries"')) + len(b'"value": "') + 40
    new = b"0" if body[at : at + 1] != b"0" else b"1"
    return body[:at] + new + body[at + 1 :]


class World:
    """The node, the proxy, the CLI's key ring and what the setup made."""

    def __init__(self, root: Path) -> None:
        layout = create_localnet(root / "net", 1, "", block_interval_ms=200)
        self.node = NodeProcess(layout.nodes[0].home)
        self.keyring = root / "net" / "keyring"
        ring = Keyring(self.keyring)
        for name in ("merchant", "host", "shopper1"):
            ring.create(name, "")
        self.env = {
            "LIVELEDGER_PASSPHRASE": "",
            "LIVELEDGER_KEYRING": str(self.keyring),
            "LIVELEDGER_NODE": "",
        }
        self.ids: dict[str, str] = {}

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=self.env)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def address(self, name: str) -> str:
        return Keyring(self.keyring).address(name)

    def setup_shop(self) -> None:
        for name in ("merchant", "host", "shopper1"):
            self.cli("tx", "transfer", "--from", "faucet", "--to", name, "--amount", "10000000")
        self.cli("tx", "transfer", "--from", "faucet", "--to", "host", "--amount", "1", "--wait")
        self.cli("merchant", "register", "--from", "merchant", "--name", "Acme Kettles", "--wait")
        self.cli("merchant", "approve", "merchant", "--from", "faucet", "--wait")
        self.cli("roles", "set", "merchant", "--roles", "maker", "--from", "faucet", "--wait")
        out = self.cli(
            "listing", "create", "--title", "Copper kettle", "--description",
            "1.7 l, hammered copper", "--price", "2500", "--stock", "50", "--from", "merchant",
            "--wait",
        )  # fmt: skip
        self.ids["listing"] = event(out, "commerce.listing_created")["listing"]
        out = self.cli(
            "live", "open", "--host", "host", "--title", "Kettles live", "--from", "merchant",
            "--wait",
        )  # fmt: skip
        self.ids["session"] = event(out, "commerce.session_opened")["session"]
        self.cli(
            "live", "pin", self.ids["session"], self.ids["listing"], "--from", "merchant", "--wait"
        )
        out = self.cli(
            "live", "deal", self.ids["session"], self.ids["listing"], "--price", "1999",
            "--allocation", "10", "--per-buyer-cap", "3", "--minutes", "30", "--from",
            "merchant", "--wait",
        )  # fmt: skip
        self.ids["deal"] = event(out, "commerce.deal_opened")["deal"]
        # A serialized item with a history: made, inspected, handed to the host and back.
        self.cli(
            "item", "register", EAN13, "SN-1", "--description", "Copper kettle",
            "--read-point", "urn:acme:plant-1", "--event-time", "1m ago", "--from", "merchant",
            "--wait",
        )  # fmt: skip
        self.cli(
            "item", "attest", EAN13, "SN-1", "--step", "inspecting", "--event-time", "now",
            "--from", "merchant", "--wait",
        )  # fmt: skip
        self.cli("item", "handoff", EAN13, "SN-1", "--to", "host", "--from", "merchant", "--wait")
        self.cli("item", "accept", EAN13, "SN-1", "--from", "host", "--wait")

    def order(self, buyer: str) -> str:
        """A deal order placed from the CLI: its order id."""
        out = self.cli(
            "order", "place", self.ids["listing"], "--deal", self.ids["deal"], "--address",
            "1 Main St", "--from", buyer, "--wait",
        )  # fmt: skip
        return event(out, "commerce.order_placed")["order"]


def event(out: str, kind: str) -> dict[str, str]:
    for line in out.splitlines():
        if line.startswith(kind + " "):
            return dict(p.split("=", 1) for p in line.split()[1:])
    raise AssertionError(f"no {kind} in {out!r}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("web"))
    w.node.start()
    try:
        w.env["LIVELEDGER_NODE"] = w.node.url
        w.proxy = Proxy(w.node.url)
        try:
            w.setup_shop()
            yield w
        finally:
            w.proxy.stop()
    finally:
        w.node.stop()


@pytest.fixture(scope="module")
def playwright():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        yield pw


def phone(pw, profile: Path):
    """A phone-sized Chromium with a profile (its own storage) of its own."""
    context = pw.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_FLAGS,
        headless=True,
        viewport=PHONE,
        device_scale_factor=1,
        is_mobile=True,
        has_touch=True,
        accept_downloads=True,
    )
    context.set_default_timeout(WAIT_MS)
    return context


@pytest.fixture(scope="module")
def browser(world, playwright, tmp_path_factory):
    context = phone(playwright, tmp_path_factory.mktemp("chromium-profile"))
    page = context.pages[0] if context.pages else context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    # Nothing the page ran threw.
    assert errors == [], errors


def shot(page, name: str, at: str | None = None, top: str | None = None) -> None:
    """The phone's screen as it is (scrolled to ``at`` if given, or with ``top`` just under
    the sticky header), saved for people to see."""
    if at is not None:
        page.locator(at).scroll_into_view_if_needed()
    if top is not None:
        page.locator(top).evaluate(
            "e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 56)"
        )
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def ticker_orders(page) -> list[str]:
    return page.locator("#ticker li[data-kind='commerce.order_placed']").all_inner_texts()


def test_live_page_follows_orders_and_resumes_after_a_dropped_feed(world, browser):
    page = browser
    session = world.ids["session"]
    page.goto(f"{world.proxy.url}/live/{session}")
    expect = sync_api.expect
    expect(page.locator("#feed-state")).to_have_text("live")
    expect(page.locator(f"[data-deal='{world.ids['deal']}'] .left")).to_have_text("10 of 10 left")
    first = world.order("shopper1")
    expect(page.locator("#ticker")).to_contain_text(f"Order #{first}:")
    expect(page.locator(f"[data-deal='{world.ids['deal']}'] .left")).to_have_text("9 of 10 left")

    # The connection drops and stays down while an order lands; the page comes back
    # with its last position: the order shows once, the earlier one is not repeated.
    world.proxy.hold = True
    world.proxy.drop_feeds()
    expect(page.locator("#feed-state")).to_have_text("reconnecting")
    second = world.order("shopper1")
    world.proxy.hold = False
    expect(page.locator("#feed-state")).to_have_attribute("data-connections", "2")
    expect(page.locator("#ticker")).to_contain_text(f"Order #{second}:")
    expect(page.locator(f"[data-deal='{world.ids['deal']}'] .left")).to_have_text("8 of 10 left")
    orders = ticker_orders(page)
    assert [o.split(":")[0] for o in orders] == [f"Order #{second}", f"Order #{first}"]
    positions = page.locator("#ticker li").evaluate_all("els => els.map(e => e.dataset.pos)")
    assert len(positions) == len(set(positions))
    shot(page, "live-session")


def test_a_shopper_makes_a_key_is_funded_and_orders_with_one_tap(world, browser):
    page = browser
    expect = sync_api.expect
    session = world.ids["session"]
    page.goto(f"{world.proxy.url}/live/{session}")
    buy = page.locator(f"[data-deal='{world.ids['deal']}'] button.buy")
    expect(buy).to_be_enabled()
    # No key yet: the tap leads to making one.
    buy.click()
    expect(page).to_have_url(re.compile(r"/wallet\?next="))
    page.fill("#passphrase", "correct horse battery")
    page.fill("#passphrase2", "correct horse battery")
    page.click("#create-key")
    address = page.locator("#my-address").inner_text(timeout=WAIT_MS)
    assert address.startswith("ll1")
    world.ids["web_address"] = address
    shot(page, "wallet-new-key")
    # Nothing in the browser's storage holds the key or the address in the clear.
    stored = page.evaluate("() => JSON.stringify(localStorage)")
    assert "ll1" in stored and "Harbour" not in stored
    # Enough for one kettle at the deal's price and its fee (1,999 + 1,000), a tip of
    # 100 and its fee, and a little.
    world.cli("tx", "transfer", "--from", "faucet", "--to", address, "--amount", "5200", "--wait")
    page.click("nav a[href='/wallet']")
    expect(page.locator("#balance-amount")).to_have_text("5,200")
    expect(page.locator("#balance-proof")).to_contain_text("✓ verified")
    page.goto(f"{world.proxy.url}/wallet?next=/live/{session}")
    # A full load forgets the unlocked key: the passphrase opens it again.
    page.fill("#passphrase", "correct horse battery")
    page.click("#unlock")
    page.fill("#ship-to", SHIP_TO)
    shot(page, "wallet-funded")
    page.click("#save-ship")
    expect(page).to_have_url(re.compile(rf"/live/{session}$"))

    # One tap: signed here, the address sealed here, final in a block.
    buy.click()
    outcome = page.locator("#outcome p.ok")
    expect(outcome).to_contain_text("is final")
    # Said final once its block proves it, as the explorer checks it.
    expect(outcome).to_have_attribute("data-verified", "yes")
    expect(outcome).to_contain_text("✓ verified here")
    order_id, height = re.search(
        r"Order #(\d+) is final \(block (\d+)\)", outcome.inner_text()
    ).groups()
    expect(page.locator("#ticker")).to_contain_text(f"Order #{order_id}:")
    shot(page, "live-ordered")
    world.ids["web_order_height"] = height

    # The merchant's CLI opens the address the browser sealed (and checks it against
    # the commitment on chain).
    assert world.cli("order", "address", order_id, "--from", "merchant").strip() == SHIP_TO

    # A tip, signed here, lands in the ticker and the session's total.
    page.fill("#tip-message", "great show")
    page.click("footer.tipbar button:has-text('Tip 100')")
    expect(page.locator("#outcome p.ok")).to_contain_text("Tip of 100 sent")
    expect(page.locator("#ticker li[data-kind='commerce.tip']")).to_have_text(
        "Tip 100: “great show”"
    )
    expect(page.locator("#tips-total")).to_have_text("100")
    # A refusal reads as a sentence: 1,101 left cannot pay a tip of 1,000 and its fee.
    page.click("footer.tipbar button:has-text('Tip 1,000')")
    expect(page.locator("#outcome p.error")).to_contain_text("balance is too low")
    shot(page, "live-refused")


def test_auctions_run_live_on_the_page_and_the_shopper_bids_from_it(world, browser):
    """Started by the merchant's CLI, outbid from the page (signed and sealed there), won:
    price, leader tag, clock (an anti-snipe extension from the feed) and result follow
    the feed; the winner's order carries the address the page sealed."""
    page = browser
    expect = sync_api.expect
    session, listing = world.ids["session"], world.ids["listing"]
    me = world.ids["web_address"]
    # The shopper from the test above (1,101 left): enough for a bid and its fee.
    world.cli("tx", "transfer", "--from", "faucet", "--to", me, "--amount", "3000", "--wait")
    page.goto(f"{world.proxy.url}/wallet?next=/live/{session}")
    page.fill("#passphrase", "correct horse battery")
    page.click("#unlock")
    page.click("#save-ship")
    expect(page.locator("#feed-state")).to_have_text("live")
    expect(page.locator("#auctions")).to_be_hidden()

    def start(*flags: str) -> dict[str, str]:
        out = world.cli(
            "live", "auction", "start", session, listing, "--start-price", "100", *flags,
            "--from", "merchant", "--wait",
        )  # fmt: skip
        return event(out, "commerce.auction_started")

    def rival_bids(auction: str) -> str:
        world.cli("bid", auction, "100", "--address", "1 Main St", "--from", "shopper1", "--wait")
        return bidder_tag(int(auction), parse_address(world.address("shopper1")))

    # Sudden death (no extension), so that it ends on time: long enough for the bids
    # below on a busy machine.
    sold = start("--duration", "8s", "--sudden-death")
    card = page.locator(f"[data-auction='{sold['auction']}']")
    expect(card.locator(".auction-price")).to_have_text("100")
    expect(card.locator(".leader")).to_have_text("No bid yet")
    expect(card.locator(".timer")).to_contain_text("ends in")
    expect(card.locator(".timer")).to_have_attribute("data-end-ms", sold["end_ms"])
    expect(card.locator(".tag")).to_have_text(rival_bids(sold["auction"]))

    # Below the next valid bid (100 + 5): refused before sending, in a sentence.
    card.locator("input.max").fill("104")
    card.locator("button.bid").click()
    expect(page.locator("#outcome p.error")).to_have_text(
        "Your maximum is too low: bid at least 105."
    )
    card.locator("input.max").fill("300")
    card.locator("button.bid").click()
    expect(page.locator("#outcome p.ok")).to_contain_text("You lead at 105")
    mine = bidder_tag(int(sold["auction"]), parse_address(me))
    expect(card.locator(".auction-price")).to_have_text("105")
    expect(card.locator(".leader")).to_have_text(f"Leading: {mine} (you)")

    # Meanwhile a timed one: with 5 s to run, a bid resets its clock to the counter time
    # (10 s); the page's clock takes the new end from the feed. It ends after this test.
    timed = start("--duration", "5s")
    other = page.locator(f"[data-auction='{timed['auction']}']")
    rival = rival_bids(timed["auction"])
    expect(other.locator(".tag")).to_have_text(rival)
    extended = http_json(f"{world.node.url}/v1/auctions/{timed['auction']}")["auction"]["end_ms"]
    assert extended > int(timed["end_ms"])
    expect(other.locator(".timer")).to_have_attribute("data-end-ms", str(extended))
    shot(page, "live-auction", at="#auctions")

    expect(card).to_have_attribute("data-status", "won")
    result = card.locator(".result").inner_text()
    assert re.fullmatch(r"Sold for 105 \(order #\d+\): you won!", result), result
    expect(page.locator("#ticker")).to_contain_text(f"Sold for 105 to {mine}")
    shot(page, "live-auction-won", at=f"[data-auction='{sold['auction']}']")
    # The winner's order carries the address the page sealed with the bid.
    order_id = re.search(r"order #(\d+)", result).group(1)
    assert world.cli("order", "address", order_id, "--from", "merchant").strip() == SHIP_TO
    # A new load shows the open auction from the session's snapshot, as the feed left it.
    page.reload()
    expect(other.locator(".tag")).to_have_text(rival)
    expect(other.locator(".auction-price")).to_have_text("100")
    expect(other.locator(".timer")).to_have_attribute("data-end-ms", str(extended))


def test_a_deal_priced_in_an_issued_currency_is_bought_in_it_from_the_page(world, browser):
    """The order the page signs names the listing's currency (the buyer agrees to it as
    to the price): a deal on a listing priced in USD is bought in USD with one tap."""
    page = browser
    expect = sync_api.expect
    session, me = world.ids["session"], world.ids["web_address"]
    home = ("--home", str(world.node.home), "--wait")
    grant = world.cli("gov", "propose-grant-issuer", "node0", "USD", "--decimals", "2", *home)
    world.cli("gov", "vote", event(grant, "proposal_created")["proposal_id"], *home)
    world.cli("currency", "mint", "USD", "--to", me, "--amount", "5000", *home)
    # The fee is paid in the native token.
    world.cli("tx", "transfer", "--from", "faucet", "--to", me, "--amount", "2000", "--wait")
    out = world.cli(
        "listing", "create", "--title", "Kettle in dollars", "--price", "1500", "--stock", "5",
        "--currency", "USD", "--from", "merchant", "--wait",
    )  # fmt: skip
    listing = event(out, "commerce.listing_created")["listing"]
    world.ids["usd_listing"] = listing
    out = world.cli(
        "live", "deal", session, listing, "--price", "1200", "--allocation", "3",
        "--per-buyer-cap", "1", "--minutes", "30", "--from", "merchant", "--wait",
    )  # fmt: skip
    deal = event(out, "commerce.deal_opened")["deal"]
    page.goto(f"{world.proxy.url}/wallet?next=/live/{session}")
    page.fill("#passphrase", "correct horse battery")
    page.click("#unlock")
    page.click("#save-ship")
    buy = page.locator(f"[data-deal='{deal}'] button.buy")
    expect(buy).to_have_text("Buy now · 1,200 USD")
    buy.click()
    expect(page.locator("#outcome p.ok")).to_contain_text("is final")
    balances = http_json(f"{world.node.url}/v1/accounts/{me}")["balances"]
    assert [(b["currency"], b["balance"]) for b in balances] == [("USD", 3800)]


def test_the_wallet_names_the_genesis_it_hashed_not_the_one_the_node_names(world, browser):
    page = browser
    expect = sync_api.expect
    true = http_json(f"{world.node.url}/v1/genesis")["hash"]

    def lie(path: str, body: bytes) -> bytes:
        if path != "/v1/genesis":
            return body
        doc = json.loads(body)
        doc["hash"] = "ab" * 32
        return json.dumps(doc).encode()

    world.proxy.rewrite = lie
    try:
        page.goto(f"{world.proxy.url}/wallet")
        page.fill("#passphrase", "correct horse battery")
        page.click("#unlock")
        expect(page.locator("#balance-proof")).to_contain_text("✓ verified")
        expect(page.locator("#balance")).to_contain_text(f"trusting genesis {true[:16]}")
        expect(page.locator("#balance")).not_to_contain_text("abababab")
    finally:
        world.proxy.rewrite = None


def unlock(page, url: str) -> None:
    """A full load of ``url`` (a wallet page), the key opened with its passphrase."""
    page.goto(url)
    page.fill("#passphrase", "correct horse battery")
    page.click("#unlock")


def test_the_wallet_proves_each_currency_balance_exactly_and_names_any_it_cannot(world, browser):
    """Every balance is checked here against its own proof and shown with the currency's
    proven decimals, exactly past 2**53; a figure the node changed, or a balance it left
    out of its list, reads "not verified" while the others still verify."""
    page = browser
    expect = sync_api.expect
    me = world.ids["web_address"]
    world.cli(
        "currency", "mint", "USD", "--to", me, "--amount", str(2**53 + 1), "--home",
        str(world.node.home), "--wait",
    )  # fmt: skip
    usd = http_json(f"{world.node.url}/v1/accounts/{me}")["balances"][0]["balance"]
    assert usd > 2**53
    unlock(page, f"{world.proxy.url}/wallet")
    row = page.locator("#currency-balances li[data-currency='USD']")
    expect(row.locator(".amount")).to_have_text(f"{usd // 100:,}.{usd % 100:02d} USD")
    expect(row).to_have_attribute("data-verified", "yes")
    expect(row).to_contain_text("✓ verified")
    expect(page.locator("#currency-list")).to_contain_text("proven")
    expect(page.locator("#balance-proof")).to_contain_text("✓ verified")
    shot(page, "wallet-currencies")

    def answer(change: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
        def rewrite(path: str, body: bytes) -> bytes:
            if path != f"/v1/accounts/{me}":
                return body
            doc = json.loads(body)
            change(doc)
            return json.dumps(doc).encode()

        return rewrite

    def inflate(doc: dict) -> None:
        doc["balances"][0]["balance"] += 1

    world.proxy.rewrite = answer(inflate)
    try:
        unlock(page, f"{world.proxy.url}/wallet")
        expect(row).to_have_attribute("data-verified", "no")
        expect(row).to_contain_text("not verified (the node's figure differs from the proven one)")
        expect(page.locator("#balance-proof")).to_contain_text("✓ verified")
        shot(page, "wallet-currency-not-verified")
        world.proxy.rewrite = answer(lambda doc: doc["balances"].clear())
        unlock(page, f"{world.proxy.url}/wallet")
        expect(row).to_have_attribute("data-verified", "no")
        expect(row).to_contain_text("not verified (the node left this balance out)")
    finally:
        world.proxy.rewrite = None


def test_a_balance_the_node_cannot_prove_reads_not_verified_with_its_figure(world, browser):
    """A node that cannot give what a proof needs (busy, pruned, gone: here every block
    header is answered 503) leaves each balance as the node's word, marked "not verified"
    with the node's reason, instead of an error where the wallet was."""
    page = browser
    expect = sync_api.expect
    me = world.ids["web_address"]
    busy = (503, {"code": "busy", "message": "the node is busy"})
    world.proxy.answer = lambda path: busy if path.startswith("/v1/blocks/") else None
    try:
        unlock(page, f"{world.proxy.url}/wallet")
        expect(page.locator("#balance-proof")).to_contain_text(
            "not verified (the node could not prove it: the node is busy)"
        )
        expect(page.locator("#balance-amount")).to_have_class("big unproven")
        row = page.locator("#currency-balances li[data-currency='USD']")
        expect(row).to_have_attribute("data-verified", "no")
        shot(page, "wallet-node-cannot-prove")
    finally:
        world.proxy.answer = None
    assert http_json(f"{world.node.url}/v1/accounts/{me}")["balance"] > 0


def test_the_page_trusts_only_the_genesis_hash_entered_and_says_when_the_node_differs(
    world, browser
):
    """The hash the consortium gave out of band, entered on /trust: a node serving another
    genesis document (well formed, one field changed) reads "does not match", its
    balances and items "not verified", and the wallet signs nothing on it."""
    page = browser
    expect = sync_api.expect
    true = http_json(f"{world.node.url}/v1/genesis")
    session = world.ids["session"]
    page.goto(f"{world.proxy.url}/trust")
    verdict = page.locator("#genesis-verdict")
    # The devnet default: the first genesis seen is trusted, and the page says so.
    expect(verdict).to_have_attribute("data-verified", "pinned")
    # As people pass a hash on: a 0x in front, upper case.
    page.fill("#genesis-hash", "0x" + true["hash"].upper())
    page.click("#trust-genesis")
    expect(verdict).to_have_attribute("data-verified", "yes")
    expect(page.locator("#entered-genesis")).to_have_text(true["hash"])
    expect(page.locator("#node-genesis")).to_have_text(true["hash"])
    shot(page, "trust-matches")

    genuine = Genesis.decode(bytes.fromhex(true["encoded"]))
    other = dataclasses.replace(genuine, genesis_time_ms=genuine.genesis_time_ms + 1)

    def swap(path: str, body: bytes) -> bytes:
        if path != "/v1/genesis":
            return body
        doc = json.loads(body)
        doc.update(encoded=other.encode().hex(), hash=true["hash"])
        return json.dumps(doc).encode()

    world.proxy.rewrite = swap
    try:
        page.reload()
        expect(verdict).to_have_attribute("data-verified", "no")
        expect(verdict).to_contain_text("does not match the hash you entered")
        expect(page.locator("#node-genesis")).to_have_text(other.hash.hex())
        shot(page, "trust-mismatch")
        unlock(page, f"{world.proxy.url}/wallet?next=/live/{session}")
        expect(page.locator("#balance-proof")).to_contain_text("not verified")
        expect(page.locator("#genesis-line")).to_contain_text("does not match the hash you entered")
        usd = page.locator("#currency-balances li[data-currency='USD']")
        expect(usd).to_have_attribute("data-verified", "no")
        shot(page, "wallet-genesis-mismatch")
        page.click("#save-ship")
        page.locator(f"[data-deal='{world.ids['deal']}'] button.buy").click()
        expect(page.locator("#outcome p.error")).to_contain_text("Nothing was signed")
        page.goto(f"{world.proxy.url}/01/{EAN13}/21/SN-1")
        expect(page.locator("#verdict")).to_have_attribute("data-verified", "no")
        expect(page.locator("#verdict")).to_contain_text("does not match the hash you entered")
    finally:
        world.proxy.rewrite = None
    page.goto(f"{world.proxy.url}/trust")
    expect(verdict).to_have_attribute("data-verified", "yes")
    page.click("#forget-genesis")
    expect(verdict).to_have_attribute("data-verified", "pinned")


def test_a_key_exported_from_one_browser_orders_from_another(world, browser, playwright, tmp_path):
    """Exported (still sealed under its passphrase) from one browser, imported in a fresh
    one: the same address, its shipping address with it, and an order signed there. The
    node lies about the fee and the chain id meanwhile: the page signs the proven minimum
    fee for the trusted genesis's chain. An auction on a USD listing is priced in USD."""
    page = browser
    expect = sync_api.expect
    me, session = world.ids["web_address"], world.ids["session"]
    unlock(page, f"{world.proxy.url}/wallet")
    page.click("#export-key")
    text = page.locator("#exported-key").input_value()
    shot(page, "wallet-export", top="section:has(#export-key)")
    with page.expect_download() as download:
        page.click("#download-key")
    saved = tmp_path / "key.json"
    download.value.save_as(saved)
    assert saved.read_text() == text
    assert json.loads(text)["address"] == me and "Harbour" not in text
    world.cli("tx", "transfer", "--from", "faucet", "--to", me, "--amount", "4000", "--wait")
    out = world.cli(
        "live", "auction", "start", session, world.ids["usd_listing"], "--start-price", "100",
        "--duration", "60s", "--from", "merchant", "--wait",
    )  # fmt: skip
    auction = event(out, "commerce.auction_started")["auction"]
    min_fee = http_json(f"{world.node.url}/v1/params")["params"]["min_fee"]

    def lie(path: str, body: bytes) -> bytes:
        if path not in ("/v1/params", "/v1/genesis"):
            return body
        doc = json.loads(body)
        if path == "/v1/params":
            doc["params"]["min_fee"] = 10**12
        else:
            doc["genesis"]["chain_id"] = "another-chain"
        return json.dumps(doc).encode()

    other = phone(playwright, tmp_path / "other-profile")
    try:
        fresh = other.pages[0] if other.pages else other.new_page()
        errors: list[str] = []
        fresh.on("pageerror", lambda exc: errors.append(str(exc)))
        fresh.goto(f"{world.proxy.url}/wallet?next=/live/{session}")
        fresh.set_input_files("#import-file", saved)
        expect(fresh.locator("#import-text")).to_have_value(text)
        shot(fresh, "wallet-import", top="#import-form")
        fresh.fill("#import-passphrase", "not the passphrase")
        fresh.click("#import-key")
        expect(fresh.locator("#import-form .error")).to_have_text(
            "that passphrase does not open the key"
        )
        fresh.fill("#import-passphrase", "correct horse battery")
        fresh.click("#import-key")
        expect(fresh.locator("#my-address")).to_have_text(me)
        expect(fresh.locator("#ship-to")).to_have_value(SHIP_TO)
        shot(fresh, "wallet-imported")
        world.proxy.rewrite = lie
        try:
            fresh.click("#save-ship")
            card = fresh.locator(f"[data-auction='{auction}']")
            expect(card.locator(".auction-price")).to_have_text("100 USD")
            expect(card).to_contain_text("Next bid 100 USD or more")
            fresh.locator(f"[data-deal='{world.ids['deal']}'] button.buy").click()
            outcome = fresh.locator("#outcome p.ok")
            expect(outcome).to_contain_text("is final")
            final = outcome.inner_text()
        finally:
            world.proxy.rewrite = None
        fresh.evaluate("window.scrollTo(0, 0)")
        shot(fresh, "live-imported-order")
        shot(fresh, "live-auction-usd", top=f"[data-auction='{auction}']")
        assert errors == [], errors
    finally:
        other.close()
    height = re.search(r"is final \(block (\d+)\)", final).group(1)
    txs = http_json(f"{world.node.url}/v1/blocks/{height}")["txs"]
    (order,) = [t for t in txs if t["type"] == "commerce.place_order" and t["sender"] == me]
    assert order["fee"] == min_fee


def test_a_key_file_sealed_cheaply_is_kept_under_the_pages_own_kdf(world, playwright, tmp_path):
    """A key file sealed under scrypt N=2^10 (as weak as import takes) opens with its
    passphrase, and the browser then keeps the key under the page's own parameters
    (N=2^15, r=8, p=3) with a fresh salt: the stored record, exported, opens with the
    same passphrase under those, and a full load unlocks it."""
    expect = sync_api.expect
    passphrase = "correct horse battery"
    seed = os.urandom(32)
    address = format_address(PrivateKey(seed).address)
    salt, nonce = os.urandom(16), os.urandom(24)
    weak = hashlib.scrypt(passphrase.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    secret = json.dumps({"seed": seed.hex(), "shipTo": SHIP_TO}).encode()
    kdf = {"name": "scrypt", "N": 2**10, "r": 8, "p": 1, "dkLen": 32, "salt": salt.hex()}
    box = nacl.secret.SecretBox(weak).encrypt(secret, nonce).ciphertext
    doc = {"kind": "liveledger-key", "version": 1, "address": address, "kdf": kdf}
    doc |= {"nonce": nonce.hex(), "box": box.hex()}
    context = phone(playwright, tmp_path / "weak-profile")
    try:
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{world.proxy.url}/wallet")
        page.fill("#import-text", json.dumps(doc))
        page.fill("#import-passphrase", passphrase)
        page.click("#import-key")
        expect(page.locator("#my-address")).to_have_text(address)
        expect(page.locator("#ship-to")).to_have_value(SHIP_TO)
        page.click("#export-key")
        kept = json.loads(page.locator("#exported-key").input_value())
        assert (kept["kdf"]["N"], kept["kdf"]["r"], kept["kdf"]["p"]) == (2**15, 8, 3)
        assert kept["kdf"]["salt"] != salt.hex() and kept["box"] != box.hex()
        strong = hashlib.scrypt(
            passphrase.encode(),
            salt=bytes.fromhex(kept["kdf"]["salt"]),
            n=2**15,
            r=8,
            p=3,
            dklen=32,
            maxmem=64 * 1024 * 1024,
        )
        opened = nacl.secret.SecretBox(strong).decrypt(
            bytes.fromhex(kept["box"]), bytes.fromhex(kept["nonce"])
        )
        assert json.loads(opened) == {"seed": seed.hex(), "shipTo": SHIP_TO}
        unlock(page, f"{world.proxy.url}/wallet")
        expect(page.locator("#my-address")).to_have_text(address)
        assert errors == [], errors
    finally:
        context.close()


def test_the_page_seals_the_address_only_to_the_key_it_proved_the_merchant_holds(
    world, playwright, tmp_path
):
    """The node the page talks to sees every transaction it is sent, sealed box and all,
    before any block checks the key it is sealed to: a node that names its own key as the
    merchant's would read the shopper's address. So the page seals to the key of the
    session's merchant as proven under a certified header. A node that lies in its JSON
    (the session's merchant, the merchant's key) is not believed: the order is sealed to
    the merchant's real key; one that lies in the proofs too gets nothing sealed at all."""
    expect = sync_api.expect
    session = world.ids["session"]
    merchant = http_json(f"{world.node.url}/v1/merchants/{world.address('merchant')}")
    real_key = merchant["merchant"]["enc_key"]
    spy_private, spy_public = encryption_keypair(b"\x5e" * 32)

    def node_key(path: str, body: bytes) -> bytes:
        # The node's own key wherever an answer names the merchant's: in its JSON only,
        # or (with /v1/state) in the proven records too.
        return body.replace(real_key.encode(), spy_public.hex().encode())

    def sealed_boxes() -> list[bytes]:
        """The sealed address of every order the page sent (to simulate or to submit)."""
        boxes = []
        for path, body in world.proxy.posted:
            if path.startswith("/v1/txs"):
                signed = SignedTx.decode(bytes.fromhex(json.loads(body)["tx"]))
                tx_body = TxBody.decode(signed.body)
                if tx_body.type == "commerce.place_order":
                    boxes.append(PlaceOrder.decode(tx_body.payload).sealed_address)
        return boxes

    context = phone(playwright, tmp_path / "profile")
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(f"{world.proxy.url}/wallet?next=/live/{session}")
        page.fill("#passphrase", "correct horse battery")
        page.fill("#passphrase2", "correct horse battery")
        page.click("#create-key")
        me = page.locator("#my-address").inner_text(timeout=WAIT_MS)
        world.cli("tx", "transfer", "--from", "faucet", "--to", me, "--amount", "5000", "--wait")
        page.fill("#ship-to", SHIP_TO)
        page.click("#save-ship")
        buy = page.locator(f"[data-deal='{world.ids['deal']}'] button.buy")
        expect(buy).to_be_enabled()
        world.proxy.posted.clear()

        # The node's key in its proven answers too: they no longer prove; nothing is sealed.
        world.proxy.rewrite = lambda path, body: (
            node_key(path, body) if path.startswith(("/v1/merchants/", "/v1/state/")) else body
        )
        try:
            buy.click()
            expect(page.locator("#outcome p.error")).to_contain_text("could not be verified")
        finally:
            world.proxy.rewrite = None
        assert sealed_boxes() == []

        # The node's key in its JSON only: the order goes through, sealed to the real key.
        world.proxy.rewrite = lambda path, body: (
            node_key(path, body) if path.startswith("/v1/merchants/") else body
        )
        try:
            buy.click()
            outcome = page.locator("#outcome p.ok")
            expect(outcome).to_contain_text("is final")
        finally:
            world.proxy.rewrite = None
        order_id = re.search(r"Order #(\d+) is final", outcome.inner_text()).group(1)
    finally:
        context.close()
    boxes = sealed_boxes()
    assert boxes, "the page sent no order"
    for box in boxes:
        with pytest.raises(SealError):
            open_plaintext(spy_private, box)
    assert world.cli("order", "address", order_id, "--from", "merchant").strip() == SHIP_TO


def test_the_item_page_verifies_in_the_browser_and_says_so_plainly(world, browser):
    page = browser
    expect = sync_api.expect
    page.goto(f"{world.proxy.url}/01/{EAN13}/21/SN-1")
    verdict = page.locator("#verdict")
    expect(verdict).to_have_attribute("data-verified", "yes")
    expect(verdict).to_contain_text("✓ verified")
    # When the proven block was made: a node may answer at an older height it keeps.
    expect(verdict).to_contain_text(
        re.compile(r"made \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ (s|min|h) ago\)")
    )
    expect(page.locator("#timeline li")).to_have_count(4)
    expect(page.locator("#timeline")).to_contain_text("Made and registered")
    expect(page.locator("#timeline")).to_contain_text("Sent by Acme Kettles to")
    expect(page.locator("#timeline")).to_contain_text("Received by")
    shot(page, "item-verified")
    shot(page, "item-history", at="#timeline li:last-child")
    page.click("#label summary")
    expect(page.locator("#label svg")).to_be_visible()
    shot(page, "item-label", at="#label")
    # What the merchant's printer gets: the code and its label, nothing else.
    page.emulate_media(media="print")
    expect(page.locator("#verdict")).to_be_hidden()
    shot(page, "item-label-print")
    page.emulate_media(media="screen")

    world.proxy.tamper = True
    try:
        page.reload()
        expect(verdict).to_have_attribute("data-verified", "no")
        expect(verdict).to_contain_text("✗ not verified")
        shot(page, "item-tampered")
    finally:
        world.proxy.tamper = False


def test_a_refusal_the_node_gave_once_is_asked_again_not_kept_by_the_browser(world, browser):
    """Chromium keeps a 410 that has no cache headers for good: a page that once read
    `pruned` (as every proof did on a node before it answered epoch boundaries from its
    records) would never ask again, whatever the node answers since."""
    page = browser
    expect = sync_api.expect
    gone = (410, {"code": "pruned", "message": "state at height 3 is pruned"})
    world.proxy.answer = lambda path: gone if path.startswith("/v1/items/") else None
    try:
        page.goto(f"{world.proxy.url}/01/{EAN13}/21/SN-1")
        expect(page.locator("main")).to_contain_text("pruned")
    finally:
        world.proxy.answer = None
    page.reload()
    expect(page.locator("#verdict")).to_have_attribute("data-verified", "yes")


def test_an_answer_that_does_not_end_is_cut_off_with_a_clear_error(world, browser):
    """A node (hostile or broken) that answers with a body that goes on and on: the page
    read all of it into memory before parsing it. It stops at its bound, lets the rest
    go unread, and says why; the next answer is read as usual."""
    page = browser
    expect = sync_api.expect
    world.proxy.flood = lambda path: path.startswith("/v1/items/")
    try:
        page.goto(f"{world.proxy.url}/01/{EAN13}/21/SN-1")
        expect(page.locator("main [role=alert]")).to_contain_text(
            "the node's answer is larger than 4 MiB"
        )
        shot(page, "item-endless-answer")
        assert world.proxy.flood_over.wait(WAIT_MS / 1000)
        # The page let go long before the flood's end.
        assert world.proxy.flooded < FLOOD_BYTES
    finally:
        world.proxy.flood = None
    page.reload()
    expect(page.locator("#verdict")).to_have_attribute("data-verified", "yes")


def test_an_answer_that_trickles_is_given_up_at_the_deadline_with_a_clear_error(world, browser):
    """A node (hostile or broken) that answers a byte at a time, never idle long enough
    for an idle timeout: the page waited for the whole answer for as long as it took. It
    gives up at its deadline (here this browser's setting of 1 s, not the default 30 s),
    lets the connection go, and says why; the next answer is read as usual."""
    page = browser
    expect = sync_api.expect
    item = f"{world.proxy.url}/01/{EAN13}/21/SN-1"
    page.goto(item)
    expect(page.locator("#verdict")).to_have_attribute("data-verified", "yes")
    page.evaluate("() => localStorage.setItem('liveledger.deadline.v1', '1')")
    world.proxy.trickle = lambda path: path.startswith("/v1/items/")
    try:
        page.reload()
        expect(page.locator("main [role=alert]")).to_contain_text(
            "the node did not answer within 1 s"
        )
        shot(page, "item-trickled-answer")
        assert world.proxy.trickle_over.wait(WAIT_MS / 1000)
        # The page let go long before the trickle's end.
        assert world.proxy.trickled < TRICKLE_BYTES
    finally:
        world.proxy.trickle = None
        page.evaluate("() => localStorage.removeItem('liveledger.deadline.v1')")
    page.reload()
    expect(page.locator("#verdict")).to_have_attribute("data-verified", "yes")


def test_a_feed_that_keeps_failing_reads_the_nodes_status_within_the_bound(world, browser):
    """After a few failed reconnects the live page asks the node's status (is its last
    position still replayed?), which it read whole, outside ``api()``'s bound: a node
    that answers it without end had the page hold all of it. It stops at the bound,
    keeps trying, and comes back once the node serves it again."""
    page = browser
    expect = sync_api.expect
    page.goto(f"{world.proxy.url}/live/{world.ids['session']}")
    expect(page.locator("#feed-state")).to_have_attribute("data-connections", "1")
    world.proxy.flood_over.clear()
    world.proxy.flood = lambda path: path == "/v1/status"
    world.proxy.hold = True
    try:
        world.proxy.drop_feeds()
        assert world.proxy.flood_over.wait(WAIT_MS / 1000)
        # The page let go long before the flood's end.
        assert world.proxy.flooded < FLOOD_BYTES
    finally:
        world.proxy.flood = None
        world.proxy.hold = False
    expect(page.locator("#feed-state")).to_have_attribute("data-connections", "2")


def inject_once(world, message: dict) -> None:
    """``message``, padded past MAX_FEED_MESSAGE, sent by the next WebSocket the page
    opens (from a blank page: no feed of an earlier test's page takes it)."""
    world.proxy.injected_over.clear()
    world.proxy.inject = json.dumps({**message, "padding": "x" * HUGE_MESSAGE})


def test_a_session_feed_message_over_the_bound_is_not_read_and_its_connection_dropped(
    world, browser
):
    """A browser hands the page a WebSocket message whole, however long, and the page
    parsed each one: a node could have it parse a huge event (and show it). The page
    drops a connection that sends a message longer than any the node sends, unread, and
    resumes on a new one."""
    page = browser
    expect = sync_api.expect
    page.goto("about:blank")
    inject_once(
        world,
        {
            "type": "event", "height": FAR, "index": 0, "time_ms": 0,
            "session": int(world.ids["session"]), "kind": "commerce.tip",
            "attrs": {"amount": "100", "message": "huge"},
        },
    )  # fmt: skip
    try:
        page.goto(f"{world.proxy.url}/live/{world.ids['session']}")
        assert world.proxy.injected_over.wait(WAIT_MS / 1000)
        assert world.proxy.injected_close == 4009
    finally:
        world.proxy.inject = None
    expect(page.locator("#feed-state")).to_have_attribute("data-connections", "2")
    expect(page.locator(f"#ticker li[data-pos='{FAR}:0']")).to_have_count(0)


def test_a_block_feed_message_over_the_bound_is_not_read_and_its_connection_dropped(world, browser):
    """As the session feed: the explorer's block feed drops a connection that sends a
    message longer than any the node sends, unread, and follows the blocks on a new one."""
    page = browser
    expect = sync_api.expect
    page.goto("about:blank")
    inject_once(
        world,
        {"type": "block", "height": FAR, "hash": "00" * 32, "time_ms": 0, "num_txs": 0},
    )
    try:
        page.goto(f"{world.proxy.url}/explorer")
        assert world.proxy.injected_over.wait(WAIT_MS / 1000)
        assert world.proxy.injected_close == 4009
    finally:
        world.proxy.inject = None
    # Blocks come every 200 ms: the new connection brings ones past the page's load.
    loaded = int(page.locator("#blocks li").first.get_attribute("data-height"))
    expect(page.locator(f"#blocks li[data-height='{loaded + 3}']")).to_have_count(1)
    expect(page.locator(f"#blocks li[data-height='{FAR}']")).to_have_count(0)


def item_pages_of(size: int, asked: list[str], forge: Callable[[str], str] = str) -> Callable:
    """A proxy ``forward`` under which the node answers an item's history in pages of
    ``size`` events (as a history of 257 would have it), each page's request recorded in
    ``asked`` and then changed by ``forge``."""

    def forward(path_qs: str) -> str:
        if not path_qs.startswith("/v1/items/"):
            return path_qs
        asked.append(path_qs)
        sep = "&" if "?" in path_qs else "?"
        return forge(f"{path_qs}{sep}limit={size}")

    return forward


@pytest.fixture(scope="module")
def long_item(world) -> str:
    """An item with a history of 5 events (register and four inspections): its path."""
    world.cli(
        "item", "register", EAN13, "SN-2", "--description", "Copper pan", "--read-point",
        "urn:acme:plant-1", "--from", "merchant", "--wait",
    )  # fmt: skip
    for n in range(4):
        world.cli(
            "item", "attest", EAN13, "SN-2", "--step", "inspecting", "--read-point",
            f"urn:acme:bench-{n}", "--from", "merchant", "--wait",
        )  # fmt: skip
    return f"/01/{EAN13}/21/SN-2"


def test_the_item_page_shows_a_long_history_a_page_at_a_time_at_one_height(
    world, browser, long_item
):
    page = browser
    expect = sync_api.expect
    asked: list[str] = []
    world.proxy.forward = item_pages_of(2, asked)
    try:
        page.goto(f"{world.proxy.url}{long_item}")
        verdict = page.locator("#verdict")
        expect(verdict).to_have_attribute("data-verified", "yes")
        expect(page.locator("#timeline li")).to_have_count(2)
        expect(page.locator("#history-count")).to_have_text("The first 2 of 5 events.")
        shot(page, "item-long-first-page", at="#more")
        # The history goes on meanwhile; the next pages are of the first page's height.
        world.cli(
            "item", "attest", EAN13, "SN-2", "--step", "inspecting", "--from", "merchant",
            "--wait",
        )  # fmt: skip
        page.click("#more")
        expect(page.locator("#timeline li")).to_have_count(4)
        page.click("#more")
        expect(page.locator("#timeline li")).to_have_count(5)
        expect(page.locator("#history-count")).to_have_text("5 events.")
        expect(page.locator("#more")).to_have_count(0)
        expect(verdict).to_have_attribute("data-verified", "yes")
        seqs = page.locator("#timeline li").evaluate_all("els => els.map(e => e.dataset.seq)")
        assert seqs == ["0", "1", "2", "3", "4"]
        expect(page.locator("#timeline")).to_contain_text("Inspecting")
        shot(page, "item-long-all-pages", at="#history-count")
        height = re.search(r"height=(\d+)", asked[1]).group(1)
        assert [re.sub(r"^[^?]*", "", p) for p in asked] == [
            "",
            f"?from_seq=2&height={height}",
            f"?from_seq=4&height={height}",
        ]
    finally:
        world.proxy.forward = None
    # Answered whole (pages of 256), the history has the sixth event, one page.
    page.reload()
    expect(page.locator("#timeline li")).to_have_count(6)
    expect(page.locator("#more")).to_have_count(0)


def swap_two_events(path: str, body: bytes) -> bytes:
    """A page after the first with its two events swapped, in the proof and in the view."""
    if not path.startswith("/v1/items/"):
        return body
    doc = json.loads(body)
    if not doc.get("from_seq"):
        return body
    entries, history = doc["proof"]["entries"], doc["item"]["history"]
    entries[1], entries[2] = entries[2], entries[1]
    history[0], history[1] = history[1], history[0]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("forge", "rewrite", "says"),
    [
        # Asked for events from 2, the node answers from 4 (a skip) or from 0 (a repeat).
        (lambda p: p.replace("from_seq=2", "from_seq=4"), None, "entry 1 is another key"),
        (lambda p: p.replace("from_seq=2", "from_seq=0"), None, "entry 1 is another key"),
        # The next page from a later block: the history as it is now.
        (lambda p: re.sub(r"&height=\d+", "", p), None, "a page at height"),
        (str, swap_two_events, "entry 1 is another key"),
    ],
    ids=["skip", "repeat", "other-height", "reorder"],
)
def test_the_item_page_refuses_a_next_page_that_is_not_the_next_events(
    world, browser, long_item, forge, rewrite, says, request
):
    page = browser
    expect = sync_api.expect
    world.proxy.forward = item_pages_of(2, [], forge)
    world.proxy.rewrite = rewrite
    try:
        page.goto(f"{world.proxy.url}{long_item}")
        verdict = page.locator("#verdict")
        expect(verdict).to_have_attribute("data-verified", "yes")
        expect(page.locator("#timeline li")).to_have_count(2)
        # Blocks come every 200 ms: by now the latest height is past the first page's.
        world.cli("tx", "transfer", "--from", "faucet", "--to", "host", "--amount", "1", "--wait")
        page.click("#more")
        expect(verdict).to_have_attribute("data-verified", "no")
        expect(verdict).to_contain_text(f"The node's next events could not be proven ({says}")
        # Nothing of the refused page is shown, and no more is asked for.
        expect(page.locator("#timeline li")).to_have_count(2)
        expect(page.locator("#more")).to_have_count(0)
        shot(page, f"item-next-page-refused-{request.node.callspec.id}")
    finally:
        world.proxy.forward = None
        world.proxy.rewrite = None


def test_the_item_page_names_only_merchants_it_proved(world, browser):
    """Verified, the page names a party only from its merchant record proven under the
    item's header: a name the node made up, in its merchant answer or in an unproven
    state value, is not shown (the address is)."""
    page = browser
    expect = sync_api.expect
    fake = "Nike Official"

    def rename(path: str, body: bytes) -> bytes:
        if path.startswith("/v1/merchants/"):
            doc = json.loads(body)
            doc["merchant"]["name"] = fake
            return json.dumps(doc).encode()
        if path.startswith("/v1/state/24"):
            # Same length, so only the proof can tell.
            return body.replace(b"Acme Kettles".hex().encode(), b"Nike Officia".hex().encode())
        return body

    world.proxy.rewrite = rename
    try:
        page.goto(f"{world.proxy.url}/01/{EAN13}/21/SN-1")
        expect(page.locator("#verdict")).to_have_attribute("data-verified", "yes")
        expect(page.locator("#timeline li")).to_have_count(4)
        facts = page.locator("main dl.facts")
        expect(facts).to_contain_text(world.address("merchant")[:12])
        expect(page.locator("main")).not_to_contain_text("Nike Offici")
        # A state answer that is no document at all: no name, the page still stands.
        world.proxy.rewrite = lambda path, body: (
            b"null" if path.startswith("/v1/state/24") else body
        )
        page.reload()
        expect(page.locator("#verdict")).to_have_attribute("data-verified", "yes")
        expect(page.locator("main dl.facts")).to_contain_text(world.address("merchant")[:12])
    finally:
        world.proxy.rewrite = None
    page.reload()
    expect(page.locator("#timeline")).to_contain_text("Sent by Acme Kettles to")
    expect(page.locator("main dl.facts")).to_contain_text("Acme Kettles")


def test_the_explorer_shows_the_block_that_holds_the_order(world, browser):
    page = browser
    expect = sync_api.expect
    # The block the shopper's order is final in (as the live page said), and the order's
    # transaction in it, as the node lists it.
    height = int(world.ids["web_order_height"])
    block = http_json(f"{world.node.url}/v1/blocks/{height}")
    tx_hash = next(t["hash"] for t in block["txs"] if t["type"] == "commerce.place_order")
    page.goto(f"{world.proxy.url}/explorer")
    expect(page.locator("#blocks li")).to_have_count(10)
    shot(page, "explorer")
    page.fill("#search", str(height))
    page.press("#search", "Enter")
    expect(page.locator(f"#block-txs li[data-tx='{tx_hash}']")).to_be_visible()
    expect(page.locator("#certificate-check")).to_contain_text("✓ verified")
    shot(page, "explorer-block")
    page.click(f"#block-txs li[data-tx='{tx_hash}'] a")
    expect(page.locator("#tx-outcome")).to_have_text("ok")
    expect(page.locator("main")).to_contain_text("commerce.order_placed")
    proof = page.locator("#tx-proof")
    expect(proof).to_have_attribute("data-verified", "yes")
    expect(proof).to_contain_text(f"✓ verified here: block {height:,}")
    expect(proof).to_contain_text("its receipt says ok")
    shot(page, "explorer-tx")


def test_the_transaction_page_shows_the_receipt_its_block_proves(world, browser):
    """A node that says the shopper's order failed (its status answer) while its proof is
    sound: the page shows the proven outcome. A node whose proof carries another receipt
    than the block's: the page says "not verified" and that the outcome is the node's word."""
    page = browser
    expect = sync_api.expect
    height = int(world.ids["web_order_height"])
    block = http_json(f"{world.node.url}/v1/blocks/{height}")
    tx_hash = next(t["hash"] for t in block["txs"] if t["type"] == "commerce.place_order")

    def failed(path: str, body: bytes) -> bytes:
        if path != f"/v1/txs/{tx_hash}":
            return body
        doc = json.loads(body)
        doc["receipt"].update(code="insufficient_funds", events=[])
        return json.dumps(doc).encode()

    def forged(path: str, body: bytes) -> bytes:
        if path != f"/v1/txs/{tx_hash}/proof":
            return failed(path, body)
        doc = json.loads(body)
        receipt = Receipt.decode(bytes.fromhex(doc["receipt"]))
        lie = Receipt(receipt.tx_hash, "insufficient_funds", "", receipt.fee, ())
        doc["receipt"] = lie.encode().hex()
        return json.dumps(doc).encode()

    world.proxy.rewrite = failed
    try:
        page.goto(f"{world.proxy.url}/explorer/txs/{tx_hash}")
        proof = page.locator("#tx-proof")
        expect(proof).to_have_attribute("data-verified", "yes")
        expect(page.locator("#tx-outcome")).to_have_text("ok")
        expect(page.locator("main")).to_contain_text("commerce.order_placed")
        world.proxy.rewrite = forged
        page.reload()
        expect(proof).to_have_attribute("data-verified", "no")
        expect(proof).to_contain_text("✗ not verified")
        expect(proof).to_contain_text("the outcome above is the node's word")
        shot(page, "explorer-tx-forged")
    finally:
        world.proxy.rewrite = None


def test_the_block_page_shows_the_header_its_certificate_signs(world, browser):
    """A node that verifies (its encoded header and certificate are sound) but describes
    the header otherwise in its JSON: the page shows what the signed bytes say."""
    page = browser
    expect = sync_api.expect
    height = int(world.ids["web_order_height"])
    true = http_json(f"{world.node.url}/v1/blocks/{height}")
    forged = "00" * 32

    def lie(path: str, body: bytes) -> bytes:
        if path != f"/v1/blocks/{height}":
            return body
        doc = json.loads(body)
        doc["header"].update(state_root=forged, hash=forged, producer=forged, time_ms=0)
        doc["commit"]["signatures"] = doc["commit"]["signatures"] * 2
        return json.dumps(doc).encode()

    world.proxy.rewrite = lie
    try:
        page.goto(f"{world.proxy.url}/explorer/blocks/{height}")
        expect(page.locator("#certificate-check")).to_contain_text("✓ verified")
        facts = page.locator("main dl.facts")
        expect(facts).to_contain_text(true["header"]["state_root"][:16])
        expect(facts).to_contain_text(true["header"]["hash"][:16])
        expect(facts).to_contain_text(true["header"]["producer"][:12])
        expect(facts).not_to_contain_text(forged[:16])
        expect(facts).not_to_contain_text("1970")
        signers = len(true["commit"]["signatures"])
        expect(page.locator("main")).to_contain_text(f"{signers} precommits in round")
    finally:
        world.proxy.rewrite = None


def test_the_explorer_says_which_of_its_reads_are_the_node_s_word(world, browser):
    """A node whose block answer lists a transaction the block does not hold, beside the
    genuine header and certificate: the certificate still verifies (it covers the header,
    not the list), so the page says the list is the node's word and the transaction's page
    refuses it. The account page, read without proofs, says so too."""
    page = browser
    expect = sync_api.expect
    height = int(world.ids["web_order_height"])
    phantom = "07" * 32

    def lie(path: str, body: bytes) -> bytes:
        if path != f"/v1/blocks/{height}":
            return body
        doc = json.loads(body)
        doc["txs"].append({"hash": phantom, "size": 100, "type": "transfer"})
        doc["num_txs"] += 1
        return json.dumps(doc).encode()

    world.proxy.rewrite = lie
    try:
        page.goto(f"{world.proxy.url}/explorer/blocks/{height}")
        expect(page.locator("#certificate-check")).to_contain_text("✓ verified")
        expect(page.locator(f"#block-txs li[data-tx='{phantom}']")).to_be_visible()
        expect(page.locator("#block-txs-trust")).to_contain_text("The node's list and count")
        expect(page.locator("#block-txs-trust")).to_contain_text("not verified here")
    finally:
        world.proxy.rewrite = None
    page.goto(f"{world.proxy.url}/explorer/accounts/{world.ids['web_address']}")
    expect(page.locator("#account-trust")).to_contain_text("the node's word: not verified")


def test_files_are_served_with_cache_headers_and_no_way_out(world):
    """The node serves the build: pages revalidated, hashed assets cached for good,
    unknown or escaping names are a 404."""
    import urllib.error
    import urllib.request

    def get(path: str):
        try:
            with urllib.request.urlopen(world.node.url + path, timeout=5) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    status, headers, body = get(f"/01/{GTIN14}/21/SN-1")
    assert status == 200 and headers["Cache-Control"] == "no-cache" and b"<main>" in body
    script = re.search(rb'src="(/assets/app-[A-Za-z0-9]+\.js)"', body).group(1).decode()
    status, headers, _ = get(script)
    assert status == 200 and "immutable" in headers["Cache-Control"]
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    for path in (
        "/assets/..%2findex.html",
        "/assets/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/assets/nope.js",
        "/../pyproject.toml",
    ):
        status, _, body = get(path)
        assert status == 404, path
        assert b"[project]" not in body


def test_a_page_load_reads_one_answer_per_change_of_producers(world, browser):
    """A page load proved its producers from genesis's epoch by epoch: one record per
    epoch the chain ever had (`GET /v1/epochs/{e}`, a certificate checked in JavaScript
    for each), 52,000 a month after launch. It now reads one per change of producers
    (`GET /v1/epochs/{e}/next-change`): this chain's one validator never changes, so one
    answer. From a node without that route (an older one, 404) it walks the epochs as
    before, keeping the highest set it verified, so the next load walks none. Neither
    reads a boundary block: a node whose `keep_blocks` passed them (410 `pruned`) still
    lets a fresh browser verify."""
    page = browser
    expect = sync_api.expect
    length = http_json(f"{world.node.url}/v1/params")["params"]["epoch_length"]
    for _ in range(600):  # blocks come every 200 ms; a loaded machine makes them slow
        if http_json(f"{world.node.url}/v1/status")["height"] > 2 * length:
            break
        threading.Event().wait(0.5)
    height = http_json(f"{world.node.url}/v1/status")["height"]
    assert height > 2 * length
    asked: list[str] = []
    older = False

    def pruned_boundaries(path: str) -> tuple[int, dict] | None:
        if path.startswith("/v1/epochs/"):
            asked.append(path)
            if older and path.endswith("/next-change"):
                return 404, {"code": "not_found", "message": "404: Not Found"}
        block = path.removeprefix("/v1/blocks/")
        if block != path and block.isdigit() and int(block) % length == 0:
            if int(block) != height:  # the page's own block is the head's, kept
                return 410, {"code": "pruned", "message": f"block {block} is pruned"}
        return None

    def forget_sets() -> None:
        page.evaluate(
            "() => Object.keys(localStorage).filter((k) => k.startsWith('liveledger.producers.'))"
            ".forEach((k) => localStorage.removeItem(k))"
        )

    world.proxy.answer = pruned_boundaries
    try:
        page.goto(f"{world.proxy.url}/explorer/blocks/{height}")
        # A fresh browser: no set kept from the tests before.
        forget_sets()
        asked.clear()
        page.reload()
        expect(page.locator("#certificate-check")).to_contain_text("✓ verified")
        assert set(asked) == {"/v1/epochs/0/next-change"}

        older = True
        forget_sets()
        asked.clear()
        page.reload()
        expect(page.locator("#certificate-check")).to_contain_text("✓ verified")
        walked = {f"/v1/epochs/{e}" for e in range(1, (height - 1) // length + 1)}
        assert walked and set(asked) == walked | {"/v1/epochs/0/next-change"}
        asked.clear()
        page.reload()
        expect(page.locator("#certificate-check")).to_contain_text("✓ verified")
        assert asked == []
        # A height below the set kept is walked from genesis, and verifies as before.
        page.goto(f"{world.proxy.url}/explorer/blocks/{length + 1}")
        expect(page.locator("#certificate-check")).to_contain_text("✓ verified")
        assert asked == ["/v1/epochs/0/next-change", "/v1/epochs/1"]
    finally:
        world.proxy.answer = None


def test_a_feed_refused_by_a_full_node_comes_back_later_and_later(world, browser):
    """A node at its feed cap opens the socket and closes it with 1013. The page counted
    an open as a good connection, so it came back every half second for as long as the
    node was full: thousands of viewers refused at once were a flood of handshakes at
    the node least able to take it. Now only a connection that delivered something is
    good, and each refusal doubles the wait (up to 30 s for a full node); once the node
    has room, the feed goes live again."""
    page = browser
    expect = sync_api.expect
    page.goto("about:blank")
    world.proxy.full = True
    try:
        page.goto(f"{world.proxy.url}/live/{world.ids['session']}")
        badge = page.locator("#feed-state")
        # The fourth refusal in a row: 4 s at least before the fifth try (0.5, 1, 2 before).
        expect(badge).to_have_attribute("data-connections", "4")
        expect(badge).to_have_attribute("data-state", "reconnecting")
        assert int(badge.get_attribute("data-retry-ms") or 0) >= 4000
    finally:
        world.proxy.full = False
    expect(badge).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(badge).to_have_attribute("data-retry-ms", "0")


def test_an_outcome_the_node_cannot_prove_reads_not_verified_never_final(world, browser):
    """A node that drops the shopper's tip and says it is committed, ok, in a block: the
    page checks the outcome's proof as the explorer does, the node has none, and the
    page says "not verified" (and that it may not be on chain), never "sent"."""
    page = browser
    expect = sync_api.expect
    session, me = world.ids["session"], world.ids["web_address"]
    # Enough for a tip of 100 and its fee, whatever the tests above left.
    world.cli("tx", "transfer", "--from", "faucet", "--to", me, "--amount", "2000", "--wait")
    page.goto(f"{world.proxy.url}/wallet?next=/live/{session}")
    page.fill("#passphrase", "correct horse battery")
    page.click("#unlock")
    page.click("#save-ship")
    expect(page.locator("#feed-state")).to_have_text("live")
    head = http_json(f"{world.node.url}/v1/status")["height"]

    def dropping(path: str) -> tuple[int, dict] | None:
        if path == "/v1/txs":
            # Taken, and never passed on.
            return 200, {"hash": "00" * 32}
        if re.fullmatch(r"/v1/txs/[0-9a-f]{64}", path):
            tip = {"kind": "commerce.tip", "attrs": {"session": session, "amount": "100"}}
            receipt = {"code": "ok", "message": "", "fee": 1_000, "events": [tip]}
            said = {"hash": path[8:], "status": "committed", "height": head, "index": 0}
            return 200, {**said, "receipt": receipt}
        return None

    before = len(world.proxy.posted)
    world.proxy.answer = dropping
    try:
        page.click("footer.tipbar button:has-text('Tip 100')")
        verdict = page.locator("#outcome p.error")
        expect(verdict).to_have_attribute("data-verified", "no")
        expect(verdict).to_contain_text("✗ Not verified: the node says it went through")
        expect(verdict).to_contain_text("could not prove it")
        expect(verdict).to_contain_text("It may not be on chain")
        shot(page, "live-tip-unproven")
    finally:
        world.proxy.answer = None
    # The node saw the simulation alone: the tip was dropped.
    assert [path for path, _ in world.proxy.posted[before:]] == ["/v1/txs/simulate"]
    expect(page.locator("#outcome p.ok")).to_have_count(0)


def test_a_busy_node_is_asked_again_and_the_outcome_proven(world, browser):
    """An honest node at its bound of block reads (a flash deal's shoppers all proving
    their orders) answers 503 busy: no word about the tip, so the page asks again. Read
    as a proof that failed, every shopper of a busy node read "✗ Not verified ... It may
    not be on chain"; a busy status answer read as the tip not sent."""
    page = browser
    expect = sync_api.expect
    session, me = world.ids["session"], world.ids["web_address"]
    world.cli("tx", "transfer", "--from", "faucet", "--to", me, "--amount", "2000", "--wait")
    page.goto(f"{world.proxy.url}/wallet?next=/live/{session}")
    page.fill("#passphrase", "correct horse battery")
    page.click("#unlock")
    page.click("#save-ship")
    expect(page.locator("#feed-state")).to_have_text("live")
    busy = (503, {"code": "busy", "message": "2 block reads or proofs run and 16 wait"})
    left = {"status": 2, "proof": 2}

    def busy_twice(path: str) -> tuple[int, dict] | None:
        which = "proof" if path.endswith("/proof") else "status"
        if re.fullmatch(r"/v1/txs/[0-9a-f]{64}(/proof)?", path) and left[which]:
            left[which] -= 1
            return busy
        return None

    world.proxy.answer = busy_twice
    try:
        page.click("footer.tipbar button:has-text('Tip 100')")
        verdict = page.locator("#outcome p.ok")
        expect(verdict).to_have_attribute("data-verified", "yes")
        expect(verdict).to_contain_text("✓ verified here")
    finally:
        world.proxy.answer = None
    assert left == {"status": 0, "proof": 0}
    expect(page.locator("#outcome p.error")).to_have_count(0)
