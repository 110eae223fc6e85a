"""Loopback benchmark of ``live-upscale serve`` + the ``remote`` backend, against the same backend run locally,
and against WebRTC video tracks through aiortc (the transport Scope uses), in one run.

    python benchmarks/remote_stream.py [--seconds 10] [--cases 256 512] [--quality fast] [--codec raw]
    python benchmarks/remote_stream.py --soak 1200          # 20-minute loopback soak, memory on both sides

Starts a real server process on 127.0.0.1 (``python -m live_upscale serve``, classic on the CPU), streams
real video (``../shared/data/vid4``, centre-cropped and resized to N x N) and prints per case (N -> 2N):

- local: the same backend in this process, ms per frame (p50/p95);
- file mode (``node.process``/``flush``, as the CLI): sustained FPS over ``--seconds``, frames lost,
  every returned frame checked against the local output (order and pixels);
- live mode (``node.cook`` paced at ``--fps``, as TouchDesigner): added latency p50/p95 (round trip minus
  the local ms per frame), fresh frames per second, frames dropped (not sent because the window was full,
  or lost), the fixed delay;
- bytes per frame up and down, CPU ms per frame on each side;
- aiortc: the same frames up as a VP8 video track, upscaled by the same node on the far peer, back as a
  track (both peers in this process, DTLS-SRTP on loopback): FPS, latency, bytes/frame, CPU/frame,
  PSNR of what came back against the local output.

Goal (issue 20, 512 -> 1024, this 2-core machine): file FPS >= 20, live added p50 <= 60 ms, 0 lost in file
mode. Exits 0 only when met. Other engineers share the cores: the load average is printed beside the numbers.
``soak()`` is importable (the test suite runs a few seconds of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "vid4"
TOKEN = "benchmark-token-0123456789abcdef"


# --- helpers --------------------------------------------------------------------------------------------


def pct(xs, q):
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_s(pid: int | str = "self") -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def load_frames(n: int, limit: int = 40) -> list[np.ndarray]:
    """Real video frames (vid4 calendar, then city), centre square, resized to n x n, uint8 RGB."""
    import cv2

    files = sorted((DATA / "calendar").glob("*.png"))[:limit] + sorted((DATA / "city").glob("*.png"))[:limit]
    if not files:
        raise SystemExit(f"no frames under {DATA}")
    out = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1]
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(np.ascontiguousarray(cv2.resize(img, (n, n), interpolation=cv2.INTER_AREA)))
    return out


class Server:
    def __init__(self, port: int, threads: int | None = None):
        self.port = port
        env = {**os.environ, "PYTHONPATH": str(REPO), "LIVE_UPSCALE_SERVE_TOKEN": TOKEN}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "live_upscale", "serve", "--port", str(port), "--backend", "classic", "--device", "cpu",
             "--offline", "--max-fps", "1000"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() - t0 > 60:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --- the measured paths ---------------------------------------------------------------------------------


def local_case(frames, quality: str) -> tuple[list[float], list[np.ndarray], float]:
    from live_upscale import UpscaleNode
    from live_upscale.remote import wire

    node = UpscaleNode(backend="classic", quality=quality, scale=2.0, device="cpu")
    node.process(wire.to_tensor(frames[:1], node.device))
    ms, outs = [], []
    c0 = cpu_s()
    for f in frames:
        t0 = time.perf_counter()
        y = node.process(wire.to_tensor([f], node.device))
        outs.append(wire.to_pixels(y)[0])
        ms.append((time.perf_counter() - t0) * 1000)
    return ms, outs, (cpu_s() - c0) * 1000 / len(frames)


def file_case(url: str, frames, refs, quality: str, codec: str, seconds: float, server_pid: int) -> dict:
    from live_upscale import UpscaleNode
    from live_upscale.remote import wire

    node = UpscaleNode(backend="remote", model=f"{url} token={TOKEN} mode=file codec={codec}", quality=quality,
                       scale=2.0, device="cpu")
    node.process(wire.to_tensor(frames[:1], node.device))  # connect + warm up
    node.flush()
    got: list[np.ndarray] = []
    sent = 0
    c0, s0, t0 = cpu_s(), cpu_s(server_pid), time.perf_counter()
    link = node.engine.link
    up0, down0 = link.bytes_up, link.bytes_down
    while time.perf_counter() - t0 < seconds:
        y = node.process(wire.to_tensor([frames[sent % len(frames)]], node.device))
        sent += 1
        got += wire.to_pixels(y) if y.shape[0] else []
    tail = node.flush()
    got += wire.to_pixels(tail) if tail is not None else []
    dt = time.perf_counter() - t0
    c1, s1 = cpu_s(), cpu_s(server_pid)
    # lossless codecs: every frame equals the local output within one code value (order included);
    # jpeg: a frame counts as wrong below 30 dB against the local output (a frame out of order is far below)
    if codec == "jpeg":
        bad = sum(1 for i, g in enumerate(got) if psnr(g, refs[i % len(frames)]) < 30)
    else:
        bad = sum(1 for i, g in enumerate(got) if np.abs(g.astype(int) - refs[i % len(frames)].astype(int)).max() > 1)
    out = {"fps": len(got) / dt, "sent": sent, "returned": len(got), "lost": sent - len(got), "wrong": bad,
           "up": (link.bytes_up - up0) / max(1, sent), "down": (link.bytes_down - down0) / max(1, len(got)),
           "cpu_client_ms": (c1 - c0) * 1000 / max(1, sent), "cpu_server_ms": (s1 - s0) * 1000 / max(1, sent)}
    node.close()
    return out


def live_case(url: str, frames, quality: str, codec: str, seconds: float, fps: float, server_pid: int,
              delay: int = 3) -> dict:
    from live_upscale import UpscaleNode
    from live_upscale.backends import remote

    node = UpscaleNode(backend="remote", model=f"{url} token={TOKEN} delay={delay} codec={codec}", quality=quality,
                       scale=2.0, device="cpu")
    node.load()
    t_end = time.perf_counter() + 30
    while node.engine.status != "" and time.perf_counter() < t_end:  # connected and frames flowing
        node.cook(frames[0])
        time.sleep(1 / fps)
    eng = node.engine
    link = eng.link
    link.rtt_ms.clear()
    sent0, recv0, up0, down0, late0, passed0 = link.sent, link.received, link.bytes_up, link.bytes_down, eng.late, eng.passed
    c0, s0 = cpu_s(), cpu_s(server_pid)
    t0 = time.perf_counter()
    cooks, cook_ms, rtts = 0, [], []
    while time.perf_counter() - t0 < seconds:
        target = t0 + cooks / fps
        now = time.perf_counter()
        if target > now:
            time.sleep(target - now)
        a = time.perf_counter()
        node.cook(frames[cooks % len(frames)])
        cook_ms.append((time.perf_counter() - a) * 1000)
        cooks += 1
        rtts += list(link.rtt_ms)
        link.rtt_ms.clear()
    dt = time.perf_counter() - t0
    c1, s1 = cpu_s(), cpu_s(server_pid)
    sent, recv = link.sent - sent0, link.received - recv0
    out = {"cooks": cooks, "host_fps": cooks / dt, "fresh_fps": recv / dt, "sent": sent, "received": recv,
           "not_sent": cooks - sent, "lost": max(0, sent - recv - len(link.in_flight)), "late": eng.late - late0,
           "passed": eng.passed - passed0, "rtt": rtts, "cook_p50": pct(cook_ms, 0.5), "cook_p95": pct(cook_ms, 0.95),
           "up": (link.bytes_up - up0) / max(1, sent), "down": (link.bytes_down - down0) / max(1, recv),
           "cpu_client_ms": (c1 - c0) * 1000 / max(1, cooks), "cpu_server_ms": (s1 - s0) * 1000 / max(1, sent),
           "delay": eng.delay}
    node.close()
    remote.close_all()
    return out


# --- aiortc: frames up as a video track, back as a track ----------------------------------------------------

BITS, BLOCK = 16, 8


def stamp(img: np.ndarray, i: int) -> np.ndarray:
    """Write ``i`` as 16 black/white blocks along the top-left (survives a lossy codec and a 2x resize)."""
    img = img.copy()
    for b in range(BITS):
        img[:BLOCK, b * BLOCK:(b + 1) * BLOCK] = 255 if (i >> b) & 1 else 0
    return img


def read_stamp(img: np.ndarray, scale: int) -> int:
    s = BLOCK * scale
    v = 0
    for b in range(BITS):
        if img[s // 2, b * s + s // 2].mean() > 127:
            v |= 1 << b
    return v


def webrtc_case(frames, refs, quality: str, seconds: float, fps: float) -> dict:
    return asyncio.run(_webrtc(frames, refs, quality, seconds, fps))


async def _webrtc(frames, refs, quality, seconds, fps) -> dict:
    from aiortc import MediaStreamTrack, RTCPeerConnection
    from av import VideoFrame

    from live_upscale import UpscaleNode
    from live_upscale.remote import wire

    node = UpscaleNode(backend="classic", quality=quality, scale=2.0, device="cpu")
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}

    class Source(MediaStreamTrack):
        kind = "video"

        def __init__(self):
            super().__init__()
            self.i, self.t0 = 0, None

        async def recv(self):
            if self.t0 is None:
                self.t0 = time.perf_counter()
            wait = self.t0 + self.i / fps - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            vf = VideoFrame.from_ndarray(stamp(frames[self.i % len(frames)], self.i), format="rgb24")
            vf.pts, vf.time_base = int(self.i * 90000 / fps), Fraction(1, 90000)
            sent[self.i] = time.perf_counter()
            self.i += 1
            return vf

    def upscale(img):
        return wire.to_pixels(node.process(wire.to_tensor([img], node.device)))[0]

    class Upscaled(MediaStreamTrack):
        kind = "video"

        def __init__(self, track):
            super().__init__()
            self.track = track

        async def recv(self):
            f = await self.track.recv()
            y = await loop.run_in_executor(None, upscale, f.to_ndarray(format="rgb24"))
            out = VideoFrame.from_ndarray(y, format="rgb24")
            out.pts, out.time_base = f.pts, f.time_base
            return out

    client, server = RTCPeerConnection(), RTCPeerConnection()
    got: list[tuple[int, float, np.ndarray | None]] = []
    done = asyncio.Event()

    @server.on("track")
    def _on_server_track(track):
        server.addTrack(Upscaled(track))

    @client.on("track")
    def _on_client_track(track):
        async def consume():
            try:
                while True:
                    f = await track.recv()
                    img = f.to_ndarray(format="rgb24")
                    i = read_stamp(img, 2)
                    got.append((i, time.perf_counter(), img if len(got) % 10 == 0 else None))
            except Exception:  # noqa: BLE001 - track ended
                done.set()

        asyncio.ensure_future(consume())

    client.addTransceiver(Source(), direction="sendrecv")
    await client.setLocalDescription(await client.createOffer())
    await server.setRemoteDescription(client.localDescription)
    await server.setLocalDescription(await server.createAnswer())
    await client.setRemoteDescription(server.localDescription)
    codec = next((ln.split()[1] for ln in server.localDescription.sdp.splitlines() if ln.startswith("a=rtpmap:")), "?")
    t_warm = time.perf_counter()
    while not got and time.perf_counter() - t_warm < 20:
        await asyncio.sleep(0.05)
    got.clear()
    c0, t0 = cpu_s(), time.perf_counter()
    stats0 = (await _sent(client), await _sent(server))
    await asyncio.sleep(seconds)
    stats1 = (await _sent(client), await _sent(server))
    dt, c1 = time.perf_counter() - t0, cpu_s()
    n = len(got)
    lat = [(t - sent[i]) * 1000 for i, t, _ in got if i in sent and 0 <= t - sent[i] < 5]
    ids = [i for i, _, _ in got]
    q = [psnr(img[BLOCK * 2:], refs[i % len(refs)][BLOCK * 2:]) for i, _, img in got
         if img is not None and i in sent and i < 10**6]
    first, last = (min(ids), max(ids)) if ids else (0, -1)
    await client.close()
    await server.close()
    return {"codec": codec, "fps": n / dt, "lat": lat, "dropped": max(0, (last - first + 1) - len(set(ids))),
            "up": (stats1[0] - stats0[0]) / max(1, n), "down": (stats1[1] - stats0[1]) / max(1, n),
            "cpu_ms": (c1 - c0) * 1000 / max(1, n), "psnr": statistics.median(q) if q else float("nan")}


async def _sent(pc) -> int:
    """Bytes ``pc`` sent on its RTP streams (aiortc's inbound stats carry no byte count)."""
    return sum(s.bytesSent for s in (await pc.getStats()).values() if s.type == "outbound-rtp")


# --- soak -------------------------------------------------------------------------------------------------


def soak(url: str, server_pid: int, seconds: float, n: int = 512, fps: float = 20.0, token: str = TOKEN,
         samples: int = 20) -> dict:
    """Live loopback at ``fps`` for ``seconds``: RSS of both sides sampled; growth after the first fifth."""
    from live_upscale import UpscaleNode
    from live_upscale.backends import remote

    frames = load_frames(n, limit=20) if DATA.exists() else [np.full((n, n, 3), i * 9 % 255, np.uint8) for i in range(20)]
    node = UpscaleNode(backend="remote", model=f"{url} token={token} delay=3", quality="fast", scale=2.0, device="cpu")
    rows, i, t0 = [], 0, time.perf_counter()
    every = seconds / samples
    next_sample = t0
    errors = 0
    while True:
        now = time.perf_counter()
        if now - t0 >= seconds:
            break
        target = t0 + i / fps
        if target > now:
            time.sleep(target - now)
        try:
            node.cook(frames[i % len(frames)])
        except Exception:  # noqa: BLE001 - counted: a soak must never see one
            errors += 1
        i += 1
        if time.perf_counter() >= next_sample:
            rows.append((time.perf_counter() - t0, rss_mb(), rss_mb(server_pid)))
            next_sample += every
    st = node.engine.info()
    node.close()
    remote.close_all()
    warm = rows[max(1, len(rows) // 5):] or rows
    return {"cooks": i, "errors": errors, "received": st["received"], "rows": rows,
            "client_growth_mb": warm[-1][1] - warm[0][1], "server_growth_mb": warm[-1][2] - warm[0][2]}


# --- main ---------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="per measured phase")
    ap.add_argument("--cases", type=int, nargs="*", default=[256, 512],
                    help="input sizes N (N x N -> 2N x 2N); none with --soak: soak only")
    ap.add_argument("--quality", default="fast", choices=["fast", "balanced", "high"], help="classic's quality")
    ap.add_argument("--codec", default="raw", choices=["raw", "png", "jpeg"])
    ap.add_argument("--fps", type=float, default=20.0, help="live host frame rate")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the server and the local/aiortc runs (1: the client keeps a core)")
    ap.add_argument("--no-webrtc", action="store_true")
    ap.add_argument("--soak", type=float, default=0.0, help="also soak for this many seconds (1200 = 20 min)")
    ap.add_argument("--soak-size", type=int, default=512, help="input size N of the soak")
    ap.add_argument("--max-growth-mb", type=float, default=25.0)
    a = ap.parse_args()

    import torch

    threads = a.threads  # the server's torch uses as many; so do the local and aiortc runs
    load0 = os.getloadavg()
    srv = Server(free_port(), threads)
    ok = True
    rows = []
    try:
        for n in a.cases:
            frames = load_frames(n)
            torch.set_num_threads(threads)
            ms, refs, local_cpu = local_case(frames, a.quality)
            torch.set_num_threads(1)  # the client of the server does little compute: leave the cores to it
            f = file_case(srv.url, frames, refs, a.quality, a.codec, a.seconds, srv.proc.pid)
            lv = live_case(srv.url, frames, a.quality, a.codec, a.seconds, a.fps, srv.proc.pid)
            torch.set_num_threads(threads)
            w = None if a.no_webrtc else webrtc_case(frames, refs, a.quality, a.seconds, a.fps)
            local_p50, local_p95 = pct(ms, 0.5), pct(ms, 0.95)
            add50, add95 = pct(lv["rtt"], 0.5) - local_p50, pct(lv["rtt"], 0.95) - local_p50
            rows.append((n, local_p50, local_p95, f, lv, w, add50, add95))
            print(f"\n== {n}x{n} -> {2 * n}x{2 * n}, classic quality={a.quality}, codec={a.codec} ==")
            print(f"local:  {local_p50:.1f} / {local_p95:.1f} ms per frame (p50/p95), CPU {local_cpu:.1f} ms per frame")
            print(f"file:   {f['fps']:.1f} fps sustained over {a.seconds:g} s, {f['returned']}/{f['sent']} back, "
                  f"lost {f['lost']}, wrong {f['wrong']}; {f['up'] / 1024:.0f} KiB up, {f['down'] / 1024:.0f} KiB down "
                  f"per frame; CPU {f['cpu_client_ms']:.1f} ms client, {f['cpu_server_ms']:.1f} ms server per frame")
            print(f"live:   host {lv['host_fps']:.1f} fps, fresh {lv['fresh_fps']:.1f} fps; round trip "
                  f"{pct(lv['rtt'], 0.5):.1f} / {pct(lv['rtt'], 0.95):.1f} ms -> added {add50:.1f} / {add95:.1f} ms "
                  f"(p50/p95); delay {lv['delay']} frames; not sent {lv['not_sent']}, lost {lv['lost']}, late "
                  f"{lv['late']}, passed through {lv['passed']}; cook {lv['cook_p50']:.1f} / {lv['cook_p95']:.1f} ms; "
                  f"CPU {lv['cpu_client_ms']:.1f} ms client, {lv['cpu_server_ms']:.1f} ms server per frame")
            ceiling = 1000 / max(f["cpu_server_ms"], f["cpu_client_ms"], 1e-3)
            print(f"CPU:    server {f['cpu_server_ms'] - local_cpu:+.1f} ms per frame over the local run (transport, "
                  f"conversions); one free core per side would carry {ceiling:.1f} fps (CPU-bound ceiling)")
            if w:
                print(f"aiortc: {w['codec']} {w['fps']:.1f} fps, latency {pct(w['lat'], 0.5):.1f} / {pct(w['lat'], 0.95):.1f} "
                      f"ms (added {pct(w['lat'], 0.5) - local_p50:.1f}), dropped {w['dropped']}; "
                      f"{w['up'] / 1024:.1f} KiB up, {w['down'] / 1024:.1f} KiB down per frame; CPU {w['cpu_ms']:.1f} ms "
                      f"per frame (both peers); PSNR vs local {w['psnr']:.1f} dB")
            if n == 512:
                met = f["fps"] >= 20 and add50 <= 60 and f["lost"] == 0 and f["wrong"] == 0
                ok &= met
                print(f"goal (>= 20 fps, added p50 <= 60 ms, 0 lost): {'met' if met else 'NOT met'}")
        if a.soak > 0:
            s = soak(srv.url, srv.proc.pid, a.soak, n=a.soak_size, fps=a.fps)
            flat = s["client_growth_mb"] <= a.max_growth_mb and s["server_growth_mb"] <= a.max_growth_mb and not s["errors"]
            ok &= flat
            print(f"\nsoak {a.soak:g} s at {a.soak_size}² -> {2 * a.soak_size}², {a.fps:g} fps: {s['cooks']} cooks, {s['received']} frames back, {s['errors']} errors; RSS "
                  f"growth after warm-up: client {s['client_growth_mb']:+.1f} MB, server {s['server_growth_mb']:+.1f} MB "
                  f"({'flat' if flat else 'NOT flat'})")
            for t, c, sv in s["rows"]:
                print(f"  t={t:7.1f} s  client {c:7.1f} MB  server {sv:7.1f} MB")
    finally:
        srv.stop()
    load1 = os.getloadavg()
    print(f"\nload average before {load0[0]:.2f} / after {load1[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    print("\n| case | local p50 | file fps | lost | live added p50/p95 | fresh fps | up/down KiB per frame | "
          "CPU ms client/server | aiortc fps | aiortc added p50 | aiortc KiB up/down | aiortc CPU ms | aiortc PSNR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, l50, _l95, f, lv, w, add50, add95 in rows:
        wc = (f"{w['fps']:.1f} | {pct(w['lat'], 0.5) - l50:.0f} ms | {w['up'] / 1024:.1f} / {w['down'] / 1024:.1f} | "
              f"{w['cpu_ms']:.1f} | {w['psnr']:.1f} dB") if w else "- | - | - | - | -"
        print(f"| {n}->{2 * n} | {l50:.1f} ms | {f['fps']:.1f} | {f['lost']} | {add50:.0f} / {add95:.0f} ms | "
              f"{lv['fresh_fps']:.1f} | {f['up'] / 1024:.0f} / {f['down'] / 1024:.0f} | "
              f"{f['cpu_client_ms']:.1f} / {f['cpu_server_ms']:.1f} | {wc} |")
    print(json.dumps({"ok": ok, "goal_checked": 512 in a.cases}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
