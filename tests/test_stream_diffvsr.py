"""stream_diffvsr: causal 4-step diffusion VSR streamed frame by frame (tiny random configs, CPU).

Checkpoints are written by the tests in the official Hugging Face layout (unet/ controlnet/ vae/
scheduler/ text_encoder/ tokenizer/); the VAE state dict is built here from the official key rules,
independently of the backend's module, so a naming drift fails the loader test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from live_upscale import UpscaleNode, WeightsError, WeightsMissing, weights
from live_upscale.backends import EngineConfig, choose
from live_upscale.backends.stream_diffvsr import CPU_ENV, StreamDiffVSRBackend
from live_upscale.backends.stream_diffvsr.engine import StreamDiffVSREngine
from live_upscale.backends.stream_diffvsr.flow import LKFlow, flow_warp, make_flow, resize_flow
from live_upscale.backends.stream_diffvsr.tpm_vae import OFFICIAL_VAE_CONFIG, TemporalTinyAutoencoder

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_diffusers = pytest.mark.skipif(not HAS_DIFFUSERS, reason="needs diffusers (the stream-diffvsr extra)")
needs_transformers = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="needs transformers (the stream-diffvsr extra)")

TINY_VAE = {
    "encoder_block_out_channels": [8, 8, 8],
    "decoder_block_out_channels": [8, 8, 8],
    "num_encoder_blocks": [1, 2, 2],
    "num_decoder_blocks": [2, 2, 1],
    "latent_channels": 4,
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: thread start-up and contention cost more than they save on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def smooth(h, w, seed=0, n=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, max(2, h // 4), max(2, w // 4), generator=g)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def tiny_engine(scale=4.0, **options):
    options.setdefault("flow", "lk")
    return StreamDiffVSRBackend.load(EngineConfig(CPU, scale=scale, model="random:tiny", options=options))


# --- the official layout, written by the tests -----------------------------------------------------


def official_vae_state_dict(cfg: dict, seed: int = 0) -> dict:
    """The TemporalAutoencoderTiny key layout, spelled out from the official module structure."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name, cout, cin, k=3, bias=True, dims=2):
        shape = (cout, cin, k, k) if dims == 2 else (cout, cin, k)
        sd[f"{name}.weight"] = torch.randn(shape, generator=g) * (1.0 / (cin * k**dims) ** 0.5)
        if bias:
            sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01

    def block(p, c):
        for j in (0, 2, 4):
            conv(f"{p}.conv.{j}", c, c)
        sd[f"{p}.alpha"] = torch.tensor(0.5)
        conv(f"{p}.temporal_processor.0", c, c, dims=1)
        conv(f"{p}.temporal_processor.2", c, c, dims=1)

    ec, eb = cfg["encoder_block_out_channels"], cfg["num_encoder_blocks"]
    i = 0
    for s, (c, nb) in enumerate(zip(ec, eb)):
        if s == 0:
            conv(f"encoder.layers.{i}", c, 3)
        else:
            conv(f"encoder.layers.{i}", c, ec[s - 1], bias=False)
        i += 1
        for _ in range(nb):
            block(f"encoder.layers.{i}", c)
            i += 1
    conv(f"encoder.layers.{i}", cfg["latent_channels"], ec[-1])
    dc, db = cfg["decoder_block_out_channels"], cfg["num_decoder_blocks"]
    conv("decoder.layers.0", dc[0], cfg["latent_channels"])
    i = 2  # decoder.layers.1 is the ReLU
    for s, (c, nb) in enumerate(zip(dc, db)):
        last = s == len(dc) - 1
        for _ in range(nb):
            block(f"decoder.layers.{i}", c)
            i += 1
        if not last:
            i += 1  # Upsample
        conv(f"decoder.layers.{i}", 3 if last else c, c, bias=last)
        i += 1
    return sd


def write_tokenizer(d: Path) -> None:
    d.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3, "b</w>": 4, "b": 5}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    (d / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    ))
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
         "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    ))


def write_official(root: Path, text_encoder: bool = True) -> Path:
    from diffusers import ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file

    from live_upscale.backends.stream_diffvsr import components as C

    torch.manual_seed(0)
    UNet2DConditionModel(**C.TINY_UNET_CONFIG).save_pretrained(root / "unet")
    C.wake_zero_convs_(ControlNetModel(**C.TINY_CONTROLNET_CONFIG)).save_pretrained(root / "controlnet")
    (root / "vae").mkdir(parents=True)
    (root / "vae" / "config.json").write_text(json.dumps({
        "_class_name": "TemporalAutoencoderTiny", "in_channels": 3, "out_channels": 3, "act_fn": "relu",
        "upsample_fn": "nearest", "upsampling_scaling_factor": 2, "latent_magnitude": 3, "latent_shift": 0.5,
        "scaling_factor": 1.0, "force_upcast": False, "block_out_channels": TINY_VAE["decoder_block_out_channels"],
        **TINY_VAE,
    }))
    save_file(official_vae_state_dict(TINY_VAE), str(root / "vae" / "diffusion_pytorch_model.safetensors"))
    DDIMScheduler(**C.SCHEDULER_CONFIG).save_pretrained(root / "scheduler")
    if text_encoder:
        from transformers import CLIPTextConfig, CLIPTextModel

        cfg = CLIPTextConfig(vocab_size=6, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                             pad_token_id=1)
        CLIPTextModel(cfg).save_pretrained(root / "text_encoder")
        write_tokenizer(root / "tokenizer")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StreamDiffVSRPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    return root


@pytest.fixture
def official(tmp_path) -> Path:
    if not (HAS_DIFFUSERS and HAS_TRANSFORMERS):
        pytest.skip("needs diffusers and transformers (the stream-diffvsr extra)")
    return write_official(tmp_path / "Stream-DiffVSR")


# --- import, probe, registration -----------------------------------------------------------------------


def test_import_never_needs_diffusers():
    code = (
        "import sys; sys.modules['diffusers'] = None; sys.modules['transformers'] = None\n"
        "import live_upscale, torch\n"
        "from live_upscale.backends import get\n"
        "p = get('stream_diffvsr').probe(torch.device('cpu'), 'random:tiny')\n"
        "assert not p and 'diffusers' in p.reason and 'stream-diffvsr' in p.reason, p\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


@needs_diffusers
def test_probe_reasons(monkeypatch, tmp_path):
    monkeypatch.delenv(CPU_ENV, raising=False)
    p = StreamDiffVSRBackend.probe(CPU, None)
    assert not p and "CUDA" in p.reason and CPU_ENV in p.reason
    assert StreamDiffVSRBackend.probe(CPU, "random:tiny")  # tiny random weights: CPU is fine
    monkeypatch.setenv(CPU_ENV, "1")
    p = StreamDiffVSRBackend.probe(CPU, None)
    assert not p and p.downloadable and "live-upscale models fetch stream-diffvsr" in p.reason
    (tmp_path / "junk").mkdir()
    p = StreamDiffVSRBackend.probe(CPU, str(tmp_path / "junk"))
    assert not p and "not a Stream-DiffVSR folder" in p.reason and not p.downloadable
    p = StreamDiffVSRBackend.probe(CPU, "realesr-animevideov3")
    assert not p and "not a Stream-DiffVSR checkpoint" in p.reason
    monkeypatch.setitem(sys.modules, "diffusers", None)
    p = StreamDiffVSRBackend.probe(CPU, "random:tiny")
    assert not p and "diffusers" in p.reason and "pip install" in p.reason


def test_registered_and_auto_only_when_its_model_is_named(monkeypatch):
    info = weights.lookup("stream-diffvsr")
    assert info.hf_repo == "Jamichsu/Stream-DiffVSR" and info.snapshot and info.backend == "stream_diffvsr"
    assert info.source == "hf://Jamichsu/Stream-DiffVSR"
    monkeypatch.setenv(CPU_ENV, "1")
    assert StreamDiffVSRBackend.priority < 0  # below classic: 'auto' never picks it on its own
    assert choose("auto", CPU, None)[0].id != "stream_diffvsr"
    if HAS_DIFFUSERS:  # a Stream-DiffVSR model named: only backends that load it are considered
        assert choose("auto", CPU, "random:tiny")[0].id == "stream_diffvsr"


# --- the streaming engine ------------------------------------------------------------------------------


@needs_diffusers
@pytest.mark.parametrize("scale,h,w", [(4.0, 12, 20), (4.0, 13, 21), (2.0, 16, 24), (3.0, 13, 9)])
def test_shapes_and_range(scale, h, w):
    eng = tiny_engine(scale)
    assert eng.caps.temporal and eng.caps.native_scale == 4.0
    y = eng.process(smooth(h, w, n=2))
    assert y.shape == (2, 3, round(h * scale), round(w * scale)) and y.dtype == torch.float32
    if scale == 4.0:  # native size, as upstream: the model saw exactly the input (no padding)
        assert eng.prev_hr.shape[-2:] == (4 * h, 4 * w)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0 and torch.isfinite(y).all()
    if scale == 2.0:
        assert "input resized by 0.5 first" in eng.caps.notes and "0.5" in eng.describe()


@needs_diffusers
def test_prescale_output_route():
    eng = tiny_engine(2.0, prescale="output")
    assert "output resized" in eng.caps.notes
    assert eng.process(smooth(8, 12)).shape == (1, 3, 16, 24)
    assert eng.prev_hr.shape[-2:] == (32, 48)  # the model ran at full input size (4x), native: no padding
    padded = tiny_engine(2.0, prescale="output", pad_to=8)  # the former default: width 12 -> 16
    assert padded.process(smooth(8, 12)).shape == (1, 3, 16, 24) and padded.prev_hr.shape[-2:] == (32, 64)


@needs_diffusers
def test_one_frame_in_one_out_controlnet_from_second_frame():
    eng = tiny_engine()
    calls = []
    eng.controlnet.register_forward_hook(lambda m, i, o: calls.append(1))
    x = smooth(16, 16, n=3, seed=1)
    assert eng.process(x[:1]).shape[0] == 1 and len(calls) == 0 and eng.prev_hr is not None
    assert eng.process(x[1:2]).shape[0] == 1 and len(calls) == 4  # one per DDIM step
    eng.set_options(controlnet_scale=0.0)
    eng.process(x[2:3])
    assert len(calls) == 4  # guidance switched off at runtime
    assert eng.frames == 3


@needs_diffusers
def test_output_depends_on_the_previous_frame():
    eng = tiny_engine()
    a, b, c = smooth(16, 16, seed=1), smooth(16, 16, seed=2), smooth(16, 16, seed=3)
    eng.process(a)
    after_a = eng.process(c)
    eng.reset()
    eng.process(b)
    after_b = eng.process(c)
    assert (after_a - after_b).abs().max() > 1e-4  # same noise (seeded), different history
    eng.reset()
    eng.process(a)
    assert torch.equal(eng.process(c), after_a)  # and the history is all that differs


@needs_diffusers
def test_reset_drops_state_and_replays_exactly():
    eng = tiny_engine(seed=5)
    x = smooth(12, 16, n=3, seed=4)
    first = eng.process(x)
    assert eng.state_bytes() > 0
    eng.reset()
    assert eng.prev_hr is None and eng.prev_lr is None and eng.state_bytes() == 0 and eng.frames == 0
    assert torch.equal(eng.process(x), first)


@needs_diffusers
def test_deterministic_with_a_seed():
    x = smooth(12, 12, n=2, seed=6)
    y1 = tiny_engine(seed=3).process(x)
    y2 = tiny_engine(seed=3).process(x)
    y3 = tiny_engine(seed=4).process(x)
    assert torch.equal(y1, y2) and (y1 - y3).abs().max() > 1e-4
    eng = tiny_engine(seed=4)
    eng.set_options(seed=3)
    assert torch.equal(eng.process(x), y1)


@needs_diffusers
def test_batch_equals_frame_by_frame_and_memory_is_constant():
    x = smooth(12, 12, n=4, seed=7)
    a = tiny_engine().process(x)
    eng = tiny_engine()
    b = torch.cat([eng.process(x[i : i + 1]) for i in range(4)])
    assert torch.equal(a, b)
    held = eng.state_bytes()
    for i in range(4):
        eng.process(x[i : i + 1])
    assert eng.state_bytes() == held == (3 * 48 * 48 + 3 * 12 * 12) * 4  # prev HR + prev LR (native size)


@needs_diffusers
def test_engine_resets_itself_on_a_size_change():
    eng = tiny_engine()
    eng.process(smooth(16, 16))
    y = eng.process(smooth(24, 16))
    assert y.shape == (1, 3, 96, 64) and eng.frames == 1


@needs_diffusers
def test_node_resets_on_size_change_and_scene_cut():
    node = UpscaleNode(backend="stream_diffvsr", model="random:tiny", scale=4.0, device="cpu")
    eng = node.load()
    resets = []
    orig = eng.reset
    eng.reset = lambda: (resets.append(1), orig())
    x = smooth(16, 16, seed=1)
    node.process(x)
    node.process(x * 0.98 + 0.01)
    assert eng.frames == 2 and not resets
    y = node.process(smooth(12, 20, seed=1))
    assert y.shape == (1, 3, 48, 80) and resets and eng.frames == 1 and node.resets == 1
    node.process(1.0 - smooth(12, 20, seed=1))  # hard cut: the node resets the temporal engine
    assert len(resets) == 2 and eng.frames == 1
    out = node.cook((smooth(12, 20, seed=2)[0].permute(1, 2, 0).numpy() * 255).astype("uint8"))
    assert out.shape == (48, 80, 3)
    node.close()


# --- parts -------------------------------------------------------------------------------------------


def test_tpm_vae_matches_the_official_key_layout():
    ref = official_vae_state_dict(OFFICIAL_VAE_CONFIG)
    ours = TemporalTinyAutoencoder(OFFICIAL_VAE_CONFIG).state_dict()
    assert set(ours) == set(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)
    assert sum(".temporal_processor.0.weight" in k and k.startswith("decoder") for k in ref) == 7
    vae = TemporalTinyAutoencoder(OFFICIAL_VAE_CONFIG)
    vae.load_state_dict(ref, strict=True)
    assert vae.downscale == 4 and len(vae.encoder_blocks()) == len(vae.decoder_blocks()) == 7


def test_tpm_decoder_fuses_history_features():
    torch.manual_seed(0)
    vae = TemporalTinyAutoencoder(TINY_VAE).eval()
    vae.load_state_dict(official_vae_state_dict(TINY_VAE, seed=1))
    z = torch.randn(1, 4, 8, 8)
    warped = torch.rand(1, 3, 32, 32) * 2 - 1
    feats = vae.temporal_features(warped)
    assert [f.shape[-1] for f in feats] == [8, 8, 16, 16, 32]  # deep to shallow, as the decoder runs
    plain = vae.decode(z)
    fused = vae.decode(z, feats)
    assert plain.shape == fused.shape == (1, 3, 32, 32)
    assert (plain - fused).abs().max() > 1e-5
    for b in vae.decoder_blocks():  # a silent temporal processor adds nothing
        for p in b.temporal_processor.parameters():
            torch.nn.init.zeros_(p)
    assert torch.allclose(vae.decode(z, feats), plain, atol=1e-6)
    # quirk kept: the features path takes the [-1, 1] frame without the encoder's input remapping
    assert torch.allclose(vae.encoder_features(warped)[0], vae.encoder.layers[1](vae.encoder.layers[0](warped)))


@needs_diffusers
def test_ddim_plan_matches_diffusers_step():
    from live_upscale.backends.stream_diffvsr.components import SCHEDULER_CONFIG, DDIMPlan, build_scheduler

    plan = DDIMPlan(build_scheduler(), 4)
    assert plan.timesteps == [999, 749, 499, 249] and plan.prediction == "v_prediction"
    sched = build_scheduler({**SCHEDULER_CONFIG, "clip_sample": True})
    for s in (build_scheduler(), sched):
        plan = DDIMPlan(s, 4)
        s.set_timesteps(4)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 8, 8, generator=g)
        ours = x.clone()
        for st, t in zip(plan.steps, s.timesteps):
            v = torch.randn(1, 4, 8, 8, generator=g)
            x = s.step(v, t, x).prev_sample
            ours = plan.step(v, st, ours)
            assert torch.allclose(ours, x, atol=1e-5)


def test_flow_warp_and_rescale():
    img = smooth(32, 64, seed=2)
    shifted = torch.roll(img, shifts=3, dims=-1)  # shifted(p) = img(p - 3), so img(p) = shifted(p + 3)
    flow = torch.zeros(1, 2, 32, 64)
    flow[:, 0] = 3.0
    back = flow_warp(shifted, flow)
    # the official convention (grid / (size - 1), align_corners=False) is off by < 0.5 px across the frame
    assert (back - img)[..., 4:-4, 8:-8].abs().mean() < 0.05
    assert (flow_warp(shifted, -flow) - img)[..., 4:-4, 8:-8].abs().mean() > 0.15  # the wrong way round
    assert float(flow_warp(img, torch.full((1, 2, 32, 64), 100.0)).abs().max()) == 0.0  # zeros outside
    up = resize_flow(torch.ones(1, 2, 8, 16), (32, 64))
    assert up.shape == (1, 2, 32, 64) and torch.allclose(up, torch.full_like(up, 4.0))


def test_lk_flow_at_low_resolution_and_estimator_choice():
    prev = smooth(32, 32, seed=3)
    cur = torch.roll(prev, shifts=(1, 2), dims=(-2, -1))  # content moved +2 x, +1 y
    f = LKFlow(1.0)(cur, prev, (32, 32))
    inner = f[..., 8:-8, 8:-8].mean(dim=(-1, -2))[0]
    assert abs(float(inner[0]) + 2) < 0.6 and abs(float(inner[1]) + 1) < 0.6
    assert LKFlow(0.5)(cur, prev, (32, 32)).shape == (1, 2, 32, 32)  # computed at half LR, returned on the grid asked
    hr = LKFlow(1.0)(cur, prev, (128, 128))  # on the HR grid, in HR pixels
    assert hr.shape == (1, 2, 128, 128) and abs(float(hr[0, 0, 32:-32, 32:-32].mean()) + 8) < 2.4
    auto = make_flow("auto", CPU)
    assert auto.name == "lk" and auto.at == "lr"  # LK: on the LR grid by default
    assert make_flow("lk", CPU, at="hr").describe() == "lk at HR"
    with pytest.raises(WeightsMissing, match="RAFT-large weights not found"):
        make_flow("raft", CPU, raft_weights="/nonexistent/raft.pth")
    with pytest.raises(ValueError):
        make_flow("farneback", CPU)


# --- loading the official layout ---------------------------------------------------------------------


def test_loader_reads_the_official_layout(official, monkeypatch):
    from safetensors.torch import load_file

    from live_upscale.backends.stream_diffvsr import loader

    eng = StreamDiffVSRBackend.load(EngineConfig(CPU, scale=4.0, model=str(official), options={"allow_cpu": True}))
    assert eng.prompt_source == "computed" and eng.emb.shape == (1, 77, 16)
    vae_sd = load_file(str(official / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(eng.vae.state_dict()[k], v) for k, v in vae_sd.items())
    assert eng.plan.timesteps == [999, 749, 499, 249]
    from diffusers import UNet2DConditionModel

    ref = UNet2DConditionModel.from_pretrained(str(official / "unet"))
    assert torch.equal(eng.unet.conv_in.weight, ref.conv_in.weight)
    y = eng.process(smooth(8, 12, n=2))
    assert y.shape == (2, 3, 32, 48)
    emb = eng.emb.clone()
    # the embedding is cached: the second load never touches CLIP
    import transformers

    def boom(*a, **k):
        raise AssertionError("CLIP loaded again")

    monkeypatch.setattr(transformers.CLIPTextModel, "from_pretrained", boom)
    eng2 = StreamDiffVSRBackend.load(EngineConfig(CPU, scale=4.0, model=str(official / "model_index.json"),
                                                  options={"allow_cpu": True}))
    assert eng2.prompt_source == "cache" and torch.equal(eng2.emb, emb)
    assert loader.prompt_cache_path(official).is_file()


@needs_diffusers
def test_loader_with_a_precomputed_embedding_and_no_transformers(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    root = write_official(tmp_path / "m", text_encoder=False)
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setenv(CPU_ENV, "1")
    p = StreamDiffVSRBackend.probe(CPU, str(root))
    assert not p and "transformers" in p.reason and "prompt_embeds.safetensors" in p.reason
    emb = torch.randn(1, 77, 16)
    save_file({"prompt_embeds": emb}, str(root / "prompt_embeds.safetensors"))
    assert StreamDiffVSRBackend.probe(CPU, str(root))
    eng = StreamDiffVSRBackend.load(EngineConfig(CPU, scale=4.0, model=str(root)))
    assert eng.prompt_source.startswith("file") and torch.equal(eng.emb, emb)
    other = tmp_path / "emb.safetensors"
    save_file({"prompt_embeds": emb * 2}, str(other))
    eng = StreamDiffVSRBackend.load(EngineConfig(CPU, scale=4.0, model=str(root), options={"prompt_embeds": str(other)}))
    assert torch.equal(eng.emb, emb * 2)


@needs_diffusers
def test_loader_refuses_wrong_checkpoints(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    monkeypatch.setenv(CPU_ENV, "1")
    root = write_official(tmp_path / "m", text_encoder=False)
    save_file({"prompt_embeds": torch.zeros(1, 77, 16)}, str(root / "prompt_embeds.safetensors"))
    f = root / "vae" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd.pop("decoder.layers.2.temporal_processor.0.weight")
    save_file(sd, str(f))
    with pytest.raises(WeightsError, match="missing.*decoder.layers.2.temporal_processor.0.weight"):
        StreamDiffVSRBackend.load(EngineConfig(CPU, scale=4.0, model=str(root)))
    save_file(official_vae_state_dict(TINY_VAE), str(f))
    save_file({"prompt_embeds": torch.zeros(1, 77, 5)}, str(root / "prompt_embeds.safetensors"))
    with pytest.raises(WeightsError, match="not a Stream-DiffVSR checkpoint.*cross_attention_dim"):
        StreamDiffVSRBackend.load(EngineConfig(CPU, scale=4.0, model=str(root)))
    (root / "controlnet" / "diffusion_pytorch_model.safetensors").unlink()
    p = StreamDiffVSRBackend.probe(CPU, str(root))
    assert not p and "no weights in controlnet/" in p.reason


@needs_diffusers
def test_registered_snapshot_fetch_and_load(tmp_path, monkeypatch):
    import huggingface_hub
    import shutil

    from safetensors.torch import save_file

    src = write_official(tmp_path / "src", text_encoder=False)
    save_file({"prompt_embeds": torch.randn(1, 77, 16)}, str(src / "prompt_embeds.safetensors"))
    monkeypatch.delenv("LIVE_UPSCALE_OFFLINE")
    monkeypatch.setenv(CPU_ENV, "1")
    seen = {}

    def fake_snapshot(repo_id, revision=None, local_dir=None, allow_patterns=None, **kw):
        seen["repo"] = repo_id
        shutil.copytree(src, local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    assert not weights.is_cached("stream-diffvsr")
    p = weights.fetch("stream-diffvsr")
    assert seen["repo"] == "Jamichsu/Stream-DiffVSR" and p.name == "model_index.json" and weights.is_cached("stream-diffvsr")
    assert not [q for q in p.parent.parent.iterdir() if q.name.endswith(".part")]
    assert StreamDiffVSRBackend.probe(CPU, None)
    eng = StreamDiffVSRBackend.load(EngineConfig(CPU, scale=4.0))  # model=None: the registered name
    assert eng.source == str(p.parent) and eng.process(smooth(8, 8)).shape == (1, 3, 32, 32)

    def broken(repo_id, revision=None, local_dir=None, **kw):
        (Path(local_dir) / "unet").mkdir(parents=True)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    with pytest.raises(WeightsError, match="no model_index.json"):
        weights.fetch("stream-diffvsr", force=True)
    assert weights.is_cached("stream-diffvsr")  # the good copy stays
    assert not [q for q in p.parent.parent.iterdir() if q.name.endswith(".part")]


# --- benchmark script ----------------------------------------------------------------------------------


def _bench_module():
    spec = importlib.util.spec_from_file_location("stream_diffvsr_speed", REPO / "benchmarks" / "stream_diffvsr_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_skips_cleanly_without_cuda(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _bench_module().main([]) == 0
    assert "skipped" in capsys.readouterr().out


@needs_diffusers
def test_benchmark_smoke_on_cpu_with_tiny_weights(capsys):
    assert _bench_module().main(["--device", "cpu", "--weights", "tiny", "--size", "16", "--frames", "3",
                                 "--warmup", "1", "--flow", "lk", "--sequence", "2"]) == 0
    out = capsys.readouterr().out
    assert "ms/frame" in out and out.strip().splitlines()[-1].startswith("|")
    if importlib.util.find_spec("torchvision") is not None:
        assert "upstream whole-seq" in out


@needs_diffusers
def test_history_is_the_raw_decoder_output_in_fp32():
    """Regression: the output used to be made by in-place ops on a view of the stored history, so
    in fp32 the next frame warped the clamped [0, 1] frame instead of the raw decoder output."""
    eng = tiny_engine()  # CPU: fp32
    raw = []
    decode = eng.vae.decode
    eng.vae.decode = lambda z, feats=None: raw.append(decode(z, feats)) or raw[-1].clone()
    x = smooth(16, 16, n=2, seed=3)
    for i in range(2):
        y = eng.process(x[i : i + 1])
        assert torch.equal(eng.prev_hr, raw[-1])  # history untouched by the output conversion
        assert torch.equal(y, (raw[-1] * 0.5 + 0.5).clamp(0, 1))
    assert float(raw[-1].abs().max()) > 0  # a real decoder output was recorded


@needs_diffusers
def test_fp16_variant_and_sharded_weights_load_as_diffusers_loads_them(tmp_path, monkeypatch):
    """UNet as diffusers' fp16 variant, ControlNet and VAE sharded with an index: same model."""
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    from live_upscale.backends.stream_diffvsr import loader

    root = write_official(tmp_path / "m", text_encoder=False)
    save_file({"prompt_embeds": torch.randn(1, 77, 16)}, str(root / loader.PROMPT_FILE))
    plain = loader.load_official(root)
    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"))
    for f in (root / "unet").glob("diffusion_pytorch_model*"):
        f.unlink()
    unet.half().save_pretrained(root / "unet", variant="fp16")
    assert (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    cn = ControlNetModel.from_pretrained(str(root / "controlnet"))
    for f in (root / "controlnet").glob("diffusion_pytorch_model*"):
        f.unlink()
    cn.save_pretrained(root / "controlnet", max_shard_size="20KB")
    assert (root / "controlnet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    vae_file = root / "vae" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(vae_file))
    vae_file.unlink()
    keys = sorted(sd)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(root / "vae" / name))
        weight_map.update({k: name for k in part})
    (root / "vae" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert loader.layout_problem(root) is None
    got = loader.load_official(root)
    for part in ("controlnet", "vae"):
        a, b = getattr(plain, part).state_dict(), getattr(got, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    a, b = plain.unet.state_dict(), got.unet.state_dict()
    assert all(torch.equal(a[k].half().float(), b[k]) and b[k].dtype == torch.float32 for k in a)  # fp16 -> fp32
    (root / "vae" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    assert "missing" in loader.layout_problem(root)


@needs_diffusers
def test_scheduler_is_loaded_exactly_as_diffusers_from_pretrained(tmp_path, caplog):
    """A scheduler file without ``timestep_spacing`` gets diffusers' default ('leading'), not ours."""
    from diffusers import DDIMScheduler

    from live_upscale.backends.stream_diffvsr import components as C
    from live_upscale.backends.stream_diffvsr import loader

    cfg = {k: v for k, v in C.SCHEDULER_CONFIG.items() if k != "timestep_spacing"}
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler", **cfg}))
    ours = loader.load_scheduler(tmp_path)
    ref = DDIMScheduler.from_pretrained(str(tmp_path), subfolder="scheduler")
    assert dict(ours.config) == dict(ref.config) and ours.config.timestep_spacing == "leading"
    ref.set_timesteps(4)
    comps = loader.random_components("tiny")
    comps.scheduler = ours
    with caplog.at_level("INFO", logger="live_upscale.backends.stream_diffvsr.engine"):
        eng = StreamDiffVSREngine(EngineConfig(CPU, scale=4.0, options={}), comps, make_flow("none", CPU))
    assert eng.plan.timesteps == ref.timesteps.tolist() == [751, 501, 251, 1]
    assert any("[751, 501, 251, 1]" in r.getMessage() and "leading" in r.getMessage() for r in caplog.records)


@needs_diffusers
def test_given_noise_and_flow_replace_the_generator_and_the_estimator():
    x = smooth(8, 12, n=3, seed=2)
    seeded = tiny_engine(seed=7)
    y_seeded = seeded.process(x)
    g = torch.Generator().manual_seed(7)
    noise = torch.cat([torch.randn(1, 4, 8, 12, generator=g) for _ in range(3)])  # upstream's draws, frame order
    flow = torch.randn(2, 2, 32, 48, generator=g)
    eng = tiny_engine(seed=123)
    eng.set_noise(noise)
    seen = []
    eng.trace = lambda name, t: seen.append((name, t.clone()))
    assert torch.equal(eng.process(x[:1]), y_seeded[:1])  # CPU: seed S draws what upstream's generator S draws
    eng.set_flow(flow)
    eng.process(x[1:3])
    names, got = [n for n, _ in seen], dict(seen)
    assert names[:2] == ["model_out[0,0]", "latents_steps[0,0]"] and "decoded[2]" in names and "latents_steps[2,3]" in names
    assert torch.equal(got["warped_prev[0]"], flow_warp(got["decoded[0]"], flow[:1]))  # the given HR flow, as is
    assert torch.equal(got["warped_prev[1]"], flow_warp(got["decoded[1]"], flow[1:2]))
    assert eng.flow.describe() == "given" and "flow given" in eng.describe()
    with pytest.raises(ValueError, match="given flow covers frames 1..2, not frame 3"):
        eng.process(x[:1])  # a 4th frame: the given flow (and noise) have none
    eng.set_flow(torch.zeros(3, 2, 32, 48))
    with pytest.raises(ValueError, match="given noise covers 3 frames"):
        eng.process(x[:1])
    eng.reset()
    eng.set_noise(None)
    eng.set_options(seed=7)
    eng.set_flow(lambda i, cur, prev: torch.zeros(1, 2, 32, 48))
    assert eng.process(x[:1]).shape == (1, 3, 32, 48)


def test_raft_runs_at_hr_as_upstream_and_lk_at_lr():
    pytest.importorskip("torchvision")
    raft = make_flow("raft", CPU, raft_weights="random", raft_iters=1)
    assert raft.at == "hr" and raft.describe() == "raft at HR"
    seen = []
    raft.estimate = lambda c, p: seen.append(c) or torch.zeros(1, 2, *c.shape[-2:])
    cur = smooth(16, 24, seed=1)
    f = raft(cur, smooth(16, 24, seed=2), (64, 96))
    assert f.shape == (1, 2, 64, 96) and seen[0].shape[-2:] == (64, 96)
    assert torch.allclose(seen[0], F.interpolate(cur * 2 - 1, scale_factor=4, mode="bicubic"))  # upstream's input
    assert make_flow("raft", CPU, raft_weights="random", at="lr").at == "lr"
