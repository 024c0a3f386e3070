//! The CUDA-vs-CPU check of `gpu_bench` and its tolerances.

use ndarray::ArrayD;
use ttconv::{Backend, Implementation, TtConv};
use ttconv_cpu::CpuBackend;

use crate::{Case, Device, Options, random};

/// `max |got - want| / max |want|` (0 when both are all zero, infinite on a shape mismatch or a
/// non-finite value).
pub(crate) fn rel_diff(got: &ArrayD<f32>, want: &ArrayD<f32>) -> f64 {
    if got.shape() != want.shape() {
        return f64::INFINITY;
    }
    let mut diff = 0f64;
    let mut scale = 0f64;
    for (&a, &b) in got.iter().zip(want.iter()) {
        let (a, b) = (f64::from(a), f64::from(b));
        if !a.is_finite() || !b.is_finite() {
            return f64::INFINITY;
        }
        diff = diff.max((a - b).abs());
        scale = scale.max(b.abs());
    }
    if diff == 0.0 {
        0.0
    } else if scale == 0.0 {
        f64::INFINITY
    } else {
        diff / scale
    }
}

/// CUDA vs CPU at a small batch: forward outputs of both implementations, and the gradients
/// (input and cores) of both backward passes, with the backward's tolerance.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Check {
    pub(crate) fact_fwd: f64,
    pub(crate) rec_fwd: f64,
    pub(crate) fact_bwd: f64,
    pub(crate) rec_bwd: f64,
    /// The backward's longest sum ([`backward_summed_len`]).
    pub(crate) bwd_len: usize,
    /// [`tol_for_len`] of `bwd_len`.
    pub(crate) bwd_tol: f64,
}

impl Check {
    pub(crate) fn max_fwd(&self) -> f64 {
        self.fact_fwd.max(self.rec_fwd)
    }

    pub(crate) fn max_bwd(&self) -> f64 {
        self.fact_bwd.max(self.rec_bwd)
    }

    /// Both forwards within `tol` and both backwards within `bwd_tol` (NaN fails).
    pub(crate) fn passed(&self, tol: f64) -> bool {
        let within = |v: f64, t: f64| v.is_finite() && v < t;
        within(self.fact_fwd, tol)
            && within(self.rec_fwd, tol)
            && within(self.fact_bwd, self.bwd_tol)
            && within(self.rec_bwd, self.bwd_tol)
    }
}

pub(crate) fn check_against_cpu<D: Device>(
    layer: &TtConv,
    case: &Case,
    cuda: &D,
    o: &Options,
) -> ttconv::Result<Check> {
    let cpu = CpuBackend::new();
    let shape = case.input_shape(o.check_batch);
    let x = random(&shape, o.seed ^ 0x5eed);
    let gy = random(&layer.output_shape(&shape)?, o.seed ^ 0x9e37);
    let on_cuda = layer.prepare(cuda)?;
    let on_cpu = layer.prepare(&cpu)?;
    let xc = cuda.upload(x.view())?;
    let xh = cpu.upload(x.view())?;
    let bwd_len = backward_summed_len(case, &shape, gy.shape());
    let mut check = Check {
        bwd_len,
        bwd_tol: tol_for_len(o.tol, bwd_len),
        ..Check::default()
    };
    for imp in [Implementation::Factorized, Implementation::Reconstructed] {
        let yc = cuda.download(&on_cuda.forward_with(&xc, imp)?)?;
        let yh = cpu.download(&on_cpu.forward_with(&xh, imp)?)?;
        let fwd = rel_diff(&yc, &yh);

        let (_, ctx_c) = on_cuda.forward_train(cuda.upload(x.view())?, imp)?;
        let gc = on_cuda.backward(&ctx_c, &cuda.upload(gy.view())?, true)?;
        let (_, ctx_h) = on_cpu.forward_train(cpu.upload(x.view())?, imp)?;
        let gh = on_cpu.backward(&ctx_h, &cpu.upload(gy.view())?, true)?;
        let mut bwd = match (&gc.input, &gh.input) {
            (Some(a), Some(b)) => rel_diff(a, b),
            _ => f64::INFINITY,
        };
        if gc.cores.len() != gh.cores.len() {
            bwd = f64::INFINITY;
        }
        for (a, b) in gc.cores.iter().zip(&gh.cores) {
            bwd = bwd.max(rel_diff(&a.clone().into_dyn(), &b.clone().into_dyn()));
        }
        match imp {
            Implementation::Factorized => (check.fact_fwd, check.fact_bwd) = (fwd, bwd),
            _ => (check.rec_fwd, check.rec_bwd) = (fwd, bwd),
        }
    }
    Ok(check)
}

/// The summed length that `--tol` is calibrated for: the forward's sums (`cin`, `r * k`, `r`
/// terms; `cin * prod(k)` for the dense path) are at most this long in the suite but one.
pub(crate) const TOL_REFERENCE_LEN: f64 = 1024.0;

/// The tolerance for results that are sums of `len` products. Two f32 sums of the same terms in
/// different orders (CUDA and CPU) differ by rounding errors that accumulate like a random walk,
/// about `sqrt(len)` roundings relative to the result; so the tolerance is `tol` up to
/// [`TOL_REFERENCE_LEN`] terms and grows with `sqrt(len / TOL_REFERENCE_LEN)` beyond.
pub(crate) fn tol_for_len(tol: f64, len: usize) -> f64 {
    tol * (len as f64 / TOL_REFERENCE_LEN).sqrt().max(1.0)
}

/// The longest sum of the backward pass at the check batch: a core or kernel gradient sums over
/// `batch * positions` (input or output positions, whichever are more), an input gradient over
/// `channels * prod(k)` at most.
pub(crate) fn backward_summed_len(
    case: &Case,
    input_shape: &[usize],
    output_shape: &[usize],
) -> usize {
    let positions = |shape: &[usize]| shape[0] * shape[2..].iter().product::<usize>();
    let taps: usize = case.kernel.iter().product();
    positions(input_shape)
        .max(positions(output_shape))
        .max(case.cin.max(case.cout) * taps)
}
