//! Data-aware fitting on a synthetic three-layer CNN: smooth (spatially correlated) inputs, as
//! images are, so that the layers' activations have the structure fitting exploits.

use crate::common::{initializer, model, runtime, untyped_output, value_info};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use ttconv_models::{Policy, ReportOptions, Target};
use ttconv_onnx::conv::ints_attribute;
use ttconv_onnx::proto::{GraphProto, ModelProto, NodeProto};
use ttconv_onnx::{
    CalibrationOptions, Runtime, Sample, Value, compress, compress_calibrated, model_to_bytes,
    output_errors,
};

fn node(op: &str, inputs: &[&str], output: &str, attrs: bool) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute: if attrs {
            vec![ints_attribute("pads", &[1, 1, 1, 1])]
        } else {
            Vec::new()
        },
        ..NodeProto::default()
    }
}

/// Weights with decaying spectra (a sum of a few rank-one terms plus noise), as trained ones
/// have.
fn weight(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let fan_in: usize = shape[1..].iter().product();
    let scale = (2.0 / fan_in as f32).sqrt();
    let mut w = vec![0.0f32; n];
    for term in 0..6 {
        let weight = 1.0 / (1.0 + term as f32);
        let a: Vec<f32> = (0..shape[0]).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n / shape[0])
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        for i in 0..shape[0] {
            for j in 0..b.len() {
                w[i * b.len() + j] += weight * a[i] * b[j];
            }
        }
    }
    for v in &mut w {
        *v = scale * (*v * 0.5 + 0.3 * rng.random_range(-1.0f32..1.0));
    }
    ArrayD::from_shape_vec(IxDyn(shape), w).unwrap()
}

fn cnn() -> ModelProto {
    model(GraphProto {
        node: vec![
            node("Conv", &["x", "w1", "b1"], "c1", true),
            node("Relu", &["c1"], "r1", false),
            node("Conv", &["r1", "w2", "b2"], "c2", true),
            node("Relu", &["c2"], "r2", false),
            node("Conv", &["r2", "w3"], "y", true),
        ],
        name: "cnn".into(),
        initializer: vec![
            initializer("w1", &weight(&[16, 3, 3, 3], 1)),
            initializer(
                "b1",
                &(weight(&[16, 1, 1], 2)
                    .into_shape_with_order(IxDyn(&[16]))
                    .unwrap()),
            ),
            initializer("w2", &weight(&[24, 16, 3, 3], 3)),
            initializer(
                "b2",
                &(weight(&[24, 1, 1], 4)
                    .into_shape_with_order(IxDyn(&[24]))
                    .unwrap()),
            ),
            initializer("w3", &weight(&[8, 24, 3, 3], 5)),
        ],
        input: vec![value_info("x", &[1, 3, 16, 16])],
        output: vec![untyped_output("y")],
        ..GraphProto::default()
    })
}

/// Smooth random images: a few low-frequency sinusoids per channel plus a little noise.
fn samples(count: usize, seed: u64) -> Vec<Sample> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let mut x = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 16, 16]));
            for c in 0..3 {
                for _ in 0..4 {
                    let (fx, fy, ph, a) = (
                        rng.random_range(0.0f32..0.6),
                        rng.random_range(0.0f32..0.6),
                        rng.random_range(0.0f32..std::f32::consts::TAU),
                        rng.random_range(0.5f32..1.5),
                    );
                    for i in 0..16 {
                        for j in 0..16 {
                            x[[0, c, i, j]] += a * (fx * i as f32 + fy * j as f32 + ph).sin();
                        }
                    }
                }
                for v in x.index_axis_mut(ndarray::Axis(1), c).iter_mut() {
                    *v += 0.05 * rng.random_range(-1.0f32..1.0);
                }
            }
            vec![("x".to_string(), Value::F32(x))]
        })
        .collect()
}

fn held_out_mse(
    rt: &Runtime,
    original: &ModelProto,
    other: &ModelProto,
    holdout: &[Sample],
) -> f64 {
    let want = rt.run_all(&model_to_bytes(original), holdout).unwrap();
    let got = rt.run_all(&model_to_bytes(other), holdout).unwrap();
    output_errors(&want, &got).unwrap()[0].mse
}

#[test]
fn fitting_lowers_the_held_out_error_of_a_compressed_cnn() {
    let Some(rt) = runtime("fitting_lowers_the_held_out_error_of_a_compressed_cnn") else {
        return;
    };
    let original = cnn();
    // A third of the parameters: far enough from full rank for TT-SVD to lose accuracy.
    let policy = Policy {
        target: Target::Ratio(3.0),
        ..Policy::default()
    };
    let (svd, svd_report) =
        compress(&original, &policy, &ReportOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(svd_report.totals.compressed, 3, "{}", svd_report.to_table());
    let calib = samples(12, 10);
    let holdout = samples(8, 20);
    let (fitted, report, fits) = compress_calibrated(
        &original,
        &policy,
        &ReportOptions::default(),
        &ttconv_onnx::InputShapes::new(),
        &rt,
        &calib,
        &CalibrationOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    // The same parameters: fitting changes values, not ranks.
    assert_eq!(
        report.totals.eligible_params_after,
        svd_report.totals.eligible_params_after
    );
    for f in &fits {
        println!(
            "{}: layer output error {:.4} -> {:.4} (kernel error {:.4}) in {:.2} s",
            f.weight, f.output_error_before, f.output_error_after, f.kernel_error_after, f.seconds
        );
        assert!(f.skipped.is_none());
        // On its own calibration data a layer's fit is never worse than its start.
        assert!(f.output_error_after <= f.output_error_before * (1.0 + 1e-9));
    }
    let (e_svd, e_fit) = (
        held_out_mse(&rt, &original, &svd, &holdout),
        held_out_mse(&rt, &original, &fitted, &holdout),
    );
    println!(
        "held-out output MSE: TT-SVD {e_svd:.4e}, fitted {e_fit:.4e} ({:.1}x lower)",
        e_svd / e_fit
    );
    assert!(
        e_fit < e_svd,
        "fitting did not lower the held-out error: {e_svd} -> {e_fit}"
    );
}
