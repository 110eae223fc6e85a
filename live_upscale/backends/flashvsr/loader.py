"""Loading the official FlashVSR v1.1 file set into our modules.

Files (Hugging Face ``JunhaoZhuang/FlashVSR-v1.1``, the prompt from the code repository):

| part | file | layout |
|---|---|---|
| ``dit`` | ``diffusion_pytorch_model_streaming_dmd.safetensors`` | Wan2.1 keys (825 tensors for 1.3B) |
| ``lq_proj`` | ``LQ_proj_in.ckpt`` | ``conv1.*``, ``norm1.gamma``, ``conv2.*``, ``norm2.gamma``, ``linear_layers.0.*`` |
| ``decoder`` | ``TCDecoder.ckpt`` | ``decoder.N.*`` (66 tensors) |
| ``prompt`` | ``posi_prompt.pth`` | one tensor ``(1, 512, 4096)``: the fixed umT5 prompt embedding |

Every file is read without executing code (safetensors, or ``torch.load(weights_only=True)``).
Keys are matched after stripping wrapper prefixes (``model.diffusion_model.``, ``module.``,
``LQ_proj_in.``, ...); for the DiT and the LQ projection anything missing, unexpected or of the
wrong shape is one clear ``WeightsError``. ``TCDecoder.ckpt`` is loaded as tolerantly as the
official loader (``strict=False``): extra keys are noted in one log line, missing identity-
initialised "deepening" convolutions keep their identity (the official initialisation), and any
other missing tensor or a wrong shape is one clear error. The DiT may also come as the fp16
variant (``..._streaming_dmd.fp16.safetensors``) or sharded (``....safetensors.index.json`` +
shards). The model is built on the meta device and the tensors are assigned in the
compute dtype (the 5.7 GB fp32 DiT never sits in host memory twice).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import weights
from ...errors import WeightsError, WeightsMissing, one_line
from .config import FlashVSRConfig
from .model import FlashVSRModel

log = logging.getLogger(__name__)

REPO = "JunhaoZhuang/FlashVSR-v1.1"
MODEL_NAME = "FlashVSR-v1.1"


@dataclass(frozen=True)
class Part:
    key: str  # dit | lq_proj | decoder | prompt
    name: str  # registered name in the weights manager
    filename: str
    alternatives: tuple[str, ...] = ()  # other file names accepted inside a folder


PARTS: tuple[Part, ...] = (
    Part("dit", f"{MODEL_NAME}-dit", "diffusion_pytorch_model_streaming_dmd.safetensors"),
    Part("lq_proj", f"{MODEL_NAME}-lq-proj", "LQ_proj_in.ckpt", ("LQ_proj_in.safetensors",)),
    Part("decoder", f"{MODEL_NAME}-tcdecoder", "TCDecoder.ckpt", ("TCDecoder.safetensors",)),
    Part("prompt", f"{MODEL_NAME}-prompt", "posi_prompt.pth", ("posi_prompt.safetensors",)),
)

DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.", "dit.")
LQ_PREFIXES = ("module.", "dit.LQ_proj_in.", "LQ_proj_in.", "lq_proj_in.", "lq_proj.")
DEC_PREFIXES = ("module.", "taehv.", "tc_decoder.", "TCDecoder.")


# --- locating the files -----------------------------------------------------------------------------


def part_names() -> list[str]:
    return [p.name for p in PARTS]


def missing_registered() -> list[str]:
    """Registered parts not in the cache yet."""
    return [p.name for p in PARTS if not weights.is_cached(p.name)]


def fetch_hint(names: list[str]) -> str:
    return " && ".join(f"live-upscale models fetch {n}" for n in names)


def _variants(filename: str) -> tuple[str, ...]:
    """``x.safetensors`` -> itself, its sharded index, the fp16 variant and its index."""
    if not filename.endswith(".safetensors"):
        return (filename,)
    fp16 = filename[: -len(".safetensors")] + ".fp16.safetensors"
    return (filename, filename + ".index.json", fp16, fp16 + ".index.json")


def find_in_folder(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The official files inside ``folder`` (plus accepted alternative names); the missing file names."""
    found, missing = {}, []
    for p in PARTS:
        for fn in (*_variants(p.filename), *p.alternatives):
            if (folder / fn).is_file():
                found[p.key] = folder / fn
                break
        else:
            missing.append(p.filename)
    return found, missing


def resolve_parts(folder: str | Path | None = None, download: bool = True) -> dict[str, Path]:
    """Paths of the four parts: from ``folder`` if given, else the weights cache (downloading when allowed)."""
    if folder is not None:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise WeightsMissing(f"FlashVSR weights folder not found: {folder}")
        found, missing = find_in_folder(folder)
        if missing:
            raise WeightsMissing(
                f"{folder} lacks {', '.join(missing)} (the FlashVSR v1.1 files from hf://{REPO} "
                f"and posi_prompt.pth from the FlashVSR code repository)"
            )
        return found
    return {p.key: weights.resolve(p.name, download=download) for p in PARTS}


# --- reading ----------------------------------------------------------------------------------------


def read_tensors(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> dict:
    """A weights file -> ``{key: tensor}`` (cast to ``dtype`` tensor by tensor), without executing code."""
    p = Path(path)
    if p.name.endswith(".index.json"):  # sharded: every shard the index names, merged
        try:
            shards = sorted(set(json.loads(p.read_text())["weight_map"].values()))
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"{p}: unreadable shard index: {one_line(e)}") from None
        out: dict = {}
        for name in shards:
            out.update(read_tensors(p.parent / name, device, dtype))
        return out
    if p.suffix.lower() == ".safetensors":
        if not p.is_file():
            raise WeightsMissing(f"weights file not found: {p}")
        try:
            from safetensors import safe_open

            out = {}
            with safe_open(str(p), framework="pt", device=str(device)) as f:
                for k in f.keys():
                    t = f.get_tensor(k)
                    out[k] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
            return out
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"{p}: cannot read safetensors file (truncated or corrupt?): {one_line(e)}") from None
    sd = weights.load_state_dict(p, map_location=device)
    for wrapper in ("state_dict", "model", "params", "module"):
        if wrapper in sd and isinstance(sd[wrapper], dict) and len(sd) <= 3:
            sd = sd[wrapper]
            break
    return {k: (v.to(dtype) if dtype is not None and torch.is_tensor(v) and v.is_floating_point() else v) for k, v in sd.items()}


def read_prompt(path: str | Path, cfg: FlashVSRConfig) -> torch.Tensor:
    """``posi_prompt.pth`` (a bare tensor) or a one-tensor dict / safetensors -> ``(1, L, text_dim)`` float32."""
    p = Path(path)
    if not p.is_file():
        raise WeightsMissing(f"prompt embedding not found: {p}")
    if p.suffix.lower() == ".safetensors":
        obj = read_tensors(p)
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise WeightsError(f"{p}: refused or unreadable (expected a plain tensor): {one_line(e)}") from None
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
        pick = next((tensors[k] for k in ("context", "prompt", "positive_conditioning", "posi_prompt") if k in tensors), None)
        if pick is None and len(tensors) == 1:
            pick = next(iter(tensors.values()))
        obj = pick
    if not torch.is_tensor(obj):
        raise WeightsError(f"{p}: expected the prompt embedding tensor, found {type(obj).__name__}")
    t = obj.float()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[-1] != cfg.text_dim:
        raise WeightsError(f"{p}: prompt embedding has shape {tuple(obj.shape)}; expected (1, L, {cfg.text_dim})")
    return t[:1]


# --- key mapping ------------------------------------------------------------------------------------


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for pre in prefixes:
            if key.startswith(pre):
                key = key[len(pre) :]
                changed = True
    return key


def map_dit_keys(sd: dict) -> tuple[dict, dict]:
    """Official/wrapped DiT keys -> ours (identical names). LQ projection keys bundled in the same
    file (``LQ_proj_in.*``) are returned separately."""
    dit, lq = {}, {}
    for k, v in sd.items():
        if "LQ_proj_in." in k:
            lq[k[k.index("LQ_proj_in.") + len("LQ_proj_in.") :]] = v
            continue
        dit[_strip(k, DIT_PREFIXES)] = v
    return dit, lq


def map_lq_keys(sd: dict) -> dict:
    return {_strip(k, LQ_PREFIXES): v for k, v in sd.items()}


def map_decoder_keys(sd: dict, model_sd: dict | None = None) -> dict:
    """TC decoder keys; a TGrow conv stored with more output channels than ours keeps its last ones
    (what the official loader does for TAEHV checkpoints)."""
    out = {}
    for k, v in sd.items():
        k = _strip(k, DEC_PREFIXES)
        if not k.startswith("decoder."):
            k = "decoder." + k if k.split(".")[0].isdigit() else k
        out[k] = v
    if model_sd is not None:
        for k, v in list(out.items()):
            ref = model_sd.get(k)
            if ref is not None and v.dim() == 4 and v.shape[1:] == ref.shape[1:] and v.shape[0] > ref.shape[0] and v.shape[2:] == (1, 1):
                out[k] = v[-ref.shape[0] :]
    return out


def check_and_assign(module: torch.nn.Module, sd: dict, what: str, source: str) -> None:
    """Strict load with one readable line on any mismatch (missing, unexpected, wrong shape)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(expected[k].shape)}" for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {'; '.join(wrong[:2])})")
        raise WeightsError(f"{source}: not a FlashVSR v1.1 {what} checkpoint for this config: {'; '.join(parts)}")
    module.load_state_dict(sd, strict=True, assign=True)


def assign_decoder(module: torch.nn.Module, sd: dict, source: str) -> None:
    """The TC decoder, as tolerant as the official ``load_state_dict(strict=False)``: extra keys
    are logged once; missing identity "deepening" convs keep their identity initialisation; any
    other missing tensor, or a tensor of another shape, is one clear error."""
    from .tcdecoder import IdentityConv2d

    expected = module.state_dict()
    identity = {f"{n}.weight" for n, m in module.named_modules() if isinstance(m, IdentityConv2d)}
    missing = [k for k in expected if k not in sd]
    essential = [k for k in missing if k not in identity]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(expected[k].shape)}" for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if essential or wrong:
        parts = [f"{len(essential)} missing (e.g. {', '.join(essential[:3])})"] if essential else []
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {'; '.join(wrong[:2])})")
        raise WeightsError(f"{source}: not a FlashVSR v1.1 TC decoder checkpoint for this config: {'; '.join(parts)}")
    if unexpected or missing:
        log.info(
            "flashvsr: %s: %d extra key(s) ignored%s; %d identity conv(s) not in the file keep their identity",
            source, len(unexpected), f" (e.g. {', '.join(unexpected[:3])})" if unexpected else "", len(missing),
        )
    sd = {k: v for k, v in sd.items() if k in expected}
    ref = next(iter(sd.values()))
    for k in missing:  # 3x3 identity (dirac) weights, as IdentityConv2d initialises them
        w = torch.zeros(expected[k].shape, dtype=ref.dtype, device=ref.device)
        torch.nn.init.dirac_(w)
        sd[k] = w
    module.load_state_dict(sd, strict=True, assign=True)


def _materialize_buffers(module: torch.nn.Module, device) -> None:
    for m in module.modules():
        for name, buf in list(m._buffers.items()):
            if buf is not None and buf.is_meta:
                m._buffers[name] = torch.zeros(buf.shape, dtype=buf.dtype, device=device)


def load_official(
    paths: dict[str, Path],
    cfg: FlashVSRConfig,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FlashVSRModel:
    """Build a :class:`FlashVSRModel` from the official files and prepare it (prompt K/V, fixed t)."""
    device = torch.device(device)
    with torch.device("meta"):
        model = FlashVSRModel(cfg)
    dit_sd, lq_bundled = map_dit_keys(read_tensors(paths["dit"], device, dtype))
    check_and_assign(model.dit, dit_sd, "DiT", str(paths["dit"]))
    del dit_sd
    lq_path = paths.get("lq_proj")
    lq_sd = map_lq_keys(read_tensors(lq_path, device, dtype)) if lq_path else lq_bundled
    check_and_assign(model.lq_proj, lq_sd, "LQ projection", str(lq_path or paths["dit"]))
    dec_sd = map_decoder_keys(read_tensors(paths["decoder"], device, dtype), model.decoder.state_dict())
    assign_decoder(model.decoder, dec_sd, str(paths["decoder"]))
    prompt = read_prompt(paths["prompt"], cfg)
    _materialize_buffers(model, device)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return model.prepare(prompt)
