"""benchmarks/gpu_suite.py: the budget (fake clock), the per-part process limits, the wheel install, and the
whole orchestration on CPU with tiny models (so the GPU run cannot rot between the rare GPU sessions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_suite as gs  # noqa: E402


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def part(name, est=10, cap=60, min_s=10):
    return gs.Part(name, name, est, cap, min_s, fn="unused")


def fake_runner(clock, durations, calls):
    """Advances the clock by a part's duration, or by its limit when it runs longer (the real runner kills it)."""

    def run(p, limit):
        calls.append((p.name, limit))
        d = durations[p.name]
        if isinstance(d, Exception):
            clock.now += 1
            raise d
        clock.now += min(d, limit)
        return gs.PartResult(p.name, "timeout" if d > limit else "ok", rows=[{"status": "ok"}])

    return run


def test_budget_starts_parts_in_order_and_skips_what_does_not_fit():
    clock = FakeClock()
    b = gs.Budget(100, clock, reserve=10)
    parts = [part("a", min_s=10, cap=50), part("b", min_s=30, cap=200), part("c", min_s=40), part("d", min_s=5)]
    calls = []
    res = gs.run_parts(parts, b, fake_runner(clock, {"a": 20, "b": 45, "c": 1, "d": 3}, calls))
    # a: 90 s available, capped at 50; b: 70 available -> limit 70; c: 25 available < 40 -> skipped; d: 25
    assert calls == [("a", 50), ("b", 70), ("d", 25)]
    assert [r.status for r in res] == ["ok", "ok", "skipped", "ok"]
    assert "needs >= 40 s" in res[2].error and res[2].seconds == 0
    assert [r.seconds for r in res] == [20, 45, 0, 3] and b.elapsed() == 68


def test_a_hang_is_cut_at_the_budget_and_the_reserve_is_kept():
    clock = FakeClock()
    b = gs.Budget(120, clock, reserve=10)
    parts = [part("hang", min_s=10, cap=1000), part("next", min_s=5)]
    calls = []
    res = gs.run_parts(parts, b, fake_runner(clock, {"hang": 10_000, "next": 1}, calls))
    assert calls == [("hang", 110)] and res[0].status == "timeout" and res[0].limit_s == 110
    assert res[1].status == "skipped" and b.left() == pytest.approx(10)  # the reserve is still there


def test_a_failing_runner_is_recorded_and_the_suite_goes_on():
    clock = FakeClock()
    b = gs.Budget(500, clock)
    calls, seen = [], []
    res = gs.run_parts([part("x"), part("y")], b, fake_runner(clock, {"x": RuntimeError("boom"), "y": 2}, calls),
                       on_result=seen.append)
    assert [r.status for r in res] == ["failed", "ok"] and "RuntimeError: boom" in res[0].error
    assert seen == res


def test_the_default_budget_orders_parts_by_priority_and_fits_the_device_limits():
    names = [p.name for p in gs.PARTS]
    assert names[0] == "pytest-gpu" and names[1].startswith("e2e-") and names[-2:] == [
        "sr-speed-max-autotune", "sr-speed-tensorrt"]
    assert {n for n in names if n.startswith("e2e-")} == {f"e2e-{b}" for b in ("classic", "realesrgan", "flashvsr",
                                                                              "stream_diffvsr")}
    assert {n for n in names if n.startswith("soak-")} == {f"soak-{b}" for b in ("classic", "realesrgan", "flashvsr",
                                                                                "stream_diffvsr")}
    assert all(p.min_s <= p.cap_s <= 300 for p in gs.PARTS)  # one part never takes most of a 10-minute command
    assert "expected, all parts before max-autotune" in gs.list_parts()


# --- the real runner: processes, limits, kills ---------------------------------------------------------------


def _rows_then_hang(ctx, seconds):
    ctx.emit("before the hang", "1 thing")
    time.sleep(seconds)


def _crash(ctx):
    ctx.emit("before the crash", "1 thing")
    os._exit(3)


def _raise(ctx):
    raise ValueError("bad input")


def test_process_runner_kills_a_hang_at_its_limit_and_keeps_its_rows(tmp_path):
    runner = gs.ProcessRunner(gs.Opts("cpu", True), tmp_path, dict(os.environ))
    hang = gs.Part("hang", "", 1, 60, 1, fn="tests.test_gpu_suite:_rows_then_hang", args=(600,))
    t0 = time.monotonic()
    r = runner(hang, 4.0)
    assert time.monotonic() - t0 < 30
    assert r.status == "timeout" and "limit of 4 s" in r.error
    assert [x["case"] for x in r.rows] == ["before the hang"] and r.rows[0]["gpu"].startswith("CPU")
    crash = runner(gs.Part("crash", "", 1, 60, 1, fn="tests.test_gpu_suite:_crash"), 60)
    assert crash.status == "failed" and "exited 3" in crash.error and len(crash.rows) == 1
    err = runner(gs.Part("err", "", 1, 60, 1, fn="tests.test_gpu_suite:_raise"), 60)
    assert err.status == "failed" and err.error == "ValueError: bad input" and "Traceback" in err.log_tail


# --- wheels --------------------------------------------------------------------------------------------------


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding module ``name``."""
    whl = folder / f"{name}-0.1-py3-none-any.whl"
    dist = f"{name}-0.1.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 17\n")
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return whl


def test_missing_packages_are_installed_offline_into_a_site_folder_on_the_path(tmp_path, monkeypatch):
    name = "lu_gpu_suite_fake_pkg"
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    (tmp_path / "whl").mkdir()
    status, msg = gs.install_wheels(tmp_path / "whl", tmp_path / "site", needed=(name,))
    assert status == "failed" and "gpu_wheels.sh" in msg
    _wheel(tmp_path / "whl", name)
    status, msg = gs.install_wheels(tmp_path / "whl", tmp_path / "site", needed=(name,))
    assert status == "ok" and "installed 1 wheels" in msg, msg
    assert __import__(name).VALUE == 17 and str(tmp_path / "site") in sys.path
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "site"), "/somewhere"]
    assert gs.install_wheels(tmp_path / "nowhere", tmp_path / "site2", needed=("json",))[0] == "ok"  # nothing to do
    sys.modules.pop(name, None)


def test_wheel_script_names_what_the_gpu_machine_lacks():
    import re

    text = (REPO / "benchmarks" / "gpu_wheels.sh").read_text()
    block = re.search(r"PKGS=\((.*?)\n\)", text, re.S).group(1)
    pins = dict(re.findall(r"^\s*([A-Za-z0-9_.-]+)==(\S+)", block, re.M))
    assert {"pydantic", "pydantic-core", "spandrel", "diffusers", "typing-extensions"} <= set(pins)
    assert "av" not in pins and all(v[0].isdigit() for v in pins.values())  # one pinned version each, never PyAV
    assert "--python-version 3.12" in text and "manylinux2014_x86_64" in text
    assert set(gs.NEEDED) <= {k.replace("-", "_") for k in pins}


# --- rows ----------------------------------------------------------------------------------------------------


def test_result_lines_have_the_results_md_columns(tmp_path):
    rows = [{"part": "sr-speed-eager", "case": "a | b", "ours": "10 FPS", "reference": "5 FPS", "speedup": 2.0,
             "status": "ok", "gpu": "NVIDIA H200"},
            {"part": "soak-classic", "case": "soak", "ours": "x", "reference": "-", "speedup": None, "status": "FAIL"}]
    lines = gs.result_lines(rows, "2026-01-02", "GPU?")
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    assert cells[0] == ["2026-01-02", "NVIDIA H200", "`python3 benchmarks/gpu_suite.py --only sr-speed-eager`",
                        "a / b", "10 FPS", "5 FPS", "2.00x"]
    assert cells[1][1] == "GPU?" and cells[1][4] == "FAIL: x" and cells[1][6] == "-"
    md = tmp_path / "RESULTS.md"
    md.write_text("# GPU results\n\n| date | GPU | command | case | ours | reference | speedup |\n|---|---|---|---|---|---|---|\n"
                  "\nNo rows yet: none.\nmore text\n")
    run = tmp_path / "gpu_suite.json"
    run.write_text(json.dumps({"date": "2026-01-02", "gpu": "NVIDIA H200", "parts": [{"rows": rows}]}))
    gs.record(run, md)
    text = md.read_text().splitlines()
    assert text[4].startswith("| 2026-01-02 | NVIDIA H200 |") and text[5].startswith("| 2026-01-02 | NVIDIA H200 |")  # run's GPU
    assert "No rows yet: none." not in text and "more text" in text


def test_a_budget_too_small_for_any_part_skips_them_all_and_still_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OUT", raising=False)
    for k in ("LIVE_UPSCALE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # main() sets these: undone after
        monkeypatch.setenv(k, "1")
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "r" / "gpu_suite.json"
    assert gs.main(["--device", "cpu", "--tiny", "--budget", "12", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [p["status"] for p in data["parts"]] == ["ok"] + ["skipped"] * len(gs.PARTS)
    assert (out.parent / "gpu_suite_rows.md").read_text().startswith("| date | GPU |")
    assert "| sr-speed-tensorrt | skipped |" in capsys.readouterr().out


# --- the whole orchestration on CPU ---------------------------------------------------------------------------


def test_tiny_cpu_run_of_the_whole_suite(tmp_path):
    """Every part runs with tiny models on CPU, in its own process, and reports rows; OUT decides where."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--device", "cpu", "--tiny",
                        "--skip", "sr-speed-max-autotune"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    data = json.loads((tmp_path / "gpu_suite.json").read_text())
    parts = {p["name"]: p for p in data["parts"]}
    assert set(parts) == {"install-wheels"} | {p.name for p in gs.PARTS} - {"sr-speed-max-autotune"}
    for name, p in parts.items():
        assert p["status"] == "ok", (name, p["error"], p["log_tail"])
        if name != "install-wheels":
            assert p["rows"], name
    assert parts["pytest-gpu"]["rows"][0]["extra"]["skipped"] >= 1  # no CUDA here: the GPU tests skip
    e2e = [r for n in parts if n.startswith("e2e-") for r in parts[n]["rows"]]
    assert len(e2e) >= 6 and all(r["extra"]["problems"] == [] for r in e2e)
    assert any("stabilize=1" in r["case"] for r in e2e)
    lines = (tmp_path / "gpu_suite_rows.md").read_text().splitlines()
    assert len(lines) == 2 + sum(len(p["rows"]) for p in parts.values())
    assert all(ln.count("|") == 8 for ln in lines[2:])
    assert "RESULTS.md rows" in r.stdout and "| soak-stream_diffvsr | ok |" in r.stdout
    assert (tmp_path / "gpu_suite.log").stat().st_size > 0


def test_the_suite_and_everything_it_runs_import_without_pyav():
    """The GPU machine has no PyAV: nothing the parts import may need it (and every part's function exists)."""
    code = (
        "import sys; sys.modules['av'] = None; sys.path.insert(0, 'benchmarks')\n"
        "import gpu_suite, sr_speed, soak, stabilizer_cost, flashvsr_speed, stream_diffvsr_speed\n"
        "import live_upscale.plugin.touchdesigner, tests.standins.td\n"
        "for f in gpu_suite.gpu_test_files(): __import__(f[:-3].replace('/', '.'))\n"
        "fns = [p.resolve('fn' if p.fn else 'cmd') for p in gpu_suite.PARTS]\n"
        "assert all(callable(f) for f in fns) and 'av' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
        "print(len(fns))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == str(len(gs.PARTS))
