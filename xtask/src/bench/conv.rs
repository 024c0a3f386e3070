//! The conv part: the TT convolution's forward and forward+backward on the CPU backend, against
//! the TensorLy-Torch / PyTorch anchor of issues 4 and 5 (`shared/anchors/README.md`).
//!
//! Per case (case ids `conv/<name>`), with the layer's weights prepared once for the backend and
//! the input uploaded once:
//! - factorized forward and reconstructed forward (dense kernel reconstructed and uploaded once,
//!   before timing, as a layer at inference keeps it), median ms of repeats after warm-up (the
//!   anchor script's protocol: >= 7 runs within ~1.5 s, at most 25);
//! - the implementation `Auto` resolves to for the input shape, and whether it is the faster one;
//! - forward+backward of `loss = y.sum()` (`grad_y` = ones) for both implementations, with the
//!   gradients of every core and of the input, as `tltorch`'s `layer(x).sum().backward()`;
//! - useful GFLOP/s (`2 * macs` of the cost model) and the share of the machine's FMA peak, the
//!   roofline floor `max(flops / peak, bytes / bandwidth)` (bytes of the cost model, which counts
//!   every intermediate of the chain written and read once) and the ratio time / floor, with peak and
//!   bandwidth measured in the same run ([`super::machine`]);
//! - the extra memory a forward allocates (peak bytes during it minus bytes before, output
//!   included; [`crate::alloc`]).
//!
//! The machine is shared: the CPU time other processes take while a case runs is measured
//! ([`LoadMeter`], the anchor script's `ExternalLoad`) and reported; in a full run a case loaded
//! above [`LOAD_THRESHOLD`] is redone after waiting for an idle machine (bounded retries and wait).
//!
//! Output: a table on stdout (a progress line on stderr while it runs), `target/bench/bench.json`
//! (`"cases"`, `"machine"`, `"sweep"`, `"summary"`) and, unless `--quick`, a rank sweep of
//! 2d_c64_s56 plotted to `target/bench/conv_rank_sweep.svg`.
//!
//! `--check` runs every case once at a tiny size (batch 1, channels / 8, spatial / 4) and fails if
//! the factorized and reconstructed outputs differ by more than [`CHECK_FORWARD_TOL`] (max abs
//! difference over max abs), or their gradients by more than [`CHECK_GRAD_TOL`]. It has no timing
//! target: it runs in CI on a slow machine. It writes `target/bench/conv-check.json`, never
//! `bench.json`.
//!
//! `--case SPEC` times a layer given on the command line instead of the suite ([`CASE_FORMAT`]).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde_json::{Value, json};
use ttconv::{
    Backend, Implementation, Padding, PreparedTtConv, RankSpec, StepOp, TtConv, TtConvConfig,
};
use ttconv_cpu::CpuBackend;

use super::machine::{LoadMeter, Machine};
use super::plot::{self, SweepPoint};
use super::{BenchOptions, PartOutcome, Table, Timing, out_dir, unix_time, write_json};

/// The `--case` format, printed by `cargo xtask bench --help`.
pub const CASE_FORMAT: &str = "\
--case SPEC (conv part; repeatable; replaces the default suite): comma-separated key=value
  b=N          batch (default 1)
  c=IN[:OUT]   input channels, and output channels (default OUT = IN)           [required]
  s=D1xD2..    input spatial size; its length is the order d (1-D: s=4096)      [required]
  k=K|K1xK2..  kernel size, one value for every mode or one per mode            [required]
  stride=S|S1xS2..   (default 1)      dil=D|D1xD2..   dilation (default 1)
  pad=P|P1xP2..|same zero padding on both sides (default 0; `same` as PyTorch)
  rank=R       TT rank spec (default same): `same`; a float fraction of the dense parameter
               count (0.1); an int r for ranks 1-r-..-r-1 (16); or every rank, 1-16-16-16-1
  name=TEXT    label in the table and JSON (default derived from the shape)
  e.g. --case \"b=8,c=64:128,s=56x56,k=3x3,stride=2,pad=1,dil=1,rank=16\"";

/// Redo a case when other processes took more than this share of the CPUs while it ran.
const LOAD_THRESHOLD: f64 = 0.1;
/// Most redos per case.
const RETRIES: usize = 2;
/// Most seconds a run waits for an idle machine, in all.
const WAIT_BUDGET_S: f64 = 180.0;

/// Waits until other processes use less than [`LOAD_THRESHOLD`] of the CPUs over one second, at
/// most `max_s` seconds; returns the seconds waited.
fn wait_idle(max_s: f64) -> f64 {
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < max_s {
        let meter = LoadMeter::start();
        std::thread::sleep(std::time::Duration::from_secs(1));
        if meter.fraction().is_none_or(|l| l < LOAD_THRESHOLD) {
            break;
        }
    }
    start.elapsed().as_secs_f64()
}

/// `--check`: largest accepted `max |y_fact - y_rec| / max |y_rec|`.
pub const CHECK_FORWARD_TOL: f64 = 1e-4;
/// `--check`: largest accepted difference of the two implementations' gradients (input and every
/// core), relative to the largest entry of each (f32 sums in different orders).
pub const CHECK_GRAD_TOL: f64 = 1e-3;

/// Targets of issue 5 (forward) and issue 4 item 6 (forward+backward), reported, never asserted.
pub mod targets {
    /// Factorized forward vs tltorch factorized: geometric mean of speedups at least this.
    pub const FACT_GEOMEAN: f64 = 3.0;
    /// ... and no case under this.
    pub const FACT_MIN: f64 = 2.0;
    /// Factorized forward within this factor of its roofline floor.
    pub const FLOOR_RATIO: f64 = 1.5;
    /// Reconstructed forward at least this fraction of PyTorch dense's speed.
    pub const REC_VS_DENSE: f64 = 0.9;
    /// Factorized forward+backward vs tltorch: geometric mean at least this ...
    pub const TRAIN_GEOMEAN: f64 = 3.0;
    /// ... and every case faster (speedup > 1).
    pub const TRAIN_MIN: f64 = 1.0;
}

/// Figures of the anchor, ms, median over 4 runs of each run's median; TensorLy-Torch 0.5.0,
/// PyTorch 2.15.0 (oneDNN), 2 threads, this kind of 2-core machine, 2026-11-26. Copied from the
/// table "Figures measured on this kind of machine" of `shared/anchors/README.md` (the same
/// forward figures are in issue 5 item 2, the forward+backward ones in issue 4 item 6).
#[derive(Clone, Copy, Debug)]
pub struct Anchor {
    /// Case name.
    pub name: &'static str,
    /// tltorch factorized forward.
    pub tltorch_factorized: f64,
    /// tltorch reconstructed forward (reconstructs the kernel on every call).
    pub tltorch_reconstructed: f64,
    /// PyTorch dense `F.convNd`, kernel reconstructed beforehand.
    pub pytorch_dense: f64,
    /// tltorch factorized forward + backward of `out.sum()`.
    pub tltorch_factorized_train: f64,
    /// PyTorch dense forward + backward.
    pub pytorch_dense_train: f64,
    /// Whether issue 4's forward+backward target lists this case (it leaves out `rsame`).
    pub train_target: bool,
}

const fn anchor(
    name: &'static str,
    f: f64,
    r: f64,
    d: f64,
    ft: f64,
    dt: f64,
    train_target: bool,
) -> Anchor {
    Anchor {
        name,
        tltorch_factorized: f,
        tltorch_reconstructed: r,
        pytorch_dense: d,
        tltorch_factorized_train: ft,
        pytorch_dense_train: dt,
        train_target,
    }
}

/// The anchor table (see [`Anchor`] for the source).
pub const ANCHORS: [Anchor; 9] = [
    anchor("2d_c64_s56_r16", 3.53, 13.77, 13.68, 37.25, 68.97, true),
    anchor("2d_c64_s56_r0.1", 4.50, 12.85, 13.26, 14.86, 46.76, true),
    anchor("2d_c128_s28_r32", 2.71, 13.53, 11.40, 8.17, 48.23, true),
    anchor("2d_c256_s14_r32", 1.82, 17.56, 13.97, 5.40, 49.30, true),
    anchor("2d_c512_s7_r64", 1.78, 34.37, 17.01, 5.17, 63.96, true),
    anchor(
        "2d_c256_s14_rsame",
        19.08,
        29.16,
        15.07,
        59.04,
        44.22,
        false,
    ),
    anchor(
        "2d_c64to128_s56_stride2_r16",
        3.07,
        9.06,
        8.83,
        13.95,
        35.70,
        true,
    ),
    anchor(
        "1d_c64_L4096_k9_r16",
        6.70,
        28.52,
        27.45,
        16.32,
        83.06,
        true,
    ),
    anchor("3d_c32_s8x28x28_r16", 2.13, 4.57, 4.35, 9.47, 25.53, true),
];

/// One layer shape to time.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseSpec {
    /// Name (the anchor's for the suite).
    pub name: String,
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input spatial size; its length is the order.
    pub spatial: Vec<usize>,
    /// Kernel size per mode.
    pub kernel: Vec<usize>,
    /// Stride per mode.
    pub stride: Vec<usize>,
    /// Padding.
    pub padding: Padding,
    /// Dilation per mode.
    pub dilation: Vec<usize>,
    /// TT rank spec on `(in, k.., out)`.
    pub rank: RankSpec,
}

fn spec2d(
    name: &str,
    c_in: usize,
    c_out: usize,
    s: usize,
    stride: usize,
    rank: RankSpec,
) -> CaseSpec {
    CaseSpec {
        name: name.into(),
        batch: 8,
        in_channels: c_in,
        out_channels: c_out,
        spatial: vec![s, s],
        kernel: vec![3, 3],
        stride: vec![stride; 2],
        padding: Padding::All(1),
        dilation: vec![1, 1],
        rank,
    }
}

/// The default suite: the 9 cases of `shared/anchors/README.md`, in its order.
pub fn default_suite() -> Vec<CaseSpec> {
    use RankSpec::{Fraction, Same, Uniform};
    vec![
        spec2d("2d_c64_s56_r16", 64, 64, 56, 1, Uniform(16)),
        spec2d("2d_c64_s56_r0.1", 64, 64, 56, 1, Fraction(0.1)),
        spec2d("2d_c128_s28_r32", 128, 128, 28, 1, Uniform(32)),
        spec2d("2d_c256_s14_r32", 256, 256, 14, 1, Uniform(32)),
        spec2d("2d_c512_s7_r64", 512, 512, 7, 1, Uniform(64)),
        spec2d("2d_c256_s14_rsame", 256, 256, 14, 1, Same),
        spec2d("2d_c64to128_s56_stride2_r16", 64, 128, 56, 2, Uniform(16)),
        CaseSpec {
            name: "1d_c64_L4096_k9_r16".into(),
            batch: 8,
            in_channels: 64,
            out_channels: 64,
            spatial: vec![4096],
            kernel: vec![9],
            stride: vec![1],
            padding: Padding::All(4),
            dilation: vec![1],
            rank: Uniform(16),
        },
        CaseSpec {
            name: "3d_c32_s8x28x28_r16".into(),
            batch: 2,
            in_channels: 32,
            out_channels: 32,
            spatial: vec![8, 28, 28],
            kernel: vec![3, 3, 3],
            stride: vec![1; 3],
            padding: Padding::All(1),
            dilation: vec![1; 3],
            rank: Uniform(16),
        },
    ]
}

/// The ranks of the plotted sweep (2d_c64_s56, batch 8, 3x3, padding 1).
const SWEEP_RANKS: [usize; 7] = [4, 8, 16, 24, 32, 48, 64];

fn rank_text(r: &RankSpec) -> String {
    match r {
        RankSpec::Same => "same".into(),
        RankSpec::Fraction(f) => format!("{f}"),
        RankSpec::Uniform(r) => r.to_string(),
        RankSpec::Explicit(v) => dashed(v),
    }
}

fn dashed(v: &[usize]) -> String {
    v.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

fn crossed(v: &[usize]) -> String {
    v.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

fn padding_text(p: &Padding) -> String {
    match p {
        Padding::All(p) => p.to_string(),
        Padding::Each(v) => crossed(v),
        Padding::Asymmetric(v) => v
            .iter()
            .map(|(a, b)| format!("{a}:{b}"))
            .collect::<Vec<_>>()
            .join("x"),
        Padding::Same => "same".into(),
    }
}

fn parse_list(key: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split('x')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{key}={v}`: expected integers separated by `x`"))
        })
        .collect()
}

/// One value per mode, broadcasting a single value.
fn per_mode(key: &str, v: Vec<usize>, order: usize) -> Result<Vec<usize>, String> {
    match v.len() {
        1 => Ok(vec![v[0]; order]),
        n if n == order => Ok(v),
        n => Err(format!(
            "`{key}` has {n} values, the spatial size has {order} modes"
        )),
    }
}

fn parse_rank(v: &str) -> Result<RankSpec, String> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("same") {
        Ok(RankSpec::Same)
    } else if v.contains('-') {
        let ranks = v
            .split('-')
            .map(|t| t.parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("`rank={v}`: expected ranks separated by `-`"))?;
        Ok(RankSpec::Explicit(ranks))
    } else if let Ok(r) = v.parse::<usize>() {
        Ok(RankSpec::Uniform(r))
    } else if let Ok(f) = v.parse::<f64>() {
        if f > 0.0 && f.is_finite() {
            Ok(RankSpec::Fraction(f))
        } else {
            Err(format!("`rank={v}`: a fraction must be positive"))
        }
    } else {
        Err(format!(
            "`rank={v}`: expected `same`, a fraction, an int or ranks like 1-16-16-16-1"
        ))
    }
}

impl CaseSpec {
    /// Parses a `--case` spec ([`CASE_FORMAT`]).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut kv = std::collections::BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}`: expected key=value"))?;
            let k = k.trim().to_ascii_lowercase();
            let known = ["b", "c", "s", "k", "stride", "pad", "dil", "rank", "name"];
            if !known.contains(&k.as_str()) {
                return Err(format!("unknown key `{k}` (keys: {})", known.join(", ")));
            }
            if kv.insert(k.clone(), v.trim().to_string()).is_some() {
                return Err(format!("`{k}` given twice"));
            }
        }
        let need = |k: &str| {
            kv.get(k)
                .cloned()
                .ok_or_else(|| format!("`{k}=` is required"))
        };
        let spatial = parse_list("s", &need("s")?)?;
        let order = spatial.len();
        let c = need("c")?;
        let (cin, cout) = match c.split_once(':') {
            Some((a, b)) => (a, b),
            None => (c.as_str(), c.as_str()),
        };
        let channel = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("`c={c}`: expected IN or IN:OUT"))
        };
        let opt_list = |k: &str, default: usize| -> Result<Vec<usize>, String> {
            match kv.get(k) {
                Some(v) => per_mode(k, parse_list(k, v)?, order),
                None => Ok(vec![default; order]),
            }
        };
        let padding = match kv.get("pad") {
            Some(v) if v.eq_ignore_ascii_case("same") => Padding::Same,
            Some(v) => Padding::Each(per_mode("pad", parse_list("pad", v)?, order)?),
            None => Padding::All(0),
        };
        let batch = match kv.get("b") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| format!("`b={v}`: expected an integer"))?,
            None => 1,
        };
        let mut case = CaseSpec {
            name: String::new(),
            batch,
            in_channels: channel(cin)?,
            out_channels: channel(cout)?,
            kernel: per_mode("k", parse_list("k", &need("k")?)?, order)?,
            spatial,
            stride: opt_list("stride", 1)?,
            padding,
            dilation: opt_list("dil", 1)?,
            rank: match kv.get("rank") {
                Some(v) => parse_rank(v)?,
                None => RankSpec::Same,
            },
        };
        case.name = match kv.get("name") {
            Some(n) => n.clone(),
            None => case.derived_name(),
        };
        let geometry = case.config().validate().map_err(|e| e.to_string())?;
        ttconv::output_spatial(&case.spatial, &case.kernel, &geometry)
            .map_err(|e| e.to_string())?;
        Ok(case)
    }

    fn derived_name(&self) -> String {
        let mut n = format!("{}d_c{}", self.spatial.len(), self.in_channels);
        if self.out_channels != self.in_channels {
            n += &format!("to{}", self.out_channels);
        }
        n += &format!("_s{}_k{}", crossed(&self.spatial), crossed(&self.kernel));
        if self.stride.iter().any(|&s| s != 1) {
            n += &format!("_stride{}", crossed(&self.stride));
        }
        if self.dilation.iter().any(|&s| s != 1) {
            n += &format!("_dil{}", crossed(&self.dilation));
        }
        n += &format!("_b{}_r{}", self.batch, rank_text(&self.rank));
        n
    }

    /// The layer configuration (bias off, as the anchor script).
    pub fn config(&self) -> TtConvConfig {
        TtConvConfig::new(self.in_channels, self.out_channels, self.kernel.clone())
            .stride(self.stride.clone())
            .padding(self.padding.clone())
            .dilation(self.dilation.clone())
            .rank(self.rank.clone())
            .bias(false)
    }

    /// The input shape `(batch, in, D..)`.
    pub fn input_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.in_channels];
        s.extend_from_slice(&self.spatial);
        s
    }

    /// The `--check` size: batch 1, channels / 8, spatial / 4 (at least 4 and the dilated
    /// kernel's extent); same kernel, geometry and rank spec.
    pub fn tiny(&self) -> Self {
        let spatial = self
            .spatial
            .iter()
            .zip(&self.kernel)
            .zip(&self.dilation)
            .map(|((&s, &k), &d)| (s / 4).max(4).max(d * (k - 1) + 1).min(s))
            .collect();
        CaseSpec {
            name: self.name.clone(),
            batch: 1,
            in_channels: (self.in_channels / 8).max(1),
            out_channels: (self.out_channels / 8).max(1),
            spatial,
            ..self.clone()
        }
    }
}

fn random_input(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        let v: f32 = StandardNormal.sample(&mut rng);
        v
    })
}

/// How many runs a measurement makes.
#[derive(Clone, Copy, Debug)]
struct Reps {
    warmup: usize,
    min: usize,
    max: usize,
    /// Seconds the timed runs aim to take in all (between `min` and `max` runs).
    budget: f64,
}

impl Reps {
    fn for_options(o: &BenchOptions) -> Self {
        if o.check {
            Reps {
                warmup: 0,
                min: 1,
                max: 1,
                budget: 0.0,
            }
        } else if o.quick {
            Reps {
                warmup: 1,
                min: 3,
                max: 3,
                budget: 0.0,
            }
        } else {
            // The anchor script's protocol: 2 warm-ups, a probe, then >= 7 runs (at most 25)
            // within about 1.5 s.
            Reps {
                warmup: 2,
                min: 7,
                max: 25,
                budget: 1.5,
            }
        }
    }
}

/// Times `run(setup())`: only `run` is timed; what it returns is dropped outside the timing.
fn time_it<S, R>(
    reps: Reps,
    mut setup: impl FnMut() -> S,
    mut run: impl FnMut(S) -> Result<R, String>,
) -> Result<Timing, String> {
    let mut once = || -> Result<f64, String> {
        let s = setup();
        let start = Instant::now();
        let r = std::hint::black_box(run(s)?);
        let secs = start.elapsed().as_secs_f64();
        drop(r);
        Ok(secs)
    };
    let mut probe = None;
    for _ in 0..reps.warmup {
        probe = Some(once()?);
    }
    let n = match probe {
        Some(p) if reps.budget > 0.0 => {
            ((reps.budget / p.max(1e-9)) as usize).clamp(reps.min, reps.max)
        }
        _ => reps.min,
    };
    let times = (0..n.max(1))
        .map(|_| once())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Timing { times })
}

/// A progress line on stderr: rewritten in place on a terminal, one line per case otherwise.
struct Progress {
    tty: bool,
    total: usize,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            total,
            started: Instant::now(),
        }
    }

    fn step(&self, index: usize, name: &str, what: &str) {
        let line = format!(
            "[conv {}/{} {:>5.1}s] {name}: {what}",
            index + 1,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
        // `eprint!` rather than a raw stderr handle, so the test harness captures it.
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if what.starts_with("building") {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
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

fn impl_name(i: Implementation) -> &'static str {
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

/// One primitive of the factorized chain, timed alone on its real input.
#[derive(Clone, Debug)]
struct Step {
    name: String,
    ms: f64,
    macs: u64,
}

impl Step {
    fn gflops(&self) -> f64 {
        2.0 * self.macs as f64 / (self.ms * 1e-3) / 1e9
    }

    fn json(&self) -> Value {
        json!({"step": self.name, "ms": self.ms, "macs": self.macs, "gflops": self.gflops()})
    }
}

/// Times every step of the layer's factorized program separately, forward and backward (the
/// backward with the input gradient, as `forward+backward` times it), each on the activations
/// the real chain gives it. Returns `(forward steps, backward steps)`.
fn factorized_steps(
    backend: &CpuBackend,
    prepared: &PreparedTtConv<'_, CpuBackend>,
    x: &ArrayD<f32>,
    gy: &ArrayD<f32>,
    reps: Reps,
) -> Result<(Vec<Step>, Vec<Step>), String> {
    let program = prepared.layer().program(x.shape()).map_err(err)?;
    let weights = prepared.step_weights(&program).map_err(err)?;
    let (_, inputs) = program
        .run_keeping_inputs(backend, x.clone(), &weights)
        .map_err(err)?;
    let ms = |t: Timing| t.median() * 1e3;
    let label = |step: &ttconv::Step| match step.op {
        StepOp::Contract => format!("contract {}->{}", step.in_channels(), step.out_channels()),
        StepOp::ConvAlong { axis, kernel, .. } => format!(
            "along{axis} {}->{} k{kernel}",
            step.in_channels(),
            step.out_channels()
        ),
    };
    let mut fwd = Vec::new();
    for (i, step) in program.steps().iter().enumerate() {
        let t = time_it(
            reps,
            || (),
            |_| {
                program
                    .run_step(backend, i, &inputs[i], &weights)
                    .map_err(err)
            },
        )?;
        fwd.push(Step {
            name: label(step),
            ms: ms(t),
            macs: step.macs(),
        });
    }
    // Backward, in the order of `PreparedTtConv::backward`: per step from the last, the weight
    // gradient, then the input gradient (which feeds the step before).
    let mut bwd = Vec::new();
    let mut g = gy.clone();
    for (i, step) in program.steps().iter().enumerate().rev() {
        let (z, w) = (&inputs[i], weights.steps[i]);
        let grad_weight = || match step.op {
            StepOp::Contract => backend
                .contract_channels_grad_weight(z, &g)
                .map(drop)
                .map_err(err),
            StepOp::ConvAlong {
                axis,
                kernel,
                geometry,
            } => backend
                .conv_along_grad_weight(z, &g, axis, kernel, geometry)
                .map(drop)
                .map_err(err),
        };
        let grad_input = || match step.op {
            StepOp::Contract => backend.contract_channels_grad_input(&g, w).map_err(err),
            StepOp::ConvAlong { axis, geometry, .. } => backend
                .conv_along_grad_input(&g, axis, w, geometry, step.input_shape[axis + 2])
                .map_err(err),
        };
        let t = time_it(reps, || (), |_| grad_weight())?;
        bwd.push(Step {
            name: format!("grad weight {}", label(step)),
            ms: ms(t),
            macs: step.macs(),
        });
        let t = time_it(reps, || (), |_| grad_input())?;
        bwd.push(Step {
            name: format!("grad input {}", label(step)),
            ms: ms(t),
            macs: step.macs(),
        });
        let next = grad_input()?;
        g = next;
    }
    Ok((fwd, bwd))
}

/// Everything measured on one case.
#[derive(Debug)]
struct CaseResult {
    id: String,
    spec: CaseSpec,
    ranks: Vec<usize>,
    output_shape: Vec<usize>,
    params_dense: usize,
    params_tt: usize,
    fact: Timing,
    rec: Timing,
    auto: Implementation,
    train_fact: Timing,
    train_rec: Timing,
    fact_macs: u64,
    fact_bytes: u64,
    dense_macs: u64,
    dense_bytes: u64,
    /// Bytes of x, y and the cores only: what a fully fused chain must move.
    fused_bytes: u64,
    mem_fact: usize,
    mem_rec: usize,
    /// `--check`: (forward, input gradient, worst core gradient) relative differences.
    check: Option<(f64, f64, f64)>,
    /// CPU share other processes took while the case ran ([`LoadMeter`]).
    external_load: Option<f64>,
    /// The factorized forward's and backward's primitives timed alone.
    steps: (Vec<Step>, Vec<Step>),
    /// External loads of the attempts discarded because another process loaded the machine.
    redone: Vec<f64>,
}

/// Derived figures of a case.
struct Derived {
    fact_ms: f64,
    rec_ms: f64,
    fact_gflops: f64,
    fact_pct: f64,
    dense_gflops: f64,
    dense_pct: f64,
    floor_ms: f64,
    floor_bound: &'static str,
    floor_ratio: f64,
    fused_floor_ms: f64,
    rec_floor_ms: f64,
    auto_ms: f64,
    auto_faster: bool,
    train_fact_ms: f64,
    train_rec_ms: f64,
}

impl CaseResult {
    fn derived(&self, m: &Machine) -> Derived {
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

    fn anchor(&self) -> Option<&'static Anchor> {
        ANCHORS.iter().find(|a| a.name == self.spec.name)
    }

    fn json(&self, m: &Machine) -> Value {
        let d = self.derived(m);
        let ms = |t: &Timing| t.times.iter().map(|s| s * 1e3).collect::<Vec<_>>();
        let anchor = self.anchor().map(|a| {
            json!({
                "source": "shared/anchors/README.md, TensorLy-Torch 0.5.0 + PyTorch 2.15.0 (oneDNN), 2 threads, median of 4 runs, another sitting",
                "tltorch_factorized_ms": a.tltorch_factorized,
                "tltorch_reconstructed_ms": a.tltorch_reconstructed,
                "pytorch_dense_ms": a.pytorch_dense,
                "tltorch_factorized_train_ms": a.tltorch_factorized_train,
                "pytorch_dense_train_ms": a.pytorch_dense_train,
                "speedup_factorized_vs_tltorch": a.tltorch_factorized / d.fact_ms,
                "speed_reconstructed_vs_pytorch_dense": a.pytorch_dense / d.rec_ms,
                "speedup_reconstructed_vs_tltorch_reconstructed": a.tltorch_reconstructed / d.rec_ms,
                "speedup_train_factorized_vs_tltorch": a.tltorch_factorized_train / d.train_fact_ms,
                "speedup_train_reconstructed_vs_pytorch_dense": a.pytorch_dense_train / d.train_rec_ms,
                "train_target_listed": a.train_target,
            })
        });
        let s = &self.spec;
        let shape = json!({
            "name": s.name,
            "id": self.id,
            "batch": s.batch,
            "in_channels": s.in_channels,
            "out_channels": s.out_channels,
            "spatial": s.spatial,
            "kernel": s.kernel,
            "stride": s.stride,
            "padding": padding_text(&s.padding),
            "dilation": s.dilation,
            "rank_spec": rank_text(&s.rank),
            "ranks": self.ranks,
            "output_shape": self.output_shape,
            "params_dense": self.params_dense,
            "params_tt": self.params_tt,
        });
        // Two `json!` calls: one would exceed the macro's recursion limit.
        let timings = json!({
            "factorized_ms": d.fact_ms,
            "factorized_min_ms": self.fact.min() * 1e3,
            "factorized_times_ms": ms(&self.fact),
            "reconstructed_ms": d.rec_ms,
            "reconstructed_min_ms": self.rec.min() * 1e3,
            "reconstructed_times_ms": ms(&self.rec),
            "auto": impl_name(self.auto),
            "auto_ms": d.auto_ms,
            "auto_picked_faster": d.auto_faster,
            "speedup_factorized_vs_reconstructed": d.rec_ms / d.fact_ms,
            "factorized_macs": self.fact_macs,
            "factorized_bytes": self.fact_bytes,
            "dense_macs": self.dense_macs,
            "dense_bytes": self.dense_bytes,
            "factorized_gflops": d.fact_gflops,
            "factorized_pct_peak": d.fact_pct,
            "dense_gflops": d.dense_gflops,
            "dense_pct_peak": d.dense_pct,
            "floor_ms": d.floor_ms,
            "floor_bound": d.floor_bound,
            "floor_ratio": d.floor_ratio,
            "fused_floor_ms": d.fused_floor_ms,
            "reconstructed_floor_ms": d.rec_floor_ms,
            "reconstructed_floor_ratio": d.rec_ms / d.rec_floor_ms,
            "train_factorized_ms": d.train_fact_ms,
            "train_factorized_times_ms": ms(&self.train_fact),
            "train_reconstructed_ms": d.train_rec_ms,
            "train_reconstructed_times_ms": ms(&self.train_rec),
            "forward_extra_bytes_factorized": self.mem_fact,
            "forward_extra_bytes_reconstructed": self.mem_rec,
            "output_bytes": 4 * self.output_shape.iter().product::<usize>(),
            "external_load": self.external_load,
            "discarded_attempts_external_load": self.redone,
            "factorized_steps": self.steps.0.iter().map(Step::json).collect::<Vec<_>>(),
            "factorized_backward_steps": self.steps.1.iter().map(Step::json).collect::<Vec<_>>(),
            "anchor": anchor,
            "check": self.check.map(|(f, gi, gc)| json!({
                "forward_rel_diff": f, "grad_input_rel_diff": gi, "grad_cores_rel_diff": gc,
            })),
        });
        let mut record = shape;
        if let (Some(a), Value::Object(b)) = (record.as_object_mut(), timings) {
            a.extend(b);
        }
        record
    }
}

/// Builds, prepares and measures one case.
fn run_case(
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
        Some((rel_diff(&yf, &yr), rel_diff(&gf.input, &gr.input), cores))
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

fn geomean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

fn mb(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1 << 20) as f64)
}

fn print_tables(results: &[CaseResult], m: &Machine) {
    let mut fwd = Table::new(&[
        "case",
        "TT ranks",
        "fact ms",
        "rec ms",
        "auto",
        "fact GF/s",
        "%peak",
        "floor ms",
        "x floor",
        "bound",
        "rec GF/s",
        "%peak",
        "rec/fact",
        "fwd MiB f/r",
        "ext load",
    ]);
    let mut train = Table::new(&[
        "case",
        "f+b fact ms",
        "f+b rec ms",
        "tltorch fact",
        "x",
        "PyTorch dense",
        "rec x",
        "tltorch f+b",
        "f+b x",
    ]);
    for r in results {
        let d = r.derived(m);
        fwd.row(vec![
            r.spec.name.clone(),
            dashed(&r.ranks),
            format!("{:.3}", d.fact_ms),
            format!("{:.3}", d.rec_ms),
            format!(
                "{}{}",
                &impl_name(r.auto)[..4],
                if d.auto_faster { " ok" } else { " MISS" }
            ),
            format!("{:.1}", d.fact_gflops),
            format!("{:.0}", d.fact_pct),
            format!("{:.3}", d.floor_ms),
            format!("{:.2}", d.floor_ratio),
            d.floor_bound.into(),
            format!("{:.1}", d.dense_gflops),
            format!("{:.0}", d.dense_pct),
            format!("{:.2}", d.rec_ms / d.fact_ms),
            format!("{}/{}", mb(r.mem_fact), mb(r.mem_rec)),
            r.external_load.map_or("-".into(), |l| format!("{l:.2}")),
        ]);
        let a = r.anchor();
        let opt = |f: &dyn Fn(&Anchor) -> String| a.map_or("-".to_string(), f);
        train.row(vec![
            r.spec.name.clone(),
            format!("{:.3}", d.train_fact_ms),
            format!("{:.3}", d.train_rec_ms),
            opt(&|a| format!("{:.2}", a.tltorch_factorized)),
            opt(&|a| format!("{:.2}", a.tltorch_factorized / d.fact_ms)),
            opt(&|a| format!("{:.2}", a.pytorch_dense)),
            opt(&|a| format!("{:.2}", a.pytorch_dense / d.rec_ms)),
            opt(&|a| format!("{:.2}", a.tltorch_factorized_train)),
            opt(&|a| format!("{:.2}", a.tltorch_factorized_train / d.train_fact_ms)),
        ]);
    }
    println!(
        "\nTT conv forward, CPU backend (median ms; GF/s = useful 2*macs of the cost model; floor = max(flops/peak, bytes/bandwidth))"
    );
    print!("{fwd}");
    println!(
        "\nFactorized chain, each backend primitive timed alone on its real input: ms (GFLOP/s); sum vs the whole"
    );
    let mut st = Table::new(&["case", "forward steps", "sum", "backward steps", "sum"]);
    for r in results {
        let d = r.derived(m);
        let fmt = |v: &[Step]| {
            v.iter()
                .map(|s| format!("{} {:.2} ({:.0})", s.name, s.ms, s.gflops()))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let total = |v: &[Step]| v.iter().map(|s| s.ms).sum::<f64>();
        st.row(vec![
            r.spec.name.clone(),
            fmt(&r.steps.0),
            format!("{:.2}/{:.2}", total(&r.steps.0), d.fact_ms),
            fmt(&r.steps.1),
            format!(
                "{:.2}/{:.2}",
                total(&r.steps.1),
                d.train_fact_ms - d.fact_ms
            ),
        ]);
    }
    print!("{st}");
    println!(
        "\nForward+backward (loss = y.sum(), gradients of the cores and the input) and the anchors (ms, another sitting; x = anchor / ours)"
    );
    print!("{train}");
}

/// The target summary over the cases that have anchors (the default suite).
fn summary(results: &[CaseResult], m: &Machine) -> Value {
    let mut fact = Vec::new();
    let mut train = Vec::new();
    let mut rec = Vec::new();
    let mut floor = Vec::new();
    let mut auto = Vec::new();
    for r in results {
        let d = r.derived(m);
        floor.push((r.spec.name.clone(), d.floor_ratio));
        auto.push((r.spec.name.clone(), d.auto_faster));
        if let Some(a) = r.anchor() {
            fact.push((a.name, a.tltorch_factorized / d.fact_ms));
            rec.push((a.name, a.pytorch_dense / d.rec_ms));
            if a.train_target {
                train.push((a.name, a.tltorch_factorized_train / d.train_fact_ms));
            }
        }
    }
    let vals = |v: &[(&str, f64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    let min = |v: &[(&str, f64)]| v.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    let fact_geo = geomean(&vals(&fact));
    let train_geo = geomean(&vals(&train));
    let floor_ok = floor.iter().filter(|x| x.1 <= targets::FLOOR_RATIO).count();
    let rec_ok = rec.iter().filter(|x| x.1 >= targets::REC_VS_DENSE).count();
    let auto_ok = auto.iter().filter(|x| x.1).count();
    let train_ok = train.iter().filter(|x| x.1 > targets::TRAIN_MIN).count();
    let met = |b: bool| if b { "met" } else { "MISSED" };
    let mut lines = Vec::new();
    if let Some(g) = fact_geo {
        lines.push(format!(
            "factorized vs tltorch: geomean {g:.2}x (target >= {}x), min {:.2}x (target >= {}x): {}",
            targets::FACT_GEOMEAN,
            min(&fact),
            targets::FACT_MIN,
            met(g >= targets::FACT_GEOMEAN && min(&fact) >= targets::FACT_MIN)
        ));
        lines.push(format!(
            "reconstructed vs PyTorch dense: {rec_ok}/{} cases >= {}x: {}",
            rec.len(),
            targets::REC_VS_DENSE,
            met(rec_ok == rec.len())
        ));
    }
    lines.push(format!(
        "factorized within {}x of its roofline floor: {floor_ok}/{} cases: {}",
        targets::FLOOR_RATIO,
        floor.len(),
        met(floor_ok == floor.len())
    ));
    lines.push(format!(
        "Auto picks the faster implementation: {auto_ok}/{} cases: {}",
        auto.len(),
        met(auto_ok == auto.len())
    ));
    if let Some(g) = train_geo {
        lines.push(format!(
            "forward+backward vs tltorch (issue 4's {} cases): geomean {g:.2}x (target >= {}x), {train_ok} faster, min {:.2}x: {}",
            train.len(),
            targets::TRAIN_GEOMEAN,
            min(&train),
            met(g >= targets::TRAIN_GEOMEAN && train_ok == train.len())
        ));
    }
    json!({
        "factorized_vs_tltorch_geomean": fact_geo,
        "factorized_vs_tltorch_min": (!fact.is_empty()).then(|| min(&fact)),
        "reconstructed_vs_pytorch_dense_ok": format!("{rec_ok}/{}", rec.len()),
        "floor_ratio_ok": format!("{floor_ok}/{}", floor.len()),
        "auto_ok": format!("{auto_ok}/{}", auto.len()),
        "train_vs_tltorch_geomean": train_geo,
        "train_vs_tltorch_min": (!train.is_empty()).then(|| min(&train)),
        "lines": lines,
    })
}

/// Times the rank sweep of the plot: the points and the external load while each ran.
fn sweep(
    backend: &CpuBackend,
    options: &BenchOptions,
    m: &Machine,
) -> Result<(Vec<SweepPoint>, Vec<Option<f64>>), String> {
    let ids: Vec<(usize, String)> = SWEEP_RANKS
        .iter()
        .map(|&r| (r, format!("conv/sweep/2d_c64_s56_r{r}")))
        .filter(|(_, id)| options.selects(id))
        .collect();
    let progress = Progress::new(ids.len());
    let reps = Reps {
        budget: 0.75,
        ..Reps::for_options(options)
    };
    let mut points = Vec::new();
    let mut loads = Vec::new();
    for (i, (r, id)) in ids.iter().enumerate() {
        let spec = spec2d(id, 64, 64, 56, 1, RankSpec::Uniform(*r));
        let mut layer = TtConv::new(spec.config()).map_err(err)?;
        layer
            .init_from_random(ttconv::Init::Direct, 7)
            .map_err(err)?;
        let shape = spec.input_shape();
        let x = backend
            .upload(random_input(&shape, 7).view())
            .map_err(err)?;
        let prepared = layer.prepare(backend).map_err(err)?;
        prepared.dense_kernel().map_err(err)?;
        let load = LoadMeter::start();
        let mut t = [0.0; 2];
        for (k, imp) in [Implementation::Factorized, Implementation::Reconstructed]
            .into_iter()
            .enumerate()
        {
            progress.step(i, id, impl_name(imp));
            t[k] = time_it(reps, || (), |_| prepared.forward_with(&x, imp).map_err(err))?.median()
                * 1e3;
        }
        let cost = layer
            .flops(&shape, Implementation::Factorized)
            .map_err(err)?;
        let floor = (2.0 * cost.macs as f64 / (m.peak_gflops * 1e9))
            .max(cost.bytes as f64 / (m.bandwidth_gbs * 1e9))
            * 1e3;
        points.push(SweepPoint {
            rank: *r,
            factorized_ms: t[0],
            reconstructed_ms: t[1],
            floor_ms: floor,
        });
        loads.push(load.fraction());
    }
    progress.done();
    Ok((points, loads))
}

/// Runs the selected conv cases.
pub fn run(options: &BenchOptions) -> Result<PartOutcome, String> {
    let mut outcome = PartOutcome::default();
    let user = !options.cases.is_empty();
    let specs: Vec<(String, CaseSpec)> = if user {
        options
            .cases
            .iter()
            .map(|s| {
                CaseSpec::parse(s)
                    .map(|c| (format!("conv/user/{}", c.name), c))
                    .map_err(|e| format!("--case `{s}`: {e}"))
            })
            .collect::<Result<_, _>>()?
    } else {
        default_suite()
            .into_iter()
            .map(|c| (format!("conv/{}", c.name), c))
            .collect()
    };
    let specs: Vec<_> = specs
        .into_iter()
        .filter(|(id, _)| options.selects(id))
        .collect();
    let run_sweep = !user && !options.quick && !options.check;
    if options.list {
        for (id, _) in &specs {
            println!("{id}");
        }
        if run_sweep {
            for r in SWEEP_RANKS {
                let id = format!("conv/sweep/2d_c64_s56_r{r}");
                if options.selects(&id) {
                    println!("{id}");
                }
            }
        }
        return Ok(outcome);
    }
    let sweep_selected = run_sweep
        && SWEEP_RANKS
            .iter()
            .any(|r| options.selects(&format!("conv/sweep/2d_c64_s56_r{r}")));
    if specs.is_empty() && !sweep_selected {
        return Ok(outcome);
    }

    let backend = CpuBackend::new();
    let machine = if options.check {
        Machine::measure_tiny()
    } else {
        if !options.quick {
            eprintln!("[conv] waiting (at most 30 s) for an idle machine...");
            wait_idle(30.0);
        }
        eprintln!("[conv] measuring the machine (FMA peak, memory bandwidth, GEMM)...");
        let m = Machine::measure(options.quick);
        println!("\n{}", m.summary());
        m
    };

    let reps = Reps::for_options(options);
    let progress = Progress::new(specs.len());
    let mut waited = 0.0;
    let mut results = Vec::new();
    for (i, (id, spec)) in specs.iter().enumerate() {
        let spec = if options.check {
            spec.tiny()
        } else {
            spec.clone()
        };
        let step = |what: &str| progress.step(i, &spec.name, what);
        let mut r = run_case(&backend, id, &spec, i as u64, reps, options.check, &step)
            .map_err(|e| format!("{id}: {e}"))?;
        // The anchor script's contention rule: a case during which other processes took more
        // than LOAD_THRESHOLD of the CPUs is redone after waiting for an idle machine, within a
        // bounded wait (full runs only). The attempt with the lowest load is kept.
        while !options.check
            && !options.quick
            && r.external_load.is_some_and(|l| l > LOAD_THRESHOLD)
            && r.redone.len() < RETRIES
            && waited < WAIT_BUDGET_S
        {
            step("waiting for an idle machine (another process is using the CPUs)");
            waited += wait_idle(WAIT_BUDGET_S - waited);
            let mut again = run_case(&backend, id, &spec, i as u64, reps, false, &step)
                .map_err(|e| format!("{id}: {e}"))?;
            let (old, new) = (
                r.external_load.unwrap_or(1.0),
                again.external_load.unwrap_or(1.0),
            );
            again.redone = std::mem::take(&mut r.redone);
            if new < old {
                again.redone.push(old);
                r = again;
            } else {
                r.redone = again.redone;
                r.redone.push(new);
            }
        }
        if let Some((f, gi, gc)) = r.check {
            if f.is_nan() || f > CHECK_FORWARD_TOL {
                outcome.check_failures.push(format!(
                    "{id} (tiny): factorized vs reconstructed forward differ by {f:.2e} of max |y| (tolerance {CHECK_FORWARD_TOL:.0e})"
                ));
            }
            if gi.is_nan() || gc.is_nan() || gi > CHECK_GRAD_TOL || gc > CHECK_GRAD_TOL {
                outcome.check_failures.push(format!(
                    "{id} (tiny): factorized vs reconstructed gradients differ by {gi:.2e} (input), {gc:.2e} (cores) (tolerance {CHECK_GRAD_TOL:.0e})"
                ));
            }
        }
        results.push(r);
        outcome.cases += 1;
    }
    progress.done();

    if !results.is_empty() {
        if !options.check {
            print_tables(&results, &machine);
        } else {
            let mut t = Table::new(&[
                "case (tiny)",
                "shape",
                "fwd rel diff",
                "grad x",
                "grad cores",
            ]);
            for r in &results {
                let (f, gi, gc) = r.check.unwrap_or_default();
                t.row(vec![
                    r.spec.name.clone(),
                    crossed(&r.spec.input_shape()),
                    format!("{f:.1e}"),
                    format!("{gi:.1e}"),
                    format!("{gc:.1e}"),
                ]);
            }
            println!(
                "\n--check: factorized vs reconstructed at a tiny size (max abs diff / max abs; forward tolerance {CHECK_FORWARD_TOL:.0e}, gradients {CHECK_GRAD_TOL:.0e}); the timings above are single runs, no target"
            );
            print!("{t}");
        }
    }
    let worst_load = results
        .iter()
        .filter_map(|r| r.external_load)
        .fold(0.0f64, f64::max);
    if !options.check && worst_load > 0.05 {
        println!(
            "\nWARNING: other processes took up to {:.0}% of the CPUs while cases ran (`ext load`); timings are slowed by that much or more",
            100.0 * worst_load
        );
    }
    let summary = summary(&results, &machine);
    if !options.check && !results.is_empty() {
        println!(
            "\nTargets (issue 5 forward, issue 4 forward+backward; anchors from another sitting):"
        );
        for l in summary["lines"].as_array().into_iter().flatten() {
            println!("  {}", l.as_str().unwrap_or_default());
        }
    }

    let mut sweep_points = Vec::new();
    let mut sweep_loads = Vec::new();
    let mut plot_path = None;
    if sweep_selected {
        outcome.cases += 1;
        let (points, loads) = sweep(&backend, options, &machine)?;
        sweep_points = points;
        sweep_loads = loads;
        let path = out_dir().join("conv_rank_sweep.svg");
        std::fs::create_dir_all(out_dir()).map_err(err)?;
        plot::rank_sweep(
            &path,
            &format!(
                "TT conv 2-D, 64 -> 64 ch, 56x56, 3x3, batch 8: forward vs rank ({} threads)",
                machine.threads
            ),
            &sweep_points,
        )?;
        let mut t = Table::new(&["rank", "fact ms", "rec ms", "floor ms", "ext load"]);
        for (p, l) in sweep_points.iter().zip(&sweep_loads) {
            t.row(vec![
                p.rank.to_string(),
                format!("{:.3}", p.factorized_ms),
                format!("{:.3}", p.reconstructed_ms),
                format!("{:.3}", p.floor_ms),
                l.map_or("-".into(), |l| format!("{l:.2}")),
            ]);
        }
        println!("\nRank sweep, 2d_c64_s56 (batch 8, 3x3, padding 1)");
        print!("{t}");
        println!("written {}", path.display());
        plot_path = Some(path.display().to_string());
    }

    let record = json!({
        "part": "conv",
        "unix_time": unix_time(),
        "backend": backend.name(),
        "quick": options.quick,
        "check": options.check,
        "filter": options.filter,
        "user_cases": options.cases,
        "protocol": format!(
            "median of timed runs after {} warm-up(s), {}..{} runs within {} s per measurement; weights prepared and input uploaded once; dense kernel cached before timing; train = forward_train + backward (input gradient on), grad_y = ones",
            reps.warmup, reps.min, reps.max, reps.budget
        ),
        "machine": machine.json(),
        "cases": results.iter().map(|r| r.json(&machine)).collect::<Vec<_>>(),
        "summary": summary,
        "sweep": sweep_points.iter().zip(&sweep_loads).map(|(p, l)| json!({
            "rank": p.rank, "factorized_ms": p.factorized_ms,
            "reconstructed_ms": p.reconstructed_ms, "floor_ms": p.floor_ms,
            "external_load": l,
        })).collect::<Vec<_>>(),
        "plot": plot_path,
    });
    let path = write_json(if options.check { "conv-check" } else { "bench" }, &record)?;
    println!("written {}", path.display());
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_case_spec() {
        let c = CaseSpec::parse("b=8,c=64:128,s=56x56,k=3x3,stride=2,pad=1,dil=1,rank=16").unwrap();
        assert_eq!(c.batch, 8);
        assert_eq!((c.in_channels, c.out_channels), (64, 128));
        assert_eq!(c.spatial, vec![56, 56]);
        assert_eq!(c.kernel, vec![3, 3]);
        assert_eq!(c.stride, vec![2, 2]);
        assert_eq!(c.padding, Padding::Each(vec![1, 1]));
        assert_eq!(c.rank, RankSpec::Uniform(16));
        assert_eq!(c.name, "2d_c64to128_s56x56_k3x3_stride2x2_b8_r16");
        let c = CaseSpec::parse("c=32,s=8x28x28,k=3,pad=same,rank=1-4-4-4-4-1,name=v").unwrap();
        assert_eq!(c.kernel, vec![3, 3, 3]);
        assert_eq!(c.padding, Padding::Same);
        assert_eq!(c.rank, RankSpec::Explicit(vec![1, 4, 4, 4, 4, 1]));
        assert_eq!((c.batch, c.out_channels, c.name.as_str()), (1, 32, "v"));
        assert_eq!(parse_rank("0.1").unwrap(), RankSpec::Fraction(0.1));
        assert_eq!(parse_rank("same").unwrap(), RankSpec::Same);
        for bad in [
            "c=4,s=8,k=3,rank=x",
            "c=4,s=8",
            "c=4,s=8x8,k=3x3x3",
            "c=4,s=8,k=3,foo=1",
            "c=4,s=8,k=3,pad=same,stride=2",
            "c=4,s=2,k=5",
        ] {
            assert!(CaseSpec::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn the_suite_matches_the_anchors() {
        let suite = default_suite();
        assert_eq!(suite.len(), ANCHORS.len());
        for (c, a) in suite.iter().zip(&ANCHORS) {
            assert_eq!(c.name, a.name);
        }
        // The README's resolved ranks.
        let ranks = |name: &str| {
            let c = suite.iter().find(|c| c.name == name).unwrap();
            c.config().resolved_ranks().unwrap()
        };
        assert_eq!(ranks("2d_c64_s56_r0.1"), vec![1, 26, 2, 26, 1]);
        assert_eq!(ranks("2d_c256_s14_rsame"), vec![1, 921, 21, 921, 1]);
    }

    /// The bench's `--check` mode on the whole default suite: every case once at a tiny size,
    /// factorized == reconstructed (forward and gradients). Keeps the bench from rotting.
    #[test]
    fn check_mode_passes() {
        let options = BenchOptions {
            check: true,
            filter: Some("conv/".into()),
            ..BenchOptions::default()
        };
        let outcome = run(&options).unwrap();
        assert_eq!(outcome.cases, ANCHORS.len());
        assert!(
            outcome.check_failures.is_empty(),
            "{:#?}",
            outcome.check_failures
        );
    }
}
