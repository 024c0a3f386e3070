//! GPU benchmark of the default suite (the cases of `cargo xtask bench`, read from `--suite`) on the CUDA backend, with the
//! batch scaled up so that the GPU is busy, plus a CUDA-vs-CPU correctness check per case.
//!
//! ```text
//! cargo run --release -p ttconv-cuda --example gpu_bench -- --suite suite.json [--json PATH] [--batch 32]
//!     [--batch3d 8] [--check-batch 2] [--warmup 10] [--min-repeats 15] [--max-repeats 100]
//!     [--budget 0.5] [--no-tf32] [--only NAME[,NAME..]] [--tol 1e-4] [--sync-each-launch]
//! ```
//!
//! Per case (float32, FP32 GEMMs unless a column says TF32):
//! - `fact_fwd` / `rec_fwd`: the factorized and the reconstructed (dense im2col + SGEMM) forward
//!   of a prepared layer on a device-resident input; warm-up runs, then the median of timed runs,
//!   each run between two `synchronize()` calls, wall clock;
//! - `fact_fwd_bwd` / `rec_fwd_bwd`: `forward_train` + `backward` with `dL/dy = 1` (the gradient
//!   of `y.sum()`), input gradient included; the input upload before each run is not timed, the
//!   download of the input and core gradients (the `backward` API returns host arrays) is;
//! - `fact_fwd_tf32` / `rec_fwd_tf32`: the forwards with TF32 GEMMs (`with_tf32(true)`);
//! - the correctness check at `--check-batch` (2): CUDA and CPU backends on the same layer and
//!   input, `max |cuda - cpu| / max |cpu|` of the forward outputs of both implementations, and of
//!   the input and core gradients of both backward passes (the largest over the gradients).
//!
//! Exit status: 0; 2 when this machine has no usable CUDA (no driver, no device, no NVRTC or
//! cuBLAS: the message says which); 3 when a forward differs from the CPU by `--tol` or more, or
//! a backward by its tolerance or more (`--tol` scaled to the backward's summed length, see
//! `tol_for_len`);
//! 1 on any other failure (a failing case is recorded in the JSON and the others still run).
//!
//! `--cpu` runs the very same program on the CPU backend (device "cpu", no TF32 columns): a
//! self-test of the measurement, check and JSON code on machines without a GPU.

use std::process::ExitCode;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use ttconv::{Backend, Implementation, Padding, RankSpec, TtConv, TtConvConfig};
use ttconv_cpu::CpuBackend;
use ttconv_cuda::CudaBackend;

mod check;
mod output;

use check::{Check, check_against_cpu};
use output::{fmt_ms, fmt_rel, print_table, to_json};

/// What the benchmark needs of a backend beyond [`Backend`]: a barrier for the timer, a
/// description, and its TF32 variant (if it has one).
trait Device: Backend + Sized {
    /// Waits for the work enqueued so far.
    fn sync(&self) -> ttconv::Result<()>;
    /// `(device name, architecture)`.
    fn describe(&self) -> (String, String);
    /// The same device with TF32 GEMMs, if the backend has such a mode.
    fn tf32(&self) -> Option<Self>;
}

impl Device for CudaBackend {
    fn sync(&self) -> ttconv::Result<()> {
        self.synchronize()
    }
    fn describe(&self) -> (String, String) {
        (self.device_name().to_string(), self.arch().to_string())
    }
    fn tf32(&self) -> Option<Self> {
        Some(self.clone().with_tf32(true))
    }
}

/// The `--cpu` self-test: the same program on the CPU backend (synchronous, so no barrier).
impl Device for CpuBackend {
    fn sync(&self) -> ttconv::Result<()> {
        Ok(())
    }
    fn describe(&self) -> (String, String) {
        (
            "CPU backend (--cpu self-test)".into(),
            std::env::consts::ARCH.into(),
        )
    }
    fn tf32(&self) -> Option<Self> {
        None
    }
}

// ------------------------------------------------------------------------------------------------
// The suite
// ------------------------------------------------------------------------------------------------

/// One case of the suite, as `suite.json` gives it (written by `cargo xtask gpu-check` from the
/// bench's default suite, in the form `xtask/anchors/anchor_bench.py` documents). Its `batch`,
/// the CPU bench's, is not used: the GPU batch comes from `--batch` / `--batch3d`.
#[derive(Clone, Debug, Deserialize)]
struct Case {
    #[serde(rename = "id")]
    name: String,
    #[serde(rename = "in_channels")]
    cin: usize,
    #[serde(rename = "out_channels")]
    cout: usize,
    spatial: Vec<usize>,
    kernel: Vec<usize>,
    stride: Vec<usize>,
    /// Symmetric zero padding per mode.
    padding: Vec<usize>,
    dilation: Vec<usize>,
    /// TensorLy's `rank=`: `"same"`, a fraction, an int or every rank.
    #[serde(deserialize_with = "rank_spec")]
    rank: RankSpec,
}

/// A rank spec from its JSON form (`"same"`, a float fraction, an int, a list of every rank).
fn rank_spec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RankSpec, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) if s == "same" => Ok(RankSpec::Same),
        serde_json::Value::Number(n) if n.is_u64() => {
            Ok(RankSpec::Uniform(n.as_u64().expect("checked") as usize))
        }
        serde_json::Value::Number(n) => Ok(RankSpec::Fraction(n.as_f64().expect("a number"))),
        serde_json::Value::Array(v) => v
            .iter()
            .map(|r| r.as_u64().map(|r| r as usize))
            .collect::<Option<Vec<_>>>()
            .map(RankSpec::Explicit)
            .ok_or_else(|| D::Error::custom("a rank list holds non-negative integers")),
        other => Err(D::Error::custom(format!("not a rank spec: {other}"))),
    }
}

/// The cases of the suite file at `path` (`{"cases": [...]}`), each checked to be one layer.
fn load_suite(path: &str) -> Result<Vec<Case>, String> {
    #[derive(Deserialize)]
    struct Suite {
        cases: Vec<Case>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--suite {path}: {e}"))?;
    let suite: Suite = serde_json::from_str(&text).map_err(|e| format!("--suite {path}: {e}"))?;
    for c in &suite.cases {
        c.layer(0)
            .map_err(|e| format!("--suite {path}: case {}: {e}", c.name))?;
    }
    Ok(suite.cases)
}

impl Case {
    fn order(&self) -> usize {
        self.spatial.len()
    }

    fn layer(&self, seed: u64) -> ttconv::Result<TtConv> {
        let cfg = TtConvConfig::new(self.cin, self.cout, self.kernel.clone())
            .rank(self.rank.clone())
            .stride(self.stride.clone())
            .padding(Padding::Each(self.padding.clone()))
            .dilation(self.dilation.clone());
        let mut layer = TtConv::new(cfg)?;
        layer.init_from_random(ttconv::Init::Direct, seed)?;
        Ok(layer)
    }

    fn input_shape(&self, batch: usize) -> Vec<usize> {
        [vec![batch, self.cin], self.spatial.clone()].concat()
    }

    fn rank_spec(&self) -> String {
        match &self.rank {
            RankSpec::Same => "same".into(),
            RankSpec::Fraction(f) => format!("{f}"),
            RankSpec::Uniform(r) => format!("{r}"),
            RankSpec::Explicit(v) => format!("{v:?}"),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------------

/// The command line; serialized as the JSON report's `params` (the output path and the case
/// filter left out).
#[derive(Debug, Serialize)]
struct Options {
    /// The cases of `--suite`.
    #[serde(skip)]
    suite: Vec<Case>,
    /// The path they came from.
    suite_file: String,
    #[serde(skip)]
    json: Option<String>,
    batch: usize,
    batch3d: usize,
    check_batch: usize,
    warmup: usize,
    min_repeats: usize,
    max_repeats: usize,
    budget_s: f64,
    tf32: bool,
    #[serde(skip)]
    only: Vec<String>,
    tol: f64,
    seed: u64,
    cpu: bool,
    sync_each_launch: bool,
}

const USAGE: &str = "\
usage: gpu_bench --suite FILE [--json PATH] [--batch N (32)] [--batch3d N (8)] [--check-batch N (2)]
                 [--warmup N (10)] [--min-repeats N (15)] [--max-repeats N (100)]
                 [--budget SECONDS per measurement (0.5)] [--no-tf32] [--only NAME[,NAME..]]
                 [--tol REL (1e-4)] [--seed N (0)] [--cpu] [--sync-each-launch]
Times the cases of FILE (the bench's default suite, written by `cargo xtask gpu-check`) on CUDA device 0 (factorized / reconstructed forward, forward+backward,
TF32 forwards) and checks CUDA against the CPU backend, forward and backward. Exit 2 when there
is no usable GPU, 3 when a result is outside its tolerance.
--cpu runs the same program on the CPU backend instead: a self-test for machines without a GPU.
--sync-each-launch waits after every kernel launch (debugging: names a faulting kernel; the
timings are then meaningless).";

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        suite: Vec::new(),
        suite_file: String::new(),
        json: None,
        batch: 32,
        batch3d: 8,
        check_batch: 2,
        warmup: 10,
        min_repeats: 15,
        max_repeats: 100,
        budget_s: 0.5,
        tf32: true,
        only: Vec::new(),
        tol: 1e-4,
        seed: 0,
        cpu: false,
        sync_each_launch: false,
    };
    const VALUED: &[&str] = &[
        "--suite",
        "--json",
        "--batch",
        "--batch3d",
        "--check-batch",
        "--warmup",
        "--min-repeats",
        "--max-repeats",
        "--seed",
        "--budget",
        "--tol",
        "--only",
    ];
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--no-tf32" => {
                o.tf32 = false;
                continue;
            }
            "--cpu" => {
                o.cpu = true;
                continue;
            }
            "--sync-each-launch" => {
                o.sync_each_launch = true;
                continue;
            }
            n if VALUED.contains(&n) => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        let num = |v: &str| -> Result<usize, String> {
            v.parse()
                .map_err(|_| format!("{name}: `{v}` is not a count"))
        };
        let real = |v: &str| -> Result<f64, String> {
            v.parse()
                .map_err(|_| format!("{name}: `{v}` is not a number"))
        };
        match name.as_str() {
            "--suite" => o.suite_file = value,
            "--json" => o.json = Some(value),
            "--batch" => o.batch = num(&value)?.max(1),
            "--batch3d" => o.batch3d = num(&value)?.max(1),
            "--check-batch" => o.check_batch = num(&value)?.max(1),
            "--warmup" => o.warmup = num(&value)?,
            "--min-repeats" => o.min_repeats = num(&value)?.max(1),
            "--max-repeats" => o.max_repeats = num(&value)?.max(1),
            "--seed" => o.seed = num(&value)? as u64,
            "--budget" => o.budget_s = real(&value)?,
            "--tol" => o.tol = real(&value)?,
            _ => o
                .only
                .extend(value.split(',').filter(|s| !s.is_empty()).map(String::from)),
        }
    }
    o.max_repeats = o.max_repeats.max(o.min_repeats);
    if o.suite_file.is_empty() {
        return Err(
            "--suite FILE is required: the suite.json that `cargo xtask gpu-check` \
                    writes from the bench's default suite"
                .into(),
        );
    }
    o.suite = load_suite(&o.suite_file)?;
    Ok(o)
}

// ------------------------------------------------------------------------------------------------
// Measurements
// ------------------------------------------------------------------------------------------------

/// Summary of the timed runs of one measurement, milliseconds.
#[derive(Clone, Copy, Debug)]
struct Stats {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    repeats: usize,
}

/// Warms up, then times `run(setup())` between two `synchronize()` calls, `n` times, with
/// `min_repeats <= n <= max_repeats` chosen so that the timed runs take about `budget_s`. The
/// `setup` (e.g. an input upload that `run` consumes) is not timed.
fn measure<D: Device, T>(
    be: &D,
    o: &Options,
    mut setup: impl FnMut() -> ttconv::Result<T>,
    mut run: impl FnMut(T) -> ttconv::Result<()>,
) -> ttconv::Result<Stats> {
    let mut once = |timed: bool| -> ttconv::Result<f64> {
        let arg = setup()?;
        be.sync()?;
        let t0 = Instant::now();
        run(arg)?;
        be.sync()?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(if timed { ms } else { f64::NAN })
    };
    for _ in 0..o.warmup {
        once(false)?;
    }
    let probe = once(true)?;
    let n = ((o.budget_s * 1e3 / probe.max(1e-3)) as usize).clamp(o.min_repeats, o.max_repeats);
    let mut t = (0..n)
        .map(|_| once(true))
        .collect::<ttconv::Result<Vec<f64>>>()?;
    t.sort_by(f64::total_cmp);
    Ok(Stats {
        median_ms: t[t.len() / 2],
        min_ms: t[0],
        max_ms: t[t.len() - 1],
        repeats: n,
    })
}

/// A deterministic array with entries uniform in `[-1, 1)`.
fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0f32..1.0))
}

/// Everything measured on one case.
#[derive(Debug)]
struct CaseResult {
    case: Case,
    batch: usize,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
    ranks: Vec<usize>,
    flops_fact: u64,
    flops_rec: u64,
    timings: Vec<(&'static str, Stats)>,
    check: Option<Check>,
    error: Option<String>,
    wall_s: f64,
}

impl CaseResult {
    fn timing(&self, name: &str) -> Option<Stats> {
        self.timings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    }
}

fn run_case<D: Device>(case: &Case, cuda: &D, o: &Options) -> CaseResult {
    let t0 = Instant::now();
    let batch = if case.order() == 3 {
        o.batch3d
    } else {
        o.batch
    };
    let input_shape = case.input_shape(batch);
    let mut r = CaseResult {
        case: case.clone(),
        batch,
        input_shape: input_shape.clone(),
        output_shape: Vec::new(),
        ranks: Vec::new(),
        flops_fact: 0,
        flops_rec: 0,
        timings: Vec::new(),
        check: None,
        error: None,
        wall_s: 0.0,
    };
    if let Err(e) = run_case_into(case, cuda, o, &mut r) {
        r.error = Some(e.to_string());
    }
    r.wall_s = t0.elapsed().as_secs_f64();
    r
}

fn run_case_into<D: Device>(
    case: &Case,
    cuda: &D,
    o: &Options,
    r: &mut CaseResult,
) -> ttconv::Result<()> {
    let layer = case.layer(o.seed)?;
    r.ranks = layer.ranks();
    r.output_shape = layer.output_shape(&r.input_shape)?;
    r.flops_fact = layer
        .flops(&r.input_shape, Implementation::Factorized)?
        .flops();
    r.flops_rec = layer
        .flops(&r.input_shape, Implementation::Reconstructed)?
        .flops();

    // Correctness first: a wrong result makes the timings moot, and it is cheap at batch 2.
    r.check = Some(check_against_cpu(&layer, case, cuda, o)?);

    let x_host = random(&r.input_shape, o.seed ^ 1);
    let ones = ArrayD::<f32>::ones(IxDyn(&r.output_shape));
    let prepared = layer.prepare(cuda)?;
    prepared.dense_kernel()?;
    let x = cuda.upload(x_host.view())?;
    let gy = cuda.upload(ones.view())?;
    for (name, imp) in [
        ("fact_fwd", Implementation::Factorized),
        ("rec_fwd", Implementation::Reconstructed),
    ] {
        let s = measure(
            cuda,
            o,
            || Ok(()),
            |()| prepared.forward_with(&x, imp).map(drop),
        )?;
        r.timings.push((name, s));
    }
    for (name, imp) in [
        ("fact_fwd_bwd", Implementation::Factorized),
        ("rec_fwd_bwd", Implementation::Reconstructed),
    ] {
        let s = measure(
            cuda,
            o,
            || cuda.upload(x_host.view()),
            |xi| {
                let (_, ctx) = prepared.forward_train(xi, imp)?;
                prepared.backward(&ctx, &gy, true).map(drop)
            },
        )?;
        r.timings.push((name, s));
    }
    if let Some(tf32) = o.tf32.then(|| cuda.tf32()).flatten() {
        let prepared = layer.prepare(&tf32)?;
        prepared.dense_kernel()?;
        for (name, imp) in [
            ("fact_fwd_tf32", Implementation::Factorized),
            ("rec_fwd_tf32", Implementation::Reconstructed),
        ] {
            let s = measure(
                &tf32,
                o,
                || Ok(()),
                |()| prepared.forward_with(&x, imp).map(drop),
            )?;
            r.timings.push((name, s));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gpu_bench: {e}\n{USAGE}");
            return ExitCode::from(1);
        }
    };
    if o.cpu {
        return run_all(&CpuBackend::new(), &o);
    }
    let opened = CudaBackend::open(0);
    // What the loader picked, before anything else can fail.
    let libs = ttconv_cuda::loaded_cuda_libraries();
    if libs.is_empty() {
        println!("gpu_bench: loaded CUDA libraries: none");
    }
    for lib in libs {
        println!("gpu_bench: loaded {}", lib.display());
    }
    match opened {
        Ok(cuda) => run_all(&cuda.with_sync_after_each_launch(o.sync_each_launch), &o),
        Err(e) if e.is_unavailable() => {
            eprintln!(
                "gpu_bench: no usable CUDA GPU on this machine: {e}\n\
                 gpu_bench: nothing was measured (exit status 2). Run it on a machine with an \
                 NVIDIA GPU and driver >= 580 (CUDA 13), with libnvrtc.so.13 and libcublas.so.13 \
                 (or .so.12) on LD_LIBRARY_PATH (see `cargo xtask gpu-check`); `--cpu` runs this program on \
                 the CPU backend as a self-test."
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("gpu_bench: CUDA is present but the backend failed to start: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_all<D: Device>(be: &D, o: &Options) -> ExitCode {
    let t0 = Instant::now();
    let (device_name, arch) = be.describe();
    println!(
        "gpu_bench on {device_name} ({arch}, {}): batch {} (3-D: {}), check batch {}, \
         warm-up {}, {}..{} timed runs per measurement",
        be.name(),
        o.batch,
        o.batch3d,
        o.check_batch,
        o.warmup,
        o.min_repeats,
        o.max_repeats
    );
    let cases: Vec<Case> = o
        .suite
        .iter()
        .filter(|c| o.only.is_empty() || o.only.contains(&c.name))
        .cloned()
        .collect();
    if cases.is_empty() {
        eprintln!("gpu_bench: --only matches no case");
        return ExitCode::from(1);
    }
    let mut results = Vec::new();
    for case in &cases {
        let r = run_case(case, be, o);
        println!(
            "[gpu_bench] {:<28} fact {} ms, rec {} ms, fwd rel diff {} ({:.1} s){}",
            r.case.name,
            fmt_ms(r.timing("fact_fwd")),
            fmt_ms(r.timing("rec_fwd")),
            fmt_rel(r.check.map(|c| c.max_fwd())),
            r.wall_s,
            r.error
                .as_deref()
                .map(|e| format!(" ERROR: {e}"))
                .unwrap_or_default()
        );
        results.push(r);
        let complete = results.len() == cases.len();
        if let Some(path) = &o.json {
            let text = to_json(&results, o, be, t0.elapsed().as_secs_f64(), complete);
            let partial = format!("{path}.partial");
            let written =
                std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, path));
            if let Err(e) = written {
                eprintln!("gpu_bench: cannot write {path}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    print_table(&results, o);
    if let Some(path) = &o.json {
        println!("wrote {path}");
    }
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    let over: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let c = r.check?;
            (!c.passed(o.tol)).then(|| {
                format!(
                    "{} (fwd {:.1e} vs {:.0e}, bwd {:.1e} vs {:.1e})",
                    r.case.name,
                    c.max_fwd(),
                    o.tol,
                    c.max_bwd(),
                    c.bwd_tol
                )
            })
        })
        .collect();
    if errors > 0 {
        eprintln!("gpu_bench: {errors} case(s) failed");
        return ExitCode::from(1);
    }
    if !over.is_empty() {
        eprintln!(
            "gpu_bench: CUDA differs from the CPU backend beyond the tolerance on: {}",
            over.join(", ")
        );
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
