"""The Script TOP's custom parameter pages, and reading them back as node parameters.

TD's parameter API (``appendCustomPage``, ``appendMenu``/``appendFloat``/``appendStr``/
``appendPulse`` returning groups of ``Par``) is only called here, so the rest of the adapter sees
plain dictionaries.
"""

from __future__ import annotations

from typing import Any

import torch

from ...backends import registry

PAGE = "Upscale"
INFO_PAGE = "Info"
QUALITIES = ("fast", "balanced", "high")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "tensorrt")
ROUTES = ("auto", "output", "input")  # the node's prescale; auto = the backend's default (realesrgan: output)
# name -> (node parameter, default)
NODE_PARS: dict[str, tuple[str, Any]] = {
    "Backend": ("backend", "auto"),
    "Model": ("model", ""),
    "Scale": ("scale", 2.0),
    "Quality": ("quality", "balanced"),
    "Compile": ("compile", "off"),
    "Prescale": ("prescale", "auto"),
    "Stabilize": ("stabilize", 0.0),
    "Sharpen": ("sharpen", 0.0),
}
INFO_PARS = ("Backendinuse", "Msperframe", "Cookms", "Lasterror", "Backendstatus", "Outputdtype")
OUT_DTYPE_PAR = "Outdtype"  # output data type: read apart from the node's parameters
OUT_DTYPE_MENU = (
    ("input", "Same as input"),
    ("uint8", "8-bit fixed"),
    ("uint16", "16-bit fixed"),
    ("float16", "16-bit float"),
    ("float32", "32-bit float"),
)


def backend_menu(device: torch.device) -> tuple[list[str], list[str], str]:
    """Menu entries (auto + backends that can run here, or only need a download) and a status line for the rest."""
    names, labels, unavailable = ["auto"], ["Auto (best that can run here)"], []
    for row in registry.table(device):
        if row.probe.ok:
            names.append(row.id)
            labels.append(row.label)
        elif row.probe.downloadable:
            names.append(row.id)
            labels.append(f"{row.label} (weights not cached)")
            unavailable.append(f"{row.id}: {row.probe.reason}")
        else:
            unavailable.append(f"{row.id}: {row.probe.reason}")
    status = "; ".join(unavailable) if unavailable else "every backend can run here"
    return names, labels, status


def _first(group):
    """``appendX`` returns a ParGroup (TD 2022+) or a list of Par: the first Par either way."""
    try:
        return group[0]
    except (TypeError, IndexError, KeyError):
        return group


def _set(par, **attrs) -> None:
    for k, v in attrs.items():
        try:
            setattr(par, k, v)
        except Exception:  # noqa: BLE001 - an attribute an older TD lacks must not stop the setup
            pass


def setup(script_op, device: torch.device) -> None:
    """Build the ``Upscale`` and ``Info`` pages (TD calls this from ``onSetupParameters``)."""
    page = script_op.appendCustomPage(PAGE)
    names, labels, status = backend_menu(device)
    p = _first(page.appendMenu("Backend", label="Backend"))
    _set(p, menuNames=names, menuLabels=labels, default="auto", val="auto")
    p = _first(page.appendStr("Model", label="Model (name, path, RTX level; remote: server URL)"))
    _set(p, default="", val="")
    p = _first(page.appendFloat("Scale", label="Scale"))
    _set(p, default=2.0, val=2.0, min=1.0, max=8.0, normMin=1.0, normMax=4.0, clampMin=True, clampMax=True)
    p = _first(page.appendMenu("Quality", label="Quality"))
    _set(p, menuNames=list(QUALITIES), menuLabels=["Fast", "Balanced", "High"], default="balanced", val="balanced")
    # compiling happens on TD's main thread: the TOP freezes once per input size (seconds to minutes)
    p = _first(page.appendMenu("Compile", label="Compile (pauses TD once per size)"))
    _set(p, menuNames=list(COMPILE_MODES), default="off", val="off",
         menuLabels=["Off", "Default", "CUDA graphs (reduce-overhead)", "Max autotune", "TensorRT (if installed)"])
    p = _first(page.appendMenu("Prescale", label="Model scale route"))
    _set(p, menuNames=list(ROUTES), default="auto", val="auto", menuLabels=[
        "Auto (full size, output downscaled)", "Full size, output downscaled", "Input resized first (fast, soft)"])
    p = _first(page.appendFloat("Stabilize", label="Stabilize"))
    _set(p, default=0.0, val=0.0, min=0.0, max=1.0, normMin=0.0, normMax=1.0, clampMin=True, clampMax=True)
    p = _first(page.appendFloat("Sharpen", label="Sharpen"))
    _set(p, default=0.0, val=0.0, min=0.0, max=2.0, normMin=0.0, normMax=2.0, clampMin=True, clampMax=True)
    p = _first(page.appendMenu(OUT_DTYPE_PAR, label="Output data type"))
    _set(p, menuNames=[n for n, _ in OUT_DTYPE_MENU], menuLabels=[lb for _, lb in OUT_DTYPE_MENU], default="input", val="input")
    page.appendPulse("Reset", label="Reset temporal state")

    info = script_op.appendCustomPage(INFO_PAGE)
    for name, label, kind in (
        ("Backendinuse", "Backend in use", "Str"),
        ("Msperframe", "Backend ms/frame", "Float"),
        ("Cookms", "Cook ms (host)", "Float"),
        ("Lasterror", "Last error", "Str"),
        ("Backendstatus", "Unavailable backends", "Str"),
        ("Outputdtype", "Output data type in use", "Str"),
    ):
        p = _first(getattr(info, f"append{kind}")(name, label=label))
        _set(p, readOnly=True)
    write_info(script_op, {"Backendstatus": status})


def read(script_op) -> dict[str, Any]:
    """The node parameters the TOP's pages hold (defaults for pages not set up yet)."""
    out: dict[str, Any] = {}
    par = getattr(script_op, "par", None)
    for name, (key, default) in NODE_PARS.items():
        p = getattr(par, name, None) if par is not None else None
        if p is None:
            out[key] = default
            continue
        try:
            v = p.eval()
        except Exception:  # noqa: BLE001 - a broken expression on a par: use its default
            v = default
        if isinstance(default, float):
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = default
        else:
            v = str(v) if v is not None else default
        out[key] = v
    out["model"] = out["model"] or None
    return out


def read_out_dtype(script_op) -> str:
    """The Output data type menu (``input`` when the page is not set up or the value is unreadable)."""
    p = getattr(getattr(script_op, "par", None), OUT_DTYPE_PAR, None)
    try:
        v = str(p.eval()) if p is not None else "input"
    except Exception:  # noqa: BLE001
        v = "input"
    return v if v in dict(OUT_DTYPE_MENU) else "input"


def write_info(script_op, values: dict[str, Any]) -> None:
    """Set read-only info pars that exist and changed (setting a par re-cooks the TOP, so only on change)."""
    par = getattr(script_op, "par", None)
    if par is None:
        return
    for name, v in values.items():
        p = getattr(par, name, None)
        if p is None:
            continue
        try:
            cur = p.eval()
            if isinstance(v, float):
                if isinstance(cur, (int, float)) and abs(cur - v) < 0.05:
                    continue
            elif cur == v:
                continue
            p.val = v
        except Exception:  # noqa: BLE001 - info is best effort
            pass
