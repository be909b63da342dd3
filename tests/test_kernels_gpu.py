"""The plugin kernels compute what the PyTorch references compute (on a CUDA device: `make test-gpu`).

fp32 kernels are held to float64 references within fp32 rounding; fp16 kernels to the reference on the
same (fp16) inputs within one fp16 ulp of the result, since they compute in fp32 and round once. Every
output is poisoned with NaN first, so an element the kernel does not write fails the comparison.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from benchmarks import workloads as wl  # noqa: E402
from fbocc.ops import reference as ref  # noqa: E402

pytestmark = pytest.mark.gpu
DEVICE = "cuda"


@pytest.fixture(scope="module")
def kernels():  # type: ignore[no-untyped-def]
    from fbocc.ops import cuda

    cuda.extension()  # build once, outside the first test's timing
    return cuda


def _poisoned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def _assert_close(out: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert out.shape == expected.shape, f"{what}: shape {tuple(out.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(out).any(), f"{what}: {int(torch.isnan(out).sum())} output elements were never written"
    exp = expected.double()
    err = (out.double() - exp).abs()
    scale = max(1.0, exp.abs().max().item())  # fp32 accumulation error grows with the terms' size
    if out.dtype == torch.float16:
        bound = exp.abs() * 2.0**-10 + 2.0**-14 + 1e-6 * scale  # one ulp of the fp16 result
    else:
        bound = exp.abs() * 1e-5 + 1e-5 * scale
    worst = int(torch.argmax(err - bound))
    assert bool((err <= bound).all()), (
        f"{what}: {int((err > bound).sum())} elements off; worst at flat index {worst}: "
        f"kernel {out.flatten()[worst].item()} vs reference {exp.flatten()[worst].item()}")


# --- GridSampler3D ----------------------------------------------------------------------------------------

def _grid_case(kernels, case, dtype, interp=0, padding=0, warp="random", seed=0, grid_dtype=None):  # type: ignore[no-untyped-def]
    volume, grid = wl.grid_sampler_inputs(case, dtype, DEVICE, seed=seed, warp=warp, grid_dtype=grid_dtype)
    out = _poisoned((case.n, case.c, *case.out), dtype)
    kernels.grid_sampler3d(volume, grid, interp, padding, case.align_corners, out=out)
    expected = ref.grid_sampler3d(volume.double(), grid.double(), interp, padding, case.align_corners)
    return out, expected


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_grid_sampler_bilinear_matches_reference_for_every_padding_mode(kernels, padding: int, align: bool) -> None:
    case = wl.GridSamplerCase(n=2, c=7, d=5, h=9, w=11, out=(4, 6, 13), align_corners=align)
    for seed in range(3):
        out, expected = _grid_case(kernels, case, torch.float32, padding=padding, seed=seed)
        _assert_close(out, expected, f"bilinear padding={padding} align={align}")


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_grid_sampler_nearest_matches_reference_away_from_ties(kernels, padding: int) -> None:
    case = wl.GridSamplerCase(n=1, c=5, d=6, h=7, w=8, out=(3, 5, 9), align_corners=True)
    out, expected = _grid_case(kernels, case, torch.float32, interp=1, padding=padding, seed=4)
    # A coordinate exactly halfway between voxels may round either way after fp32 vs fp64 arithmetic.
    mismatched = (out.double() - expected).abs() > 1e-5
    assert not torch.isnan(out).any()
    assert int(mismatched.sum()) <= out.numel() // 200, f"{int(mismatched.sum())} of {out.numel()} differ"


@pytest.mark.parametrize(("dtype", "grid_dtype"), [(torch.float16, torch.float16), (torch.float16, torch.float32)])
def test_grid_sampler_fp16_is_within_one_ulp_of_the_reference(kernels, dtype, grid_dtype) -> None:  # type: ignore[no-untyped-def]
    case = wl.GridSamplerCase(n=1, c=33, d=8, h=20, w=20, out=(8, 20, 20), align_corners=True)
    out, expected = _grid_case(kernels, case, dtype, warp="ego-motion", grid_dtype=grid_dtype)
    _assert_close(out, expected, f"fp16 features, {grid_dtype} grid")


@pytest.mark.parametrize("warp", ["ego-motion", "random"])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_grid_sampler_fp16_staged_and_global_blocks(kernels, padding: int, warp: str) -> None:  # type: ignore[no-untyped-def]
    # Even widths take the staged fp16 kernel. Under the ego-motion warp each block's box fits in shared memory
    # (partly filled tiles at the right and bottom edges, a partial last 8-channel stage, two batches); under a
    # random grid a block's box is the whole volume (3200 staging units, at most 1000 fit), so its blocks sample
    # global memory.
    case = wl.GridSamplerCase(n=2, c=9, d=8, h=20, w=40, out=(6, 13, 54), align_corners=False)
    out, expected = _grid_case(kernels, case, torch.float16, padding=padding, warp=warp, grid_dtype=torch.float32)
    _assert_close(out, expected, f"fp16 {warp} padding={padding}")


@pytest.mark.parametrize("channels", [3, 13])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_grid_sampler_fp16_staged_zero_margin_and_partial_stages(kernels, channels: int, padding: int) -> None:  # type: ignore[no-untyped-def]
    # The staged fp16 kernel clamps positions into the volume's one-voxel zero margin instead of testing corners,
    # and stages 8 channels at a time: points on, just inside and past every face (x in quarter steps from -2 to
    # w + 1, y from -1 to h, z from -1.5 to d + 0.5), an odd output width, fewer than 8 channels and a partial
    # second stage. Every block's box fits, so all of it runs staged.
    d, h, w = 4, 6, 8
    xs = torch.arange(-2.0, w + 1.25, 0.25, dtype=torch.float64)
    ys = torch.linspace(-1.0, float(h), 10, dtype=torch.float64)
    zs = torch.linspace(-1.5, d + 0.5, 6, dtype=torch.float64)
    gz, gy, gx = torch.meshgrid(zs, ys, xs, indexing="ij")
    norm = torch.stack([2 * gx / (w - 1) - 1, 2 * gy / (h - 1) - 1, 2 * gz / (d - 1) - 1])
    grid = (norm.unsqueeze(0).expand(2, *norm.shape) * wl.GRID_SCALE).float().to(DEVICE).contiguous()
    volume = torch.randn(2, channels, d, h, w, generator=torch.Generator().manual_seed(7)).half().to(DEVICE)
    out = kernels.grid_sampler3d(volume, grid, 0, padding, True,
                                 out=_poisoned((2, channels, *gx.shape), torch.float16))
    expected = ref.grid_sampler3d(volume.double(), grid.double(), 0, padding, True)
    _assert_close(out, expected, f"fp16 margin C={channels} padding={padding}")


def test_grid_sampler_fbocc_shape_fp32_and_fp16(kernels) -> None:  # type: ignore[no-untyped-def]
    case = wl.FBOCC_GRID_SAMPLER
    volume, grid = wl.grid_sampler_inputs(case, torch.float32, DEVICE, warp="ego-motion")
    expected = ref.grid_sampler3d(volume, grid, 0, 0, True)  # fp32 reference (fp64 would need 1.6 GB more)
    out = kernels.grid_sampler3d(volume, grid, 0, 0, True, out=_poisoned(tuple(expected.shape), torch.float32))
    assert not torch.isnan(out).any()
    assert (out - expected).abs().max().item() < 1e-4
    half = kernels.grid_sampler3d(volume.half(), grid, 0, 0, True)  # fp16 features, fp32 grid
    expected_half_inputs = ref.grid_sampler3d(volume.half().float(), grid, 0, 0, True)
    assert (half.float() - expected_half_inputs).abs().max().item() < 1e-2


def test_grid_sampler_zero_size_dimensions(kernels) -> None:  # type: ignore[no-untyped-def]
    volume = torch.randn(1, 3, 4, 4, 4, device=DEVICE)
    empty_grid = torch.zeros(1, 3, 0, 4, 4, device=DEVICE)
    assert kernels.grid_sampler3d(volume, empty_grid).shape == (1, 3, 0, 4, 4)
    no_channels = kernels.grid_sampler3d(torch.randn(1, 0, 4, 4, 4, device=DEVICE), torch.zeros(1, 3, 2, 2, 2,
                                                                                              device=DEVICE))
    assert no_channels.shape == (1, 0, 2, 2, 2)


# --- BEVPoolV2 --------------------------------------------------------------------------------------------

def _bev_check(kernels, case, dtype, index_dtype=torch.int32, empty=0, seed=0):  # type: ignore[no-untyped-def]
    inputs = wl.bev_pool_inputs(case, dtype, DEVICE, seed=seed, index_dtype=index_dtype, empty_intervals=empty)
    shape = (case.b, case.out_depth, case.out_height, case.out_width, case.c)
    out = kernels.bev_pool_v2(*inputs, case.out_height, case.out_width, case.out_depth, out=_poisoned(shape, dtype))
    expected = ref.bev_pool_v2(inputs[0].double(), inputs[1].double(), *inputs[2:], case.out_height,
                               case.out_width, case.out_depth)
    _assert_close(out, expected, f"bev_pool {dtype} C={case.c} {index_dtype} empty={empty}")


@pytest.mark.parametrize("channels", [80, 64, 6, 5, 3, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bev_pool_matches_reference_for_any_channel_count(kernels, channels: int, dtype) -> None:  # type: ignore[no-untyped-def]
    case = wl.BevPoolCase(b=2, cams=3, depth_bins=10, h=6, w=11, c=channels, out_depth=3, out_height=20,
                          out_width=17, points=3000)
    _bev_check(kernels, case, dtype)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_bev_pool_int64_indices_and_empty_intervals(kernels, index_dtype) -> None:  # type: ignore[no-untyped-def]
    case = wl.BevPoolCase(b=1, cams=2, depth_bins=8, h=5, w=7, c=16, out_depth=2, out_height=9, out_width=9,
                          points=500)
    _bev_check(kernels, case, torch.float32, index_dtype=index_dtype, empty=300)


def test_bev_pool_sparse_and_dense_voxels(kernels) -> None:  # type: ignore[no-untyped-def]
    sparse = wl.BevPoolCase(b=1, cams=1, depth_bins=4, h=4, w=4, c=8, out_depth=8, out_height=60, out_width=60,
                            points=40)  # long runs of empty voxels between a few occupied ones
    dense = wl.BevPoolCase(b=1, cams=6, depth_bins=40, h=8, w=8, c=8, out_depth=1, out_height=4, out_width=4,
                           points=12_000)  # hundreds of points per voxel
    for seed in range(3):
        _bev_check(kernels, sparse, torch.float32, seed=seed)
        _bev_check(kernels, dense, torch.float32, seed=seed)


def test_bev_pool_voxel_split_across_many_intervals_adds_up(kernels) -> None:  # type: ignore[no-untyped-def]
    # 300 one-point intervals on voxel 5 cross the kernel's interval blocks; the reference adds them all.
    depth = torch.randn(1, 1, 300, 1, 1, device=DEVICE)
    feat = torch.randn(1, 1, 1, 1, 4, device=DEVICE)
    idx = torch.arange(300, device=DEVICE, dtype=torch.int32)
    zeros = torch.zeros(300, device=DEVICE, dtype=torch.int32)
    ranks_bev = torch.full((300,), 5, device=DEVICE, dtype=torch.int32)
    ones = torch.ones(300, device=DEVICE, dtype=torch.int32)
    args = (depth, feat, idx, zeros, ranks_bev, idx, ones, 3, 3, 1)
    out = kernels.bev_pool_v2(*args, out=_poisoned((1, 1, 3, 3, 4), torch.float32))
    _assert_close(out, ref.bev_pool_v2(depth.double(), feat.double(), *args[2:]), "split voxel")


def test_bev_pool_no_intervals_writes_zeros_everywhere(kernels) -> None:  # type: ignore[no-untyped-def]
    case = wl.BevPoolCase(b=1, cams=1, depth_bins=2, h=2, w=2, c=6, out_depth=2, out_height=3, out_width=3,
                          points=4)
    depth, feat, rd, rf, rb, _, _ = wl.bev_pool_inputs(case, torch.float32, DEVICE)
    empty = torch.zeros(0, dtype=torch.int32, device=DEVICE)
    out = kernels.bev_pool_v2(depth, feat, rd, rf, rb, empty, empty, 3, 3, 2,
                              out=_poisoned((1, 2, 3, 3, 6), torch.float32))
    assert out.abs().sum().item() == 0.0


def test_bev_pool_fbocc_shape(kernels) -> None:  # type: ignore[no-untyped-def]
    for dtype in (torch.float32, torch.float16):
        _bev_check(kernels, wl.FBOCC_BEV_POOL, dtype)


# --- MultiScaleDeformableAttn -----------------------------------------------------------------------------

def _msda_check(kernels, case, dtype, coord_dtype=None, index_dtype=torch.int32, seed=0, locality="uniform"):  # type: ignore[no-untyped-def]
    inputs = wl.msda_inputs(case, dtype, DEVICE, seed=seed, coord_dtype=coord_dtype, index_dtype=index_dtype,
                            locality=locality)
    shape = (case.n, case.queries, case.heads * case.channels)
    out = kernels.multi_scale_deformable_attn(*inputs, out=_poisoned(shape, dtype))
    expected = ref.multi_scale_deformable_attn(inputs[0].double(), inputs[1], inputs[2], inputs[3].double(),
                                               inputs[4].double())
    _assert_close(out, expected, f"msda {dtype}/{coord_dtype} D={case.channels}")


@pytest.mark.parametrize("channels", [10, 8, 16, 32, 7, 80])
def test_msda_matches_reference_for_head_widths(kernels, channels: int) -> None:
    case = wl.MsdaCase(n=2, levels=((7, 9), (3, 5), (1, 1)), heads=3, channels=channels, queries=50, points=4)
    _msda_check(kernels, case, torch.float32)


@pytest.mark.parametrize("channels", [10, 32, 7])
def test_msda_large_multi_level_value_matches_reference(kernels, channels: int) -> None:
    # value slices too large for shared memory take the direct-gather kernel; small ones the staged one
    case = wl.MsdaCase(n=2, levels=((100, 60), (50, 30), (25, 15)), heads=2, channels=channels, queries=300,
                       points=3)
    _msda_check(kernels, case, torch.float32)
    _msda_check(kernels, case, torch.float16, coord_dtype=torch.float32)


@pytest.mark.parametrize("coord_dtype", [torch.float16, torch.float32])
def test_msda_fp16_values_with_fp16_or_fp32_coordinates(kernels, coord_dtype) -> None:  # type: ignore[no-untyped-def]
    case = wl.MsdaCase(n=2, levels=((16, 44),), heads=8, channels=10, queries=300, points=8)
    _msda_check(kernels, case, torch.float16, coord_dtype=coord_dtype)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("coord_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize(("levels", "heads", "points"), [
    (((7, 9), (3, 5), (1, 1)), 3, 3),   # several levels, odd head count (3 heads a block), runtime point count
    (((40, 44),), 4, 4),                # 35 KB a head: one head a block
    (((16, 44),), 8, 8),                # FB-OCC's cross-attention level: two heads a block
    (((1, 1),), 1, 1),                  # a single pixel, every corner but one outside
])
def test_msda_fp16_staged_path_matches_reference(kernels, levels, heads: int, points: int, coord_dtype,  # type: ignore[no-untyped-def]
                                                 index_dtype) -> None:
    # fp16 with 10 channels a head and value rows that fit in shared memory take the staged kernel
    case = wl.MsdaCase(n=2, levels=levels, heads=heads, channels=10, queries=257, points=points)
    _msda_check(kernels, case, torch.float16, coord_dtype=coord_dtype, index_dtype=index_dtype, seed=3)


def test_msda_int64_indices(kernels) -> None:  # type: ignore[no-untyped-def]
    case = wl.MsdaCase(n=1, levels=((5, 6), (2, 3)), heads=2, channels=10, queries=20, points=2)
    _msda_check(kernels, case, torch.float32, index_dtype=torch.int64)


@pytest.mark.parametrize("locality", ["uniform", "local"])
@pytest.mark.parametrize("site", sorted(wl.FBOCC_MSDA))
def test_msda_fbocc_call_sites(kernels, site: str, locality: str) -> None:
    for dtype in (torch.float32, torch.float16):
        _msda_check(kernels, wl.FBOCC_MSDA[site], dtype, locality=locality)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("points", [4, 8])
def test_msda_locations_not_16_byte_aligned(kernels, dtype, points: int) -> None:  # type: ignore[no-untyped-def]
    # FB-OCC's point counts read locations and weights with 16-byte loads; tensors that start 8 bytes into an
    # allocation (a view) take the run-time point count kernel instead, with the same results
    case = wl.MsdaCase(n=2, levels=((16, 44), (8, 22)), heads=8, channels=10, queries=100, points=points)
    value, shapes, starts, loc, attn = wl.msda_inputs(case, dtype, DEVICE, seed=5, locality="local")
    shift = 8 // loc.element_size()

    def unaligned(t: torch.Tensor) -> torch.Tensor:
        buffer = torch.empty(t.numel() + shift, dtype=t.dtype, device=t.device)
        view = buffer[shift:].view(t.shape)
        view.copy_(t)
        assert view.data_ptr() % 16 != 0 and view.is_contiguous()
        return view

    shape = (case.n, case.queries, case.heads * case.channels)
    out = kernels.multi_scale_deformable_attn(value, shapes, starts, unaligned(loc), unaligned(attn),
                                             out=_poisoned(shape, dtype))
    expected = ref.multi_scale_deformable_attn(value.double(), shapes, starts, loc.double(), attn.double())
    _assert_close(out, expected, f"msda unaligned {dtype} P={points}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_msda_points_on_and_beyond_the_level_edges(kernels, dtype) -> None:  # type: ignore[no-untyped-def]
    # pixel positions exactly on the edges (-1, 0, size - 1, size), just inside/outside them and far away:
    # corners outside the level read zeros, one corner inside still counts
    h, w = 5, 7
    case = wl.MsdaCase(n=1, levels=((h, w),), heads=2, channels=10, queries=64, points=4)
    value, shapes, starts, _, attn = wl.msda_inputs(case, dtype, DEVICE, seed=6)
    pixels = torch.tensor([-1e4, -3.0, -1.5, -1.0, -0.75, -0.5, 0.0, 0.25, 2.5, 5.5, 6.0, 6.5, 7.0, 7.25, 9.0, 1e4])
    g = torch.Generator().manual_seed(6)
    px = pixels[torch.randint(0, pixels.numel(), (1, 64, 2, 1, 4), generator=g)]
    py = pixels[torch.randint(0, pixels.numel(), (1, 64, 2, 1, 4), generator=g)] * (h / w)
    loc = torch.stack([(px + 0.5) / w, (py + 0.5) / h], -1).to(device=DEVICE, dtype=dtype).contiguous()
    shape = (case.n, case.queries, case.heads * case.channels)
    out = kernels.multi_scale_deformable_attn(value, shapes, starts, loc, attn, out=_poisoned(shape, dtype))
    expected = ref.multi_scale_deformable_attn(value.double(), shapes, starts, loc.double(), attn.double())
    _assert_close(out, expected, f"msda edges {dtype}")


def test_msda_zero_queries(kernels) -> None:  # type: ignore[no-untyped-def]
    case = wl.MsdaCase(n=1, levels=((4, 4),), heads=2, channels=10, queries=0, points=2)
    inputs = wl.msda_inputs(case, torch.float32, DEVICE)
    assert kernels.multi_scale_deformable_attn(*inputs).shape == (1, 0, 20)


def test_the_binding_refuses_bad_input_with_an_error_not_a_crash(kernels) -> None:  # type: ignore[no-untyped-def]
    # On the H100 machine a TORCH_CHECK that streamed the shapes (integers) into its message crashed the process
    # instead of raising; the binding now builds that message itself.
    case = wl.MsdaCase(n=1, levels=((4, 4),), heads=1, channels=2, queries=3, points=1)
    value, shapes, starts, loc, weights = wl.msda_inputs(case, torch.float32, DEVICE)
    with pytest.raises(RuntimeError, match=r"out has shape \[1, 3, 5\], expected \[1, 3, 2\]"):
        kernels.multi_scale_deformable_attn(value, shapes, starts, loc, weights,
                                            out=torch.empty(1, 3, 5, device=DEVICE))
    with pytest.raises(RuntimeError, match="value must be a CUDA tensor"):
        kernels.extension().multi_scale_deformable_attn(value.cpu(), shapes, starts, loc, weights, None)
    with pytest.raises(RuntimeError, match="spatial_shapes must be int32 or int64, got Float"):
        kernels.multi_scale_deformable_attn(value, shapes.float(), starts, loc, weights)
