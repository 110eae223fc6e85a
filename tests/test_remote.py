"""``live-upscale serve`` and the ``remote`` backend, end to end on 127.0.0.1.

A real ``serve`` process (classic on CPU) serves the remote backend through the node, the CLI and
the TouchDesigner stand-in: frames flow (and equal the local backend's), the wrong token is
refused, malformed requests are answered, a killed and restarted server is reconnected to, a
blocked port likewise. Limits and the out-of-memory path use a server on a thread in this process
(a test backend that runs out of memory has to be registered where the server runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("aiohttp")

from live_upscale import LiveUpscaleError, UpscaleNode  # noqa: E402
from live_upscale.backends import remote as remote_backend  # noqa: E402
from live_upscale.backends.base import Capabilities, Engine  # noqa: E402
from live_upscale.remote import wire  # noqa: E402
from live_upscale.remote.server import ServeConfig, ServerThread, check_config, token_ok  # noqa: E402
from tests.conftest import registered_engine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, method: str = "GET", token: str | None = None, data: bytes | None = None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class ServeProcess:
    """``python -m live_upscale serve`` on 127.0.0.1 (classic, CPU), waited for until /health answers."""

    def __init__(self, port: int | None = None, token: str | None = TOKEN, *extra: str):
        self.port = port or free_port()
        self.token, self.extra = token, extra
        self.proc: subprocess.Popen | None = None
        self.log = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServeProcess":
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        env.pop("LIVE_UPSCALE_SERVE_TOKEN", None)
        if self.token:
            env["LIVE_UPSCALE_SERVE_TOKEN"] = self.token
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "live_upscale", "serve", "--port", str(self.port), "--backend", "classic",
             "--device", "cpu", "--offline", *self.extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.proc.stdout.read().decode()}")
            try:
                if http(self.url + "/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("serve did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.log = self.proc.stdout.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="module")
def served():
    s = ServeProcess().start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _close_links(monkeypatch):
    monkeypatch.setenv("LIVE_UPSCALE_REMOTE_TOKEN", TOKEN)
    yield
    remote_backend.close_all()


def frames_u8(n: int, h: int = 24, w: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Distinct smooth uint8 frames (exact on the wire: no rounding on the way up)."""
    g = np.random.default_rng(seed)
    base = g.random((h // 4 + 1, w // 4 + 1, 3))
    out = []
    for i in range(n):
        img = np.kron(np.roll(base, i, axis=1), np.ones((4, 4, 1)))[:h, :w]
        out.append((img * 255).round().astype(np.uint8))
    return out


def as_tensor(px: list[np.ndarray]) -> torch.Tensor:
    return wire.to_tensor(px, torch.device("cpu"))


def wait_until(pred, timeout: float, step: float = 0.02, cook=None) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cook is not None:
            cook()
        if pred():
            return True
        time.sleep(step)
    return False


# --- pieces ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["raw", "png", "jpeg"])
def test_wire_roundtrip(codec):
    import torch.nn.functional as F

    smooth = F.interpolate(torch.rand(1, 3, 5, 6, generator=torch.Generator().manual_seed(0)), size=(17, 23),
                           mode="bilinear", align_corners=False)
    px = wire.to_pixels(smooth)[0]
    msg = wire.encode(7, px, codec, 95, server_ms=1.5, queue=2)
    fr = wire.decode(msg)
    assert fr.id == 7 and fr.pixels.shape == (17, 23, 3) and fr.queue == 2 and abs(fr.server_ms - 1.5) < 1e-6
    err = np.abs(fr.pixels.astype(int) - px.astype(int)).mean()
    assert err == 0 if codec != "jpeg" else err < 6


def test_wire_refuses_malformed():
    px = frames_u8(1)[0]
    msg = wire.encode(1, px)
    for bad in (b"", msg[:10], b"XX" + msg[2:], msg[:-1], msg + b"\0"):
        with pytest.raises(wire.InputError):
            wire.decode(bad)
    with pytest.raises(wire.InputError, match="limit"):
        wire.decode(msg, max_pixels=100)


def test_target_parsing():
    url, items = remote_backend.parse_target("http://127.0.0.1:9/ token=abc backend=classic;delay=2")
    assert url == "http://127.0.0.1:9" and items == {"token": "abc", "backend": "classic", "delay": "2"}
    url, items = remote_backend.parse_target("https://gpu.example.com:8765?token=t&codec=jpeg")
    assert url == "https://gpu.example.com:8765" and items == {"token": "t", "codec": "jpeg"}
    for bad in ("", "gpu.example.com", "ftp://x:1", "http://x:1 nonsense", "http://x:1 colour=red", "http://x:notaport"):
        with pytest.raises(remote_backend.InputError):
            remote_backend.parse_target(bad)


def test_security_config():
    with pytest.raises(LiveUpscaleError, match="needs a token"):
        check_config(ServeConfig(host="0.0.0.0"))
    with pytest.raises(LiveUpscaleError, match="shorter than 16"):
        check_config(ServeConfig(host="0.0.0.0", token="short"))
    check_config(ServeConfig(host="0.0.0.0", token=TOKEN))
    check_config(ServeConfig(host="127.0.0.1"))
    assert token_ok(TOKEN, f"Bearer {TOKEN}") and not token_ok(TOKEN, "Bearer nope") and not token_ok(TOKEN, None)
    assert not token_ok(TOKEN, TOKEN) and token_ok(None, None)


def test_remote_engine_needs_token_off_loopback(monkeypatch):
    monkeypatch.delenv("LIVE_UPSCALE_REMOTE_TOKEN")
    with pytest.raises(LiveUpscaleError, match="no token"):
        UpscaleNode(backend="remote", model="https://gpu.example.com:8765", device="cpu").load()


# --- a real serve process ------------------------------------------------------------------------------


def test_health_and_index(served):
    code, body = http(served.url + "/health")
    h = json.loads(body)
    assert code == 200 and h["ok"] and h["max_sessions"] >= 1
    assert http(served.url + "/")[0] == 401
    code, body = http(served.url + "/", token=TOKEN)
    info = json.loads(body)
    assert code == 200 and any(b["id"] == "classic" and b["ok"] for b in info["backends"])
    assert info["default"]["backend"] == "classic" and "remote" not in [b["id"] for b in info["backends"]]


def test_file_mode_every_frame_in_order_equals_local(served):
    px = frames_u8(9)
    node = UpscaleNode(backend="remote", model=served.url, scale=2.0, device="cpu")
    local = UpscaleNode(backend="classic", scale=2.0, device="cpu")
    outs = [node.process(as_tensor(px[i:i + 3])) for i in (0, 3, 6)]
    tail = node.flush()
    got = torch.cat([o for o in outs if o.shape[0]] + ([tail] if tail is not None else []))
    ref = local.process(as_tensor(px))
    assert got.shape == ref.shape == (9, 3, 48, 64)
    # the server's output is the local one rounded to 8 bits: frame by frame, in order
    assert (got - ref).abs().max() <= 0.5 / 255 + 1e-6
    node.close()


def test_cli_upscale_through_remote(served, tmp_path):
    from live_upscale.plugin import cli, media

    src = tmp_path / "in"
    src.mkdir()
    px = frames_u8(6, 20, 28)
    for i, p in enumerate(px):
        media.write_image(src / f"{i:04d}.png", p)
    out = tmp_path / "out"
    assert cli.main(["upscale", str(src), "-o", str(out), "--backend", "remote", "--model", served.url]) == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"{i:04d}.png" for i in range(6)]
    local = UpscaleNode(backend="classic", scale=2.0, device="cpu")
    for f, p in zip(files, px):
        ref = media.to_uint8(local.process(as_tensor([p])))[0]
        assert np.abs(media.read_image(f)[0].astype(int) - ref.astype(int)).max() <= 1


def test_wrong_token_refused(served, capsys, tmp_path):
    code, _ = http(served.url + "/v1/session", token="wrong-token-wrong-token",
                   headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert code == 401
    node = UpscaleNode(backend="remote", model=served.url + " token=wrong-token-wrong-token timeout=5", device="cpu")
    with pytest.raises(LiveUpscaleError, match="refused the token"):
        node.process(as_tensor(frames_u8(1)))
    # live: the input comes back resized, with the reason
    live = UpscaleNode(backend="remote", model=served.url + " token=wrong-token-wrong-token", device="cpu")
    f = frames_u8(1)[0]
    assert wait_until(lambda: "refused the token" in live.engine.status, 5, cook=lambda: live.cook(f))
    assert live.cook(f).shape == (48, 64, 3)


def test_live_cook_gets_frames_at_a_fixed_delay_and_params_travel(served):
    px = frames_u8(40)
    node = UpscaleNode(backend="remote", model=served.url + " delay=2", scale=2.0, device="cpu")
    local = UpscaleNode(backend="classic", scale=2.0, device="cpu")
    refs = [local.cook(p) for p in px]
    outs = []
    for p in px:  # cook at ~30 fps: never blocks
        t0 = time.perf_counter()
        outs.append(node.cook(p))
        assert time.perf_counter() - t0 < 0.5
        time.sleep(0.03)
    eng = node.engine
    assert eng.caps.delay == 2 and "delay 2" in eng.describe()
    hits = [i for i in range(2, len(px)) if np.array_equal(outs[i], refs[i - 2])]
    assert len(hits) >= len(px) // 2, (len(hits), eng.info())
    assert all(o.shape == (48, 64, 3) for o in outs)
    # a runtime knob goes over the session's control channel: same session, sharper output
    sessions = eng.link.sessions
    node.update(sharpen=1.5)
    local.update(sharpen=1.5)
    sharp = local.cook(px[0])
    assert wait_until(lambda: np.array_equal(node.cook(px[0]), sharp), 5, step=0.03)
    assert node.engine is eng and eng.link.sessions == sessions
    # a load-time one (scale) re-creates the engine, which takes the same link back: no reconnect
    node.update(scale=3.0)
    assert wait_until(lambda: node.cook(px[0]).shape == (72, 96, 3) and node.engine.status == "", 5, step=0.03)
    assert node.engine is not eng and node.engine.link.sessions == sessions
    node.close()


def test_touchdesigner_top_with_remote_backend(served, monkeypatch):
    import importlib.util

    from live_upscale.plugin.touchdesigner import top
    from tests.standins import td

    monkeypatch.setitem(sys.modules, "td", td)
    monkeypatch.setattr(top, "ALLOW_HOST_MEMORY", True)
    monkeypatch.setattr(top, "INFO_EVERY_S", 0.0)
    spec = importlib.util.spec_from_file_location("cb", REPO / "windows" / "td_script_top_callbacks.py")
    cb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cb)
    rgba = np.zeros((24, 32, 4), np.float32)
    rgba[..., :3] = frames_u8(1)[0] / 255.0
    rgba[..., 3] = 1.0
    op = td.ScriptTOP([td.TOP(td.td_image(rgba, np.uint8))])
    cb.onSetupParameters(op)
    assert "remote" in op.par.Backend.menuNames
    op.par.Backend.val, op.par.Model.val = "remote", served.url
    try:
        op.cook(cb)
        assert not op.errors and op.output.shape == (48, 64, 4)
        assert any("passed through" in w for w in op.warnings)  # connecting: the input, resized, and why
        ok = wait_until(lambda: (op.cook(cb), not op.warnings)[1], 10, step=0.03)
        assert ok, op.warnings
        assert "remote classic" in op.par.Backendinuse.val and not op.par.Lasterror.val
        ref = UpscaleNode(backend="classic", scale=2.0, device="cpu").cook(op.inputs[0].image,
                                                                          in_format="HWC:BGRA:uint8:flipped")
        assert np.abs(op.output.astype(int) - ref.astype(int)).max() <= 1
    finally:
        top.drop()


@pytest.mark.parametrize("body", [b"", b"not json", b'{"type": "hello", "params": {"scale": "x"}}',
                                  b'{"type": "hello", "mode": "sideways"}', b'{"type": "hello", "params": {"device": "cuda"}}',
                                  b'{"type": "hello", "params": {"model": "/etc/passwd"}}',
                                  b'{"type": "hello", "params": {"backend": "remote"}}', b"[1, 2]"])
def test_malformed_hello_closes_that_session_only(served, body):
    async def go():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(served.url + "/v1/session", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                if body:
                    await ws.send_str(body.decode())
                else:
                    await ws.send_bytes(b"\x00\x01")
                msg = await ws.receive(timeout=10)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    assert data["type"] == "error" and data["fatal"]
                    msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                return ws.close_code

    code = asyncio.run(go())
    assert 4000 <= code < 5000
    assert http(served.url + "/health")[0] == 200 and served.alive()


def test_bad_session_never_disturbs_another(served):
    node = UpscaleNode(backend="remote", model=served.url, device="cpu")
    px = frames_u8(3)
    assert node.process(as_tensor(px[:1])).shape[0] + (node.flush() is not None) >= 1

    async def bad():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(served.url + "/v1/session", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                await ws.send_str('{"type": "hello", "mode": "file"}')
                assert json.loads((await ws.receive(timeout=10)).data)["type"] == "ready"
                await ws.send_bytes(wire.encode(0, px[0])[:-5])  # a truncated frame
                kinds = []
                while True:
                    m = await ws.receive(timeout=10)
                    if m.type != aiohttp.WSMsgType.TEXT:
                        return kinds, ws.close_code
                    kinds.append(json.loads(m.data)["type"])

    kinds, code = asyncio.run(bad())
    assert kinds == ["error"] and code == 4400
    y = node.process(as_tensor(px[1:]))
    tail = node.flush()
    assert y.shape[0] + (tail.shape[0] if tail is not None else 0) == 2  # the good session went on
    node.close()


def test_kill_and_restart_reconnects(tmp_path):
    s = ServeProcess().start()
    f = frames_u8(1)[0]
    node = UpscaleNode(backend="remote", model=s.url + " delay=1", device="cpu")
    try:
        assert wait_until(lambda: node.engine is not None and node.engine.status == "", 10, cook=lambda: node.cook(f))
        s.kill()
        # the host keeps cooking: no exception, the input comes back resized, the status says why
        assert wait_until(lambda: "reconnecting" in node.engine.status, 10, cook=lambda: node.cook(f))
        assert node.cook(f).shape == (48, 64, 3) and node.last_error == ""
        s.start()
        assert wait_until(lambda: node.engine.status == "", 15, cook=lambda: node.cook(f))
        assert node.engine.link.sessions == 2
        # file mode, server killed mid-job: a clear error, never a silent drop
        job = UpscaleNode(backend="remote", model=s.url, device="cpu")
        job.process(as_tensor([f]))
        s.kill()
        with pytest.raises(LiveUpscaleError, match="not back|did not answer|not available"):
            for _ in range(50):
                job.process(as_tensor([f]))
                time.sleep(0.05)
            job.flush()
    finally:
        node.close()
        s.stop()


class Gate:
    """A TCP forwarder on 127.0.0.1 that can block the port (close everything, refuse new connections)
    or black-hole it (keep connections open, forward nothing), and open it again."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = free_port()
        self.mode = "open"
        self._loop = asyncio.new_event_loop()
        self._conns: set = set()
        self._server = None
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    async def _listen(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, r, w):
        if self.mode != "open":
            w.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            w.close()
            return
        self._conns.add((w, uw))

        async def pipe(a, b):
            try:
                while data := await a.read(1 << 16):
                    while self.mode == "blackhole":
                        await asyncio.sleep(0.05)
                    if self.mode == "closed":
                        break
                    b.write(data)
                    await b.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                b.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))
        self._conns.discard((w, uw))

    def set(self, mode: str) -> None:
        def apply():
            self.mode = mode
            if mode == "closed":
                for w, uw in list(self._conns):
                    w.close()
                    uw.close()

        self._loop.call_soon_threadsafe(apply)


@pytest.mark.parametrize("how", ["closed", "blackhole"])
def test_port_blocked_and_unblocked(served, how):
    gate = Gate(served.port)
    f = frames_u8(1)[0]
    node = UpscaleNode(backend="remote", model=f"http://127.0.0.1:{gate.port} delay=1", device="cpu")
    try:
        assert wait_until(lambda: node.engine is not None and node.engine.status == "", 10, cook=lambda: node.cook(f))
        gate.set(how)
        assert wait_until(lambda: "reconnecting" in node.engine.status, 15, cook=lambda: node.cook(f))
        assert node.last_error == ""
        gate.set("open")
        assert wait_until(lambda: node.engine.status == "", 15, cook=lambda: node.cook(f))
        assert node.engine.link.sessions == 2
    finally:
        node.close()


# --- limits and out of memory: a server on a thread here --------------------------------------------------


def test_limits():
    cfg = ServeConfig(port=free_port(), backend="classic", device="cpu", max_sessions=1, max_pixels=32 * 32,
                      max_fps=20.0, idle_timeout=1.0)
    with ServerThread(cfg) as url:
        node = UpscaleNode(backend="remote", model=url + " window=8", device="cpu")
        px = frames_u8(8)
        t0 = time.perf_counter()
        y = node.process(as_tensor(px))
        tail = node.flush()
        dt = time.perf_counter() - t0
        assert y.shape[0] + (tail.shape[0] if tail is not None else 0) == 8
        assert dt >= 7 / 20 * 0.9  # 20 fps: frames waited, none dropped
        # one session is the limit: a second client is told the server is full
        other = UpscaleNode(backend="remote", model=url + " timeout=3", device="cpu")
        with pytest.raises(LiveUpscaleError, match="full"):
            other.process(as_tensor(px[:1]))
        other.close()
        # a frame over the pixel limit ends that session with the reason
        with pytest.raises(LiveUpscaleError, match="limit|not back"):
            node.process(as_tensor(frames_u8(1, 48, 48)))
            node.flush()
        node.close()
        remote_backend.close_all()
        # idle sessions are closed
        live = UpscaleNode(backend="remote", model=url, device="cpu")
        f = px[0]
        assert wait_until(lambda: live.engine is not None and live.engine.status == "", 10, cook=lambda: live.cook(f))
        sessions = live.engine.link.sessions
        # a host that stops cooking: the server closes the session, the link waits for the next frame
        assert wait_until(lambda: live.engine.link.state == "idle", 10)
        time.sleep(1.5)
        assert live.engine.link.sessions == sessions and "idle" in live.engine.link.status
        assert wait_until(lambda: live.engine.status == "", 10, cook=lambda: live.cook(f))
        assert live.engine.link.sessions == sessions + 1
        live.close()
        remote_backend.close_all()


class OOMEngine(Engine):
    caps = Capabilities()

    def process(self, frames):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_steps_one_session_down():
    with registered_engine("oom_test", OOMEngine):
        cfg = ServeConfig(port=free_port(), backend="classic", device="cpu")
        with ServerThread(cfg) as url:
            good = UpscaleNode(backend="remote", model=url, device="cpu")
            bad = UpscaleNode(backend="remote", model=url + " backend=oom_test timeout=5", device="cpu")
            px = frames_u8(4)
            assert good.process(as_tensor(px[:2])).shape[0] + 0 >= 0
            with pytest.raises(LiveUpscaleError, match="out of memory"):
                bad.process(as_tensor(px[:1]))
                for _ in range(40):
                    bad.process(as_tensor(px[:1]))
                    time.sleep(0.05)
            y = good.process(as_tensor(px[2:]))
            tail = good.flush()
            assert y.shape[0] + tail.shape[0] == 4  # the other session went on
            live = UpscaleNode(backend="remote", model=url + " backend=oom_test", device="cpu")
            assert wait_until(lambda: "out of memory" in (live.engine.status if live.engine else ""), 10,
                              cook=lambda: live.cook(px[0]))
            assert live.cook(px[0]).shape == (48, 64, 3)
            for n in (good, bad, live):
                n.close()
            remote_backend.close_all()


# --- hypothesis against the real serve process ------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=12,
)
_params = st.dictionaries(st.sampled_from(["scale", "quality", "sharpen", "backend", "model", "device", "stabilize",
                                           "scene_cut", "backend_options", "precision", "x"]), _json, max_size=4)
_fuzz = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


@_fuzz
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
       path=st.sampled_from(["/", "/health", "/v1/session", "/v1/session/x", "/../etc", "/%00"]) | st.text(
           alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20).map(lambda t: "/" + t),
       auth=st.none() | st.text(max_size=30) | st.just(f"Bearer {TOKEN}"),
       body=st.none() | st.binary(max_size=256))
def test_fuzz_http_is_answered_with_4xx_never_a_crash(served, method, path, auth, body):
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    headers = {"Authorization": auth.encode("latin-1", "replace").decode("latin-1")} if auth is not None else {}
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        assert r.status < 500, (method, path, r.status)
    except (http.client.InvalidURL, ValueError, UnicodeEncodeError):
        pass  # the client library refused to send it
    finally:
        c.close()
    assert served.alive()


async def _session_msgs(url: str, first: list, then: list) -> tuple[list, int | None]:
    """Send ``first`` (hello), then ``then`` messages; return the text answers' types and the close code (None: still open)."""
    import aiohttp

    kinds: list = []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url + "/v1/session", headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=aiohttp.ClientWSTimeout(ws_close=1.0)) as ws:
            for m in [*first, *then]:
                if ws.closed:
                    break
                await (ws.send_bytes(m) if isinstance(m, (bytes, bytearray)) else ws.send_str(m))
            try:
                while True:
                    m = await ws.receive(timeout=0.6)
                    if m.type == aiohttp.WSMsgType.TEXT:
                        kinds.append(json.loads(m.data).get("type"))
                    elif m.type != aiohttp.WSMsgType.BINARY:
                        return kinds, ws.close_code
            except asyncio.TimeoutError:
                return kinds, None


@_fuzz
@given(hello=st.fixed_dictionaries({"type": st.just("hello")}, optional={
    "mode": st.sampled_from(["live", "file"]) | _json, "codec": st.sampled_from(["raw", "jpeg", "png"]) | _json,
    "jpeg_quality": _json, "protocol": _json, "params": _params | _json}))
def test_fuzz_hello_gets_ready_or_a_closed_session(served, hello):
    kinds, code = asyncio.run(_session_msgs(served.url, [json.dumps(hello)], []))
    if kinds[:1] == ["ready"]:
        assert code is None
    else:
        assert kinds[:1] == ["error"] and code is not None and 4000 <= code < 5000, (kinds, code)
    assert http(served.url + "/health")[0] == 200


_frame = st.builds(lambda fid, h, w, codec, cut: wire.encode(fid, np.zeros((h, w, 3), np.uint8), codec)[:cut],
                   st.integers(0, 2**63), st.integers(1, 12), st.integers(1, 12), st.sampled_from(["raw", "png", "jpeg"]),
                   st.none() | st.integers(0, 60))
_control = st.one_of(
    st.builds(json.dumps, st.fixed_dictionaries({"type": st.sampled_from(["params", "reset", "flush", "ping", "nope"])},
                                               optional={"scale": _json, "sharpen": _json, "quality": _json, "t": _json})),
    st.text(max_size=30), st.builds(json.dumps, _json))


@_fuzz
@given(msgs=st.lists(_frame | _control | st.binary(max_size=64), min_size=1, max_size=6))
def test_fuzz_session_messages_never_crash_the_server(served, msgs):
    hello = json.dumps({"type": "hello", "mode": "file"})
    kinds, code = asyncio.run(_session_msgs(served.url, [hello], msgs))
    assert kinds[:1] == ["ready"]
    assert code is None or 4000 <= code < 5000 or code == 1000, (kinds, code)
    assert http(served.url + "/health")[0] == 200 and served.alive()


# --- TLS and a short soak ---------------------------------------------------------------------------------


def _self_signed(tmp_path):
    x509 = pytest.importorskip("cryptography.x509")
    import datetime
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def test_tls_with_a_private_certificate(tmp_path):
    cert, key = _self_signed(tmp_path)
    cfg = ServeConfig(port=free_port(), backend="classic", device="cpu", token=TOKEN, tls_cert=str(cert), tls_key=str(key))
    with ServerThread(cfg) as url:
        assert url.startswith("https://")
        good = UpscaleNode(backend="remote", model=f"{url} ca={cert} codec=raw", device="cpu")
        y = good.process(as_tensor(frames_u8(2)))
        tail = good.flush()
        assert y.shape[0] + (tail.shape[0] if tail is not None else 0) == 2
        # without the CA the certificate is not trusted: refused, with the reason
        untrusted = UpscaleNode(backend="remote", model=f"{url} timeout=3", device="cpu")
        with pytest.raises(LiveUpscaleError, match="not available"):
            untrusted.process(as_tensor(frames_u8(1)))
        for n in (good, untrusted):
            n.close()
        remote_backend.close_all()


def test_short_loopback_soak_memory_is_flat(served):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from remote_stream import soak

    s = soak(served.url, served.proc.pid, seconds=5.0, n=96, fps=30.0, token=TOKEN, samples=10)
    assert s["errors"] == 0 and s["cooks"] > 20 and s["received"] >= s["cooks"] // 2, s
    assert s["client_growth_mb"] < 30 and s["server_growth_mb"] < 30, s["rows"]


def test_compressed_frame_cannot_hide_a_bigger_image():
    big = wire.encode(3, np.zeros((64, 64, 3), np.uint8), "png")
    head = bytearray(big[:wire.HEADER.size])
    wire.HEADER.pack_into(head, 0, wire.MAGIC, wire.VERSION, wire.KIND_FRAME, wire.CODECS["png"], 90, 3, 3, 8, 8, 0.0, 0)
    with pytest.raises(wire.InputError, match="holds 64x64"):
        wire.decode(bytes(head) + bytes(big[wire.HEADER.size:]), max_pixels=100)


# --- review fixes ------------------------------------------------------------------------------------


def test_live_host_process_never_waits_and_recovers(monkeypatch):
    """A host that drives process() live (Scope) takes the live path: no server means a pass-through at
    once (never the file-mode timeout), and frames flow when the server comes up."""
    from live_upscale.plugin.scope import adapter

    port = free_port()
    node = UpscaleNode(backend="remote", model=f"http://127.0.0.1:{port} delay=1 timeout=5", device="cpu")
    node.live_host = True
    x = as_tensor(frames_u8(1))
    t0 = time.monotonic()
    for _ in range(3):
        assert node.process(x).shape == (1, 3, 48, 64)
    assert time.monotonic() - t0 < 2.0 and "input passed through" in node.engine.status
    try:
        with ServerThread(ServeConfig(port=port, backend="classic", device="cpu")):
            assert wait_until(lambda: node.engine.status == "", 10, cook=lambda: node.process(x))
    finally:
        node.close()
    # the Scope adapter's nodes are live hosts
    seen = []
    monkeypatch.setattr(UpscaleNode, "load", lambda self: seen.append(self.live_host))
    adapter.ScopeUpscaler._load(type("A", (), {"tier": type("T", (), {"backend": None})(), "load_error": ""})(),
                                   {"backend": "classic", "device": "cpu"})
    assert seen == [True]


def test_file_mode_lost_session_is_cleared_by_reset():
    port = free_port()
    node = UpscaleNode(backend="remote", model=f"http://127.0.0.1:{port} timeout=3", device="cpu")
    x = as_tensor(frames_u8(1))
    try:
        with ServerThread(ServeConfig(port=port, backend="classic", device="cpu")):
            node.process(x)
            node.flush()
            node.process(x)
        with pytest.raises(LiveUpscaleError, match="not back|not available|did not answer"):
            node.process(x)
        with ServerThread(ServeConfig(port=port, backend="classic", device="cpu")):
            assert wait_until(lambda: node.engine.link.is_ready, 10)
            node.reset()  # a new stream: the lost session stops the job no more
            got = [node.process(x)]
            tail = node.flush()
            got += [tail] if tail is not None else []
            assert sum(int(g.shape[0]) for g in got) == 1
    finally:
        node.close()


class SlowEngine(Engine):
    """Classic-sized output after a pause (a first-frame compile, a slow model); records close() under work."""

    caps = Capabilities()
    pause = 1.2
    busy = 0
    closes = 0
    closed_while_busy = 0

    def process(self, frames):
        SlowEngine.busy += 1
        try:
            time.sleep(self.pause)
            return torch.nn.functional.interpolate(frames, scale_factor=self.scale, mode="bilinear")
        finally:
            SlowEngine.busy -= 1

    def close(self):
        SlowEngine.closes += 1
        SlowEngine.closed_while_busy += SlowEngine.busy > 0


def test_a_busy_session_is_not_idle():
    with registered_engine("slow_test", SlowEngine):
        cfg = ServeConfig(port=free_port(), backend="slow_test", device="cpu", idle_timeout=0.5)
        with ServerThread(cfg) as url:
            node = UpscaleNode(backend="remote", model=url + " timeout=10 window=2", device="cpu")
            try:
                x = as_tensor(frames_u8(3))
                got = [node.process(x)]
                tail = node.flush()
                got += [tail] if tail is not None else []
                assert sum(int(g.shape[0]) for g in got) == 3  # computing 3.6 s, idle timeout 0.5 s
                assert node.engine.link.sessions == 1
            finally:
                node.close()


def test_a_session_ending_mid_compute_closes_its_engine_after_the_compute():
    """A bad message while the worker's thread is inside the engine: the session ends, and the engine
    is closed once that thread is out of it, never under it."""
    import aiohttp

    SlowEngine.closes = SlowEngine.closed_while_busy = 0
    with registered_engine("slow_test", SlowEngine):
        st = ServerThread(ServeConfig(port=free_port(), backend="slow_test", device="cpu"))
        with st as url:
            async def main():
                async with aiohttp.ClientSession() as s:
                    ws = await s.ws_connect(url.replace("http", "ws") + "/v1/session")
                    await ws.send_json({"type": "hello"})
                    await ws.receive()
                    await ws.send_bytes(wire.encode(1, frames_u8(1)[0]))
                    await asyncio.sleep(0.3)  # the engine is computing now
                    await ws.send_bytes(b"not a frame, but longer than a frame header ......")
                    while not (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        pass

            asyncio.run(main())
            assert wait_until(lambda: SlowEngine.closes == 1 and not st.server.sessions, 5)
            assert SlowEngine.closed_while_busy == 0


def test_live_delay_above_eight_returns_upscaled_frames():
    with ServerThread(ServeConfig(port=free_port(), backend="classic", device="cpu")) as url:
        node = UpscaleNode(backend="remote", model=url + " delay=12", device="cpu")
        f = frames_u8(1)[0]
        try:
            assert wait_until(lambda: node.engine is not None and node.engine.status == "", 10,
                              step=0.01, cook=lambda: node.cook(f))
            assert node.engine.link.keep >= 12 + 13
        finally:
            node.close()


def test_live_alpha_travels_with_its_frame():
    with ServerThread(ServeConfig(port=free_port(), backend="classic", device="cpu")) as url:
        node = UpscaleNode(backend="remote", model=url + " delay=3", device="cpu", sharpen=0.0)
        seen = []

        def cook(i=[0]):
            i[0] += 1
            img = np.full((16, 16, 4), 10 * (i[0] % 20) + 5, np.uint8)  # RGB and alpha both say the frame
            out = node.cook(img, in_format="HWC:RGBA:uint8")
            seen.append((int(out[8, 8, 0]), int(out[8, 8, 3]), node.engine.status))

        try:
            assert wait_until(lambda: len([s for s in seen if s[2] == ""]) >= 10, 10, step=0.01, cook=cook)
            assert all(rgb == a for rgb, a, _ in seen)
        finally:
            node.close()


def test_a_dropped_node_closes_its_link():
    import gc

    st = ServerThread(ServeConfig(port=free_port(), backend="classic", device="cpu"))
    with st as url:
        before = sum(t.name == "live-upscale-remote" for t in threading.enumerate())
        node = UpscaleNode(backend="remote", model=url, device="cpu")
        f = frames_u8(1)[0]
        assert wait_until(lambda: len(st.server.sessions) == 1, 10, cook=lambda: node.cook(f))
        del node
        gc.collect()
        assert wait_until(lambda: not st.server.sessions, 5)
        assert wait_until(lambda: sum(t.name == "live-upscale-remote" for t in threading.enumerate()) == before, 5)


def test_a_pooled_link_carries_no_old_results():
    with ServerThread(ServeConfig(port=free_port(), backend="classic", device="cpu")) as url:
        node = UpscaleNode(backend="remote", model=url + " delay=2", scale=2.0, device="cpu")
        f = frames_u8(1)[0]
        try:
            assert wait_until(lambda: node.engine is not None and len(node.engine.link.results) >= 2, 10,
                              cook=lambda: node.cook(f))
            old = node.engine
            last = old._next_id
            node.update(scale=3.0)  # a load-time parameter: the engine is re-created on the same link
            e = node.load()
            assert e is not old and e.link.sessions == 1
            assert not e.link.results and e._next_id >= last - 8
            assert wait_until(lambda: node.engine.status == "" and node.engine.passed < 30, 10,
                              cook=lambda: node.cook(f))
            assert node.cook(f).shape == (72, 96, 3)
        finally:
            node.close()


@pytest.mark.parametrize("item", ["timeout=abc", "timeout=-1", "timeout=0", "window=abc", "window=0"])
def test_bad_window_or_timeout_is_one_clear_load_error(item):
    from live_upscale.errors import BackendUnavailable

    node = UpscaleNode(backend="remote", model=f"http://127.0.0.1:{free_port()} {item}", device="cpu")
    with pytest.raises(BackendUnavailable, match=item.split("=")[0]):
        node.load()
