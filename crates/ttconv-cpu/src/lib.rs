//! CPU backend of `ttconv`: [`CpuBackend`] implements [`ttconv::Backend`] with GEMMs on strided
//! views and rayon tasks.
//!
//! - Channel contractions: one GEMM `w^T x_b` per (batch item, block of spatial columns).
//! - 1-D convolution along an axis: shifted GEMMs, one per kernel tap, directly on strided
//!   views of the input (no im2col, no padded copy), per (batch item, block of lines).
//! - Dense N-D convolution: im2col in L2-sized blocks of output positions, then a GEMM.
//! - Backward passes: the same GEMMs transposed; weight gradients are reduced over a fixed number
//!   of partial sums added in order, so every result is independent of the thread count.
//!
//! Parallelism comes from rayon's global pool (`RAYON_NUM_THREADS`); every GEMM runs on the
//! task's thread. Algorithm choices are explicit [`CpuOptions`] values
//! ([`CpuBackend::with_options`]); nothing reads the environment.
//! Activations are `ndarray::ArrayD<f32>` in row-major layout, laid out like
//! PyTorch: `(batch, channels, D_1, ..., D_d)`.
//!
//! The only `unsafe` code is the GEMM wrapper (`gemm.rs`), which hands strided ndarray views
//! to `faer`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod check;
mod contract;
mod conv_along;
mod conv_dense;
mod direct;
mod fused;
mod fused_backward;
mod gemm;
mod kernel;
mod options;
mod par;
mod row_im2col;
mod simd;
mod taps;
#[cfg(test)]
mod test_support;
mod weights;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use ttconv::{AxisGeometry, Backend, FactorizedProgram, Result, StepGradients, StepWeights};

pub use options::{CpuOptions, DenseAlgorithm, SimdLevel};
pub use weights::CpuWeights;

use check::{nd_shape, shape, unflatten};
use conv_dense::DenseShape;

/// The CPU backend: host tensors (`ndarray::ArrayD<f32>`, row-major) and multi-threaded GEMMs.
///
/// Holds only its [`CpuOptions`]; any number of layers can share one.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend {
    options: CpuOptions,
}

impl CpuBackend {
    /// A CPU backend with the default options, using rayon's global thread pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A CPU backend with explicit options (e.g. the unfused chain for A/B timing).
    pub fn with_options(options: CpuOptions) -> Self {
        Self { options }
    }

    /// The options this backend runs with.
    pub fn options(&self) -> CpuOptions {
        self.options
    }

    /// The SIMD level its own kernels run at: the CPU's best, capped by the options.
    fn simd(&self) -> simd::Level {
        simd::Level::capped(self.options.simd)
    }
}

/// The spatial axes of `x` other than `axis` must match those of `gy`, and the batch too.
fn check_along_pair(x: &[usize], gy: &[usize], axis: usize, what: &str) -> Result<()> {
    let ok = x.len() == gy.len()
        && x[0] == gy[0]
        && (2..x.len()).all(|j| j == axis + 2 || x[j] == gy[j]);
    if ok {
        Ok(())
    } else {
        Err(shape(
            what,
            format!("the batch and spatial shape of the input {x:?}, except along axis {axis}"),
            gy,
        ))
    }
}

/// Checks that `axis` is a spatial axis of an activation of shape `sh`.
fn check_axis(sh: &[usize], axis: usize, what: &str) -> Result<()> {
    if axis + 2 < sh.len() {
        Ok(())
    } else {
        Err(shape(
            what,
            format!(
                "an activation with spatial axis {axis} (at least {} axes)",
                axis + 3
            ),
            sh,
        ))
    }
}

impl Backend for CpuBackend {
    type Tensor = ArrayD<f32>;
    type Weights = CpuWeights;

    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn upload(&self, x: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        Ok(x.as_standard_layout().into_owned())
    }

    fn download(&self, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        Ok(x.as_standard_layout().into_owned())
    }

    fn download_owned(&self, x: ArrayD<f32>) -> Result<ArrayD<f32>> {
        // Tensors are host arrays already: hand it over (copying only a non-standard layout).
        Ok(check::into_standard(x))
    }

    fn shape(&self, x: &ArrayD<f32>) -> Vec<usize> {
        x.shape().to_vec()
    }

    fn reshape(&self, x: ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
        let got = x.shape().to_vec();
        check::into_standard(x)
            .into_shape_with_order(IxDyn(shape))
            .map_err(|_| {
                check::shape(
                    "reshape",
                    format!(
                        "{} elements (the new shape {shape:?})",
                        shape.iter().product::<usize>()
                    ),
                    &got,
                )
            })
    }

    fn upload_weights(&self, w: ArrayViewD<'_, f32>) -> Result<CpuWeights> {
        Ok(CpuWeights::new(w))
    }

    /// `y[b, o, D] = sum_c w[c, o] x[b, c, D] + bias[o]`; `x` needs at least the batch and
    /// channel axes (any number of spatial axes, including none).
    fn contract_channels(
        &self,
        x: &ArrayD<f32>,
        w: &CpuWeights,
        bias: Option<&CpuWeights>,
    ) -> Result<ArrayD<f32>> {
        let x = check::activation("contract_channels input", x, 0)?;
        let w = check::matrix("contract_channels weight", w)?;
        let sh = x.shape();
        if w.nrows() != sh[1] {
            return Err(shape(
                "contract_channels weight",
                format!("({}, out) to match the input's channels", sh[1]),
                w.shape(),
            ));
        }
        let bias = bias
            .map(|b| check::bias("contract_channels bias", b, w.ncols()))
            .transpose()?;
        let y = contract::channel_gemm(check::flat(&x)?, w.t(), bias);
        unflatten(y, &nd_shape(sh[0], w.ncols(), &sh[2..]))
    }

    fn conv_along(
        &self,
        x: &ArrayD<f32>,
        axis: usize,
        core: &CpuWeights,
        geometry: AxisGeometry,
    ) -> Result<ArrayD<f32>> {
        let x = check::activation("conv_along input", x, 1)?;
        let sh = x.shape();
        check_axis(sh, axis, "conv_along input")?;
        let core = check::core("conv_along core", core)?;
        let (r_in, k, r_out) = core.dim();
        if r_in != sh[1] {
            return Err(shape(
                "conv_along core",
                format!("({}, k, r_out) to match the input's channels", sh[1]),
                core.shape(),
            ));
        }
        check::geometry(&[geometry])?;
        let len_out = geometry.checked_output_len(axis, sh[axis + 2], k)?;
        let lines = conv_along::Lines::along(sh, axis, len_out, k, geometry);
        let y = conv_along::forward(check::flat(&x)?, core, lines);
        let mut full = sh.to_vec();
        full[1] = r_out;
        full[axis + 2] = len_out;
        unflatten(y, &full)
    }

    /// Dense convolution for any number `d = geometry.len() >= 1` of spatial axes.
    fn conv_dense(
        &self,
        x: &ArrayD<f32>,
        kernel: &CpuWeights,
        bias: Option<&CpuWeights>,
        geometry: &[AxisGeometry],
    ) -> Result<ArrayD<f32>> {
        let d = geometry.len();
        let x = check::activation("conv_dense input", x, 1)?;
        let sh = x.shape();
        if sh.len() != d + 2 {
            return Err(shape(
                "conv_dense input",
                format!("(batch, in) then {d} spatial axes, one per geometry entry"),
                sh,
            ));
        }
        let ks = kernel.shape();
        if ks.len() != d + 2 || ks[1] != sh[1] {
            return Err(shape(
                "conv_dense kernel",
                format!("(out, {}, k_1..k_{d})", sh[1]),
                ks,
            ));
        }
        let dense = DenseShape::new(sh[1], &sh[2..], &ks[2..], geometry)?;
        let bias = bias
            .map(|b| check::bias("conv_dense bias", b, ks[0]))
            .transpose()?;
        let geo = conv_dense::Dense::new(&dense);
        let kmat = kernel_matrix(kernel)?;
        let x = check::flat(&x)?;
        let path = self.options.dense;
        let direct = (path == DenseAlgorithm::Auto && !geo.is_pointwise())
            .then(|| direct::Direct::new(&dense, self.simd()))
            .flatten()
            .filter(|p| p.grid_ratio() <= MAX_DIRECT_GRID_RATIO);
        let rows_only = (matches!(path, DenseAlgorithm::Auto | DenseAlgorithm::Rows)
            && !geo.is_pointwise())
        .then(|| row_im2col::RowIm2col::new(&dense))
        .flatten();
        let out_sp = &dense.out_spatial;
        let y = if let Some(plan) = direct {
            let packed = kernel.packed_with(|| direct::pack_weights(kmat));
            direct::forward(x, packed, ks[0], bias, &plan)
        } else if let Some(plan) = rows_only {
            row_im2col::forward(x, kmat, bias, &plan)
        } else {
            conv_dense::forward(x, kmat, bias, &geo)
        };
        unflatten(y, &nd_shape(sh[0], ks[0], out_sp))
    }

    fn contract_channels_grad_input(
        &self,
        gy: &ArrayD<f32>,
        w: &CpuWeights,
    ) -> Result<ArrayD<f32>> {
        let gy = check::activation("contract_channels output gradient", gy, 0)?;
        let w = check::matrix("contract_channels weight", w)?;
        let sh = gy.shape();
        if w.ncols() != sh[1] {
            return Err(shape(
                "contract_channels weight",
                format!("(in, {}) to match the gradient's channels", sh[1]),
                w.shape(),
            ));
        }
        let gx = contract::channel_gemm(check::flat(&gy)?, w, None);
        unflatten(gx, &nd_shape(sh[0], w.nrows(), &sh[2..]))
    }

    fn contract_channels_grad_weight(
        &self,
        x: &ArrayD<f32>,
        gy: &ArrayD<f32>,
    ) -> Result<ArrayD<f32>> {
        let x = check::activation("contract_channels input", x, 0)?;
        let gy = check::activation("contract_channels output gradient", gy, 0)?;
        let (xs, gs) = (x.shape(), gy.shape());
        if xs.len() != gs.len() || xs[0] != gs[0] || xs[2..] != gs[2..] {
            return Err(shape(
                "contract_channels output gradient",
                format!("the batch and spatial shape of the input {xs:?}"),
                gs,
            ));
        }
        Ok(contract::weight_grad(check::flat(&x)?, check::flat(&gy)?).into_dyn())
    }

    fn conv_along_grad_input(
        &self,
        gy: &ArrayD<f32>,
        axis: usize,
        core: &CpuWeights,
        geometry: AxisGeometry,
        input_len: usize,
    ) -> Result<ArrayD<f32>> {
        let gy = check::activation("conv_along output gradient", gy, 1)?;
        let sh = gy.shape();
        check_axis(sh, axis, "conv_along output gradient")?;
        let core = check::core("conv_along core", core)?;
        let (r_in, k, r_out) = core.dim();
        if r_out != sh[1] {
            return Err(shape(
                "conv_along core",
                format!("(r_in, k, {}) to match the gradient's channels", sh[1]),
                core.shape(),
            ));
        }
        check::geometry(&[geometry])?;
        let len_out = geometry.checked_output_len(axis, input_len, k)?;
        if len_out != sh[axis + 2] {
            return Err(shape(
                "conv_along output gradient",
                format!("length {len_out} along axis {axis} (input length {input_len})"),
                sh,
            ));
        }
        let mut full = sh.to_vec();
        full[1] = r_in;
        full[axis + 2] = input_len;
        let lines = conv_along::Lines::along(&full, axis, len_out, k, geometry);
        let gx = conv_along::grad_input(check::flat(&gy)?, core, lines);
        unflatten(gx, &full)
    }

    fn conv_along_grad_weight(
        &self,
        x: &ArrayD<f32>,
        gy: &ArrayD<f32>,
        axis: usize,
        kernel: usize,
        geometry: AxisGeometry,
    ) -> Result<ArrayD<f32>> {
        let x = check::activation("conv_along input", x, 1)?;
        let gy = check::activation("conv_along output gradient", gy, 1)?;
        let (xs, gs) = (x.shape(), gy.shape());
        check_axis(xs, axis, "conv_along input")?;
        check_along_pair(xs, gs, axis, "conv_along output gradient")?;
        check::geometry(&[geometry])?;
        let len_out = geometry.checked_output_len(axis, xs[axis + 2], kernel)?;
        if len_out != gs[axis + 2] {
            return Err(shape(
                "conv_along output gradient",
                format!("length {len_out} along axis {axis}"),
                gs,
            ));
        }
        let lines = conv_along::Lines::along(xs, axis, len_out, kernel, geometry);
        Ok(conv_along::grad_weight(check::flat(&x)?, check::flat(&gy)?, lines).into_dyn())
    }

    fn conv_dense_grad_input(
        &self,
        gy: &ArrayD<f32>,
        kernel: &CpuWeights,
        geometry: &[AxisGeometry],
        input_spatial: &[usize],
    ) -> Result<ArrayD<f32>> {
        let d = geometry.len();
        let gy = check::activation("conv_dense output gradient", gy, 1)?;
        let sh = gy.shape();
        let ks = kernel.shape();
        if ks.len() != d + 2 || input_spatial.len() != d || d == 0 {
            return Err(shape(
                "conv_dense kernel",
                format!("(out, in) then {d} kernel sizes, one per geometry entry and input axis"),
                ks,
            ));
        }
        let dense = DenseShape::new(ks[1], input_spatial, &ks[2..], geometry)?;
        let expected = nd_shape(sh[0], ks[0], &dense.out_spatial);
        if sh != expected.as_slice() {
            return Err(shape(
                "conv_dense output gradient",
                format!("{expected:?}"),
                sh,
            ));
        }
        let geo = conv_dense::Dense::new(&dense);
        let kmat = kernel_matrix(kernel)?;
        let gx = conv_dense::grad_input(check::flat(&gy)?, kmat, &geo);
        unflatten(gx, &nd_shape(sh[0], ks[1], input_spatial))
    }

    fn conv_dense_grad_weight(
        &self,
        x: &ArrayD<f32>,
        gy: &ArrayD<f32>,
        kernel_size: &[usize],
        geometry: &[AxisGeometry],
    ) -> Result<ArrayD<f32>> {
        let d = geometry.len();
        let x = check::activation("conv_dense input", x, 1)?;
        let gy = check::activation("conv_dense output gradient", gy, 1)?;
        let (xs, gs) = (x.shape(), gy.shape());
        if xs.len() != d + 2 || kernel_size.len() != d {
            return Err(shape(
                "conv_dense input",
                format!(
                    "(batch, in) then {d} spatial axes, one per geometry entry and kernel size"
                ),
                xs,
            ));
        }
        let dense = DenseShape::new(xs[1], &xs[2..], kernel_size, geometry)?;
        let out_sp = &dense.out_spatial;
        let expected_len = d + 2;
        if gs.len() != expected_len || gs[0] != xs[0] || gs[2..] != out_sp[..] {
            return Err(shape(
                "conv_dense output gradient",
                format!("({}, out, {out_sp:?})", xs[0]),
                gs,
            ));
        }
        let geo = conv_dense::Dense::new(&dense);
        let gk = conv_dense::grad_weight(check::flat(&x)?, check::flat(&gy)?, &geo);
        let full = nd_shape(gs[1], xs[1], kernel_size);
        let got = gk.shape().to_vec();
        check::into_standard(gk)
            .into_shape_with_order(IxDyn(&full))
            .map_err(|_| shape("kernel gradient", format!("{full:?}"), &got))
    }

    fn add_bias(&self, y: ArrayD<f32>, bias: &CpuWeights) -> Result<ArrayD<f32>> {
        if y.ndim() < 2 {
            return Err(check::shape(
                "add_bias input",
                "(batch, channels, ..)",
                y.shape(),
            ));
        }
        let cout = y.shape()[1];
        let b = check::bias("bias", bias, cout)?;
        let mut y = check::into_standard(y);
        let plane = y.shape()[2..].iter().product::<usize>();
        if y.is_empty() || plane == 0 {
            return Ok(y);
        }
        use rayon::prelude::*;
        let data = y.as_slice_mut().expect("standard layout is contiguous");
        data.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(i, p)| p.iter_mut().for_each(|e| *e += b[i % cout]));
        Ok(y)
    }

    fn bias_grad(&self, gy: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let gy = check::activation("bias output gradient", gy, 0)?;
        Ok(contract::bias_grad(check::flat(&gy)?).into_dyn())
    }

    /// The fused chain of `fused.rs` (tiles carried through every step of the program in a
    /// per-thread workspace), or the steps one primitive at a time when the options say
    /// `fused: false`.
    fn factorized_forward(
        &self,
        x: &ArrayD<f32>,
        program: &FactorizedProgram,
        weights: &StepWeights<'_, Self>,
    ) -> Result<ArrayD<f32>> {
        if !self.options.fused {
            return program.run(self, x, weights);
        }
        check::program_operands(x.shape(), program, weights)?;
        let plan = fused::Plan::new(program, weights, self.simd());
        let xs = x.as_standard_layout();
        let xd = xs.as_slice().expect("standard layout is contiguous");
        let (batch, cout, out_sp) = plan.output_shape();
        // Not zeroed: the fused forward writes every element (a memset of the output cost 7-8%
        // of the 56 x 56 forwards).
        let mut y = par::unwritten_output((batch, cout, out_sp.iter().product()));
        fused::forward(&plan, xd, y.view_mut());
        // SAFETY: `fused::forward` initialised every element of `y` (its contract).
        #[allow(unsafe_code)]
        let y = unsafe { y.assume_init() };
        unflatten(y, &nd_shape(batch, cout, out_sp))
    }

    /// The fused chain of `fused.rs` run one batch item per task, writing every intermediate
    /// it computes into the kept step inputs on the way, for two items or more (the batches
    /// [`Self::factorized_backward`] fuses); the primitives otherwise, or when the options say
    /// `fused: false`.
    fn factorized_forward_train(
        &self,
        x: ArrayD<f32>,
        program: &FactorizedProgram,
        weights: &StepWeights<'_, Self>,
    ) -> Result<(ArrayD<f32>, Vec<ArrayD<f32>>)> {
        if !self.options.fused || program.input_shape()[0] < 2 {
            return program.run_keeping_inputs(self, x, weights);
        }
        check::program_operands(x.shape(), program, weights)?;
        let plan = fused::Plan::new(program, weights, self.simd());
        let (batch, cout, out_sp) = plan.output_shape();
        let steps = program.steps();
        // Zeroed (the chain reads them back as f32, so they are initialised before it starts);
        // `forward_keeping` then writes every element.
        let mut kept: Vec<_> = steps[1..]
            .iter()
            .map(|s| {
                let sp: usize = s.input_shape[2..].iter().product();
                ndarray::Array3::<f32>::zeros((batch, s.in_channels(), sp))
            })
            .collect();
        let mut y = par::unwritten_output((batch, cout, out_sp.iter().product()));
        {
            let xs = x.as_standard_layout();
            let xd = xs.as_slice().expect("standard layout is contiguous");
            fused::forward_keeping(&plan, xd, y.view_mut(), &mut kept);
        }
        // SAFETY: `fused::forward_keeping` initialised every element of `y` (its contract: every
        // item runs whole, its last op writing every column of every channel).
        #[allow(unsafe_code)]
        let y = unsafe { y.assume_init() };
        let y = unflatten(y, &nd_shape(batch, cout, out_sp))?;
        let mut inputs = Vec::with_capacity(steps.len());
        inputs.push(x);
        for (z, step) in kept.into_iter().zip(&steps[1..]) {
            inputs.push(unflatten(z, &step.input_shape)?);
        }
        Ok((y, inputs))
    }

    /// The fused backward of `fused_backward.rs` (the steps in reverse per batch item, the
    /// intermediate gradients in a per-thread workspace) for two items or more; the primitives
    /// one by one at batch 1 (which split the item's positions over the cores) or when the
    /// options say `fused: false`.
    fn factorized_backward(
        &self,
        program: &FactorizedProgram,
        weights: &StepWeights<'_, Self>,
        kept: &[ArrayD<f32>],
        gy: &ArrayD<f32>,
        input_grad: bool,
    ) -> Result<StepGradients<ArrayD<f32>>> {
        if !self.options.fused || program.input_shape()[0] < 2 {
            return program.backward(self, weights, kept, gy, input_grad);
        }
        check::backward_operands(program, weights, kept, gy.shape())?;
        let plan = fused_backward::Plan::new(program, weights);
        let kept: Vec<_> = kept.iter().map(|z| z.as_standard_layout()).collect();
        let kept = kept.iter().map(check::flat).collect::<Result<Vec<_>>>()?;
        let gy = gy.as_standard_layout();
        let (gx, grads) = fused_backward::backward(&plan, &kept, check::flat(&gy)?, input_grad);
        let gx = gx
            .map(|gx| unflatten(gx, program.input_shape()))
            .transpose()?;
        let grads = program
            .steps()
            .iter()
            .zip(grads)
            .map(|(step, g)| {
                ArrayD::from_shape_vec(IxDyn(&step.weight_shape()), g)
                    .map_err(|_| shape("step weight gradient", "the weight's size", &[]))
            })
            .collect::<Result<_>>()?;
        Ok((gx, grads))
    }
}

/// Most grid positions per output position for which the dense forward runs the direct kernel
/// (`direct.rs`): measured (2 threads, batch 8, 3 x 3) it wins at 56 x 56 (ratio 1.04), 28 x 28
/// (1.10) and 14 x 14 (1.22) and loses at 7 x 7 (1.96: 7.3 against 5.0 ms for im2col).
const MAX_DIRECT_GRID_RATIO: f64 = 1.3;

/// A dense kernel `(out, in, k_1..k_d)` viewed as the matrix `(out, in * prod(k))`.
fn kernel_matrix(kernel: &CpuWeights) -> Result<ndarray::ArrayView2<'_, f32>> {
    let ks = kernel.shape();
    let rows = ks[1..].iter().product::<usize>();
    kernel
        .view()
        .into_shape_with_order((ks[0], rows))
        .map_err(|_| shape("conv_dense kernel", "a row-major kernel", ks))
}
