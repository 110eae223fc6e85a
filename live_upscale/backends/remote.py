"""``remote``: upscale on another machine running ``live-upscale serve`` (a cloud GPU, say).

    --backend remote --model "https://gpu.example.com:8765"
    --backend remote --model "http://127.0.0.1:8765 backend=flashvsr delay=4 codec=jpeg"

The model string is the server's URL, then optional ``key=value`` items (spaces, ``;`` or ``&``
between them, or as the URL's query string):

- ``token``: the server's token (else ``LIVE_UPSCALE_REMOTE_TOKEN``);
- ``backend``, ``model``: what the server runs for this session (else its defaults; models by
  registered name only);
- ``delay``: live frames of delay (default 3, see below); ``window``: frames in flight;
- ``codec``: ``raw`` (default on loopback), ``jpeg`` (default elsewhere), ``png``;
  ``jpeg_quality`` (default 90);
- ``mode``: ``live`` or ``file`` (default: ``live`` through ``cook`` or a live host's ``process``
  (``node.live_host``: Scope), ``file`` through ``process``);
- ``ca``: a CA bundle for a server with a private certificate; ``timeout``: seconds to wait for
  the server in file mode (default 30).

Two behaviours, picked by how the node is driven:

- live (``UpscaleNode.cook``: TouchDesigner; ``process`` with ``node.live_host``: Scope): never waits. Each cook sends its frame
  when fewer than ``window`` are in flight and returns the upscaled frame of ``delay`` cooks ago
  (the newest one back at that age, if that one is late). While connecting or disconnected the
  input comes back resized, and ``status`` says why; the link reconnects by itself.
- file (``process``/``flush``: the CLI): every frame comes back, in order; ``process``
  returns the ones back so far (like a buffering engine), ``flush`` waits for the rest. A lost
  connection, or a server error, stops the job with one clear line: nothing is dropped silently
  (``reset`` or a new input size starts a new job on the link once it is back).

Runtime knobs (sharpen, stabilize, scene cut) go to the server's node without a reconnect; so do
load-time ones (scale, quality, ...): the node re-creates this engine, which takes the same link
back from a short-lived pool and sends the new parameters. The server's node does the temporal
work (stabilizer, scene cuts), so the local node leaves it alone (``Capabilities.remote``).
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import torch

from ..errors import BackendUnavailable, InputError, LiveUpscaleError
from ..ops.resample import out_size, resize
from .base import Backend, Capabilities, Engine, EngineConfig, Probe, missing_package
from .registry import register

TOKEN_ENV = "LIVE_UPSCALE_REMOTE_TOKEN"
DEFAULT_DELAY = 3
POOL_GRACE_S = 10.0  # a released link stays open this long for the next engine of the same node
_ITEMS = {"token", "backend", "model", "delay", "window", "codec", "jpeg_quality", "mode", "ca", "timeout"}


def parse_target(spec: str | None) -> tuple[str, dict[str, str]]:
    """``"URL k=v ..."`` -> (URL without query, items). Raises InputError with the accepted forms."""
    if not spec or not spec.strip():
        raise InputError("the remote backend needs the server's URL as its model, e.g. http://127.0.0.1:8765")
    parts = re.split(r"[\s;]+", spec.strip())
    head, rest = parts[0], parts[1:]
    u = urlsplit(head)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError(f"remote model must start with http://host:port or https://host:port, not {head!r}")
    try:
        u.port  # noqa: B018 - validates the port
    except ValueError:
        raise InputError(f"bad port in {head!r}") from None
    items: dict[str, str] = dict(parse_qsl(u.query, keep_blank_values=True))
    for r in rest:
        for kv in r.split("&"):
            if not kv:
                continue
            if "=" not in kv:
                raise InputError(f"remote model item {kv!r} is not key=value")
            k, v = kv.split("=", 1)
            items[k.strip().lower()] = v.strip()
    unknown = set(items) - _ITEMS
    if unknown:
        raise InputError(f"unknown remote model items: {', '.join(sorted(unknown))} (known: {', '.join(sorted(_ITEMS))})")
    return urlunsplit((u.scheme, u.netloc, u.path.rstrip("/"), "", "")), items


def _loopback(url: str) -> bool:
    from ..remote.client import is_loopback

    return is_loopback(urlsplit(url).hostname or "")


def _int(items: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    try:
        v = int(items.get(key, default))
    except (TypeError, ValueError):
        raise InputError(f"remote item {key} must be an integer") from None
    if not lo <= v <= hi:
        raise InputError(f"remote item {key} must be from {lo} to {hi}")
    return v


# --- links outlive engines briefly, so re-creating the engine (a new scale) does not reconnect --------

_POOL: dict[tuple, list[tuple[Any, float]]] = {}
_POOL_LOCK = threading.Lock()


def _acquire(key: tuple):
    now = time.monotonic()
    with _POOL_LOCK:
        for k, entries in list(_POOL.items()):
            keep = []
            for link, t in entries:
                if now - t > POOL_GRACE_S or link.state in ("closed",):
                    link.close()
                else:
                    keep.append((link, t))
            _POOL[k] = keep
        entries = _POOL.get(key) or []
        return entries.pop()[0] if entries else None


def _release(key: tuple, link) -> None:
    with _POOL_LOCK:
        _POOL.setdefault(key, []).append((link, time.monotonic()))
    t = threading.Timer(POOL_GRACE_S + 0.5, _acquire, args=(("sweep",),))  # closes it unless taken back
    t.daemon = True
    t.start()


def close_all() -> None:
    """Close every pooled link now (tests, interpreter exit)."""
    with _POOL_LOCK:
        entries = [l for v in _POOL.values() for l, _ in v]
        _POOL.clear()
    for link in entries:
        link.close()


class RemoteEngine(Engine):
    def __init__(self, config: EngineConfig):
        super().__init__(config)
        from ..remote.client import RemoteLink

        self.url, items = parse_target(config.model)
        opts = dict(config.options)
        for k in _ITEMS & set(opts):  # backend_options may carry the same items
            items.setdefault(k, str(opts.pop(k)))
        self.token = items.get("token") or os.environ.get(TOKEN_ENV, "").strip() or None
        if not self.token and not _loopback(self.url):
            raise BackendUnavailable(f"no token for {self.url}: set {TOKEN_ENV} or add token=... to the model")
        self.delay = _int(items, "delay", DEFAULT_DELAY, 0, 120)
        self.mode = items.get("mode", "auto")
        if self.mode not in ("auto", "live", "file"):
            raise InputError("remote item mode must be live or file")
        codec = items.get("codec", "raw" if _loopback(self.url) else "jpeg")
        if codec not in ("raw", "png", "jpeg"):
            raise InputError("remote item codec must be raw, png or jpeg")
        try:
            self.timeout = float(items.get("timeout", 30.0))
        except ValueError:
            self.timeout = float("nan")
        if not 0 < self.timeout <= 3600:  # nan fails this too
            raise InputError("remote item timeout must be a number of seconds above 0, at most 3600")
        self._window_item = _int(items, "window", 1, 1, 1024) if items.get("window") is not None else None
        params: dict[str, Any] = {
            "scale": config.scale, "precision": config.precision,
            **{k: opts.pop(k) for k in ("quality", "prescale", "sharpen", "stabilize", "scene_cut", "compile") if k in opts},
        }
        for k in ("download",):
            opts.pop(k, None)
        if opts:
            params["backend_options"] = opts
        for k in ("backend", "model"):
            if items.get(k):
                params[k] = items[k]
        self.params = params
        hello = {"type": "hello", "protocol": 1, "codec": codec, "jpeg_quality": _int(items, "jpeg_quality", 90, 1, 100),
                 "params": params}
        self._ca = items.get("ca")
        self._key = (self.url, self.token, codec, items.get("ca"), items.get("backend"), items.get("model"), self.mode)
        self.link = _acquire(self._key) if self.mode != "file" else None
        self._live: bool | None = None if self.mode == "auto" else self.mode == "live"
        first_id = 0
        if self.link is not None:  # from the pool: its old engine's frames are not this one's
            with self.link.cond:
                first_id = max([*self.link.results, *self.link.in_flight], default=-1) + 1
                self.link.results.clear()
                self.link.in_flight.clear()
            self.link.update_params(params)
        else:
            self.link = RemoteLink(self.url, self.token, {**hello, "mode": "live" if self.mode != "file" else "file"},
                                   keep=self._keep() if self.mode != "file" else None, stall_s=3.0 if self.mode != "file" else None,
                                   ca=self._ca)
        self._link_cls = RemoteLink
        # an engine dropped without close() (its node let go) still closes its link and its thread
        self._box = [self.link]
        weakref.finalize(self, _close_box, self._box)
        self._next_id = self._first_id = first_id  # a pooled link's ids go on: late old results never match
        self._expected: list[int] = []  # file mode: ids sent, in order, not yet returned
        self._gen = None
        self._allowed = 1 << 30  # live: frames in flight the server's queue depth allows (see process_live)
        self._last_seen = -1
        self.live_age: int | None = None  # live: how many calls ago the last frame returned was sent
        self.late = 0  # live cooks that repeated an older frame because the one due was not back
        self.passed = 0  # live cooks answered with the resized input
        self.status = self.link.status
        self.caps = Capabilities(min_scale=1.0, max_scale=8.0, delay=self.delay, remote=True,
                                 notes="frames go to a live-upscale server; its node does the work")

    # --- the two modes -----------------------------------------------------------------------------

    def _switch(self, live: bool) -> None:
        """The first call decides the mode (``auto``): a file job needs a link that keeps every result."""
        self._live = live
        if live == (self.link.hello.get("mode") == "live"):
            return
        self.link.close()
        mode = "live" if live else "file"
        self.link = self._link_cls(self.url, self.token, {**self.link.hello, "mode": mode},
                                   keep=self._keep() if live else None, stall_s=3.0 if live else None, ca=self._ca)
        self._key = (*self._key[:-1], mode)
        self._box[0] = self.link

    def _keep(self, window: int | None = None) -> int:
        """Live results a link keeps: enough to still hold the one ``delay`` frames back."""
        return max(8, self.delay + (self.delay + 1 if window is None else window) + 4)

    @property
    def window(self) -> int:
        if self._window_item is not None:
            return self._window_item
        r = self.link.ready
        chunk, delay = int(r.get("chunk", 1) or 1), int(r.get("delay", 0) or 0)
        return max(2 if self._live else 4, chunk + delay + 1, self.delay + 1 if self._live else 0)

    def process_live(self, frames: torch.Tensor) -> torch.Tensor:
        from ..remote import wire

        if self._live is not True:
            self._switch(True)
        outs = []
        for i in range(frames.shape[0]):
            x = frames[i : i + 1]
            fid = self._next_id
            self._next_id += 1
            if self.link.keep is not None and self.link.keep < self._keep(self.window):
                self.link.keep = self._keep(self.window)  # the server's chunk (known once ready) widens the window
            if self.link.is_ready:
                self.link.send_frame(fid, wire.to_pixels(x)[0], min(self.window, self._allowed))
            else:
                self.link.wake()  # a session the server closed for idleness comes back with the next cook
            want = out_size(x.shape[-2], x.shape[-1], self.scale)
            r = self.link.latest_at_or_before(fid - self.delay, want)
            if r is not None and r.id < self._first_id:
                r = None  # a late frame of the engine this link served before
            if r is not None and r.id != self._last_seen:
                # frames queueing on the server only add latency: send fewer until its queue drains
                self._last_seen = r.id
                if r.queue >= 1:
                    self._allowed = max(1, self._allowed - 1)
                else:
                    self._allowed = min(self.window, self._allowed + 1)
            self.live_age = fid - r.id if r is not None else 0  # the node pairs this frame with its alpha
            if r is not None:
                if r.id != fid - self.delay:
                    self.late += 1
                outs.append(wire.to_tensor([r.pixels], x.device))
                self.status = ""
            else:
                self.passed += 1
                outs.append(resize(x, want, "bicubic").clamp_(0.0, 1.0))
                st = self.link.status if not self.link.is_ready else f"waiting for the first frames from {self.url}"
                self.status = f"remote: {st} (input passed through)"
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        from ..remote import wire

        if self._live is not False:
            if self._live is None:
                self._switch(False)
            else:
                return self.process_live(frames)
        self._await_ready()
        for i in range(frames.shape[0]):
            self._wait(lambda: len(self._expected) - self._back() < self.window, "to accept more frames")
            fid = self._next_id
            if not self.link.send_frame(fid, wire.to_pixels(frames[i : i + 1])[0], 1 << 30):
                self._lost()
            self._next_id += 1
            self._expected.append(fid)
        return self._collect(frames)

    def _back(self) -> int:
        """How many expected frames are back (results are kept until taken)."""
        return sum(1 for f in self._expected if f in self.link.results)

    def _await_ready(self) -> None:
        link = self.link
        if self._gen is None:
            if not link.wait(lambda: link.state in ("ready", "refused", "closed"), self.timeout) or link.state != "ready":
                raise LiveUpscaleError(f"remote server {self.url} not available: {link.status}")
            self._gen = link.generation
            self.status = ""
        elif link.generation != self._gen or link.state != "ready":
            self._lost()

    def _lost(self) -> None:
        n = len(self._expected)
        raise LiveUpscaleError(
            f"remote server {self.url}: the session ended with {n} frame(s) not back ({self.link.status}); "
            "the job stops here rather than drop frames"
        )

    def _wait(self, pred, what: str) -> None:
        link = self.link
        gen = self._gen
        ok = link.wait(lambda: pred() or link.generation != gen or link.state != "ready", self.timeout)
        if link.generation != gen or link.state != "ready":
            self._lost()
        if not ok:
            raise LiveUpscaleError(f"remote server {self.url} did not answer for {self.timeout:g} s {what}; stopping")

    def _collect(self, like: torch.Tensor) -> torch.Tensor:
        from ..remote import wire

        px = []
        while self._expected:
            r = self.link.take(self._expected[0])
            if r is None:
                break
            px.append(r.pixels)
            self._expected.pop(0)
        if not px:
            h, w = out_size(like.shape[-2], like.shape[-1], self.scale)
            return torch.empty((0, 3, h, w), device=like.device)
        shapes = {p.shape for p in px}
        if len(shapes) > 1:  # a size change inside one batch (the CLI flushes first; be safe anyway)
            return torch.cat([wire.to_tensor([p], like.device) for p in px])
        return wire.to_tensor(px, like.device)

    def flush(self) -> torch.Tensor | None:
        if self._live is not False or not self._expected:
            return None
        self._await_ready()
        n = self.link.flushed
        self.link.send_control({"type": "flush"})
        # the server answers 'flushed' after every output, on the same ordered connection
        self._wait(lambda: self.link.flushed > n, "to return the last frames")
        missing = [f for f in self._expected if f not in self.link.results]
        if missing:
            raise LiveUpscaleError(f"remote server {self.url} returned no output for {len(missing)} frame(s); stopping")
        y = self._collect(torch.empty(0, 3, 1, 1, device=self.device))
        return y if y.shape[0] else None

    # --- the rest of the engine protocol ------------------------------------------------------------

    def reset(self) -> None:
        if self._live is False:  # file mode: a new stream; a session lost earlier stops the job no more
            self._expected.clear()
            self._gen = None
            with self.link.cond:
                self.link.results.clear()
        self.link.send_control({"type": "reset"})

    def set_options(self, **options: Any) -> None:
        knobs = {k: options[k] for k in ("sharpen", "stabilize", "scene_cut") if options.get(k) is not None}
        changed = {k: v for k, v in knobs.items() if self.params.get(k) != v}
        if changed:
            self.params.update(changed)
            self.link.update_params(changed)

    def describe(self) -> str:
        st = self.link.stats()
        r = self.link.ready
        eng = r.get("engine") if self.link.is_ready else None
        rtt = f", rtt {st['rtt_ms_p50']:.0f} ms" if st["rtt_ms_p50"] is not None else ""
        where = f"{eng} at {self.url}" if eng else f"{self.url} ({self.link.status})"
        return f"remote {where}, delay {self.delay} frame(s){rtt}"

    def info(self) -> dict[str, Any]:
        return {**self.link.stats(), "delay": self.delay, "late": self.late, "passed_through": self.passed}

    def close(self) -> None:
        link, self.link = self.link, _Closed()
        self._box[0] = None
        if self._live is not False and link.state in ("ready", "connecting", "down"):
            _release(self._key, link)  # a node re-creating its engine takes it back without reconnecting
        else:
            link.close()


def _close_box(box: list) -> None:
    link, box[0] = box[0], None
    if link is not None:
        link.close()


class _Closed:
    state, status, ready, results, events, hello, is_ready = "closed", "closed", {}, {}, [], {"mode": None}, False

    def __getattr__(self, name):
        raise LiveUpscaleError("this remote engine is closed")


@register
class RemoteBackend(Backend):
    id = "remote"
    label = "Remote (a live-upscale server, e.g. a cloud GPU)"
    description = "Sends frames to `live-upscale serve` on another machine; set the model to its URL."
    priority = -10  # 'auto' never picks it: it needs a server

    @classmethod
    def probe(cls, device: torch.device, model: str | None = None) -> Probe:
        miss = missing_package("aiohttp")
        if miss:
            return Probe(False, f"{miss} (pip install 'live-upscale[remote]')")
        if not model:
            return Probe(True, "set the model to the server's URL (http://host:port)")
        try:
            url, _ = parse_target(model)
        except InputError as e:
            return Probe(False, str(e))
        return Probe(True, f"server {url} (reached when frames flow)")

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        if missing_package("aiohttp"):
            raise BackendUnavailable("the remote backend needs aiohttp: pip install 'live-upscale[remote]'")
        try:
            return RemoteEngine(config)
        except InputError as e:
            raise BackendUnavailable(str(e)) from None
