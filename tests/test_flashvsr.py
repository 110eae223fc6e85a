"""FlashVSR backend on CPU with the tiny config: schedule, shapes, streaming == offline, bounded state,
attention kernels, the node contract, and loading checkpoints written in the official key layout."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from live_upscale import UpscaleNode, WeightsError, weights
from live_upscale.backends import EngineConfig, registry
from live_upscale.backends.flashvsr import TINY, WAN_1_3B, FlashVSRModel, FlashVSRStream, StreamOptions, random_model
from live_upscale.backends.flashvsr import attention as A
from live_upscale.backends.flashvsr import backend as B
from live_upscale.backends.flashvsr import loader
from live_upscale.backends.flashvsr.dit import KVCache

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small CPU tensors: one intra-op thread is faster, and avoids oversubscription on busy runners."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def clip(n: int, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    """A smooth moving pattern (no scene cuts): n frames (n,3,h,w) in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=g), size=(h + 8, w + 8), mode="bicubic")
    frames = [base[..., (i % 8) : (i % 8) + h, (i // 3 % 8) : (i // 3 % 8) + w] for i in range(n)]
    return torch.cat(frames).clamp(0, 1)


@pytest.fixture(scope="module")
def tiny_model() -> FlashVSRModel:
    return random_model(TINY, seed=0)


def run(model, frames, chunks, **opts) -> torch.Tensor:
    s = FlashVSRStream(model, StreamOptions(**{"scale": 2.0, **opts}))
    outs, i = [], 0
    for c in chunks:
        outs.append(s.push(frames[i : i + c]))
        i += c
    assert i == frames.shape[0]
    tail = s.finish()
    if tail is not None:
        outs.append(tail)
    return torch.cat(outs)


# --- configuration: the official dimensions ----------------------------------------------------------


def test_full_config_matches_the_official_files():
    """Sizes of the v1.1 files: DiT 825 tensors / 1,418,996,800 params, LQ proj 8 / 287,845,888,
    TC decoder 66 / 45,338,371 (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        m = FlashVSRModel(WAN_1_3B)
    for part, tensors, params in (("dit", 825, 1_418_996_800), ("lq_proj", 8, 287_845_888), ("decoder", 66, 45_338_371)):
        sd = getattr(m, part).state_dict()
        assert (len(sd), sum(t.numel() for t in sd.values())) == (tensors, params), part
    dit = m.dit.state_dict()
    for k, shape in {
        "patch_embedding.weight": (1536, 16, 1, 2, 2),
        "text_embedding.0.weight": (1536, 4096),
        "time_projection.1.weight": (9216, 1536),
        "blocks.29.self_attn.norm_q.weight": (1536,),
        "blocks.0.cross_attn.k.weight": (1536, 1536),
        "blocks.0.ffn.0.weight": (8960, 1536),
        "blocks.0.modulation": (1, 6, 1536),
        "blocks.0.norm3.weight": (1536,),
        "head.head.weight": (64, 1536),
        "head.modulation": (1, 2, 1536),
    }.items():
        assert tuple(dit[k].shape) == shape, k
    lq = m.lq_proj.state_dict()
    assert tuple(lq["conv1.weight"].shape) == (2048, 768, 4, 3, 3) and tuple(lq["norm2.gamma"].shape) == (3072, 1, 1, 1)
    assert tuple(lq["linear_layers.0.weight"].shape) == (1536, 3072)
    dec = m.decoder.state_dict()
    assert tuple(dec["decoder.1.weight"].shape) == (512, 784, 3, 3) and "decoder.3.weight" in dec  # deepened
    assert tuple(dec["decoder.21.conv.weight"].shape) == (256, 128, 1, 1)  # TGrow x2
    assert tuple(dec["decoder.26.weight"].shape) == (3, 128, 3, 3)
    assert WAN_1_3B.first_frames_in == 25 and WAN_1_3B.first_frames_out == 21 and WAN_1_3B.step_frames == 8


# --- attention ---------------------------------------------------------------------------------------


def test_window_partition_round_trip_and_block_layout():
    grid, win = (4, 16, 8), (2, 8, 8)
    x = torch.arange(4 * 16 * 8, dtype=torch.float32).view(1, -1, 1)
    w = A.window_partition(x, grid, win)
    assert torch.equal(A.window_reverse(w, grid, win), x)
    # block 1 = time slice 0, second 8-row band: tokens (f<2, 8<=h<16, w<8)
    blk = w[0, 128:256, 0].long()
    f, h = blk // (16 * 8), blk // 8 % 16
    assert int(f.max()) < 2 and int(h.min()) >= 8


def test_local_mask_is_a_sliding_window():
    m = A.local_block_mask(5, 5, 3, CPU)
    assert m.shape == (25, 25) and bool(m.diagonal().all())
    assert int(m[12].sum()) == 9 and int(m[0].sum()) == 4  # centre 3x3, corner clipped (not shifted)
    assert bool(A.local_block_mask(4, 4, 11, CPU).all())


def _qkv(qb, kb, block, heads=2, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, qb * block, d, generator=g)
    k = torch.randn(1, heads, kb * block, d, generator=g)
    v = torch.randn(1, heads, kb * block, d, generator=g)
    return q, k, v


def test_draft_mask_top_k_inside_the_local_window():
    block, S = 16, 9  # 3x3 spatial blocks, one query slice, 4 key slices (3 cached + current)
    q, k, _ = _qkv(S, 4 * S, block)
    local = A.local_block_mask(3, 3, 3, CPU)
    mask = A.draft_block_mask(q, k, block, local, topk=20)
    assert mask.shape == (1, 2, S, 4 * S)
    allowed = local.repeat(1, 4)
    assert not bool((mask & ~allowed).any())  # never outside the local window
    assert mask.sum((-1, -2)).tolist() == [[20, 20]]  # exactly top-k per (head, query slice)


def test_sparse_kernels_agree_and_full_mask_is_dense():
    block, S = 32, 4
    q, k, v = _qkv(S, 4 * S, block)
    local = A.local_block_mask(2, 2, 1, CPU)  # only the block itself: real sparsity
    mask = A.draft_block_mask(q, k, block, local, topk=5)
    mask[0, 0, 1] = False  # an empty query block must give zeros in every kernel
    ref = A.masked_sdpa_attention(q, k, v, mask, block)
    assert float(ref[0, 0, block : 2 * block].abs().max()) == 0.0
    # the reference equals attention computed block by block
    for h in range(2):
        for i in range(S):
            sel = mask[0, h, i].nonzero().flatten()
            if len(sel):
                kk = torch.cat([k[0, h, j * block : (j + 1) * block] for j in sel])
                vv = torch.cat([v[0, h, j * block : (j + 1) * block] for j in sel])
                want = F.scaled_dot_product_attention(q[0, h, i * block : (i + 1) * block], kk, vv)
                assert torch.allclose(ref[0, h, i * block : (i + 1) * block], want, atol=1e-5)
    if A.flex_available():
        out = A.flex_sparse_attention(q, k, v, mask, block, compiled=False)
        assert torch.allclose(out, ref, atol=1e-5)
    full = torch.ones_like(mask)
    assert torch.allclose(A.masked_sdpa_attention(q, k, v, full, block), A.dense_attention(q, k, v), atol=1e-5)


def test_topk_budget_follows_the_official_formula():
    # 1024^2 output: 8x8 blocks, topk_ratio = 2*768*1280/1024^2 = 1.875 -> int(4096*1.875)-1
    assert A.topk_for(64, 1024, 1024, 2.0, 768 * 1280) == 7679
    assert A.resolve_mode("auto", CPU) == "sdpa" and A.resolve_mode("dense", CPU) == "dense"


def test_rope_matches_the_complex_formulation():
    """Our real-valued RoPE == the complex one (channel pairs as complex numbers, per-axis frequencies
    1/theta^(2i/d) over a (d-2(d//3), d//3, d//3) split), at arbitrary temporal offsets."""
    from live_upscale.backends.flashvsr.dit import Rope3D, rope_apply

    d, f, h, w, t0 = 24, 2, 3, 4, 1000
    rope = Rope3D(d)
    cos, sin = rope.tables(t0, f, h, w, CPU)
    x = torch.randn(1, 2, f * h * w, d, dtype=torch.float64)
    dims = (d - 2 * (d // 3), d // 3, d // 3)
    freqs = [1.0 / (10000.0 ** (torch.arange(0, n, 2, dtype=torch.float64) / n)) for n in dims]
    ff, hh, ww = torch.meshgrid(torch.arange(f) + t0, torch.arange(h), torch.arange(w), indexing="ij")
    ang = torch.cat([torch.outer(p.flatten().double(), fr) for p, fr in zip((ff, hh, ww), freqs)], dim=1)
    ref = torch.view_as_real(torch.view_as_complex(x.reshape(1, 2, -1, d // 2, 2).contiguous()) * torch.polar(torch.ones_like(ang), ang))
    assert torch.allclose(rope_apply(x.float(), cos, sin).double(), ref.reshape(x.shape), atol=1e-4)


def test_lq_projection_conv_is_the_causal_conv3d():
    """The 2-D formulation (4 stacked time taps) == Conv3d (4,3,3)/(2,1,1) with replicate borders."""
    proj = random_model(TINY).lq_proj
    x = torch.randn(1, 768, 10, 4, 6)
    ref = proj.conv1(F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate"))
    assert torch.allclose(proj._conv(proj.conv1, x), ref, atol=1e-5)


# --- the stream --------------------------------------------------------------------------------------


def test_schedule_first_output_after_25_frames_then_8(tiny_model):
    s = FlashVSRStream(tiny_model, StreamOptions(scale=2.0))
    x = clip(41)
    assert s.push(x[:24]).shape[0] == 0
    y = s.push(x[24:25])
    assert y.shape == (21, 3, 64, 96)
    assert s.push(x[25:32]).shape[0] == 0 and s.push(x[32:33]).shape[0] == 8
    assert s.push(x[33:41]).shape[0] == 8 and s.pending() == 4
    tail = s.finish()
    assert tail.shape[0] == 4 and s.frames_in == 0  # finish resets


@pytest.mark.parametrize("n,h,w,scale", [(1, 32, 48, 2.0), (30, 40, 56, 2.0), (27, 24, 20, 1.5)])
def test_any_frame_count_and_size_comes_back_whole(tiny_model, n, h, w, scale):
    y = run(tiny_model, clip(n, h, w), [n], scale=scale)
    assert y.shape == (n, 3, round(h * scale), round(w * scale))
    assert bool(torch.isfinite(y).all()) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_streaming_equals_offline(tiny_model):
    x = clip(45)
    offline = run(tiny_model, x, [45])
    streamed = run(tiny_model, x, [1] * 26 + [3, 5, 8, 3])
    chunked = run(tiny_model, x, [25, 8, 8, 4])
    assert offline.shape == streamed.shape == (45, 3, 64, 96)
    assert torch.allclose(offline, streamed, atol=1e-5) and torch.allclose(offline, chunked, atol=1e-5)


def test_output_follows_the_input(tiny_model):
    """Colour correction ties each output to its own input frame (right alignment, no frame shift)."""
    x = clip(33)
    x[20] = 1.0 - x[20]
    y = run(tiny_model, x, [33], color_fix="adain")
    up = F.interpolate(x, size=y.shape[-2:], mode="bicubic").clamp(0, 1)
    err = (y.mean((2, 3)) - up.mean((2, 3))).abs().sum(1)
    assert float(err[20]) < 0.05 and float(err.max()) < 0.05


def test_rope_rebase_changes_nothing_and_positions_stay_bounded(tiny_model):
    x = clip(57)
    never = run(tiny_model, x, [57], rebase_every=10**9)
    s = FlashVSRStream(tiny_model, StreamOptions(scale=2.0, rebase_every=0))
    y = torch.cat([s.push(x), s.finish()])
    assert torch.allclose(y, never, atol=1e-4)
    s.push(x)
    assert s.rebases >= 3 and s.cache.t_next <= TINY.kv_slices * TINY.window[0] + TINY.step_latents


def test_state_is_bounded_over_many_chunks(tiny_model):
    s = FlashVSRStream(tiny_model, StreamOptions(scale=2.0, rebase_every=8))
    x = clip(8, seed=1)
    s.push(clip(25))
    sizes, t_next = [], []
    for i in range(14):
        assert s.push(x).shape[0] == 8
        sizes.append(s.cache_bytes())
        t_next.append(s.cache.t_next)
        assert len(s._frames) <= 12
        assert all(k.shape[2] == TINY.kv_slices * TINY.window[0] * (128 // 16) * (128 // 16) for k in s.cache.k)  # one 128 px block
    assert len(set(sizes[1:])) == 1  # steady state: constant memory
    assert max(t_next) <= 8 + TINY.kv_slices * TINY.window[0] + TINY.step_latents


def test_size_change_restarts_the_stream(tiny_model):
    s = FlashVSRStream(tiny_model, StreamOptions(scale=2.0))
    s.push(clip(30))
    y = s.push(clip(26, 24, 24))
    assert y.shape == (21, 3, 48, 48) and s.frames_in == 26


def test_failed_call_leaves_the_stream_untouched(tiny_model, monkeypatch):
    x = clip(33)
    want = run(tiny_model, x, [33])
    s = FlashVSRStream(tiny_model, StreamOptions(scale=2.0))
    s.push(x[:20])
    real = tiny_model.decoder.decode
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(tiny_model.decoder, "decode", flaky)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        s.push(x[20:30])
    assert s.frames_in == 20 and s.steps == 0
    y = torch.cat([s.push(x[20:30]), s.push(x[30:]), s.finish()])
    assert torch.allclose(y, want, atol=1e-5)


@pytest.mark.skipif(not A.flex_available(), reason="torch without FlexAttention")
def test_flex_and_sdpa_dit_steps_agree():
    """The DiT through two streaming steps (6 latents, then 2 with the KV cache) under each kernel."""
    model = random_model(TINY, seed=3)
    g = torch.Generator().manual_seed(0)
    noise = [torch.randn(1, 16, f, 16, 16, generator=g) for f in (6, 2)]  # 128^2 output: one (2,8,8) block per slice
    lq = [torch.randn(1, f * 64, TINY.dim, generator=g) for f in (6, 2)]
    preds = {}
    for mode in ("sdpa", "flex", "dense"):
        cache = KVCache(TINY.num_layers)
        preds[mode] = [model.dit.forward_step(n, t, cache, mode=mode, local_range=1, sparse_ratio=0.3) for n, t in zip(noise, lq)]
    for a, b in zip(preds["sdpa"], preds["flex"]):
        assert torch.allclose(a, b, atol=1e-4)
    assert float((preds["sdpa"][1] - preds["dense"][1]).abs().max()) > 1e-3  # really sparse here


# --- backend, node ------------------------------------------------------------------------------------


def test_parse_spec_and_probe():
    assert B.parse_spec(None).source == "registered"
    s = B.parse_spec("tiny, sparse_ratio=1.5 ,colour_fix=adain", {"flashvsr_seed": 3, "quality": "fast"})
    assert s.source == "tiny" and s.settings == {"sparse_ratio": 1.5, "color_fix": "adain", "seed": 3}
    with pytest.raises(Exception, match="neither"):
        B.parse_spec("nope")
    with pytest.raises(Exception, match="unknown setting"):
        B.parse_spec("tiny,zoom=2")
    assert B.FlashVSRBackend.probe(CPU, "tiny").ok
    p = B.FlashVSRBackend.probe(CPU)
    assert not p and "CUDA" in p.reason
    p = B.FlashVSRBackend.probe(CPU, "RealESRGAN_x2plus")
    assert not p and "not FlashVSR" in p.reason


def test_probe_on_a_gpu_names_the_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(B, "cuda_reason", lambda device: None)
    monkeypatch.setattr(B, "_gpu_memory_reason", lambda device: None)
    cuda = torch.device("cuda")
    p = B.FlashVSRBackend.probe(cuda)
    assert not p and p.downloadable
    assert "live-upscale models fetch FlashVSR-v1.1-dit" in p.reason and "FlashVSR-v1.1-prompt" in p.reason
    for name in loader.part_names():
        path = weights.cached_path(weights.lookup(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert B.FlashVSRBackend.probe(cuda).ok
    p = B.FlashVSRBackend.probe(cuda, str(tmp_path))
    assert not p and "TCDecoder.ckpt" in p.reason


def test_node_keeps_every_frame_and_resets_on_size_change():
    node = UpscaleNode(backend="flashvsr", model="tiny", device="cpu", scale=2.0, scene_cut=0.0)
    x = clip(37)
    outs = [node.process(x[i : i + 5]) for i in range(0, 37, 5)]
    outs.append(node.flush())
    y = torch.cat([o for o in outs if o is not None])
    assert y.shape == (37, 3, 64, 96) and node.engine.caps.delay == 24 and node.engine.caps.temporal
    node.process(clip(10))
    y2 = node.process(clip(25, 24, 24))  # new size: the node resets, the stream starts over
    assert y2.shape == (21, 3, 48, 48) and node.resets >= 1
    assert "tiny" in node.info()["engine"]


def test_async_worker_gives_the_same_frames_and_never_more_than_in():
    sync_engine = B.tiny_engine()
    async_engine = B.tiny_engine(**{"async": 1})
    assert "async worker" in async_engine.describe()
    x = clip(37)
    want = torch.cat([sync_engine.process(x), sync_engine.flush()])
    outs = []
    for i in range(37):
        y = async_engine.process(x[i : i + 1])
        assert y.shape[0] <= 1 and y.shape[1:] == (3, 64, 96)
        outs.append(y)
    outs.append(async_engine.flush())
    got = torch.cat(outs)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)
    async_engine.reset()
    assert async_engine.flush() is None
    async_engine.close()


def test_node_scene_cut_flushes_the_old_scene():
    node = UpscaleNode(backend="flashvsr", model="tiny", device="cpu", scale=2.0, scene_cut=0.1)
    x = torch.cat([clip(12, seed=0), 1.0 - clip(20, seed=5)])
    y = node.process(x)
    tail = node.flush()
    n = y.shape[0] + (tail.shape[0] if tail is not None else 0)
    assert n == 32


# --- official checkpoint layout ----------------------------------------------------------------------


def _write_official(folder, model: FlashVSRModel, dit_prefix: str = "") -> None:
    """The four files as the official release lays them out (safetensors DiT, torch.save'd dicts, bare prompt)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({dit_prefix + k: v.contiguous() for k, v in model.dit.state_dict().items()},
              str(folder / "diffusion_pytorch_model_streaming_dmd.safetensors"))
    torch.save(dict(model.lq_proj.state_dict()), folder / "LQ_proj_in.ckpt")
    torch.save(dict(model.decoder.state_dict()), folder / "TCDecoder.ckpt")
    torch.save(model.context.clone(), folder / "posi_prompt.pth")


def test_loader_reads_the_official_layout(tmp_path, tiny_model):
    folder = tmp_path / "FlashVSR-v1.1"
    _write_official(folder, tiny_model, dit_prefix="model.diffusion_model.")
    sd = loader.read_tensors(folder / "diffusion_pytorch_model_streaming_dmd.safetensors")
    assert "model.diffusion_model.blocks.0.self_attn.q.weight" in sd  # a wrapped layout is accepted too
    paths = loader.resolve_parts(folder)
    loaded = loader.load_official(paths, TINY)
    for part in ("dit", "lq_proj", "decoder"):
        a, b = getattr(tiny_model, part).state_dict(), getattr(loaded, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    x = clip(25)
    # no colour fix: AdaIN divides by the random decoder's small spread and would magnify 1-ulp
    # differences in the folded modulations (the parity fixtures check the colour fix itself)
    assert torch.allclose(run(tiny_model, x, [25], color_fix="none"), run(loaded, x, [25], color_fix="none"), atol=1e-6)


def test_loader_errors_are_one_clear_line(tmp_path, tiny_model):
    folder = tmp_path / "w"
    _write_official(folder, tiny_model)
    sd = torch.load(folder / "TCDecoder.ckpt", weights_only=True)
    sd.pop("decoder.26.bias")
    sd["decoder.99.weight"] = torch.zeros(1)
    torch.save(sd, folder / "TCDecoder.ckpt")
    with pytest.raises(WeightsError) as e:
        loader.load_official(loader.resolve_parts(folder), TINY)
    msg = str(e.value)
    assert "TC decoder" in msg and "decoder.26.bias" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="other shape|not a FlashVSR"):  # the full-size config on tiny files
        _write_official(folder, tiny_model)
        loader.load_official(loader.resolve_parts(folder), WAN_1_3B)
    (folder / "LQ_proj_in.ckpt").unlink()
    with pytest.raises(WeightsError, match="LQ_proj_in.ckpt"):
        loader.resolve_parts(folder)


def test_tcdecoder_loads_as_tolerantly_as_the_official_loader(tmp_path, tiny_model, caplog):
    """Official: ``load_state_dict(strict=False)``. Extra keys: one log line; a missing identity
    'deepening' conv keeps its identity initialisation; other missing tensors stay an error."""
    from live_upscale.backends.flashvsr.tcdecoder import IdentityConv2d

    folder = tmp_path / "w"
    _write_official(folder, tiny_model)
    ident = next(f"decoder.{n}.weight" for n, m in tiny_model.decoder.decoder.named_children() if isinstance(m, IdentityConv2d))
    sd = torch.load(folder / "TCDecoder.ckpt", weights_only=True)
    sd["encoder.0.weight"] = torch.zeros(2)  # TAEHV's encoder half, which the official file would not need
    sd[ident] = torch.zeros_like(sd[ident])
    torch.nn.init.dirac_(sd[ident])  # what the official module holds when the key is absent
    torch.save(sd, folder / "with_identity.ckpt")
    del sd[ident]
    torch.save(sd, folder / "TCDecoder.ckpt")
    with caplog.at_level("INFO", logger="live_upscale.backends.flashvsr.loader"):
        loaded = loader.load_official(loader.resolve_parts(folder), TINY)
    lines = [r.getMessage() for r in caplog.records if "extra key" in r.getMessage()]
    assert len(lines) == 1 and "encoder.0.weight" in lines[0]
    assert torch.equal(loaded.decoder.state_dict()[ident], sd_ident := torch.load(folder / "with_identity.ckpt", weights_only=True)[ident])
    assert float(sd_ident.abs().sum()) == sd_ident.shape[0]  # a real identity, not zeros


def test_pickled_code_is_refused(tmp_path, tiny_model):
    folder = tmp_path / "evil"
    _write_official(folder, tiny_model)

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    with open(folder / "posi_prompt.pth", "wb") as f:
        pickle.dump(Evil(), f, protocol=2)
    with pytest.raises(WeightsError):
        loader.load_official(loader.resolve_parts(folder), TINY)
    assert not (tmp_path / "PWNED").exists()


def test_registered_weights():
    names = loader.part_names()
    infos = [weights.lookup(n) for n in names]
    assert all(i is not None and i.backend == "flashvsr" for i in infos)
    assert {i.hf_file for i in infos if i.hf_repo} == {
        "diffusion_pytorch_model_streaming_dmd.safetensors", "LQ_proj_in.ckpt", "TCDecoder.ckpt"}
    assert all(i.hf_repo == "JunhaoZhuang/FlashVSR-v1.1" for i in infos if i.hf_repo)
    assert weights.lookup("FlashVSR-v1.1-prompt").url.endswith("prompt_tensor/posi_prompt.pth")
    assert "flashvsr" in {b.id for b in registry.backends()}
    assert math.isclose(B.stream_options(B.parse_spec("tiny"), 2.0, "fast").sparse_ratio, 1.5)
    assert EngineConfig(CPU).scale == 2.0


# --- official-mode options, given noise, tracing -------------------------------------------------------


def test_defaults_follow_the_official_colour_fix():
    assert B.stream_options(B.parse_spec("tiny"), 4.0, None).color_fix == "adain"  # official v1.1
    opts = B.stream_options(B.parse_spec("tiny,color_fix=wavelet,resize=pil,fit=crop"), 4.0, None)
    assert (opts.color_fix, opts.resize, opts.fit) == ("wavelet", "pil", "crop")
    with pytest.raises(Exception, match="unknown fit"):
        B.parse_spec("tiny,fit=stretch")


def test_official_preparation_pil_bicubic_and_centre_crop(tiny_model):
    """resize=pil: Pillow bicubic on uint8 (the official script); fit=crop: centre crop to 128 multiples."""
    import numpy as np
    from PIL import Image

    x = (clip(25, 40, 72) * 255).round() / 255  # uint8-exact frames, as a host hands them over
    s = FlashVSRStream(tiny_model, StreamOptions(scale=4.0, resize="pil", fit="crop"))
    seen = {}
    s.trace = lambda name, t: seen.setdefault(name, t.clone())
    y = s.push(x)
    assert y.shape == (21, 3, 128, 256)  # 160x288 upscaled -> centre 128x256
    u8 = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    ref = torch.from_numpy(np.array(Image.fromarray(u8).resize((288, 160), Image.BICUBIC))).permute(2, 0, 1)
    ref = ref.float() / 255 * 2 - 1
    assert torch.equal(seen["lq_frames"][0], ref[:, 16:144, 16:272])
    names = set(seen)
    assert {"lq_tokens_call0", "dit_pred_call0", "mask_call0_layer0", "mask_call0_layer1", "decoder_call0", "colorfix_call0"} <= names
    node = UpscaleNode(backend="flashvsr", model="tiny,fit=crop", device="cpu", scale=4.0, scene_cut=0.0)
    assert node.process(x).shape == (21, 3, 160, 288)  # the node hands the host its output size


def test_given_noise_reproduces_the_generator_and_runs_out_cleanly(tiny_model, tmp_path):
    from safetensors.torch import save_file

    x = clip(41)
    want = run(tiny_model, x, [41])
    g = torch.Generator().manual_seed(0)  # the stream's own draws: (6 latents), then 2 per call
    noise = torch.cat([torch.randn(1, 16, f, 16, 16, generator=g) for f in (6, 2, 2)], dim=2)
    got = run(tiny_model, x, [41], noise=noise)  # 4 calls: the 4th continues from the generator
    assert torch.equal(got[:37], want[:37]) and got.shape == want.shape
    save_file({"noise": noise * 0}, str(tmp_path / "noise.safetensors"))
    eng = B.tiny_engine(scale=2.0, noise_file=str(tmp_path / "noise.safetensors"))
    assert (eng.process(x[:25]) - want[:21]).abs().max() > 1e-3  # zero noise: another picture
    eng.set_noise(noise[:, :, :3])
    eng.reset()
    with pytest.raises(ValueError, match="given noise ends at latent 3"):
        eng.process(x[:25])


def test_sharded_and_fp16_dit_files(tmp_path, tiny_model):
    import json

    from safetensors.torch import save_file

    folder = tmp_path / "f"
    _write_official(folder, tiny_model)
    dit = folder / "diffusion_pytorch_model_streaming_dmd.safetensors"
    sd = loader.read_tensors(dit)
    dit.unlink()
    keys = sorted(sd)
    wm = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        name = f"diffusion_pytorch_model_streaming_dmd-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(folder / name))
        wm.update({k: name for k in part})
    (folder / (dit.name + ".index.json")).write_text(json.dumps({"weight_map": wm}))
    sharded = loader.load_official(loader.resolve_parts(folder), TINY)
    assert all(torch.equal(sharded.dit.state_dict()[k], v) for k, v in tiny_model.dit.state_dict().items())
    for f in folder.glob("diffusion_pytorch_model_streaming_dmd*"):
        f.unlink()
    save_file({k: v.half() for k, v in sd.items()}, str(folder / "diffusion_pytorch_model_streaming_dmd.fp16.safetensors"))
    half = loader.load_official(loader.resolve_parts(folder), TINY)
    w = half.dit.state_dict()["blocks.0.self_attn.q.weight"]
    assert w.dtype == torch.float32 and torch.equal(w, sd["blocks.0.self_attn.q.weight"].half().float())


def test_a_real_checkpoint_runs_on_cpu_only_when_asked(tmp_path, tiny_model, monkeypatch):
    folder = tmp_path / "f"
    _write_official(folder, tiny_model)
    p = B.FlashVSRBackend.probe(CPU, str(folder))
    assert not p and "CUDA" in p.reason
    monkeypatch.setenv(B.CPU_ENV, "1")
    assert B.FlashVSRBackend.probe(CPU, str(folder)).ok
    monkeypatch.delenv(B.CPU_ENV)
    eng = B.FlashVSRBackend.load(EngineConfig(CPU, scale=2.0, model=f"{folder},config=tiny,allow_cpu=1"))
    assert eng.process(clip(25)).shape == (21, 3, 64, 96)
