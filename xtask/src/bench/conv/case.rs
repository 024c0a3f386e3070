//! One case: build the layer, time its forward and forward+backward on both implementations,
//! time the chain step by step, and (with `--check`) compare the implementations.
//!
//! Per case, with the layer's weights prepared once for the backend and the input uploaded once:
//! - factorized forward and reconstructed forward (dense kernel reconstructed and uploaded once,
//!   before timing, as a layer at inference keeps it), median ms ([`Reps`]);
//! - the implementation `Auto` resolves to for the input shape, and whether it is the faster one;
//! - forward+backward of `loss = y.sum()` (`grad_y` = ones) for both implementations, with the
//!   gradients of every core and of the input;
//! - useful GFLOP/s (`2 * macs` of the cost model) and the share of the machine's FMA peak, the
//!   roofline floor `max(flops / peak, bytes / bandwidth)` (bytes of the cost model, which counts
//!   every intermediate of the chain written and read once) and the ratio time / floor, with peak
//!   and bandwidth measured in the same run ([`Machine`]);
//! - the extra memory a forward allocates (peak bytes during it minus bytes before, output
//!   included; [`crate::alloc`]).

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use ttconv::{Backend, Implementation, PreparedTtConv, TtConv};
use ttconv_cpu::CpuBackend;

use super::err;
use super::spec::CaseSpec;
use super::steps::{Step, factorized_steps};
use crate::bench::machine::{LoadMeter, Machine};
use crate::bench::measure::{Reps, Timing, time_it};

/// `--check`'s comparisons at the tiny size, each `max |a - b| / max |b|`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Check {
    /// Factorized vs reconstructed forward.
    pub forward: f64,
    /// Factorized forward vs the direct (naive, f64-accumulating) convolution
    /// `ttconv::oracle::conv_nd` with the layer's full kernel.
    pub forward_vs_oracle: f64,
    /// Input gradients of the two implementations.
    pub grad_input: f64,
    /// Core gradients of the two implementations, the worst core.
    pub grad_cores: f64,
}

/// `--check`: largest accepted `max |y_fact - y_rec| / max |y_rec|`, and the same against the
/// oracle (f32 sums of at most a few thousand products against an f64 sum: ~1e-6 in practice).
pub const CHECK_FORWARD_TOL: f64 = 1e-4;
/// `--check`: largest accepted difference of the two implementations' gradients (input and every
/// core), relative to the largest entry of each (f32 sums in different orders).
pub const CHECK_GRAD_TOL: f64 = 1e-3;

/// A seeded N(0, 1) input of `shape`.
pub fn random_input(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        let v: f32 = StandardNormal.sample(&mut rng);
        v
    })
}

/// Everything measured on one case.
#[derive(Debug)]
pub struct CaseResult {
    pub id: String,
    pub spec: CaseSpec,
    pub ranks: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub params_dense: usize,
    pub params_tt: usize,
    pub fact: Timing,
    pub rec: Timing,
    pub auto: Implementation,
    pub train_fact: Timing,
    pub train_rec: Timing,
    pub fact_macs: u64,
    pub fact_bytes: u64,
    pub dense_macs: u64,
    pub dense_bytes: u64,
    /// Bytes of x, y and the cores only: what a fully fused chain must move.
    pub fused_bytes: u64,
    pub mem_fact: usize,
    pub mem_rec: usize,
    /// `--check`'s comparisons.
    pub check: Option<Check>,
    /// CPU share other processes took while the case ran ([`LoadMeter`]).
    pub external_load: Option<f64>,
    /// The factorized forward's and backward's primitives timed alone.
    pub steps: (Vec<Step>, Vec<Step>),
    /// External loads of the attempts discarded because another process loaded the machine.
    pub redone: Vec<f64>,
}

/// Derived figures of a case.
#[derive(Clone, Copy, Debug)]
pub struct Derived {
    pub fact_ms: f64,
    pub rec_ms: f64,
    pub fact_gflops: f64,
    pub fact_pct: f64,
    pub dense_gflops: f64,
    pub dense_pct: f64,
    pub floor_ms: f64,
    pub floor_bound: &'static str,
    pub floor_ratio: f64,
    pub fused_floor_ms: f64,
    pub rec_floor_ms: f64,
    pub auto_ms: f64,
    pub auto_faster: bool,
    pub train_fact_ms: f64,
    pub train_rec_ms: f64,
}

impl CaseResult {
    /// The figures derived from the timings, the cost model and the machine.
    pub fn derived(&self, m: &Machine) -> Derived {
        let fact_ms = self.fact.median() * 1e3;
        let rec_ms = self.rec.median() * 1e3;
        let gflops = |macs: u64, ms: f64| 2.0 * macs as f64 / (ms * 1e-3) / 1e9;
        let compute_ms = |macs: u64| 2.0 * macs as f64 / (m.peak_gflops * 1e9) * 1e3;
        let memory_ms = |bytes: u64| bytes as f64 / (m.bandwidth_gbs * 1e9) * 1e3;
        let (fc, fm) = (compute_ms(self.fact_macs), memory_ms(self.fact_bytes));
        let floor_ms = fc.max(fm);
        let auto_ms = match self.auto {
            Implementation::Reconstructed => rec_ms,
            _ => fact_ms,
        };
        let fact_gflops = gflops(self.fact_macs, fact_ms);
        let dense_gflops = gflops(self.dense_macs, rec_ms);
        Derived {
            fact_ms,
            rec_ms,
            fact_gflops,
            fact_pct: 100.0 * fact_gflops / m.peak_gflops,
            dense_gflops,
            dense_pct: 100.0 * dense_gflops / m.peak_gflops,
            floor_ms,
            floor_bound: if fc >= fm { "compute" } else { "memory" },
            floor_ratio: fact_ms / floor_ms,
            fused_floor_ms: fc.max(memory_ms(self.fused_bytes)),
            rec_floor_ms: compute_ms(self.dense_macs).max(memory_ms(self.dense_bytes)),
            auto_ms,
            auto_faster: auto_ms <= fact_ms.min(rec_ms),
            train_fact_ms: self.train_fact.median() * 1e3,
            train_rec_ms: self.train_rec.median() * 1e3,
        }
    }
}

/// Builds, prepares and measures one case.
pub fn run_case(
    backend: &CpuBackend,
    id: &str,
    spec: &CaseSpec,
    seed: u64,
    reps: Reps,
    check: bool,
    progress: &dyn Fn(&str),
) -> Result<CaseResult, String> {
    progress("building the layer");
    let load = LoadMeter::start();
    let mut layer = TtConv::new(spec.config()).map_err(err)?;
    layer
        .init_from_random(ttconv::Init::Direct, seed)
        .map_err(err)?;
    let shape = spec.input_shape();
    let output_shape = layer.output_shape(&shape).map_err(err)?;
    let x = backend
        .upload(random_input(&shape, seed + 1000).view())
        .map_err(err)?;
    let prepared = layer.prepare(backend).map_err(err)?;
    prepared.dense_kernel().map_err(err)?;
    let auto = prepared
        .implementation_for(&shape, Implementation::Auto)
        .map_err(err)?;
    let fact_cost = layer
        .flops(&shape, Implementation::Factorized)
        .map_err(err)?;
    let dense_cost = layer
        .flops(&shape, Implementation::Reconstructed)
        .map_err(err)?;
    let forward = |i: Implementation| prepared.forward_with(&x, i).map_err(err);

    progress("factorized forward");
    let fact = time_it(reps, || (), |_| forward(Implementation::Factorized))?;
    progress("reconstructed forward");
    let rec = time_it(reps, || (), |_| forward(Implementation::Reconstructed))?;
    // After the warm-ups, so one-time caches are not counted.
    let (y_fact, mem_fact) = crate::alloc::extra_peak(|| forward(Implementation::Factorized));
    let (y_rec, mem_rec) = crate::alloc::extra_peak(|| forward(Implementation::Reconstructed));
    let (y_fact, y_rec) = (y_fact?, y_rec?);

    let gy = backend
        .upload(ArrayD::<f32>::ones(IxDyn(&output_shape)).view())
        .map_err(err)?;
    progress("factorized forward+backward");
    let train =
        |i: Implementation| time_it(reps, || x.clone(), |xc| train_step(&prepared, xc, &gy, i));
    let train_fact = train(Implementation::Factorized)?;
    progress("reconstructed forward+backward");
    let train_rec = train(Implementation::Reconstructed)?;

    progress("factorized steps one by one");
    let step_reps = Reps {
        min: reps.min.min(5),
        max: reps.max.min(15),
        budget: reps.budget.min(0.3),
        ..reps
    };
    let steps = factorized_steps(backend, &prepared, &x, &gy, step_reps)?;

    let check = if check {
        progress("comparing the implementations");
        let yf = backend.download(&y_fact).map_err(err)?;
        let yr = backend.download(&y_rec).map_err(err)?;
        let gf = train_step(&prepared, x.clone(), &gy, Implementation::Factorized)?;
        let gr = train_step(&prepared, x.clone(), &gy, Implementation::Reconstructed)?;
        let cores = gf
            .cores
            .iter()
            .zip(&gr.cores)
            .map(|(a, b)| rel_diff(a, b))
            .fold(0.0f64, f64::max);
        let xh = backend.download(&x).map_err(err)?;
        let kernel = layer.full_weights();
        let yo = ttconv::oracle::conv_nd(xh.view(), kernel.view(), None, layer.geometry())
            .map_err(err)?;
        Some(Check {
            forward: rel_diff(&yf, &yr),
            forward_vs_oracle: rel_diff(&yf, &yo),
            grad_input: rel_diff(&gf.input, &gr.input),
            grad_cores: cores,
        })
    } else {
        None
    };

    let x_bytes = 4 * shape.iter().product::<usize>() as u64;
    let y_bytes = 4 * output_shape.iter().product::<usize>() as u64;
    Ok(CaseResult {
        id: id.to_string(),
        spec: spec.clone(),
        ranks: layer.ranks(),
        params_dense: spec.in_channels * spec.out_channels * spec.kernel.iter().product::<usize>(),
        params_tt: layer.tt().num_params(),
        output_shape,
        fact,
        rec,
        auto,
        train_fact,
        train_rec,
        fact_macs: fact_cost.macs,
        fact_bytes: fact_cost.bytes,
        dense_macs: dense_cost.macs,
        dense_bytes: dense_cost.bytes,
        fused_bytes: x_bytes + y_bytes + 4 * layer.tt().num_params() as u64,
        mem_fact,
        mem_rec,
        check,
        external_load: load.fraction(),
        steps,
        redone: Vec::new(),
    })
}

fn max_abs(a: &ArrayD<f32>) -> f64 {
    a.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()))
}

/// `max |a - b| / max |b|` (or the absolute difference when `b` is zero).
fn rel_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    if a.shape() != b.shape() {
        return f64::INFINITY;
    }
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    let scale = max_abs(b);
    if scale > 0.0 { diff / scale } else { diff }
}

/// The implementation's name in the tables and the JSON.
pub fn impl_name(i: Implementation) -> &'static str {
    match i {
        Implementation::Factorized => "factorized",
        Implementation::Reconstructed => "reconstructed",
        Implementation::Auto => "auto",
    }
}

/// What a forward+backward returns, kept only to compare the implementations in `--check`.
struct TrainOut {
    input: ArrayD<f32>,
    cores: Vec<ArrayD<f32>>,
}

fn train_step<B: Backend>(
    prepared: &PreparedTtConv<'_, B>,
    x: B::Tensor,
    gy: &B::Tensor,
    implementation: Implementation,
) -> Result<TrainOut, String> {
    let (y, ctx) = prepared.forward_train(x, implementation).map_err(err)?;
    drop(y);
    let g = prepared.backward(&ctx, gy, true).map_err(err)?;
    Ok(TrainOut {
        input: g.input.unwrap_or_else(|| ArrayD::zeros(IxDyn(&[0]))),
        cores: g.cores.into_iter().map(|c| c.into_dyn()).collect(),
    })
}
