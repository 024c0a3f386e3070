//! The TT-SVD part: `tt_svd` of random conv kernels in TT order `(in, k, k, out)`.
//!
//! Cases: kernels (64,3,3,64), (256,3,3,256), (512,3,3,512); rank specs `'same'`, `0.1` and `32`;
//! f32 and f64; i.i.d. N(0, 0.02) data (seeded). Each is timed as the median of repeats (fewer for
//! the big kernels) after a warm-up run. `--check` verifies that the ranks are TensorLy's (the
//! resolved spec, capped like `tensor_train`) and that the reported relative error matches the one
//! measured by densifying. With `--anchors`, TensorLy's `tensor_train` is timed in the same run on
//! the same shapes, specs and dtypes with the same repeats, and the speedup and the target
//! ([`TARGET_SPEEDUP`]) are reported from those figures; without it, no speedup and no verdict.
use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use serde_json::json;
use tt_core::{
    RankSpec, Scalar, SvdMethod, Truncation, TruncationReport, TtTensor, cap_ranks, tt_svd,
};

use super::anchors::AnchorRun;
use super::anchors::targets;
use super::machine::LoadMeter;
use super::measure::Timing;
use super::output::{unix_time, write_json};
use super::{BenchOptions, PartOutcome, Table};

/// The target: at least this many times faster than TensorLy on every case.
pub const TARGET_SPEEDUP: f64 = targets::TTSVD_MIN;

/// Standard deviation of the random kernels.
const STD: f64 = 0.02;

const SHAPES: [[usize; 4]; 3] = [[64, 3, 3, 64], [256, 3, 3, 256], [512, 3, 3, 512]];

fn specs() -> [(&'static str, RankSpec); 3] {
    [
        ("same", RankSpec::Same),
        ("0.1", RankSpec::Fraction(0.1)),
        ("32", RankSpec::Uniform(32)),
    ]
}

/// The scalar type of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }

    /// numpy's name of the type.
    pub fn numpy(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }
}

/// `(warm-up runs, timed runs)` for a kernel of `size` entries.
fn repeats(size: usize, quick: bool) -> (usize, usize) {
    match (size, quick) {
        (s, false) if s < 100_000 => (1, 21),
        (s, false) if s < 1_000_000 => (1, 7),
        (_, false) => (1, 5),
        (s, true) if s < 100_000 => (1, 5),
        (s, true) if s < 1_000_000 => (1, 2),
        (_, true) => (0, 1),
    }
}

fn kernel(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, STD).expect("valid normal");
    ArrayD::from_shape_simple_fn(IxDyn(shape), || normal.sample(&mut rng))
}

struct Measured {
    timing: Timing,
    report: TruncationReport,
    /// `||T - TT||_F / ||T||_F` from the densified TT (only with `--check`).
    measured_error: Option<f64>,
}

fn measure<T: Scalar>(
    data: &ArrayD<f64>,
    spec: &RankSpec,
    warmup: usize,
    runs: usize,
    check: bool,
) -> Result<Measured, String> {
    let tensor: ArrayD<T> = data.mapv(T::from_f64);
    let truncation = Truncation::rank(spec.clone());
    let (timing, result) = Timing::measure(warmup, runs, || tt_svd(tensor.view(), &truncation));
    let (tt, report) = result.map_err(|e| e.to_string())?;
    let measured_error = if check {
        Some(dense_rel_error(&tensor, &tt)?)
    } else {
        None
    };
    Ok(Measured {
        timing,
        report,
        measured_error,
    })
}

fn dense_rel_error<T: Scalar>(tensor: &ArrayD<T>, tt: &TtTensor<T>) -> Result<f64, String> {
    let dense = tt.cast::<f64>().to_dense().map_err(|e| e.to_string())?;
    let (mut num, mut den) = (0.0, 0.0);
    for (a, b) in tensor.iter().zip(dense.iter()) {
        let a = a.as_f64();
        num += (a - b) * (a - b);
        den += a * a;
    }
    Ok((num / den).sqrt())
}

/// One letter per unfolding step: G = Gram eigen-decomposition, S = thin SVD, I = nothing to
/// truncate, L = LOBPCG on the Gram matrix (kept eigenpairs only).
fn methods(report: &TruncationReport) -> String {
    report
        .methods
        .iter()
        .map(|m| match m {
            SvdMethod::Gram => 'G',
            SvdMethod::ThinSvd => 'S',
            SvdMethod::Identity => 'I',
            SvdMethod::Lobpcg => 'L',
        })
        .collect()
}

fn fmt_secs(s: f64) -> String {
    if s < 0.01 {
        format!("{:.5}", s)
    } else {
        format!("{:.4}", s)
    }
}

/// One selected case.
#[derive(Clone, Debug)]
pub struct Selected {
    /// Its id, `ttsvd/<shape>/<spec>/<dtype>`.
    pub id: String,
    /// The kernel's shape.
    pub shape: [usize; 4],
    /// Its index in [`SHAPES`] (the data seed).
    pub shape_index: usize,
    /// The spec's name in the id.
    pub spec_name: &'static str,
    /// The rank spec.
    pub spec: RankSpec,
    /// The scalar type.
    pub dtype: Dtype,
    /// Untimed runs.
    pub warmup: usize,
    /// Timed runs.
    pub runs: usize,
}

/// The cases `options` select, in run order.
pub fn selected(options: &BenchOptions) -> Vec<Selected> {
    let mut out = Vec::new();
    for (si, shape) in SHAPES.iter().enumerate() {
        let size: usize = shape.iter().product();
        let shape_text = shape.map(|n| n.to_string()).join("x");
        for (spec_name, spec) in specs() {
            for dtype in [Dtype::F32, Dtype::F64] {
                let id = format!("ttsvd/{shape_text}/{spec_name}/{}", dtype.name());
                if options.selects(&id) {
                    let (warmup, runs) = repeats(size, options.quick);
                    out.push(Selected {
                        id,
                        shape: *shape,
                        shape_index: si,
                        spec_name,
                        spec: spec.clone(),
                        dtype,
                        warmup,
                        runs,
                    });
                }
            }
        }
    }
    out
}

/// Runs the selected TT-SVD cases; `anchors` holds this run's TensorLy figures when measured.
pub fn run(options: &BenchOptions, anchors: Option<&AnchorRun>) -> Result<PartOutcome, String> {
    let mut outcome = PartOutcome::default();
    let cases = selected(options);
    if options.list {
        for c in &cases {
            println!("{}", c.id);
        }
        return Ok(outcome);
    }
    let mut headers = vec![
        "shape",
        "spec",
        "dtype",
        "ranks",
        "rel error",
        "svd",
        "runs",
        "median s",
    ];
    if anchors.is_some() {
        headers.extend(["TensorLy s", "speedup", "TensorLy ranks"]);
    }
    let mut table = Table::new(&headers);
    let mut records = Vec::new();
    let mut speedups = Vec::new();
    let (mut loads, mut anchor_loads) = (Vec::new(), Vec::new());
    for c in &cases {
        let shape_text = c.shape.map(|n| n.to_string()).join("x");
        // The same data for every case of a shape (seeded by the shape's index).
        let data = kernel(&c.shape, 1000 + c.shape_index as u64);
        let load = LoadMeter::start();
        let m = match c.dtype {
            Dtype::F32 => measure::<f32>(&data, &c.spec, c.warmup, c.runs, options.check)?,
            Dtype::F64 => measure::<f64>(&data, &c.spec, c.warmup, c.runs, options.check)?,
        };
        let external_load = load.fraction();
        loads.push(external_load);
        let median = m.timing.median();
        let anchor = anchors.and_then(|a| a.ttsvd.get(&c.id));
        anchor_loads.push(anchor.and_then(|a| a.external_load));
        let speedup = anchor.map(|a| a.median_s / median);
        outcome.cases += 1;
        if options.check {
            check_case(
                &c.id,
                &c.shape,
                &c.spec,
                &m,
                c.dtype,
                &mut outcome.check_failures,
            )?;
        }
        let mut row = vec![
            shape_text,
            c.spec_name.to_string(),
            c.dtype.name().into(),
            format!("{:?}", m.report.ranks),
            format!("{:.4}", m.report.rel_error),
            methods(&m.report),
            m.timing.times.len().to_string(),
            fmt_secs(median),
        ];
        if anchors.is_some() {
            row.extend(match (anchor, speedup) {
                (Some(a), Some(x)) => {
                    speedups.push(x);
                    [
                        fmt_secs(a.median_s),
                        format!("{x:.1}x"),
                        format!("{:?}", a.ranks),
                    ]
                }
                _ => ["-".into(), "-".into(), "-".into()],
            });
        }
        table.row(row);
        records.push(json!({
            "id": c.id,
            "shape": c.shape,
            "spec": c.spec_name,
            "dtype": c.dtype.name(),
            "ranks": m.report.ranks,
            "requested_ranks": m.report.requested_ranks,
            "rel_error": m.report.rel_error,
            "measured_rel_error": m.measured_error,
            "svd_methods": methods(&m.report),
            "warmup": c.warmup,
            "times_s": m.timing.times,
            "median_s": median,
            "min_s": m.timing.min(),
            "tensorly_s": anchor.map(|a| a.median_s),
            "tensorly_ranks": anchor.map(|a| a.ranks.clone()),
            "tensorly_rel_error": anchor.map(|a| a.rel_error),
            "speedup": speedup,
            "external_load": external_load,
            "tensorly_external_load": anchor.and_then(|a| a.external_load),
        }));
    }
    if table.is_empty() {
        return Ok(outcome);
    }
    println!(
        "\nTT-SVD (tt_svd by rank spec, median s{})",
        anchors.map_or(String::new(), |a| format!(
            "; TensorLy measured in this run: {}",
            a.source()
        ))
    );
    print!("{table}");
    let verdict = anchors
        .filter(|_| speedups.len() == cases.len())
        .and_then(|_| targets::ttsvd_verdict(&speedups))
        .map(|v| match targets::judgeable(&loads, &anchor_loads) {
            Ok(()) => v.line,
            Err(line) => line,
        });
    if let Some(line) = &verdict {
        println!("\nTarget, from this run's figures only:\n  {line}");
    }
    let path = write_json(
        "ttsvd",
        &json!({
            "part": "ttsvd",
            "unix_time": unix_time(),
            "rayon_threads": rayon::current_num_threads(),
            "quick": options.quick,
            "filter": options.filter,
            "data": format!("i.i.d. N(0, {STD}), seeded"),
            "anchor": anchors.map(AnchorRun::source),
            "target_speedup": TARGET_SPEEDUP,
            "verdict": verdict,
            "cases": records,
        }),
    )?;
    println!("written {}", path.display());
    Ok(outcome)
}

fn check_case(
    id: &str,
    shape: &[usize],
    spec: &RankSpec,
    m: &Measured,
    dtype: Dtype,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    let requested = spec.resolve(shape).map_err(|e| e.to_string())?;
    let expected = cap_ranks(shape, &requested);
    if m.report.ranks != expected {
        failures.push(format!(
            "{id}: ranks {:?}, TensorLy's would be {expected:?}",
            m.report.ranks
        ));
    }
    // f32 cores carry a relative rounding error ~1e-7, which moves the measured error that much.
    let tol = match dtype {
        Dtype::F32 => 1e-5,
        Dtype::F64 => 1e-10,
    };
    if let Some(measured) = m.measured_error
        && (measured - m.report.rel_error).abs() > tol * m.report.rel_error.max(1e-3)
    {
        failures.push(format!(
            "{id}: reported rel error {:.10e}, measured {measured:.10e}",
            m.report.rel_error
        ));
    }
    Ok(())
}
