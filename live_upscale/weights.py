"""Weights manager: a registry of known models, a cache, verified downloads, safe loading.

- ``KNOWN_MODELS``: name -> where to get it (URL or Hugging Face repo/file), sha256, licence,
  architecture, scale.
- Cache directory: ``$LIVE_UPSCALE_CACHE`` or ``$XDG_CACHE_HOME/live-upscale`` (``~/.cache/live-upscale``).
- Downloads stream into a ``.part`` file in the cache, are checked against the sha256, and only
  then renamed into place: a partial or corrupt download never counts as present.
- ``$LIVE_UPSCALE_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids downloads; a missing file then
  raises :class:`WeightsMissing` with the command to run or the path to pass.
- ``load_state_dict`` reads ``.safetensors`` with safetensors and ``.pth/.ckpt/.pt`` with
  ``torch.load(weights_only=True)``: a pickle that tries to run code is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError, WeightsMissing, one_line


@dataclass(frozen=True)
class ModelInfo:
    name: str
    filename: str
    arch: str
    scale: int
    license: str
    url: str | None = None  # direct download (https:// or file://)
    hf_repo: str | None = None  # or a Hugging Face repo + file
    hf_file: str | None = None
    hf_revision: str | None = None
    sha256: str | None = None
    size: int | None = None
    backend: str = "realesrgan"
    notes: str = ""
    snapshot: bool = False  # a whole Hugging Face repo (folder in the cache); ``filename`` is a file it must hold
    allow_patterns: tuple[str, ...] | None = None  # snapshot: only these files (None: all)
    # cost of one model call per input pixel, counted with realesrgan.count_model on the architecture
    # (tests recount them on random weights in the official layout): parameters, multiply-accumulates,
    # elements of the largest feature map
    params: int = 0
    macs_per_px: float = 0.0
    act_per_px: float = 0.0

    @property
    def source(self) -> str:
        if self.hf_repo and self.snapshot:
            return f"hf://{self.hf_repo}"
        if self.hf_repo:
            return f"hf://{self.hf_repo}/{self.hf_file}"
        return self.url or "(no public source)"


_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"

KNOWN_MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo(
            "realesr-animevideov3",
            "realesr-animevideov3.pth",
            "SRVGGNetCompact (64 feat, 16 conv)",
            4,
            "BSD-3-Clause",
            url=f"{_RELEASES}/v0.2.5.0/realesr-animevideov3.pth",
            sha256="4e1e09ba96d08bd4b8455e8897c3242a3501e3766f359941ea894122e158a932",
            size=2334339,
            notes="tiny and fast; made for video (the realesrgan default)",
            params=621424, macs_per_px=619200, act_per_px=64,
        ),
        ModelInfo(
            "realesr-general-x4v3",
            "realesr-general-x4v3.pth",
            "SRVGGNetCompact (64 feat, 32 conv)",
            4,
            "BSD-3-Clause",
            url=f"{_RELEASES}/v0.2.5.0/realesr-general-x4v3.pth",
            sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
            notes="general real-world content, still compact",
            params=1213296, macs_per_px=1209024, act_per_px=64,
        ),
        ModelInfo(
            "RealESRGAN_x2plus",
            "RealESRGAN_x2plus.pth",
            "RRDBNet (23 blocks), pixel-unshuffle 2x",
            2,
            "BSD-3-Clause",
            url=f"{_RELEASES}/v0.2.1/RealESRGAN_x2plus.pth",
            sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
            size=67061725,
            notes="the model Scope's RealESRGAN postprocessor uses",
            params=16703171, macs_per_px=4483008, act_per_px=256,
        ),
        ModelInfo(
            "RealESRGAN_x4plus",
            "RealESRGAN_x4plus.pth",
            "RRDBNet (23 blocks)",
            4,
            "BSD-3-Clause",
            url=f"{_RELEASES}/v0.1.0/RealESRGAN_x4plus.pth",
            sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            size=67040989,
            params=16697987, macs_per_px=17926848, act_per_px=1024,
        ),
        ModelInfo(
            "RealESRGANv2-animevideo-xsx2",
            "RealESRGANv2-animevideo-xsx2.pth",
            "SRVGGNetCompact (64 feat, 16 conv), native 2x",
            2,
            "BSD-3-Clause",
            url=f"{_RELEASES}/v0.2.3.0/RealESRGANv2-animevideo-xsx2.pth",
            sha256="27985aa2198711ecd72f9bb274ec7b164e018fc9ce2933daaa7c7ab36a2bd3fe",
            notes="the fastest 2x: compact, runs at full input size without a resize",
            params=600652, macs_per_px=598464, act_per_px=64,
        ),
    ]
}

# Stream-DiffVSR (backend stream_diffvsr): the whole diffusers-layout repository, fetched as a folder.
KNOWN_MODELS["stream-diffvsr"] = ModelInfo(
    "stream-diffvsr",
    "model_index.json",
    "Stream-DiffVSR (UNet+ControlNet+TPM AE)",
    4,
    "see model card",
    hf_repo="Jamichsu/Stream-DiffVSR",
    backend="stream_diffvsr",
    snapshot=True,
    notes="causal 4-step diffusion VSR; a folder (unet/ controlnet/ vae/ scheduler/ text_encoder/ tokenizer/)",
)

# FlashVSR v1.1 (backend flashvsr): four files, one entry each (`models fetch` takes them one by one;
# the backend fetches all four when it loads). The prompt embedding lives in the code repository.
_FLASHVSR_HF = "JunhaoZhuang/FlashVSR-v1.1"
_FLASHVSR_CODE = "https://raw.githubusercontent.com/OpenImagingLab/FlashVSR/ccac0ac457243a47c13997682ebbaf987dabbea7"
for _m in (
    ModelInfo("FlashVSR-v1.1-dit", "diffusion_pytorch_model_streaming_dmd.safetensors",
              "Wan2.1-T2V-1.3B DiT, one-step streaming (DMD)", 4, "Apache-2.0", hf_repo=_FLASHVSR_HF,
              hf_file="diffusion_pytorch_model_streaming_dmd.safetensors", backend="flashvsr", notes="~5.7 GB fp32"),
    ModelInfo("FlashVSR-v1.1-lq-proj", "LQ_proj_in.ckpt", "Causal_LQ4x_Proj (LR injection)", 4, "Apache-2.0",
              hf_repo=_FLASHVSR_HF, hf_file="LQ_proj_in.ckpt", backend="flashvsr"),
    ModelInfo("FlashVSR-v1.1-tcdecoder", "TCDecoder.ckpt", "Tiny conditional decoder (TAEHV-style)", 4,
              "Apache-2.0", hf_repo=_FLASHVSR_HF, hf_file="TCDecoder.ckpt", backend="flashvsr", notes="~181 MB"),
    ModelInfo("FlashVSR-v1.1-prompt", "posi_prompt.pth", "fixed umT5 prompt embedding (1, 512, 4096)", 4,
              "Apache-2.0", url=f"{_FLASHVSR_CODE}/examples/WanVSR/prompt_tensor/posi_prompt.pth", backend="flashvsr",
              notes="~4 MB, from the FlashVSR code repository"),
):
    KNOWN_MODELS[_m.name] = _m
del _m

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def cache_dir() -> Path:
    env = os.environ.get("LIVE_UPSCALE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "live-upscale"


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes") for v in ("LIVE_UPSCALE_OFFLINE", "HF_HUB_OFFLINE"))


def safe_filename(name: str) -> str:
    """A file name that cannot leave the cache directory (no separators, no dot-dot, no empties)."""
    s = _SAFE_NAME.sub("_", os.path.basename(name.replace("\\", "/"))).lstrip(".")
    return s or "model"


def register_model(info: ModelInfo) -> None:
    KNOWN_MODELS[info.name] = info


def lookup(name: str) -> ModelInfo | None:
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    low = {k.lower(): v for k, v in KNOWN_MODELS.items()}
    key = name.lower()
    return low.get(key) or low.get(key.removesuffix(".pth").removesuffix(".safetensors"))


def cached_path(info: ModelInfo) -> Path:
    return cache_dir() / safe_filename(info.name) / safe_filename(info.filename)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _how_to_get(info: ModelInfo) -> str:
    return (
        f"run `live-upscale models fetch {info.name}` on a machine with internet "
        f"(downloads {info.source} into {cached_path(info).parent}), or pass the path of "
        f"{info.filename} as the model"
    )


def is_cached(name_or_path: str) -> bool:
    """True for an existing file path, or a registered model already in the cache."""
    if _looks_like_path(name_or_path):
        return Path(name_or_path).expanduser().is_file()
    info = lookup(name_or_path)
    return info is not None and cached_path(info).is_file()


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.endswith((".pth", ".pt", ".ckpt", ".safetensors", ".bin")) or Path(s).is_file()


def resolve(name_or_path: str, download: bool = True) -> Path:
    """A model name or path -> a local file, downloading a registered model when allowed."""
    if _looks_like_path(name_or_path):
        p = Path(name_or_path).expanduser()
        if p.is_file():
            return p
        info = lookup(p.name)
        hint = f" (or use the registered name '{info.name}')" if info else ""
        raise WeightsMissing(f"weights file not found: {p}{hint}")
    info = lookup(name_or_path)
    if info is None:
        raise WeightsMissing(
            f"unknown model {name_or_path!r}: pass a path to a weights file, or one of: {', '.join(KNOWN_MODELS)}"
        )
    path = cached_path(info)
    if path.is_file():
        return path
    if not download or offline():
        why = "downloads are off" if offline() else "download=False"
        raise WeightsMissing(f"model '{info.name}' is not in the cache ({why}): {_how_to_get(info)}")
    return fetch(info.name)


def fetch(name: str, force: bool = False) -> Path:
    """Download a registered model into the cache, verify its sha256, rename into place atomically."""
    info = lookup(name)
    if info is None:
        raise WeightsMissing(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")
    if info.snapshot:
        return fetch_snapshot(info, force)
    dest = cached_path(info)
    if dest.is_file() and not force:
        return dest
    if offline():
        raise WeightsMissing(f"model '{info.name}' is not in the cache and downloads are off: {_how_to_get(info)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _one_line_download_errors(
            info, f"Download it by hand and pass its path, or retry `live-upscale models fetch {info.name}`"
        ):
            if info.hf_repo:
                _download_hf(info, out)
            elif info.url:
                _download_url(info.url, out)
            else:
                raise WeightsMissing(f"model '{info.name}' has no public source: pass the path of {info.filename}")
        got = sha256_of(tmp)
        if info.sha256 and got != info.sha256.lower():
            raise WeightsError(
                f"checksum mismatch for '{info.name}' from {info.source}: expected sha256 {info.sha256}, got {got}; "
                "the file was discarded (retry, or pass a path to a file you trust)"
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def fetch_snapshot(info: ModelInfo, force: bool = False) -> Path:
    """Download a whole Hugging Face repo into ``cached_path(info).parent``; returns ``cached_path(info)``.

    The repo lands in a temporary folder beside the destination and is renamed into place only once
    complete and holding ``info.filename``: a partial download never counts as present. (Hugging
    Face checks each file's hash itself; there is no single sha256 for a repo.)
    """
    dest = cached_path(info)
    if dest.is_file() and not force:
        return dest
    if offline():
        raise WeightsMissing(f"model '{info.name}' is not in the cache and downloads are off: {_how_to_get(info)}")
    folder = dest.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".part", dir=folder.parent))
    try:
        from huggingface_hub import snapshot_download

        with _one_line_download_errors(
            info,
            f"Retry `live-upscale models fetch {info.name}`, or download the repository by hand and pass its folder",
        ):
            snapshot_download(info.hf_repo, revision=info.hf_revision, local_dir=str(tmp),
                              allow_patterns=list(info.allow_patterns) if info.allow_patterns else None)
        if not (tmp / dest.name).is_file():
            raise WeightsError(f"'{info.name}' from {info.source} has no {dest.name}: not the expected repository layout")
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _one_line_download_errors(info: ModelInfo, hint: str):
    """Network errors of every kind become one WeightsMissing line naming the model, the source and what to do."""
    try:
        yield
    except (WeightsError, WeightsMissing):
        raise
    except Exception as e:  # noqa: BLE001
        raise WeightsMissing(f"could not download '{info.name}' from {info.source}: {one_line(e)}. {hint}") from None


def _download_url(url: str, out) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "live-upscale"})
    with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 - https:// or file:// of our registry
        shutil.copyfileobj(r, out, 1 << 20)


def _download_hf(info: ModelInfo, out) -> None:
    from huggingface_hub import hf_hub_download

    with tempfile.TemporaryDirectory() as d:
        p = hf_hub_download(info.hf_repo, info.hf_file, revision=info.hf_revision, local_dir=d)
        with open(p, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)


# --- safe loading ------------------------------------------------------------------------------------


def load_state_dict(path: str | Path, map_location="cpu") -> dict:
    """Read a weights file without executing code. One clear line on any failure."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise WeightsMissing(f"weights file not found: {p}")
    ext = p.suffix.lower()
    try:
        if ext == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p), device=str(map_location))
        elif ext in (".pth", ".pt", ".ckpt", ".bin"):
            sd = torch.load(str(p), map_location=map_location, weights_only=True)
        else:
            raise WeightsError(f"{p.name}: unsupported weights format '{ext}' (use .safetensors, .pth, .pt or .ckpt)")
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise WeightsError(
                f"{p}: refused to load: the file contains pickled code or objects, not just tensors "
                f"({msg}). Use a .safetensors file or a plain state dict from a source you trust."
            ) from None
        raise WeightsError(f"{p}: cannot read weights (truncated or corrupt?): {type(e).__name__}: {msg}") from None
    if not isinstance(sd, dict):
        raise WeightsError(f"{p}: expected a dict of tensors, found {type(sd).__name__}")
    return sd
