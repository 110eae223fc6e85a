"""The client side of a ``live-upscale serve`` session: :class:`RemoteLink`.

A link owns one background thread running an asyncio loop. That loop connects, says hello,
waits for ``ready``, then sends the frames the host hands over and collects the upscaled ones.
When the connection drops (server killed, port blocked, no answer for ``stall_s``) it says so in
``status``, forgets the frames in flight and connects again by itself, with a short back-off. The
host's thread never waits on the network unless it asks to (``wait``), so a live host never
stalls. Everything the host thread reads is guarded by one condition variable.

:class:`Transport` is the small interface a link talks through; :class:`WebSocketTransport` is
the one in use (see the README, "Upscale on a cloud GPU from TouchDesigner", for why not WebRTC).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from ..errors import InputError, LiveUpscaleError, one_line
from . import wire

log = logging.getLogger(__name__)

SESSION_PATH = "/v1/session"
BACKOFF = (0.2, 0.5, 1.0, 2.0)  # seconds between reconnect attempts (then 2 s each)
REFUSED_BACKOFF = 5.0  # after the server said no (token, parameters, out of memory)


class Refused(Exception):
    """The server answered, and said no (wrong token, full, bad parameters, out of memory)."""


class Closed(ConnectionError):
    """The session's connection closed; ``code`` is the WebSocket close code (4408: idle)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


IDLE_CODE = 4408  # the server closed a session that sent nothing for its idle timeout


class Transport:
    """One session's connection. ``connect`` returns the server's ``ready`` message."""

    async def connect(self, hello: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def send_frame(self, data: bytes) -> None:
        raise NotImplementedError

    async def send_json(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    async def receive(self, timeout: float) -> bytes | dict[str, Any] | None:
        """A frame message (bytes), a control message (dict), or None on timeout. Raises when closed."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class WebSocketTransport(Transport):
    def __init__(self, url: str, token: str | None, ca: str | None = None, connect_timeout: float = 5.0,
                 ready_timeout: float = 300.0, heartbeat: float = 2.0):
        self.url, self.token, self.ca = url, token, ca
        self.connect_timeout, self.ready_timeout, self.heartbeat = connect_timeout, ready_timeout, heartbeat
        self._http = self._ws = None

    async def connect(self, hello: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        ctx: ssl.SSLContext | bool = True
        if self.url.startswith("wss:") and self.ca:
            ctx = ssl.create_default_context(cafile=self.ca)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout))
        try:
            self._ws = await asyncio.wait_for(
                self._http.ws_connect(self.url, headers=headers, heartbeat=self.heartbeat, max_msg_size=0,
                                      ssl=ctx, autoping=True),
                self.connect_timeout,
            )
        except aiohttp.WSServerHandshakeError as e:
            await self.close()
            if e.status == 401:
                raise Refused("the server refused the token (set LIVE_UPSCALE_REMOTE_TOKEN or token=... in the model)") from None
            if e.status == 503:
                raise Refused("the server is full (all its sessions are taken)") from None
            raise ConnectionError(f"the server answered HTTP {e.status}") from None
        except BaseException:
            await self.close()
            raise
        await self._ws.send_json(hello)
        msg = await self.receive(self.ready_timeout)
        if msg is None:
            raise ConnectionError(f"no answer to hello within {self.ready_timeout:g} s")
        if isinstance(msg, dict) and msg.get("type") == "ready":
            return msg
        if isinstance(msg, dict) and msg.get("type") == "error":
            raise Refused(f"the server refused the session: {msg.get('message')}")
        raise ConnectionError("the server's first answer was not 'ready'")

    async def send_frame(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def send_json(self, msg: dict[str, Any]) -> None:
        await self._ws.send_json(msg)

    async def receive(self, timeout: float):
        import aiohttp

        try:
            msg = await self._ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            return None
        if msg.type == aiohttp.WSMsgType.BINARY:
            return msg.data
        if msg.type == aiohttp.WSMsgType.TEXT:
            try:
                data = json.loads(msg.data)
            except ValueError:
                raise ConnectionError("the server sent a text message that is not JSON") from None
            return data if isinstance(data, dict) else {}
        code = self._ws.close_code
        extra = f" ({msg.extra})" if isinstance(getattr(msg, "extra", None), str) and msg.extra else ""
        raise Closed(f"connection closed{f' with code {code}' if code else ''}{extra}", code)

    async def close(self) -> None:
        ws, http, self._ws, self._http = self._ws, self._http, None, None
        try:
            if ws is not None:
                await asyncio.wait_for(ws.close(), 1.0)
        except Exception:  # noqa: BLE001
            pass
        if http is not None:
            await http.close()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves this machine."""
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ws_url(base: str) -> str:
    """``http(s)://host:port[/prefix]`` -> ``ws(s)://host:port[/prefix]/v1/session``."""
    u = urlsplit(base)
    if u.scheme not in ("http", "https", "ws", "wss") or not u.hostname:
        raise InputError(f"remote server URL must look like http://host:port or https://host:port, not {base!r}")
    scheme = {"http": "ws", "https": "wss"}.get(u.scheme, u.scheme)
    return urlunsplit((scheme, u.netloc, u.path.rstrip("/") + SESSION_PATH, "", ""))


class RemoteLink:
    """One session with a server, kept alive in the background. See the module docstring.

    ``keep``: results kept per session (live: a few, oldest dropped; file: None = all, until taken).
    """

    def __init__(self, url: str, token: str | None, hello: dict[str, Any], *, keep: int | None = 8,
                 stall_s: float | None = 3.0, transport: Callable[[], Transport] | None = None,
                 ca: str | None = None, connect_timeout: float = 5.0):
        self.url = url
        self.hello = hello
        self.codec = hello.get("codec", "raw")
        self.jpeg_quality = int(hello.get("jpeg_quality", 90))
        self.keep, self.stall_s = keep, stall_s
        self._make = transport or (lambda: WebSocketTransport(ws_url(url), token, ca, connect_timeout))
        self.cond = threading.Condition()
        self.state = "connecting"  # connecting | ready | down | refused | idle | closed
        self.status = f"connecting to {url}"
        self.generation = 0  # +1 per session that became ready
        self.ready: dict[str, Any] = {}
        self.results: OrderedDict[int, wire.Frame] = OrderedDict()
        self.in_flight: dict[int, float] = {}  # frame id -> send time
        self.events: deque[dict[str, Any]] = deque(maxlen=32)  # control answers (flushed, params_ok, errors)
        self.server_error = ""
        self.flushed = 0  # 'flushed' answers received (file mode waits on this)
        self.rtt_ms: deque[float] = deque(maxlen=256)
        self.server_ms: deque[float] = deque(maxlen=256)
        self.sent = self.received = self.bytes_up = self.bytes_down = self.sessions = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: asyncio.Queue | None = None
        self._closed = False
        self._wake: asyncio.Event | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(started,), daemon=True, name="live-upscale-remote")
        self._thread.start()
        started.wait(5.0)

    # --- host thread ---------------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self.state == "ready"

    def send_frame(self, fid: int, pixels, window: int) -> bool:
        """Queue one ``(H,W,3)`` uint8 frame; False (nothing queued) when not ready or ``window`` frames are in flight."""
        self.wake()
        with self.cond:
            if self.state != "ready" or len(self.in_flight) >= window:
                return False
            self.in_flight[fid] = time.perf_counter()
            gen = self.generation
        self._post(gen, ("frame", fid, pixels))
        return True

    def wake(self) -> None:
        """After the server closed an idle session: connect again now (the host has frames again)."""
        with self.cond:
            if self.state != "idle":
                return
            self.state, self.status = "connecting", f"connecting to {self.url}"
        self._post(-1, ("wake",))

    def send_control(self, msg: dict[str, Any]) -> None:
        """A control message for the current session (dropped if none is up: ``hello`` carries the state)."""
        with self.cond:
            gen = self.generation if self.state == "ready" else -1
        if gen >= 0:
            self._post(gen, ("control", msg))

    def update_params(self, params: dict[str, Any]) -> None:
        """New node parameters: sent now, and part of every later hello (a reconnect keeps them)."""
        with self.cond:
            self.hello = {**self.hello, "params": {**self.hello.get("params", {}), **params}}
        self.send_control({"type": "params", **params})

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block the calling (host) thread until ``predicate()`` holds (checked under the lock) or timeout."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def take(self, fid: int) -> wire.Frame | None:
        with self.cond:
            return self.results.pop(fid, None)

    def latest_at_or_before(self, fid: int, shape: tuple[int, int] | None = None) -> wire.Frame | None:
        """The newest result with id <= ``fid`` (and of output ``shape``); older ones are dropped."""
        with self.cond:
            best = None
            for k in list(self.results):
                if k > fid:
                    break
                r = self.results[k]
                if shape is None or r.pixels.shape[:2] == shape:
                    if best is not None:
                        self.results.pop(best.id, None)
                    best = r
            return best

    def stats(self) -> dict[str, Any]:
        def p(q, v):
            if not q:
                return None
            s = sorted(q)
            return round(s[min(len(s) - 1, int(v * len(s)))], 2)

        with self.cond:
            return {"state": self.state, "status": self.status, "sessions": self.sessions, "sent": self.sent,
                    "received": self.received, "in_flight": len(self.in_flight), "bytes_up": self.bytes_up,
                    "bytes_down": self.bytes_down, "rtt_ms_p50": p(self.rtt_ms, 0.5), "rtt_ms_p95": p(self.rtt_ms, 0.95),
                    "server_ms_p50": p(self.server_ms, 0.5)}

    def close(self) -> None:
        with self.cond:
            self._closed = True
            self.state, self.status = "closed", "closed"
            self.cond.notify_all()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop)
            except RuntimeError:
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(3.0)

    # --- loop thread ---------------------------------------------------------------------------------

    def _post(self, gen: int, item) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._enqueue, gen, item)
        except RuntimeError:  # the loop just stopped
            pass

    def _enqueue(self, gen: int, item) -> None:
        if item[0] == "wake":
            if self._wake is not None:
                self._wake.set()
            return
        if gen == self.generation and self._out is not None:
            self._out.put_nowait(item)

    def _stop(self) -> None:
        if self._wake is not None:
            self._wake.set()
        for t in asyncio.all_tasks(self._loop):
            t.cancel()

    def _main(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        started.set()
        try:
            loop.run_until_complete(self._run())
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the link never raises into anyone
            pass
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:  # noqa: BLE001
                pass
            loop.close()

    def _set(self, state: str, status: str) -> None:
        with self.cond:
            if self._closed:
                return
            self.state, self.status = state, status
            if state != "ready":
                self.in_flight.clear()
                if self.keep is not None:
                    self.results.clear()
            self.cond.notify_all()

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        attempt = 0
        while not self._closed:
            t = self._make()
            try:
                with self.cond:
                    hello = dict(self.hello)
                ready = await t.connect(hello)
                attempt = 0
                await self._session(t, ready)
                raise ConnectionError("the server closed the session")
            except asyncio.CancelledError:
                await t.close()
                return
            except Refused as e:
                delay = REFUSED_BACKOFF
                self._set("refused", f"{e}; retrying in {delay:g} s")
            except Closed as e:
                if e.code != IDLE_CODE and self.server_error:  # the server ended it (out of memory, bad input)
                    delay = REFUSED_BACKOFF
                    self._set("refused", f"{self.server_error}; retrying in {delay:g} s")
                    self.server_error = ""
                elif e.code != IDLE_CODE:
                    delay = BACKOFF[0]
                    self._set("down", f"reconnecting to {self.url} ({_why(e)})")
                else:  # no reconnect loop for a host that is not sending: wait for its next frame
                    self._set("idle", f"idle: {self.url} closed the unused session; the next frame reconnects")
                    await t.close()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
            except Exception as e:  # noqa: BLE001 - connection refused, reset, timeouts, a server that vanished
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                attempt += 1
                why = self.server_error or _why(e)
                self.server_error = ""
                self._set("down", f"reconnecting to {self.url} ({why})")
            await t.close()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _session(self, t: Transport, ready: dict[str, Any]) -> None:
        self._out = asyncio.Queue()
        with self.cond:
            self.generation += 1
            self.sessions += 1
            self.ready = ready
            self.server_error = ""
            self.in_flight.clear()
            self.results.clear()
            self.state, self.status = "ready", f"connected to {self.url}: {ready.get('engine', '?')}"
            self.cond.notify_all()
        log.info("live-upscale remote: %s", self.status)
        sender = asyncio.ensure_future(self._send_loop(t))
        try:
            await self._recv_loop(t, sender)
        finally:
            sender.cancel()
            self._out = None

    async def _send_loop(self, t: Transport) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._out.get()
            if item[0] == "frame":
                _, fid, px = item
                data = wire.encode(fid, px, self.codec, self.jpeg_quality) if self.codec == "raw" else \
                    await loop.run_in_executor(None, wire.encode, fid, px, self.codec, self.jpeg_quality)
                await t.send_frame(data)
                with self.cond:
                    self.sent += 1
                    self.bytes_up += len(data)
            else:
                await t.send_json(item[1])

    async def _recv_loop(self, t: Transport, sender: asyncio.Future) -> None:
        loop = asyncio.get_running_loop()
        last = time.monotonic()
        while True:
            if sender.done():
                sender.result()  # re-raise the sender's connection error
                raise ConnectionError("sender stopped")
            msg = await t.receive(0.25)
            now = time.monotonic()
            if msg is None:
                with self.cond:
                    waiting = bool(self.in_flight)
                if waiting and self.stall_s is not None and now - last > self.stall_s:
                    raise ConnectionError(f"no answer for {self.stall_s:g} s")
                if not waiting:
                    last = now
                continue
            last = now
            if isinstance(msg, (bytes, bytearray)):
                fr = wire.decode(msg) if self.codec == "raw" else await loop.run_in_executor(None, wire.decode, msg)
                with self.cond:
                    sent = self.in_flight.pop(fr.id, None)
                    if sent is not None:
                        self.rtt_ms.append((time.perf_counter() - sent) * 1000.0)
                    self.server_ms.append(fr.server_ms)
                    self.received += 1
                    self.bytes_down += len(msg)
                    self.results[fr.id] = fr
                    if self.keep is not None:
                        while len(self.results) > self.keep:
                            self.results.popitem(last=False)
                    self.cond.notify_all()
                continue
            kind = msg.get("type")
            if kind == "error":
                text = str(msg.get("message", "error"))
                if msg.get("fatal"):
                    self.server_error = ("server out of memory: " if msg.get("oom") else "server: ") + text
                    log.warning("live-upscale remote: %s", self.server_error)
                    with self.cond:
                        self.events.append(msg)
                        self.cond.notify_all()
                    continue  # the close that follows says how it ended (idle, or an error: see _run)
                log.warning("live-upscale remote: server: %s", text)
            with self.cond:
                if kind == "flushed":
                    self.flushed += 1
                elif kind == "params_ok" and msg.get("engine"):
                    self.ready = {**self.ready, "engine": msg["engine"], "delay": msg.get("delay", 0)}
                self.events.append(msg)
                self.cond.notify_all()


def _why(e: BaseException) -> str:
    if isinstance(e, (ConnectionRefusedError,)):
        return "connection refused"
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    text = one_line(e)
    return text.split(": ", 1)[1] if text.startswith(("ConnectionError: ", "OSError: ")) else text


__all__ = ["LiveUpscaleError", "Refused", "RemoteLink", "Transport", "WebSocketTransport", "ws_url"]
