"""Format conversion: every host format round-trips, and cook() is consistent across formats."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from live_upscale import FrameFormat, InputError, UpscaleNode
from live_upscale.nodes import formats

LAYOUTS = ["HWC", "CHW"]
CHANNELS = ["RGB", "RGBA", "BGR", "BGRA", "GRAY"]
DTYPES = ["uint8", "uint16", "float16", "bfloat16", "float32"]


def _host_frame(fmt: FrameFormat, h=5, w=7) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    c = fmt.n_channels
    shape = (h, w, c) if fmt.layout == "HWC" else (c, h, w)
    if fmt.dtype == "uint8":
        t = torch.randint(0, 256, shape, generator=g, dtype=torch.int32).to(torch.uint8)
    elif fmt.dtype == "uint16":
        t = torch.randint(0, 65536, shape, generator=g, dtype=torch.int32)
    else:
        t = torch.rand(shape, generator=g).to(fmt.torch_dtype)
    return t.unsqueeze(0) if fmt.batched else t


@pytest.mark.parametrize(
    "layout,channels,dtype,flipped,batched",
    list(itertools.product(LAYOUTS, CHANNELS, DTYPES, [False, True], [False, True])),
)
def test_round_trip_every_host_format(layout, channels, dtype, flipped, batched):
    fmt = FrameFormat(layout=layout, channels=channels, dtype=dtype, flipped=flipped, batched=batched)
    frame = _host_frame(fmt)
    rgb, alpha, used = formats.decode(frame, fmt)
    assert rgb.shape == (1, 3, 5, 7) and rgb.dtype == torch.float32
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    assert (alpha is not None) == (fmt.n_channels == 4)
    back = formats.encode(rgb, fmt, alpha)
    assert back.shape == frame.shape
    if channels == "GRAY":  # gray -> rgb -> gray is exact up to rounding
        tol = 1 if dtype == "uint8" else 2 if dtype == "uint16" else 1e-2
    else:
        tol = 0 if dtype in ("uint8", "uint16") else (1e-2 if dtype in ("float16", "bfloat16") else 1e-6)
    diff = (back.to(torch.float64) - frame.to(torch.float64)).abs().max().item()
    assert diff <= tol


def test_channel_order_and_flip_are_applied():
    rgb = torch.zeros(2, 3, 3, dtype=torch.uint8)
    rgb[0, :, 0] = 255  # top row red
    bgra = torch.cat([rgb.flip(-1), torch.full((2, 3, 1), 255, dtype=torch.uint8)], -1).flip(0)  # TD: bottom row first
    x, alpha, _ = formats.decode(bgra, "HWC:BGRA:uint8:flipped")
    assert x[0, 0, 0].tolist() == [1.0, 1.0, 1.0] and x[0, 1:, 0].abs().sum() == 0  # red on top after un-flip
    assert alpha is not None and float(alpha.min()) == 1.0


def test_infer_format():
    assert formats.infer_format(torch.zeros(1, 8, 9, 3, dtype=torch.uint8)) == FrameFormat("HWC", "RGB", "uint8", False, True)
    assert formats.infer_format(torch.zeros(4, 8, 9)) == FrameFormat("CHW", "RGBA", "float32")
    assert formats.infer_format(torch.zeros(8, 9)).channels == "GRAY"
    # a 3x3x3 frame is ambiguous: HWC wins (the host convention)
    assert formats.infer_format(torch.zeros(3, 3, 3)).layout == "HWC"


def test_nan_and_inf_become_finite():
    f = torch.tensor([[[float("nan"), float("inf"), -float("inf")]]])
    x, _, _ = formats.decode(f, "HWC:RGB:float32")
    assert torch.isfinite(x).all() and x.flatten().tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "bad,msg",
    [
        (torch.zeros(5, 6, 2), "channel"),
        (torch.zeros(2, 5, 6, 3), "batch"),
        (torch.zeros(5), "dimensions"),
        (torch.zeros(0, 6, 3), "empty"),
        (torch.zeros(4, 4, 3, dtype=torch.complex64), "dtype"),
    ],
)
def test_bad_frames_give_clear_errors(bad, msg):
    with pytest.raises(InputError, match=msg):
        formats.decode(bad)


def test_cook_is_consistent_across_host_formats():
    """The same picture in RGB uint8 HWC and in TouchDesigner's flipped BGRA gives the same upscaled picture."""
    node = UpscaleNode(backend="classic", scale=2)
    g = torch.Generator().manual_seed(4)
    img = torch.randint(0, 256, (9, 11, 3), generator=g, dtype=torch.int32).to(torch.uint8)
    ref = node.cook(img)
    assert ref.shape == (18, 22, 3) and ref.dtype == torch.uint8
    td = torch.cat([img.flip(-1), torch.full((9, 11, 1), 128, dtype=torch.uint8)], -1).flip(0)
    out = node.cook(td, in_format="HWC:BGRA:uint8:flipped")
    assert out.shape == (18, 22, 4)
    assert torch.equal(out[..., :3].flip(0).flip(-1), ref)
    assert out[..., 3].eq(128).all()  # alpha travels through, resized
    as_float_chw = node.cook(img, out_format="CHW:RGB:float32")
    assert as_float_chw.shape == (3, 18, 22) and as_float_chw.dtype == torch.float32
    assert (as_float_chw.permute(1, 2, 0) * 255 - ref.float()).abs().max() <= 0.5 + 1e-4


def test_cook_numpy_in_numpy_out():
    node = UpscaleNode(backend="classic", scale=1.5)
    out = node.cook(np.zeros((10, 20, 3), np.uint8))
    assert isinstance(out, np.ndarray) and out.shape == (15, 30, 3)


@pytest.mark.parametrize("fmt", ["HWC:RGB:uint8", "HWC:RGBA:uint8", "HWC:BGR:float32", "HWC:RGBA:float32"])
def test_encode_paths_agree_on_nan_and_inf(fmt):
    """OpenCV (CPU float32) and torch (here: float64 input) encode NaN as 0 and +-Inf as 1 and 0 alike."""
    v = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.5, 2.0, -1.0])
    rgb = v.reshape(1, 1, 2, 3).expand(1, 3, 2, 3).contiguous()
    alpha = v.reshape(1, 1, 2, 3)
    cv = formats.encode(rgb, fmt, alpha)
    assert formats._encode_cv(rgb, formats.FrameFormat.parse(fmt), alpha) is not None  # the OpenCV path ran
    ref = formats.encode(rgb.double(), fmt, alpha.double())  # float64: the torch path
    assert torch.equal(cv, ref.to(cv.dtype))
    top = 255 if fmt.endswith("uint8") else 1.0
    assert cv[..., 0].flatten().tolist() == [0, top, 0, round(top / 2 + 0.01) if top == 255 else 0.5, top, 0]
