"""Loading Stream-DiffVSR: the official Hugging Face layout, or random weights for tests/benchmarks.

Official layout (``Jamichsu/Stream-DiffVSR``)::

    model_index.json
    unet/        config.json  diffusion_pytorch_model.safetensors   (UNet2DConditionModel)
    controlnet/  config.json  diffusion_pytorch_model.safetensors   (ControlNetModel)
    vae/         config.json  diffusion_pytorch_model.safetensors   (TemporalAutoencoderTiny keys)
    scheduler/   scheduler_config.json                              (DDIMScheduler)

Weights may also come as diffusers' fp16 variant (``diffusion_pytorch_model.fp16.safetensors``)
or sharded (``diffusion_pytorch_model.safetensors.index.json`` + shards); the UNet and ControlNet
are read by diffusers' ``from_pretrained`` (with ``variant`` when only the fp16 files are there),
the VAE shard by shard with safetensors. The scheduler is ``DDIMScheduler.from_pretrained`` of
``scheduler/``, exactly as upstream's ``inference.py`` loads it (diffusers' defaults for any key
the file lacks: a file without ``timestep_spacing`` gets ``leading``).
    text_encoder/ config.json model.safetensors                     (CLIPTextModel)
    tokenizer/   vocab.json merges.txt ...                          (CLIPTokenizer)

The text encoder only ever sees the empty prompt, so its output is one constant tensor
``(1, 77, cross_attention_dim)``. It is computed once (CPU, fp32), cached on disk under the
weights cache keyed by the text encoder's files, and read back on later loads: CLIP (and the
``transformers`` package) is needed at most once per machine, never per frame. A precomputed
embedding can be given instead (``prompt_embeds=FILE`` option, or ``prompt_embeds.safetensors``
in the model folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ... import weights as wm
from ...errors import BackendUnavailable, WeightsError, WeightsMissing, one_line
from . import components as C
from .tpm_vae import TemporalTinyAutoencoder

log = logging.getLogger(__name__)

REQUIRED = ("unet", "controlnet", "vae")
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
VARIANTS = (None, "fp16")  # diffusers' file-name variants, plain first
PROMPT_FILE = "prompt_embeds.safetensors"
PROMPT_KEY = "prompt_embeds"


@dataclass
class Components:
    unet: Any
    controlnet: Any
    vae: TemporalTinyAutoencoder
    scheduler: Any
    prompt_embeds: torch.Tensor  # (1, 77, D) float32 on CPU
    source: str
    prompt_source: str = ""


# --- layout ------------------------------------------------------------------------------------------


def find_root(path: str | os.PathLike) -> Path | None:
    """A model folder in the official layout from a folder or a file inside it (model_index.json)."""
    p = Path(path).expanduser()
    if p.is_file():
        p = p.parent
    if p.is_dir() and all((p / d / "config.json").is_file() for d in REQUIRED):
        return p
    return None


def _variant_name(name: str, variant: str | None) -> str:
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}" if variant else name


def weight_files(d: Path) -> tuple[str | None, list[Path]] | None:
    """``(variant, files)`` of the weights in ``d`` (one file, or the shards an index names), or None.

    Order: plain safetensors, plain .bin, then the fp16 variant; each single-file or sharded."""
    for variant in VARIANTS:
        for name in WEIGHT_NAMES:
            single = d / _variant_name(name, variant)
            if single.is_file():
                return variant, [single]
            index = d / (single.name + ".index.json")
            if index.is_file():
                weight_map = _read_json(index).get("weight_map") or {}
                shards = sorted({d / f for f in weight_map.values()})
                if not shards:
                    raise WeightsError(f"{index}: no weight_map")
                return variant, shards
    return None


def layout_problem(root: Path) -> str | None:
    """What is missing from an official-layout folder, or None."""
    for d in REQUIRED:
        if not (root / d / "config.json").is_file():
            return f"{root}: no {d}/config.json (expected the Hugging Face layout of Jamichsu/Stream-DiffVSR)"
        try:
            found = weight_files(root / d)
        except WeightsError as e:
            return str(e)
        if found is None:
            return f"{root}: no weights in {d}/ (expected {WEIGHT_NAMES[0]}, its fp16 variant, or shards with an index)"
        missing = [f.name for f in found[1] if not f.is_file()]
        if missing:
            return f"{root / d}: shard(s) {', '.join(missing[:3])} listed in the index are missing"
    return None


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{p}: unreadable config ({one_line(e)})") from None


def _read_weights(d: Path) -> dict:
    found = weight_files(d)
    if found is None:
        raise WeightsMissing(f"no weights in {d} (expected {WEIGHT_NAMES[0]})")
    sd: dict = {}
    for f in found[1]:
        sd.update(wm.load_state_dict(f))
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


# --- the parts ---------------------------------------------------------------------------------------


def load_vae(d: Path) -> TemporalTinyAutoencoder:
    cfg = _read_json(d / "config.json")
    try:
        vae = TemporalTinyAutoencoder(cfg)
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{d}/config.json: not a temporal tiny autoencoder config ({one_line(e)})") from None
    sd = _read_weights(d)
    missing, unexpected = vae.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{d}: VAE weights do not match the temporal tiny autoencoder layout "
            f"(missing {sorted(missing)[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {sorted(unexpected)[:4]}{'...' if len(unexpected) > 4 else ''})"
        )
    return vae.eval().requires_grad_(False)


def _from_pretrained(cls, d: Path):
    found = weight_files(d)
    variant = found[0] if found else None
    try:
        return cls.from_pretrained(str(d), torch_dtype=torch.float32, variant=variant)
    except Exception as e:  # noqa: BLE001 - diffusers raises many kinds; the host gets one line
        raise WeightsError(f"{d}: cannot load {cls.__name__}: {one_line(e)}") from None


def load_scheduler(root: Path):
    """``DDIMScheduler.from_pretrained(root, subfolder='scheduler')``, as upstream's inference.py."""
    from diffusers import DDIMScheduler

    d = root / "scheduler"
    if not (d / "scheduler_config.json").is_file():
        log.warning("stream_diffvsr: %s has no scheduler_config.json; using Stream-DiffVSR's published DDIM config", root)
        return C.build_scheduler()
    try:
        return DDIMScheduler.from_pretrained(str(root), subfolder="scheduler")
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{d}: cannot load the DDIM scheduler: {one_line(e)}") from None


def check_compatible(unet, controlnet, vae: TemporalTinyAutoencoder, emb: torch.Tensor, where: str) -> None:
    lat = vae.latent_channels
    u, c = unet.config, controlnet.config
    problems = []
    if u.in_channels != lat + 3:
        problems.append(f"unet takes {u.in_channels} channels, expected {lat}+3")
    if c.in_channels != u.in_channels:
        problems.append(f"controlnet takes {c.in_channels} channels, unet {u.in_channels}")
    if list(c.block_out_channels) != list(u.block_out_channels):
        problems.append("controlnet and unet block widths differ")
    if c.cross_attention_dim != u.cross_attention_dim:
        problems.append("controlnet and unet cross-attention widths differ")
    if emb.dim() != 3 or emb.shape[0] != 1 or emb.shape[-1] != u.cross_attention_dim:
        problems.append(f"prompt embedding {tuple(emb.shape)} does not fit cross_attention_dim {u.cross_attention_dim}")
    if u.get("num_class_embeds") is not None or u.get("class_embed_type") is not None:
        problems.append("unet expects a class label (noise level); Stream-DiffVSR's does not")
    if vae.downscale != C.NATIVE_SCALE:
        problems.append(f"vae upsamples {vae.downscale}x, expected {C.NATIVE_SCALE}x")
    if problems:
        raise WeightsError(f"{where}: not a Stream-DiffVSR checkpoint: " + "; ".join(problems))


# --- the empty-prompt embedding ----------------------------------------------------------------------


def read_prompt_embeds(path: str | os.PathLike) -> torch.Tensor:
    sd = wm.load_state_dict(path)
    t = sd.get(PROMPT_KEY)
    if t is None:
        if len(sd) != 1:
            raise WeightsError(f"{path}: expected a tensor named '{PROMPT_KEY}'")
        t = next(iter(sd.values()))
    if not isinstance(t, torch.Tensor):
        raise WeightsError(f"{path}: '{PROMPT_KEY}' is not a tensor")
    if t.dim() == 2:
        t = t[None]
    return t.float().contiguous()


def _text_encoder_key(root: Path) -> str:
    """Content key of the text encoder + tokenizer: configs, vocab, and the weights' size/head/tail."""
    h = hashlib.sha256()
    te, tok = root / "text_encoder", root / "tokenizer"
    for d in (te, tok):
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if not f.is_file():
                continue
            h.update(f.name.encode())
            size = f.stat().st_size
            h.update(str(size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read(1 << 20))
    return h.hexdigest()[:20]


def prompt_cache_path(root: Path) -> Path:
    return wm.cache_dir() / "stream-diffvsr-prompt" / f"empty-prompt-{_text_encoder_key(root)}.safetensors"


def compute_empty_prompt(root: Path) -> torch.Tensor:
    """Run the official tokenizer + CLIP text encoder once on '' (CPU, fp32)."""
    from ..base import missing_package

    if why := missing_package("transformers"):
        raise BackendUnavailable(
            f"{why}: it is needed once to compute the empty-prompt embedding from {root / 'text_encoder'} "
            "(pip install 'live-upscale[stream-diffvsr]'), or pass prompt_embeds=FILE"
        )
    from transformers import CLIPTextModel, CLIPTokenizer

    if not (root / "text_encoder").is_dir() or not (root / "tokenizer").is_dir():
        raise WeightsMissing(
            f"{root}: no text_encoder/ and tokenizer/ to compute the empty-prompt embedding; "
            f"put a precomputed {PROMPT_FILE} in the model folder or pass prompt_embeds=FILE"
        )
    try:
        tok = CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
        ted = root / "text_encoder"
        plain = any((ted / n).is_file() or (ted / (n + ".index.json")).is_file() for n in ("model.safetensors", "pytorch_model.bin"))
        variant = None if plain or not any(ted.glob("*.fp16.*")) else "fp16"
        te = CLIPTextModel.from_pretrained(str(ted), variant=variant).float().eval()
        ids = tok("", padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        mask = ids.attention_mask if getattr(te.config, "use_attention_mask", False) else None
        with torch.inference_mode():
            emb = te(ids.input_ids, attention_mask=mask)[0]
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{root}: cannot compute the empty-prompt embedding: {one_line(e)}") from None
    return emb.float().contiguous()


def _save_atomic(t: torch.Tensor, dest: Path) -> None:
    from safetensors.torch import save_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        save_file({PROMPT_KEY: t.contiguous()}, tmp)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def empty_prompt_embeds(root: Path, explicit: str | os.PathLike | None = None) -> tuple[torch.Tensor, str]:
    """The constant prompt embedding and where it came from (file, cache, or computed now)."""
    if explicit:
        return read_prompt_embeds(explicit), f"file {explicit}"
    if (root / PROMPT_FILE).is_file():
        return read_prompt_embeds(root / PROMPT_FILE), f"file {root / PROMPT_FILE}"
    cached = prompt_cache_path(root)
    if cached.is_file():
        try:
            return read_prompt_embeds(cached), "cache"
        except WeightsError as e:  # a corrupt cache entry is recomputed, not fatal
            log.warning("stream_diffvsr: ignoring cached prompt embedding: %s", e)
    emb = compute_empty_prompt(root)
    try:
        _save_atomic(emb, cached)
    except OSError as e:
        log.warning("stream_diffvsr: could not cache the prompt embedding at %s: %s", cached, e)
    return emb, "computed"


# --- whole models --------------------------------------------------------------------------------------


def load_official(root: str | os.PathLike, prompt_embeds: str | os.PathLike | None = None) -> Components:
    """All components from an official-layout folder, fp32 on CPU (the engine moves and casts them)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    root = Path(root).expanduser()
    if why := layout_problem(root):
        raise WeightsMissing(why)
    unet = _from_pretrained(UNet2DConditionModel, root / "unet")
    controlnet = _from_pretrained(ControlNetModel, root / "controlnet")
    vae = load_vae(root / "vae")
    scheduler = load_scheduler(root)
    emb, src = empty_prompt_embeds(root, prompt_embeds)
    check_compatible(unet, controlnet, vae, emb, str(root))
    return Components(unet, controlnet, vae, scheduler, emb, source=str(root), prompt_source=src)


def random_components(size: str = "tiny", seed: int = 0) -> Components:
    """Random weights (``tiny``: CPU tests; ``full``: official sizes, for speed benchmarks)."""
    if size not in ("tiny", "full"):
        raise WeightsError(f"random weights come in 'tiny' or 'full', not {size!r}")
    torch.manual_seed(seed)
    full = size == "full"
    unet = C.build_unet(C.FULL_UNET_CONFIG if full else C.TINY_UNET_CONFIG)
    controlnet = C.wake_zero_convs_(C.build_controlnet(C.FULL_CONTROLNET_CONFIG if full else C.TINY_CONTROLNET_CONFIG), seed=seed)
    vae = TemporalTinyAutoencoder(None if full else C.TINY_VAE_CONFIG)
    dim = unet.config.cross_attention_dim
    emb = torch.randn(1, C.TEXT_LEN, dim, generator=torch.Generator().manual_seed(seed)) * 0.5
    for m in (unet, controlnet, vae):
        m.eval().requires_grad_(False)
    return Components(unet, controlnet, vae, C.build_scheduler(), emb, source=f"random:{size}", prompt_source="random")
