//! Typed launchers for the kernels of [`crate::kernels`], one function per kernel.
//!
//! Each launcher checks that the buffers it is given cover every element the kernel touches
//! (an `assert!`, since a violation is a bug of this crate), which is what makes its `unsafe`
//! launch sound; all launches go to the device's single stream.

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use crate::blas::to_i32;
use crate::error::{Error, Result};
use crate::exec::Exec;
use crate::kernels::{CHANNEL_TILE, CONV_ALONG_BLOCK, ConvGeom};

/// Threads per block of the element-wise (grid-stride) kernels.
const BLOCK: u32 = 256;
/// Upper bound on the blocks of a grid-stride launch.
const MAX_BLOCKS: u64 = 1 << 20;
/// Shared memory one block of a 1-D convolution kernel stages the core in, in floats.
const CORE_TILE_FLOATS: usize = 4096;
/// The shared memory every CUDA device gives a block without opting in, in bytes.
const MAX_STATIC_SMEM: usize = 48 * 1024;

fn grid_stride(n: usize) -> LaunchConfig {
    let blocks = (n as u64).div_ceil(u64::from(BLOCK)).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `y[i] += bias[(i / inner) % channels]` for `i < y.len()`.
pub(crate) fn add_bias(
    ex: &Exec<'_>,
    y: &mut CudaViewMut<'_, f32>,
    bias: &CudaView<'_, f32>,
    channels: usize,
    inner: usize,
) -> Result<()> {
    let n = y.len();
    if n == 0 {
        return Ok(());
    }
    assert!(channels > 0 && inner > 0 && bias.len() >= channels && n % (channels * inner) == 0);
    let (n_arg, c_arg, inner_arg) = (n as i64, to_i32(channels, "channels")?, inner as i64);
    // SAFETY: signature (float*, const float*, long long, int, long long) matches
    // `ttc_add_bias`; it writes y[i] for i < n = y.len() and reads bias[< channels].
    let r = unsafe {
        ex.dev
            .stream
            .launch_builder(&ex.dev.kernels.add_bias)
            .arg(y)
            .arg(bias)
            .arg(&n_arg)
            .arg(&c_arg)
            .arg(&inner_arg)
            .launch(grid_stride(n))
    };
    ex.launched(r, "bias kernel")
}

/// `out[i] = (accumulate ? out[i] : 0) + sum_{b < batches} ws[b * n + i]`, `n = out.len()`.
pub(crate) fn sum_batches(
    ex: &Exec<'_>,
    ws: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    batches: usize,
    accumulate: bool,
) -> Result<()> {
    let n = out.len();
    if n == 0 {
        return Ok(());
    }
    assert!(ws.len() >= batches * n);
    let (b_arg, n_arg, acc_arg) = (to_i32(batches, "batches")?, n as i64, i32::from(accumulate));
    // SAFETY: signature (const float*, float*, int, long long, int) matches `ttc_sum_batches`;
    // it reads ws[< batches * n] and reads/writes out[< n].
    let r = unsafe {
        ex.dev
            .stream
            .launch_builder(&ex.dev.kernels.sum_batches)
            .arg(ws)
            .arg(out)
            .arg(&b_arg)
            .arg(&n_arg)
            .arg(&acc_arg)
            .launch(grid_stride(n))
    };
    ex.launched(r, "batch reduction kernel")
}

/// `gb[o] = sum_{b, m} gy[b, o, m]` with `gy` `(batch, channels, inner)`.
pub(crate) fn bias_grad(
    ex: &Exec<'_>,
    gy: &CudaView<'_, f32>,
    gb: &mut CudaViewMut<'_, f32>,
    batch: usize,
    channels: usize,
    inner: usize,
) -> Result<()> {
    if channels == 0 {
        return Ok(());
    }
    assert!(gy.len() >= batch * channels * inner && gb.len() >= channels);
    let (b_arg, c_arg, inner_arg) = (
        to_i32(batch, "batch")?,
        to_i32(channels, "channels")?,
        inner as i64,
    );
    let cfg = LaunchConfig {
        grid_dim: (c_arg as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: signature (const float*, float*, int, int, long long) matches `ttc_bias_grad`;
    // one block per channel, BLOCK (a power of two <= 1024) threads as its static shared
    // array requires; it reads gy[< batch * channels * inner] and writes gb[< channels].
    let r = unsafe {
        ex.dev
            .stream
            .launch_builder(&ex.dev.kernels.bias_grad)
            .arg(gy)
            .arg(gb)
            .arg(&b_arg)
            .arg(&c_arg)
            .arg(&inner_arg)
            .launch(cfg)
    };
    ex.launched(r, "bias gradient kernel")
}

/// Sizes of a 1-D convolution along one axis of a `(batch, channels, outer, len, inner)` view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AlongDims {
    pub batch: usize,
    pub r_in: usize,
    pub r_out: usize,
    pub outer: usize,
    pub len: usize,
    pub inner: usize,
    pub len_out: usize,
    pub k: usize,
    pub stride: usize,
    pub dil: usize,
    pub pad: usize,
}

impl AlongDims {
    fn input_len(&self) -> usize {
        self.batch * self.r_in * self.outer * self.len * self.inner
    }
    fn output_len(&self) -> usize {
        self.batch * self.r_out * self.outer * self.len_out * self.inner
    }
}

/// Launch configuration of a 1-D convolution kernel over `positions` threads and `channels`
/// tiled by [`CHANNEL_TILE`], staging `reduced` channels of the core in chunks; returns it with
/// the chunk size.
fn along_config(
    positions: usize,
    channels: usize,
    reduced: usize,
    k: usize,
) -> Result<(LaunchConfig, usize)> {
    let per_channel = k * CHANNEL_TILE;
    let chunk = (CORE_TILE_FLOATS / per_channel).clamp(1, reduced.max(1));
    let smem = chunk * per_channel * std::mem::size_of::<f32>();
    if smem > MAX_STATIC_SMEM {
        return Err(Error::Unsupported(format!(
            "kernel size {k} along one axis needs {smem} bytes of shared memory per block"
        )));
    }
    let blocks_x = positions.div_ceil(CONV_ALONG_BLOCK as usize);
    let blocks_y = channels.div_ceil(CHANNEL_TILE);
    if blocks_x > i32::MAX as usize || blocks_y > 65_535 {
        return Err(Error::Unsupported(format!(
            "1-D convolution grid of {blocks_x} x {blocks_y} blocks is too large"
        )));
    }
    Ok((
        LaunchConfig {
            grid_dim: (blocks_x as u32, blocks_y as u32, 1),
            block_dim: (CONV_ALONG_BLOCK, 1, 1),
            shared_mem_bytes: smem as u32,
        },
        chunk,
    ))
}

/// The scalar arguments shared by both 1-D convolution kernels, in their parameter order after
/// the three pointers (the chunk size comes last).
struct AlongArgs {
    batch: i32,
    r_in: i32,
    r_out: i32,
    outer: i64,
    len: i32,
    inner: i64,
    len_out: i32,
    k: i32,
    stride: i32,
    dil: i32,
    pad: i32,
}

impl AlongArgs {
    fn new(d: &AlongDims) -> Result<Self> {
        Ok(Self {
            batch: to_i32(d.batch, "batch")?,
            r_in: to_i32(d.r_in, "input channels")?,
            r_out: to_i32(d.r_out, "output channels")?,
            outer: d.outer as i64,
            len: to_i32(d.len, "axis length")?,
            inner: d.inner as i64,
            len_out: to_i32(d.len_out, "output axis length")?,
            k: to_i32(d.k, "kernel size")?,
            stride: to_i32(d.stride, "stride")?,
            dil: to_i32(d.dil, "dilation")?,
            pad: to_i32(d.pad, "padding")?,
        })
    }
}

/// `y[b, s, o, p, i] = sum_{a, t} core[a, t, s] x[b, a, o, p * stride + t * dil - pad, i]`.
pub(crate) fn conv_along_fwd(
    ex: &Exec<'_>,
    x: &CudaView<'_, f32>,
    core: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, f32>,
    d: &AlongDims,
) -> Result<()> {
    let positions = d.batch * d.outer * d.len_out * d.inner;
    if positions == 0 || d.r_out == 0 {
        return Ok(());
    }
    assert!(x.len() >= d.input_len() && y.len() >= d.output_len());
    assert!(core.len() >= d.r_in * d.k * d.r_out && d.stride > 0 && d.dil > 0);
    let (cfg, chunk) = along_config(positions, d.r_out, d.r_in, d.k)?;
    // The kernel reads x at in-range positions only (it tests 0 <= ip < len), reads
    // core[< r_in * k * r_out] and writes y[< batch * r_out * outer * len_out * inner]: covered by
    // the assertions above.
    let kernel = &ex.dev.kernels.conv_along_fwd;
    launch_along(
        ex,
        kernel,
        x,
        core,
        y,
        d,
        cfg,
        chunk,
        "1-D convolution kernel",
    )
}

/// The transposed 1-D convolution (input gradient of [`conv_along_fwd`]) into `gx`.
pub(crate) fn conv_along_bwd_input(
    ex: &Exec<'_>,
    gy: &CudaView<'_, f32>,
    core: &CudaView<'_, f32>,
    gx: &mut CudaViewMut<'_, f32>,
    d: &AlongDims,
) -> Result<()> {
    let positions = d.batch * d.outer * d.len * d.inner;
    if positions == 0 || d.r_in == 0 {
        return Ok(());
    }
    assert!(gy.len() >= d.output_len() && gx.len() >= d.input_len());
    assert!(core.len() >= d.r_in * d.k * d.r_out && d.stride > 0 && d.dil > 0);
    let (cfg, chunk) = along_config(positions, d.r_in, d.r_out, d.k)?;
    // The kernel reads gy at 0 <= p < len_out only, core[< r_in * k * r_out], and writes
    // gx[< batch * r_in * outer * len * inner]: covered by the assertions above.
    let kernel = &ex.dev.kernels.conv_along_bwd_input;
    let op = "transposed 1-D convolution kernel";
    launch_along(ex, kernel, gy, core, gx, d, cfg, chunk, op)
}

/// Launches one of the two 1-D convolution kernels, which share their parameter list: three float
/// pointers (input, core, output), then batch, r_in, r_out (int), outer (long long), len (int),
/// inner (long long), len_out, k, stride, dilation, padding, chunk (int). The caller has checked
/// that every buffer covers what the kernel reads and writes for `d`; `op` names it in errors.
fn launch_along(
    ex: &Exec<'_>,
    kernel: &CudaFunction,
    input: &CudaView<'_, f32>,
    core: &CudaView<'_, f32>,
    output: &mut CudaViewMut<'_, f32>,
    d: &AlongDims,
    cfg: LaunchConfig,
    chunk: usize,
    op: &'static str,
) -> Result<()> {
    let a = AlongArgs::new(d)?;
    let chunk = chunk as i32;
    // SAFETY: the argument list matches the kernels' parameter list above, in order and type;
    // the buffers are large enough (the caller's assertions); the dynamic shared memory of `cfg`
    // holds chunk * k * CHANNEL_TILE floats as the kernels stage them (`along_config`).
    let r = unsafe {
        ex.dev
            .stream
            .launch_builder(kernel)
            .arg(input)
            .arg(core)
            .arg(output)
            .arg(&a.batch)
            .arg(&a.r_in)
            .arg(&a.r_out)
            .arg(&a.outer)
            .arg(&a.len)
            .arg(&a.inner)
            .arg(&a.len_out)
            .arg(&a.k)
            .arg(&a.stride)
            .arg(&a.dil)
            .arg(&a.pad)
            .arg(&chunk)
            .launch(cfg)
    };
    ex.launched(r, op)
}

/// Products of the spatial sizes of `g`: `(taps, output positions, input positions)`.
fn geom_counts(g: &ConvGeom) -> (usize, usize, usize) {
    let d = g.d as usize;
    let p = |v: &[i32]| v[..d].iter().map(|&s| s as usize).product::<usize>();
    (p(&g.k), p(&g.out_sp), p(&g.in_sp))
}

/// `col (nb, channels * taps, M)` from `x (nb, channels, in_sp)` (zero outside the input).
pub(crate) fn im2col(
    ex: &Exec<'_>,
    x: &CudaView<'_, f32>,
    col: &mut CudaViewMut<'_, f32>,
    g: &ConvGeom,
    channels: usize,
    nb: usize,
) -> Result<()> {
    let (taps, m, inp) = geom_counts(g);
    let n = nb * channels * taps * m;
    if n == 0 {
        return Ok(());
    }
    assert!(x.len() >= nb * channels * inp && col.len() >= n);
    let (c_arg, nb_arg) = (to_i32(channels, "channels")?, to_i32(nb, "batch")?);
    // SAFETY: signature (const float*, float*, ConvGeom by value, int, int) matches
    // `ttc_im2col` (ConvGeom is `#[repr(C)]` and mirrors the CUDA struct); it writes
    // col[< nb * channels * taps * M] and reads x only at in-range positions of the
    // nb * channels input planes, covered by the assertion above.
    let r = unsafe {
        ex.dev
            .stream
            .launch_builder(&ex.dev.kernels.im2col)
            .arg(x)
            .arg(col)
            .arg(g)
            .arg(&c_arg)
            .arg(&nb_arg)
            .launch(grid_stride(n))
    };
    ex.launched(r, "im2col kernel")
}

/// The adjoint of [`im2col`]: `gx (nb, channels, in_sp)` summed from `col`.
pub(crate) fn col2im(
    ex: &Exec<'_>,
    col: &CudaView<'_, f32>,
    gx: &mut CudaViewMut<'_, f32>,
    g: &ConvGeom,
    channels: usize,
    nb: usize,
) -> Result<()> {
    let (taps, m, inp) = geom_counts(g);
    let n = nb * channels * inp;
    if n == 0 {
        return Ok(());
    }
    assert!(gx.len() >= n && col.len() >= nb * channels * taps * m);
    let (c_arg, nb_arg) = (to_i32(channels, "channels")?, to_i32(nb, "batch")?);
    // SAFETY: signature (const float*, float*, ConvGeom by value, int, int) matches
    // `ttc_col2im`; it writes gx[< nb * channels * prod(in_sp)] and reads col only at
    // 0 <= p < out_sp, i.e. below nb * channels * taps * M, covered by the assertion above.
    let r = unsafe {
        ex.dev
            .stream
            .launch_builder(&ex.dev.kernels.col2im)
            .arg(col)
            .arg(gx)
            .arg(g)
            .arg(&c_arg)
            .arg(&nb_arg)
            .launch(grid_stride(n))
    };
    ex.launched(r, "col2im kernel")
}
