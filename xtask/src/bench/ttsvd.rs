//! The TT-SVD part: `tt_svd` of random conv kernels in TT order `(in, k, k, out)`, against the
//! TensorLy anchor of issue 2 (TensorLy 0.10 `tensor_train`, numpy + OpenBLAS, this 2-core
//! machine, median of 4 runs, seconds).
//!
//! Cases: kernels (64,3,3,64), (256,3,3,256), (512,3,3,512); rank specs `'same'`, `0.1` and `32`;
//! f32 and f64; i.i.d. N(0, 0.02) data (seeded). Each is timed as the median of repeats (fewer for
//! the big kernels) after a warm-up run. `--check` verifies that the ranks are TensorLy's (the
//! resolved spec, capped like `tensor_train`), that the reported relative error matches the one
//! measured by densifying. The speedup over the anchor (target [`TARGET_SPEEDUP`]) is reported,
//! not checked: `--check` runs in CI on slow, shared machines, where no timing can be asserted.

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use serde_json::json;
use tt_core::{
    RankSpec, Scalar, SvdMethod, Truncation, TruncationReport, TtTensor, cap_ranks, tt_svd,
};

use super::{BenchOptions, PartOutcome, Table, Timing, unix_time, write_json};

/// The target: at least this many times faster than TensorLy on every case.
pub const TARGET_SPEEDUP: f64 = 5.0;

/// Standard deviation of the random kernels.
const STD: f64 = 0.02;

const SHAPES: [[usize; 4]; 3] = [[64, 3, 3, 64], [256, 3, 3, 256], [512, 3, 3, 512]];

/// TensorLy seconds, (f32, f64), per shape (index in [`SHAPES`]) and spec (`same`, `0.1`, `32`).
const ANCHORS: [[(f64, f64); 3]; 3] = [
    [(0.017, 0.015), (0.012, 0.009), (0.011, 0.011)],
    [(0.45, 0.46), (0.21, 0.19), (0.22, 0.16)],
    [(2.62, 2.72), (1.18, 0.92), (1.04, 0.99)],
];

fn specs() -> [(&'static str, RankSpec); 3] {
    [
        ("same", RankSpec::Same),
        ("0.1", RankSpec::Fraction(0.1)),
        ("32", RankSpec::Uniform(32)),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
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

fn methods(report: &TruncationReport) -> String {
    report
        .methods
        .iter()
        .map(|m| match m {
            SvdMethod::Gram => 'G',
            SvdMethod::ThinSvd => 'S',
            SvdMethod::Identity => 'I',
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

/// Runs the selected TT-SVD cases.
pub fn run(options: &BenchOptions) -> Result<PartOutcome, String> {
    let mut outcome = PartOutcome::default();
    let mut table = Table::new(&[
        "shape",
        "spec",
        "dtype",
        "ranks",
        "rel error",
        "svd",
        "runs",
        "median s",
        "TensorLy s",
        "speedup",
    ]);
    let mut records = Vec::new();
    for (si, shape) in SHAPES.iter().enumerate() {
        let size: usize = shape.iter().product();
        let shape_text = shape.map(|n| n.to_string()).join("x");
        let data = kernel(shape, 1000 + si as u64);
        for (pi, (spec_name, spec)) in specs().iter().enumerate() {
            for dtype in [Dtype::F32, Dtype::F64] {
                let id = format!("ttsvd/{shape_text}/{spec_name}/{}", dtype.name());
                if !options.selects(&id) {
                    continue;
                }
                if options.list {
                    println!("{id}");
                    continue;
                }
                let (warmup, runs) = repeats(size, options.quick);
                let m = match dtype {
                    Dtype::F32 => measure::<f32>(&data, spec, warmup, runs, options.check)?,
                    Dtype::F64 => measure::<f64>(&data, spec, warmup, runs, options.check)?,
                };
                let (a32, a64) = ANCHORS[si][pi];
                let anchor = if dtype == Dtype::F32 { a32 } else { a64 };
                let median = m.timing.median();
                let speedup = anchor / median;
                outcome.cases += 1;
                if options.check {
                    check_case(&id, shape, spec, &m, dtype, &mut outcome.check_failures)?;
                }
                table.row(vec![
                    shape_text.clone(),
                    spec_name.to_string(),
                    dtype.name().into(),
                    format!("{:?}", m.report.ranks),
                    format!("{:.4}", m.report.rel_error),
                    methods(&m.report),
                    m.timing.times.len().to_string(),
                    fmt_secs(median),
                    format!("{anchor}"),
                    format!("{speedup:.1}x"),
                ]);
                records.push(json!({
                    "id": id,
                    "shape": shape,
                    "spec": spec_name,
                    "dtype": dtype.name(),
                    "ranks": m.report.ranks,
                    "requested_ranks": m.report.requested_ranks,
                    "rel_error": m.report.rel_error,
                    "measured_rel_error": m.measured_error,
                    "svd_methods": methods(&m.report),
                    "warmup": warmup,
                    "times_s": m.timing.times,
                    "median_s": median,
                    "min_s": m.timing.min(),
                    "tensorly_s": anchor,
                    "speedup": speedup,
                }));
            }
        }
    }
    if options.list || table.is_empty() {
        return Ok(outcome);
    }
    println!(
        "\nTT-SVD (tt_svd by rank spec; TensorLy 0.10 tensor_train anchor, 2 cores, median of 4)"
    );
    print!("{table}");
    let path = write_json(
        "ttsvd",
        &json!({
            "part": "ttsvd",
            "unix_time": unix_time(),
            "rayon_threads": rayon::current_num_threads(),
            "quick": options.quick,
            "filter": options.filter,
            "data": format!("i.i.d. N(0, {STD}), seeded"),
            "anchor": "TensorLy 0.10 tensor_train, numpy + OpenBLAS, 2 cores, median of 4 runs",
            "target_speedup": TARGET_SPEEDUP,
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
