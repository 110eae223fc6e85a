"""``rtx_vsr``: NVIDIA RTX Video Super Resolution through ``nvidia-vfx`` (``import nvvfx``).

Runs where NVIDIA's VFX SDK runs: Windows (or Linux with the driver's ``libnvidia-ngx.so.1``),
a CUDA GPU with Tensor Cores (Turing / RTX 20xx and newer), the ``nvidia-vfx`` wheel from
NVIDIA's package index. No weights to fetch: the wheel carries the SDK's models.

How the SDK is driven (nvidia-vfx API, 0.1/0.2):

- ``nvvfx.VideoSuperRes(quality=..., device=N[, strength=..., image_encoding=...])``,
  ``output_width``/``output_height`` set (and ``input_width``/``input_height`` where the class has
  them: 0.2; 0.1 infers the input size from the frame), then ``load()``; one effect per frame size,
  re-created when the input size changes;
- encoding: for sources deeper than 8 bits (``source_bits`` option, e.g. TouchDesigner's 16/32-bit
  TOPs) the effect is built with ``image_encoding=VideoSuperRes.ImageEncoding.RGB10A2`` where the
  wheel offers it (0.2), so the SDK's 10-bit path keeps more than 8 bits of the input; otherwise
  the SDK default (RGB8). ``encoding=rgb8|rgb10a2|auto`` in the spec forces it. The input array is
  float32 either way; ``describe()`` names the encoding in use;
- ``run(x, non_blocking=..., stream_ptr=...)`` takes a DLPack CUDA array ``(3,H,W)`` RGB float32 in
  [0,1] and returns an object whose ``.image`` is a DLPack capsule of a buffer the SDK *reuses* on
  its next call: every output is copied out before the next ``run``;
- the work is queued on the caller's current CUDA stream (``stream_ptr``), so a host that runs the
  node under ``torch.cuda.stream(s)`` keeps everything on ``s``.

Sizes: the SDK upscales 1x..4x and is happiest with sizes that are multiples of 8. The input is
padded (replicate) to a multiple of 8, the SDK writes a multiple-of-8 output, and the part that
belongs to the real input is cut out; for integer scales that is exactly the node's
``round(H*s) x round(W*s)``, otherwise (or above 4x) it is resized (bicubic) to that size.

Quality: the node's ``quality`` maps to SDK levels (fast = LOW, balanced = HIGH, high = ULTRA).
Explicit SDK settings go in ``model`` (this backend has no weights, so ``model`` names the variant)
or in ``EngineConfig.options``: a comma-separated spec such as ``"ULTRA"``,
``"HIGHBITRATE_HIGH,strength=0.7"`` or ``"HIGH,denoise=medium"`` (``denoise=``/``deblur=`` add a
same-size DENOISE_*/DEBLUR_* pre-pass for compressed inputs; ``strength=`` needs nvidia-vfx 0.2;
``async=1`` passes ``non_blocking=True``; ``encoding=rgb10a2`` forces the 10-bit path).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.util
import logging
import math
import platform
import sys
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import BackendUnavailable, InputError, LiveUpscaleError, one_line
from ..ops.resample import out_size, resize, unsharp
from .base import Backend, Capabilities, Engine, EngineConfig, Probe, cuda_reason
from .registry import register

log = logging.getLogger(__name__)

PIP_HINT = "pip install --extra-index-url https://pypi.nvidia.com nvidia-vfx (Windows: windows\\setup.ps1 -Rtx)"
UPSCALE_LEVELS = ("BICUBIC", "LOW", "MEDIUM", "HIGH", "ULTRA")
HIGHBITRATE_LEVELS = tuple(f"HIGHBITRATE_{s}" for s in ("LOW", "MEDIUM", "HIGH", "ULTRA"))
STREAMING_LEVELS = ("STREAMING_MEDIUM", "STREAMING_ULTRA")  # Ampere (sm_80) and newer
MAIN_LEVELS = UPSCALE_LEVELS + HIGHBITRATE_LEVELS + STREAMING_LEVELS
PREPASS_LEVELS = tuple(f"{k}_{s}" for k in ("DENOISE", "DEBLUR") for s in ("LOW", "MEDIUM", "HIGH", "ULTRA"))
QUALITY_TO_LEVEL = {"fast": "LOW", "balanced": "HIGH", "high": "ULTRA"}
MAX_SDK_SCALE = 4.0
ALIGN = 8


# --- settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RTXSettings:
    level: str = "HIGH"  # main (upscale) quality level
    strength: float | None = None  # None: the SDK's default (1.0); needs nvidia-vfx 0.2
    prepass: str | None = None  # DENOISE_* / DEBLUR_* run at input size before the upscale
    non_blocking: bool = False
    encoding: str = "auto"  # auto (RGB10A2 for >8-bit sources where offered) | rgb8 | rgb10a2
    ignored_model: str | None = None  # a model string that is not an RTX spec (e.g. left over from auto)

    def describe(self) -> str:
        s = self.level
        if self.strength is not None:
            s += f", strength {self.strength:g}"
        if self.prepass:
            s += f", pre-pass {self.prepass}"
        return s


def _prepass_level(kind: str, value: str) -> str:
    v = value.strip().upper()
    if v in ("", "0", "OFF", "NONE", "FALSE", "NO"):
        return ""
    if v in PREPASS_LEVELS:
        return v
    name = f"{kind}_{v}"
    if name not in PREPASS_LEVELS:
        raise InputError(f"rtx_vsr: {kind.lower()}={value!r}: use low, medium, high or ultra")
    return name


def _strength(value: Any) -> float:
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise InputError(f"rtx_vsr: strength={value!r} is not a number in [0, 1]") from None
    if not 0.0 <= s <= 1.0:
        raise InputError(f"rtx_vsr: strength={s:g} is outside [0, 1]")
    return s


ENCODINGS = ("auto", "rgb8", "rgb10a2")


def _encoding(value: Any) -> str:
    v = str(value).strip().lower().replace("-", "").replace("_", "")
    if v not in ENCODINGS:
        raise InputError(f"rtx_vsr: encoding={value!r}: use auto, rgb8 or rgb10a2")
    return v


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def parse_spec(spec: str | None, base: RTXSettings | None = None) -> RTXSettings:
    """``"ULTRA,denoise=low,strength=0.8"`` -> settings on top of ``base``.

    A string with no RTX token at all (e.g. a spandrel model name left in ``model`` while ``auto``
    picked this backend) is ignored and recorded; a string that mixes RTX tokens with unknown ones
    is an error, so a typo never silently falls back to defaults.
    """
    s = base or RTXSettings()
    if not spec or not spec.strip():
        return s
    changes: dict[str, Any] = {}
    unknown: list[str] = []
    for raw in spec.replace(";", ",").split(","):
        tok = raw.strip()
        if not tok:
            continue
        if "=" in tok:
            key, _, val = (p.strip() for p in tok.partition("="))
            key = key.lower()
            if key in ("quality", "level", "mode"):
                lvl = QUALITY_TO_LEVEL.get(val.lower(), val.upper())
                if lvl not in MAIN_LEVELS:
                    raise InputError(f"rtx_vsr: unknown quality level {val!r}; use one of {', '.join(MAIN_LEVELS)}")
                changes["level"] = lvl
            elif key == "strength":
                changes["strength"] = _strength(val)
            elif key in ("denoise", "deblur"):
                changes["prepass"] = _prepass_level(key.upper(), val) or None
            elif key in ("prepass", "pre"):
                v = val.strip().upper()
                if v and v not in PREPASS_LEVELS and v not in ("OFF", "NONE", "0"):
                    raise InputError(f"rtx_vsr: prepass={val!r}; use one of {', '.join(PREPASS_LEVELS)}")
                changes["prepass"] = v if v in PREPASS_LEVELS else None
            elif key in ("async", "non_blocking"):
                changes["non_blocking"] = _truthy(val)
            elif key in ("encoding", "image_encoding"):
                changes["encoding"] = _encoding(val)
            else:
                unknown.append(tok)
            continue
        up = tok.upper()
        if up in MAIN_LEVELS:
            changes["level"] = up
        elif up in PREPASS_LEVELS:
            changes["prepass"] = up
        elif tok.lower() in QUALITY_TO_LEVEL:
            changes["level"] = QUALITY_TO_LEVEL[tok.lower()]
        else:
            unknown.append(tok)
    if unknown and not changes:
        return replace(s, ignored_model=spec.strip())
    if unknown:
        raise InputError(
            f"rtx_vsr: cannot read {', '.join(map(repr, unknown))} in model spec {spec!r}; use a level "
            f"({', '.join(MAIN_LEVELS)}) and key=value items strength=0..1, denoise=low..ultra, deblur=low..ultra"
        )
    return replace(s, **changes)


def settings_from_config(config: EngineConfig) -> RTXSettings:
    """The node's knobs (``quality``), then ``model`` as a spec, then explicit options (last wins)."""
    o = config.options
    q = str(o.get("quality", "balanced"))
    s = RTXSettings(level=QUALITY_TO_LEVEL.get(q, q.upper() if q.upper() in MAIN_LEVELS else "HIGH"))
    s = parse_spec(config.model, s)
    if o.get("rtx_quality"):
        s = parse_spec(str(getattr(o["rtx_quality"], "name", o["rtx_quality"])), s)
    if o.get("strength") is not None:
        s = replace(s, strength=_strength(o["strength"]))
    for key in ("denoise", "deblur"):
        if o.get(key):
            s = replace(s, prepass=_prepass_level(key.upper(), str(o[key])) or None)
    if o.get("prepass"):
        s = parse_spec(f"prepass={o['prepass']}", s)
    if "non_blocking" in o:
        s = replace(s, non_blocking=bool(o["non_blocking"]))
    if o.get("encoding"):
        s = replace(s, encoding=_encoding(o["encoding"]))
    return s


# --- environment checks (module-level so tests can monkeypatch them) -------------------------------


def _system() -> str:
    return platform.system()


def _nvvfx_reason() -> str | None:
    if "nvvfx" in sys.modules:
        return None
    try:
        found = importlib.util.find_spec("nvvfx") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"python package 'nvvfx' (nvidia-vfx) is not installed: {PIP_HINT}"


def _ngx_reason() -> str | None:
    """Linux wheels load the driver's NGX library; without it load() fails with code -12/-14."""
    if ctypes.util.find_library("nvidia-ngx"):
        return None
    try:
        ctypes.CDLL("libnvidia-ngx.so.1")
        return None
    except OSError:
        return (
            "libnvidia-ngx.so.1 (part of the NVIDIA driver, 570.190+/580.82+/590.44+) is not found: "
            "install the full driver package, or use Windows"
        )


def _gpu_reason(device: torch.device) -> str | None:
    """RTX VSR needs Tensor Cores: Turing (sm_75, RTX 20xx) or newer; GTX 16xx is Turing without them."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    name = torch.cuda.get_device_name(idx)
    major, minor = torch.cuda.get_device_capability(idx)
    if (major, minor) < (7, 5):
        return f"{name} (sm_{major}{minor}) has no Tensor Cores RTX VSR can use: it needs Turing (RTX 20xx) or newer"
    if "GTX 16" in name.upper():
        return f"{name} is a Turing GPU without Tensor Cores: RTX VSR needs an RTX card"
    return None


def _capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    idx = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(idx)


def _version(nv: Any = None) -> str:
    try:
        from importlib.metadata import version

        return version("nvidia-vfx")
    except Exception:  # noqa: BLE001 - a stand-in or a vendored copy has no metadata
        v = getattr(nv if nv is not None else sys.modules.get("nvvfx"), "__version__", None)
        return str(v) if v else "unknown version"


def _hint(text: str) -> str:
    t = text.upper()
    if "-12" in t or "-14" in t or "NGX" in t:
        return " (the driver's NGX library is missing or too old: update the NVIDIA driver)"
    if "RESOLUTION" in t:
        return " (the SDK refused this frame size: RTX VSR wants inputs of about 90 px and up, 1x..4x)"
    if "UNSUPPORTEDGPU" in t or "WRONGGPU" in t:
        return " (this GPU is not supported: RTX VSR needs an RTX card with Tensor Cores)"
    if "DRIVER" in t:
        return " (update the NVIDIA driver: Windows 570.65+, Linux 570.190+)"
    if "MEMORY" in t:
        return " (out of GPU memory)"
    return ""


# --- the engine -------------------------------------------------------------------------------------


def _bits(v: Any) -> int:
    try:
        return max(1, int(v))
    except (TypeError, ValueError):
        return 8


def _ceil(n: int, m: int = ALIGN) -> int:
    return max(m, int(math.ceil(n / m)) * m)


@dataclass(frozen=True)
class _Plan:
    """Sizes for one input size: padded input, SDK output, the region that belongs to the input."""

    in_size: tuple[int, int]
    padded: tuple[int, int]
    sdk_out: tuple[int, int] | None  # None: no upscale pass (scale 1)
    valid: tuple[int, int]  # rows/cols of the SDK output that belong to the real input
    target: tuple[int, int]  # the node's output size

    @property
    def exact(self) -> bool:
        return self.valid == self.target


def plan_sizes(h: int, w: int, scale: float) -> _Plan:
    target = out_size(h, w, scale)
    hp, wp = _ceil(h), _ceil(w)
    s = min(scale, MAX_SDK_SCALE)
    if s <= 1.0:
        return _Plan((h, w), (hp, wp), None, (h, w), target)
    oh, ow = _ceil(int(round(hp * s))), _ceil(int(round(wp * s)))
    oh, ow = min(oh, int(hp * MAX_SDK_SCALE)), min(ow, int(wp * MAX_SDK_SCALE))
    valid = (min(oh, int(round(h * oh / hp))), min(ow, int(round(w * ow / wp))))
    return _Plan((h, w), (hp, wp), (oh, ow), valid, target)


class RTXVSREngine(Engine):
    caps = Capabilities(
        min_scale=1.0,
        max_scale=8.0,
        devices=("cuda",),
        notes="NVIDIA RTX VSR (VFX SDK); 1x..4x in the SDK, resized beyond",
    )

    def __init__(self, config: EngineConfig, nv, settings: RTXSettings):
        super().__init__(config)
        self.nv = nv
        self.settings = settings
        self.sharpen = float(config.options.get("sharpen", 0.0))
        self.source_bits = _bits(config.options.get("source_bits", 8))  # the host's input precision
        dev = config.device
        self.device_index = dev.index if dev.index is not None else (torch.cuda.current_device() if dev.type == "cuda" else 0)
        self._plan: _Plan | None = None
        self._sr = None  # main (upscale) effect
        self._pre = None  # optional same-size DENOISE/DEBLUR effect
        self._dirty = False  # settings changed at run time: re-create on the next frame
        self.recreated = 0  # effects built so far (tests and info)

    # -- effects --

    def _quality(self, name: str):
        for holder in (getattr(self.nv, "VideoSuperRes", None), getattr(self.nv, "effects", None)):
            enum = getattr(holder, "QualityLevel", None)
            if enum is not None:
                try:
                    return enum[name]
                except KeyError:
                    have = ", ".join(m for m in getattr(enum, "__members__", {}))
                    raise BackendUnavailable(
                        f"rtx_vsr: this nvidia-vfx ({_version()}) has no quality level {name}; it has {have}"
                    ) from None
        raise BackendUnavailable("rtx_vsr: nvvfx has no VideoSuperRes.QualityLevel: unsupported nvidia-vfx version")

    def _encoding_enum(self):
        """``VideoSuperRes.ImageEncoding`` (nvidia-vfx 0.2), or None where the wheel has none (0.1)."""
        return getattr(getattr(self.nv, "VideoSuperRes", None), "ImageEncoding", None)

    def encoding(self) -> str | None:
        """The image encoding the effects are built with: ``RGB10A2``, ``RGB8``, or None (0.1: no choice)."""
        enum = self._encoding_enum()
        want = self.settings.encoding
        if want == "auto":
            want = "rgb10a2" if self.source_bits > 8 else "rgb8"
        if enum is None:
            return None
        if want == "rgb10a2" and not hasattr(enum, "RGB10A2"):
            return "RGB8"
        return want.upper()

    def _make(self, level: str, in_hw: tuple[int, int], out_hw: tuple[int, int], strength: float | None):
        kw: dict[str, Any] = {"quality": self._quality(level), "device": self.device_index}
        if strength is not None:
            kw["strength"] = strength
        enc = self.encoding()
        if self.settings.encoding == "rgb10a2" and enc != "RGB10A2":
            raise BackendUnavailable(
                f"rtx_vsr: nvidia-vfx {_version(self.nv)} has no RGB10A2 image encoding: upgrade to 0.2+ or drop encoding="
            )
        if enc == "RGB10A2":  # RGB8 is the SDK's default: passed only when it is not
            kw["image_encoding"] = self._encoding_enum().RGB10A2
        where = f"{in_hw[1]}x{in_hw[0]} -> {out_hw[1]}x{out_hw[0]}, {level}"
        try:
            fx = self.nv.VideoSuperRes(**kw)
        except TypeError as e:
            if "strength" in kw and "strength" in str(e):
                raise BackendUnavailable(
                    f"rtx_vsr: nvidia-vfx {_version(self.nv)} does not take strength=: upgrade to 0.2+ or drop strength"
                ) from None
            raise BackendUnavailable(f"rtx_vsr: cannot create the effect ({where}): {one_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - NvVFXError and friends -> one line
            raise BackendUnavailable(f"rtx_vsr: cannot create the effect ({where}): {one_line(e)}{_hint(str(e))}") from None
        try:
            if hasattr(type(fx), "input_width") and hasattr(type(fx), "input_height"):
                fx.input_width, fx.input_height = in_hw[1], in_hw[0]  # 0.2; 0.1 takes it from the frame
            fx.output_width, fx.output_height = out_hw[1], out_hw[0]
            fx.load()
        except Exception as e:  # noqa: BLE001
            self._close(fx)
            raise BackendUnavailable(f"rtx_vsr: the SDK failed to load ({where}): {one_line(e)}{_hint(str(e))}") from None
        self.recreated += 1
        return fx

    @staticmethod
    def _close(fx) -> None:
        if fx is None:
            return
        try:
            fx.close()
        except Exception as e:  # noqa: BLE001 - closing must never raise into a host
            log.debug("rtx_vsr: close failed: %s", e)

    def _drop_effects(self) -> None:
        self._close(self._sr)
        self._close(self._pre)
        self._sr = self._pre = None
        self._plan = None

    def _ensure(self, h: int, w: int) -> _Plan:
        if self._plan is not None and self._plan.in_size == (h, w) and not self._dirty:
            return self._plan
        self._drop_effects()
        self._dirty = False
        plan = plan_sizes(h, w, self.scale)
        st = self.settings
        if st.prepass:
            self._pre = self._make(st.prepass, plan.padded, plan.padded, None)
        if plan.sdk_out is not None:
            self._sr = self._make(st.level, plan.padded, plan.sdk_out, st.strength)
        self._plan = plan
        return plan

    # -- running --

    def _run(self, fx, x: torch.Tensor, what: str) -> torch.Tensor:
        kw: dict[str, Any] = {"stream_ptr": torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0}
        if self.settings.non_blocking:  # only when asked: the documented default is a blocking call
            kw["non_blocking"] = True
        try:
            res = fx.run(x, **kw)
            # a view of the SDK's own buffer, valid until its next run(): callers copy it out
            return torch.from_dlpack(res.image)
        except Exception as e:  # noqa: BLE001 - NvVFXError, DLPack errors -> one clear line
            h, w = x.shape[-2:]
            raise LiveUpscaleError(f"rtx_vsr {what} failed on a {w}x{h} frame: {one_line(e)}{_hint(str(e))}") from None

    @torch.inference_mode()
    def process(self, frames: torch.Tensor) -> torch.Tensor:
        n, _, h, w = frames.shape
        plan = self._ensure(int(h), int(w))
        th, tw = plan.target
        out = torch.empty((n, 3, th, tw), device=frames.device, dtype=torch.float32)
        ph, pw = plan.padded[0] - h, plan.padded[1] - w
        vh, vw = plan.valid
        for i in range(n):
            x = frames[i : i + 1].float()
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            x = x[0].contiguous()
            if self._pre is not None:
                x = self._run(self._pre, x, "pre-pass")  # read by the upscale run before the pre-pass runs again
            y = self._run(self._sr, x, "upscale") if self._sr is not None else x
            y = y[:, :vh, :vw]
            if plan.exact:
                out[i].copy_(y)  # the copy the SDK's reused output buffer needs
            else:
                out[i] = resize(y[None].float(), (th, tw), "bicubic")[0]
        if self.sharpen > 0:
            out = unsharp(out, self.sharpen, sigma=max(0.6, 0.5 * self.scale))
        return out.clamp_(0.0, 1.0)

    # -- protocol --

    def set_options(self, **options: Any) -> None:
        if "sharpen" in options:
            self.sharpen = float(options["sharpen"])
        if options.get("source_bits") is not None:
            bits = _bits(options["source_bits"])
            if bits != self.source_bits:
                before = self.encoding()
                self.source_bits = bits
                self._dirty = self._dirty or self.encoding() != before  # a new encoding: new effects
        new = self.settings
        if options.get("strength") is not None:
            new = replace(new, strength=_strength(options["strength"]))
        if options.get("rtx_quality"):
            new = parse_spec(str(options["rtx_quality"]), new)
        for key in ("denoise", "deblur"):
            if key in options:
                new = replace(new, prepass=_prepass_level(key.upper(), str(options[key] or "")) or None)
        if new != self.settings:
            self.settings = new
            self._dirty = True  # effects are re-created on the next frame

    def reset(self) -> None:
        """RTX VSR keeps no history the node can see; reloading would stall a host, so nothing to do."""

    def describe(self) -> str:
        enc = self.encoding()
        enc_text = f"encoding {enc}" if enc else "encoding RGB8 (nvidia-vfx 0.1 has no choice)"
        s = f"RTX VSR x{self.scale:g} ({self.settings.describe()}, {enc_text}; nvidia-vfx {_version(self.nv)})"
        if self.scale > MAX_SDK_SCALE:
            s += f", SDK at {MAX_SDK_SCALE:g}x then resized"
        if self.settings.ignored_model:
            s += f"; model {self.settings.ignored_model!r} ignored (not an RTX VSR level)"
        return s

    def close(self) -> None:
        self._drop_effects()


@register
class RTXVSRBackend(Backend):
    id = "rtx_vsr"
    label = "NVIDIA RTX Video Super Resolution (nvidia-vfx)"
    description = "NVIDIA's VFX SDK on RTX GPUs (Windows; Linux with the driver's NGX library). No weights to fetch."
    priority = 20  # preferred by 'auto' wherever it can run
    needs_weights = False

    @classmethod
    def probe(cls, device: torch.device, model: str | None = None) -> Probe:
        system = _system()
        if system not in ("Windows", "Linux"):
            return Probe(False, f"runs on Windows (or Linux with the NVIDIA driver's NGX library) only (this is {system})")
        if why := _nvvfx_reason():
            return Probe(False, why)
        if system == "Linux" and (why := _ngx_reason()):
            return Probe(False, why)
        if why := cuda_reason(device):
            return Probe(False, why)
        if why := _gpu_reason(device):
            return Probe(False, why)
        try:
            st = parse_spec(model)
        except InputError as e:
            return Probe(False, str(e))
        cap = _capability(device)
        if st.level in STREAMING_LEVELS and cap is not None and cap < (8, 0):
            return Probe(False, f"{st.level} needs an Ampere (sm_80) or newer GPU")
        return Probe(True, f"nvidia-vfx {_version()}")

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        settings = settings_from_config(config)
        if why := _nvvfx_reason():
            raise BackendUnavailable(f"backend 'rtx_vsr' cannot run here: {why}")
        try:
            nv = importlib.import_module("nvvfx")
        except Exception as e:  # noqa: BLE001 - DLL load errors, missing libnvinfer, ...
            raise BackendUnavailable(f"rtx_vsr: importing nvvfx failed: {one_line(e)}{_hint(str(e))}") from None
        # The real SDK needs CUDA tensors; the engine does not check the device itself so that a
        # stand-in SDK can run it on CPU in tests. The node's probe (via the registry) guards CUDA.
        engine = RTXVSREngine(config, nv, settings)
        if settings.encoding == "rgb10a2" and engine.encoding() != "RGB10A2":
            raise BackendUnavailable(
                f"rtx_vsr: nvidia-vfx {_version(nv)} has no RGB10A2 image encoding: upgrade to 0.2+ or drop encoding="
            )
        return engine
