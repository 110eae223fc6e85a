"""``live-upscale serve``: upscale for remote clients, one :class:`UpscaleNode` per session.

HTTP (aiohttp), optionally HTTPS (``--tls-cert/--tls-key``, or TLS at a reverse proxy):

- ``GET /health``: liveness and capacity for load balancers (no token needed);
- ``GET /``: what this server serves: backends and why not, GPU, sessions, limits (token needed
  when one is set);
- ``GET /v1/session``: a WebSocket, one session. ``Authorization: Bearer <token>``.

A session: the client's first message is a JSON ``hello`` (mode ``live`` or ``file``, codec,
node parameters); the server loads the node and answers ``ready`` (backend, engine, the engine's
delay and chunk, the limits) or ``error``. Then binary frame messages (``wire``) go up; each
upscaled frame comes back with the id of the input it belongs to, the server's milliseconds and
its queue depth. Text messages, in order with the frames: ``params`` (any node parameter; a
load-time one re-creates the session's engine, no reconnect), ``reset``, ``flush`` (answered by
``flushed`` once every frame sent before it is back), ``ping``. ``error`` messages say what went
wrong; ``fatal: true`` ends the session (``oom: true`` when the GPU ran out of memory: that
session steps down, the others go on).

Security: a token is required unless the server binds only to loopback; it is compared in constant
time. Limits: sessions, pixels per frame (in and out), frames per second (excess is delayed, never
dropped: a file client must get every frame), idle time. Malformed input gets a 4xx or a closed
session, never a crash, and each session has its own node, queue and task.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import itertools
import json
import logging
import os
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import InputError, LiveUpscaleError, one_line
from . import wire
from .client import is_loopback

log = logging.getLogger("live_upscale.serve")

DEFAULT_PORT = 8765
PROTOCOL = 1
# node parameters a client may set (device and downloads are the server's business)
CLIENT_PARAMS = {"backend", "model", "scale", "precision", "prescale", "compile", "quality", "sharpen", "stabilize",
                 "scene_cut", "backend_options"}


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    backend: str = "auto"  # the sessions' default backend and model
    model: str | None = None
    device: str = "auto"
    download: bool = True
    allow_backends: tuple[str, ...] | None = None  # backends a client may ask for (None: any that is registered)
    max_sessions: int = 4
    max_pixels: int = 2048 * 2048  # per input frame
    max_out_pixels: int = 4096 * 4096  # per output frame
    max_fps: float = 120.0  # per session; faster frames wait (never dropped)
    idle_timeout: float = 60.0  # seconds with no message and no work before a session is closed
    hello_timeout: float = 10.0
    queue: int = 8  # frames a session may have waiting; more and its socket is not read (back-pressure)


def check_config(cfg: ServeConfig) -> None:
    """Refuse set-ups that would be unsafe or cannot work, with one line each."""
    if not cfg.token and not is_loopback(cfg.host):
        raise LiveUpscaleError(
            f"serving on {cfg.host} needs a token: pass --token-file FILE or set LIVE_UPSCALE_SERVE_TOKEN "
            "(only a loopback address such as 127.0.0.1 may run without one)"
        )
    if cfg.token is not None and len(cfg.token) < 16:
        raise LiveUpscaleError("the token is shorter than 16 characters; use a long random one (openssl rand -hex 32)")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise LiveUpscaleError("--tls-cert and --tls-key go together")
    for p in (cfg.tls_cert, cfg.tls_key):
        if p and not Path(p).is_file():
            raise LiveUpscaleError(f"TLS file not found: {p}")
    if cfg.max_sessions < 1 or cfg.max_pixels < 1 or cfg.max_fps <= 0 or cfg.idle_timeout <= 0:
        raise LiveUpscaleError("limits must be positive")


def token_ok(expected: str | None, header: str | None) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not expected:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode("utf-8", "replace"), expected.encode("utf-8"))


class SessionError(Exception):
    """Ends one session with a message to its client and a WebSocket close code."""

    def __init__(self, message: str, code: int = 4400, oom: bool = False):
        super().__init__(message)
        self.code, self.oom = code, oom


def _gpu() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1)})
    return out


class Session:
    _ids = itertools.count(1)

    def __init__(self, server: "Server", peer: str):
        self.server, self.peer = server, peer
        self.id = next(self._ids)
        self.node = None
        self.mode = "live"
        self.codec, self.quality = "raw", 90
        self.frames_in = self.frames_out = 0
        self.bytes_in = self.bytes_out = 0
        self.opened = time.monotonic()
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=server.cfg.queue)
        self.pending: list[int] = []  # ids of frames given to the node whose output is not back yet
        self.in_size: tuple[int, int] | None = None
        self._next_t = 0.0
        self.busy = False  # the worker is computing (or sending) a queued item: not idle
        self._work_lock = threading.Lock()  # held by the pool thread running the node; close() waits for it

    def describe(self) -> dict[str, Any]:
        n = self.node
        return {
            "id": self.id, "peer": self.peer, "mode": self.mode, "codec": self.codec,
            "backend": n.backend_id if n is not None else None,
            "engine": n.engine.describe() if n is not None and n.engine is not None else None,
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "seconds": round(time.monotonic() - self.opened, 1),
        }

    # --- parameters --------------------------------------------------------------------------------

    def node_params(self, given: Any) -> dict[str, Any]:
        """A client's parameters, checked: known names only; registered models only; no 'remote'."""
        cfg = self.server.cfg
        if not isinstance(given, dict):
            raise SessionError("params must be a JSON object")
        unknown = set(given) - CLIENT_PARAMS
        if unknown:
            raise SessionError(f"unknown or server-only parameters: {', '.join(sorted(map(str, unknown)))}")
        p = dict(given)
        if p.get("backend") in (None, "", "auto") and "backend" in p:
            p["backend"] = cfg.backend
        b = str(p.get("backend", cfg.backend)).strip().lower().replace("-", "_")
        if b == "remote":
            raise SessionError("a server does not forward to another server (backend 'remote')")
        if cfg.allow_backends is not None and b not in cfg.allow_backends and b != cfg.backend:
            raise SessionError(f"backend {b!r} is not offered here; this server offers: {', '.join(cfg.allow_backends)}")
        m = p.get("model")
        if m not in (None, "") and m != cfg.model:
            from .. import weights

            if not isinstance(m, str) or weights.lookup(m) is None:
                raise SessionError("clients may name registered models only (no paths); see GET / for this server's")
        return p

    async def open_node(self, params: dict[str, Any]) -> None:
        from ..nodes import UpscaleNode

        cfg = self.server.cfg
        base = {"backend": cfg.backend, "model": cfg.model, "device": cfg.device, "download": cfg.download}
        try:
            node = UpscaleNode(**{**base, **params})
        except LiveUpscaleError as e:
            raise SessionError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - pydantic's ValidationError and friends
            raise SessionError(f"bad parameters: {one_line(e)}") from None
        try:
            await self.server.in_thread(node.load)
        except LiveUpscaleError as e:
            raise SessionError(f"could not load the backend: {e}", code=4503) from None
        except Exception as e:  # noqa: BLE001
            raise SessionError(f"could not load the backend: {one_line(e)}", code=4503) from None
        self.node = node

    def ready_message(self) -> dict[str, Any]:
        n = self.node
        caps = n.engine.caps
        cfg = self.server.cfg
        return {
            "type": "ready", "protocol": PROTOCOL, "session": self.id, "backend": n.backend_id,
            "engine": n.engine.describe(), "device": str(n.device), "delay": caps.delay, "chunk": caps.chunk,
            "temporal": caps.temporal, "scale": n.params.scale,
            "limits": {"max_pixels": cfg.max_pixels, "max_out_pixels": cfg.max_out_pixels, "max_fps": cfg.max_fps,
                       "idle_timeout": cfg.idle_timeout, "queue": cfg.queue},
        }

    # --- work (runs in a thread) -------------------------------------------------------------------

    def _compute(self, fr: wire.Frame) -> list[tuple[int, bytes]]:
        """One input frame -> the output messages it releases (more than one after a buffering engine's chunk)."""
        from ..nodes.node import is_oom

        n = self.node
        h, w = fr.pixels.shape[:2]
        oh, ow = n.output_size(h, w)
        if oh * ow > self.server.cfg.max_out_pixels:
            raise SessionError(f"output {ow}x{oh} is over this server's limit of {self.server.cfg.max_out_pixels} pixels",
                               code=4413)
        out: list[tuple[int, bytes]] = []
        if self.in_size is not None and (h, w) != self.in_size:
            out += self._flush_locked()  # a new size starts a new stream: the old one's tail first
        self.in_size = (h, w)
        t0 = time.perf_counter()
        try:
            x = wire.to_tensor([fr.pixels], n.device)
            self.pending.append(fr.id)
            y = n.process(x)
        except LiveUpscaleError as e:
            raise SessionError(str(e), code=4507, oom="out of memory" in str(e)) from None
        except Exception as e:  # noqa: BLE001
            if is_oom(e):
                raise SessionError(f"out of memory: {one_line(e)}", code=4507, oom=True) from None
            raise SessionError(f"the backend failed: {one_line(e)}", code=4500) from None
        ms = (time.perf_counter() - t0) * 1000.0
        return out + self._encode(y, ms)

    def _encode(self, y: torch.Tensor | None, ms: float) -> list[tuple[int, bytes]]:
        out = []
        if y is None or y.shape[0] == 0:
            return out
        px = wire.to_pixels(y)
        per = ms / len(px)
        for p in px:
            fid = self.pending.pop(0) if self.pending else -1
            out.append((fid, wire.encode(fid, p, self.codec, self.quality, per, self.queue.qsize())))
        return out

    def _flush_locked(self) -> list[tuple[int, bytes]]:
        t0 = time.perf_counter()
        y = self.node.flush()
        out = self._encode(y, (time.perf_counter() - t0) * 1000.0)
        self.pending.clear()  # a backend that held frames back without returning them: nothing more will come
        return out

    def _control(self, msg: dict[str, Any]) -> list[tuple[int, bytes] | dict]:
        kind = msg.get("type")
        if kind == "params":
            params = self.node_params({k: v for k, v in msg.items() if k != "type"})
            try:
                reload = self.node.update(**params)
                if reload:
                    out: list = self._flush_locked()
                    self.node.load()
                    return [*out, {"type": "params_ok", "reload": True, "engine": self.node.engine.describe(),
                                   "delay": self.node.engine.caps.delay}]
            except SessionError:
                raise
            except LiveUpscaleError as e:
                return [{"type": "error", "fatal": False, "message": f"params not applied: {e}"}]
            except Exception as e:  # noqa: BLE001 - pydantic ValidationError: the client is told, the session goes on
                return [{"type": "error", "fatal": False, "message": f"params not applied: {one_line(e)}"}]
            return [{"type": "params_ok", "reload": False}]
        if kind == "reset":
            self.node.reset()
            self.pending.clear()
            return [{"type": "reset_ok"}]
        if kind == "flush":
            return [*self._flush_locked(), {"type": "flushed"}]
        raise SessionError(f"unknown message type {kind!r}")

    # --- the session's two tasks -------------------------------------------------------------------

    async def reader(self, ws) -> None:
        from aiohttp import WSMsgType

        cfg = self.server.cfg
        last = time.monotonic()
        while True:
            # idle = no message from the client and no work queued or computing; WebSocket pings
            # (heartbeats) do not count as activity (receive() answers them without returning)
            try:
                msg = await ws.receive(timeout=min(cfg.idle_timeout, 1.0))
            except asyncio.TimeoutError:
                now = time.monotonic()
                if self.busy or not self.queue.empty():
                    last = now
                elif now - last >= cfg.idle_timeout:
                    raise SessionError(f"idle for {cfg.idle_timeout:g} s", code=4408) from None
                continue
            last = time.monotonic()
            if msg.type == WSMsgType.BINARY:
                try:
                    fr = wire.decode(msg.data, cfg.max_pixels)
                except InputError as e:
                    raise SessionError(f"bad frame: {e}", code=4400) from None
                self.bytes_in += len(msg.data)
                self.frames_in += 1
                await self.queue.put(("frame", fr))
            elif msg.type == WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    raise SessionError("a text message that is not JSON") from None
                if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                    raise SessionError("a JSON message without a type")
                if data["type"] == "ping":
                    await ws.send_json({"type": "pong", "t": data.get("t")})
                    continue
                await self.queue.put(("control", data))
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                await self.queue.put(("end", None))
                return
            elif msg.type == WSMsgType.ERROR:
                raise SessionError(f"connection error: {ws.exception()}", code=1011)

    async def worker(self, ws) -> None:
        cfg = self.server.cfg
        while True:
            kind, item = await self.queue.get()
            if kind == "end":
                return
            self.busy = True
            try:
                await self._work(ws, cfg, kind, item)
            finally:
                self.busy = False

    async def _work(self, ws, cfg, kind: str, item) -> None:
        if kind == "frame":
            now = time.monotonic()
            if self._next_t > now:  # the frame-rate limit: wait, never drop
                await asyncio.sleep(self._next_t - now)
            self._next_t = max(now, self._next_t) + 1.0 / cfg.max_fps
            outs = await self.server.in_thread(self._locked, self._compute, item)
        else:
            outs = await self.server.in_thread(self._locked, self._control, item)
        for o in outs:
            if isinstance(o, dict):
                await ws.send_json(o)
            else:
                await ws.send_bytes(o[1])
                self.bytes_out += len(o[1])
                self.frames_out += 1

    def _locked(self, fn, item):
        with self._work_lock:
            if self.node is None:
                raise SessionError("the session is closed")
            return fn(item)

    def close(self) -> None:
        # a cancelled worker's thread may still be inside the node: wait for it, never close under it
        with self._work_lock:
            self._close()

    def _close(self) -> None:
        if self.node is not None:
            try:
                self.node.close()
            except Exception:  # noqa: BLE001
                pass
            self.node = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class Server:
    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.sessions: dict[int, Session] = {}
        self.pool = ThreadPoolExecutor(max_workers=max(2, cfg.max_sessions + 1), thread_name_prefix="live-upscale-serve")
        self.started = time.time()
        self._backends: list[dict[str, Any]] | None = None

    async def in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def backends(self) -> list[dict[str, Any]]:
        if self._backends is None:
            from ..backends import table
            from ..nodes import resolve_device

            try:
                dev = resolve_device(self.cfg.device)
            except LiveUpscaleError:
                dev = torch.device("cpu")
            self._backends = [
                {"id": r.id, "ok": r.probe.ok, "reason": r.probe.reason}
                for r in table(dev) if r.id != "remote" and (self.cfg.allow_backends is None or r.id in self.cfg.allow_backends
                                                              or r.id == self.cfg.backend)
            ]
        return self._backends

    def app(self):
        from aiohttp import web

        # 64 KiB is enough for any request this server answers except the WebSocket's frames
        @web.middleware
        async def errors(request, handler):
            return await self._errors(request, handler)

        app = web.Application(client_max_size=64 * 1024, middlewares=[errors])
        app.router.add_get("/health", self.health)
        app.router.add_get("/", self.index)
        app.router.add_get("/v1/session", self.session)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_cleanup(self, app) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _json(data: dict, status: int = 200):
        from aiohttp import web

        return web.json_response(data, status=status)

    async def _errors(self, request, handler):
        """Every answer to a bad request is JSON with a 4xx; a bug in a handler is a 500, never a dead server."""
        from aiohttp import web

        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400 and e.content_type != "application/json":
                return self._json({"error": e.reason}, e.status)
            raise
        except Exception as e:  # noqa: BLE001
            log.error("request %s %s failed: %s", request.method, request.path, one_line(e))
            return self._json({"error": "internal error"}, 500)

    async def health(self, request):
        return self._json({"ok": True, "service": "live-upscale", "version": __version__,
                           "sessions": len(self.sessions), "max_sessions": self.cfg.max_sessions})

    async def index(self, request):
        if not token_ok(self.cfg.token, request.headers.get("Authorization")):
            return self._json({"error": "token required"}, 401)
        cfg = self.cfg
        return self._json({
            "service": "live-upscale", "version": __version__, "protocol": PROTOCOL, "transport": "websocket",
            "session_path": "/v1/session", "codecs": list(wire.CODECS), "tls": bool(cfg.tls_cert),
            "default": {"backend": cfg.backend, "model": cfg.model, "device": cfg.device},
            "backends": self.backends(), "gpu": _gpu(),
            "sessions": [s.describe() for s in self.sessions.values()], "max_sessions": cfg.max_sessions,
            "limits": {"max_pixels": cfg.max_pixels, "max_out_pixels": cfg.max_out_pixels, "max_fps": cfg.max_fps,
                       "idle_timeout": cfg.idle_timeout},
            "uptime_s": round(time.time() - self.started, 1),
        })

    async def session(self, request):
        from aiohttp import web

        peer = request.remote or "?"
        if not token_ok(self.cfg.token, request.headers.get("Authorization")):
            log.info("session refused from %s: wrong or missing token", peer)
            return self._json({"error": "wrong or missing token"}, 401)
        if len(self.sessions) >= self.cfg.max_sessions:
            log.info("session refused from %s: server full (%d sessions)", peer, len(self.sessions))
            return web.json_response({"error": f"server full ({self.cfg.max_sessions} sessions)"}, status=503,
                                     headers={"Retry-After": "5"})
        ws = web.WebSocketResponse(max_msg_size=wire.HEADER.size + self.cfg.max_pixels * 3 + 4096, heartbeat=10.0)
        if not ws.can_prepare(request).ok:
            return self._json({"error": "this path takes a WebSocket upgrade"}, 400)
        await ws.prepare(request)
        s = Session(self, peer)
        self.sessions[s.id] = s
        reason, code = "client left", 1000
        try:
            await self._hello(s, ws)
            log.info("session %d open from %s: %s (%s, %s)", s.id, peer, s.node.engine.describe(), s.mode, s.codec)
            await ws.send_json(s.ready_message())
            reader = asyncio.ensure_future(s.reader(ws))
            worker = asyncio.ensure_future(s.worker(ws))
            try:
                done, _ = await asyncio.wait({reader, worker}, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    if t.exception() is not None:
                        raise t.exception()
                await worker
            finally:
                for t in (reader, worker):
                    t.cancel()
        except SessionError as e:
            reason, code = str(e), e.code
            if not ws.closed:
                try:
                    await ws.send_json({"type": "error", "fatal": True, "oom": e.oom, "message": str(e)})
                except Exception:  # noqa: BLE001 - the peer is already gone
                    pass
        except (ConnectionError, asyncio.CancelledError) as e:
            reason = f"connection lost ({type(e).__name__})"
        except Exception as e:  # noqa: BLE001 - a bug in one session never disturbs the others
            reason, code = f"internal error: {one_line(e)}", 1011
            log.exception("session %d failed", s.id)
        finally:
            self.sessions.pop(s.id, None)
            if not ws.closed:
                try:
                    await ws.close(code=code, message=reason.encode()[:120].decode("utf-8", "ignore").encode())
                except Exception:  # noqa: BLE001
                    pass
            try:
                await self.in_thread(s.close)
            except RuntimeError:  # shutting down: the pool is gone
                s.close()
            log.info("session %d closed after %d frames in, %d out (%.1f s): %s", s.id, s.frames_in, s.frames_out,
                     time.monotonic() - s.opened, reason)
        return ws

    async def _hello(self, s: Session, ws) -> None:
        from aiohttp import WSMsgType

        try:
            msg = await ws.receive(timeout=self.cfg.hello_timeout)
        except asyncio.TimeoutError:
            raise SessionError(f"no hello within {self.cfg.hello_timeout:g} s", code=4408) from None
        if msg.type != WSMsgType.TEXT:
            raise SessionError("the first message must be a JSON hello")
        try:
            hello = json.loads(msg.data)
        except ValueError:
            raise SessionError("the hello is not JSON") from None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise SessionError("the first message must be {\"type\": \"hello\", ...}")
        if hello.get("protocol", PROTOCOL) != PROTOCOL:
            raise SessionError(f"protocol {hello.get('protocol')!r} is not spoken here (this server: {PROTOCOL})")
        mode, codec, quality = hello.get("mode", "live"), hello.get("codec", "raw"), hello.get("jpeg_quality", 90)
        if not isinstance(mode, str) or mode not in ("live", "file"):
            raise SessionError("mode must be 'live' or 'file'")
        if not isinstance(codec, str) or codec not in wire.CODECS:
            raise SessionError(f"codec must be one of {', '.join(wire.CODECS)}")
        if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 100:
            raise SessionError("jpeg_quality must be an integer from 1 to 100")
        s.mode, s.codec, s.quality = mode, codec, quality
        await s.open_node(s.node_params(hello.get("params", {})))


# --- running it ----------------------------------------------------------------------------------------


def ssl_context(cfg: ServeConfig) -> ssl.SSLContext | None:
    if not cfg.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (ssl.SSLError, OSError) as e:
        raise LiveUpscaleError(f"could not load the TLS certificate/key: {e}") from None
    return ctx


async def start(cfg: ServeConfig):
    """Start listening; returns the aiohttp runner (``await runner.cleanup()`` stops it) and the server."""
    from aiohttp import web

    check_config(cfg)
    server = Server(cfg)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ssl_context(cfg), reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise LiveUpscaleError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    return runner, server


class ServerThread:
    """A server on its own event-loop thread (tests, notebooks): ``with ServerThread(cfg) as url: ...``."""

    def __init__(self, cfg: ServeConfig):
        import threading

        self.cfg = cfg
        self.server: Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="live-upscale-serve")
        self._runner = None

    @property
    def url(self) -> str:
        return f"{'https' if self.cfg.tls_cert else 'http'}://{self.cfg.host}:{self.cfg.port}"

    def __enter__(self) -> str:
        self._thread.start()
        self._runner, self.server = asyncio.run_coroutine_threadsafe(start(self.cfg), self._loop).result(30)
        return self.url

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def run(cfg: ServeConfig) -> int:
    """Serve until SIGINT/SIGTERM."""
    import signal

    async def main() -> None:
        runner, server = await start(cfg)
        scheme = "https" if cfg.tls_cert else "http"
        auth = "token required" if cfg.token else "loopback only, no token"
        print(f"live-upscale serve: listening on {scheme}://{cfg.host}:{cfg.port} ({auth}); "
              f"default backend {cfg.backend}{' model ' + cfg.model if cfg.model else ''}; "
              f"up to {cfg.max_sessions} sessions", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        await stop.wait()
        print("live-upscale serve: stopping", flush=True)
        await runner.cleanup()

    asyncio.run(main())
    return 0


def read_token(path: str | None) -> str | None:
    """``--token-file`` first, then ``LIVE_UPSCALE_SERVE_TOKEN``; surrounding whitespace ignored."""
    if path:
        try:
            tok = Path(path).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise LiveUpscaleError(f"cannot read the token file {path}: {e.strerror or e}") from None
        if not tok:
            raise LiveUpscaleError(f"the token file {path} is empty")
        return tok
    tok = os.environ.get("LIVE_UPSCALE_SERVE_TOKEN", "").strip()
    return tok or None


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ServeConfig()
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1; 0.0.0.0 for all, needs a token)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    p.add_argument("--token-file", default=None,
                   help="file holding the token clients must send (else LIVE_UPSCALE_SERVE_TOKEN)")
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain for HTTPS (or terminate TLS at a proxy)")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    p.add_argument("--backend", default=d.backend, help="default backend for sessions (clients may ask for another)")
    p.add_argument("--model", default=None, help="default model for sessions")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--allow-backends", default=None,
                   help="comma-separated backends clients may ask for (default: any registered one)")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions)
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="largest input frame, in pixels")
    p.add_argument("--max-out-pixels", type=int, default=d.max_out_pixels, help="largest output frame, in pixels")
    p.add_argument("--max-fps", type=float, default=d.max_fps, help="frames per second per session (excess waits)")
    p.add_argument("--idle-timeout", type=float, default=d.idle_timeout, help="seconds of silence before a session closes")
    p.add_argument("--offline", action="store_true", help="never download weights")


def config_from_args(a: argparse.Namespace) -> ServeConfig:
    allow = tuple(b.strip().lower().replace("-", "_") for b in a.allow_backends.split(",") if b.strip()) \
        if a.allow_backends else None
    return ServeConfig(
        host=a.host, port=a.port, token=read_token(a.token_file), tls_cert=a.tls_cert, tls_key=a.tls_key,
        backend=a.backend, model=a.model, device=a.device, download=not a.offline, allow_backends=allow,
        max_sessions=a.max_sessions, max_pixels=a.max_pixels, max_out_pixels=a.max_out_pixels, max_fps=a.max_fps,
        idle_timeout=a.idle_timeout,
    )


def cmd_serve(a: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(message)s")
    log.setLevel(logging.INFO)
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s live-upscale serve: %(message)s"))
        log.addHandler(h)
        log.propagate = False
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise LiveUpscaleError("serve needs aiohttp: pip install 'live-upscale[remote]'") from None
    return run(config_from_args(a))


__all__ = ["ServeConfig", "Server", "ServerThread", "add_arguments", "cmd_serve", "config_from_args", "run", "start"]
