//! Backward passes: against central finite differences in f64, factorized against reconstructed,
//! and transducted layers against the equivalent 3-D layer.

mod common;

use common::*;
use ndarray::{Array3, ArrayD, IxDyn};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use ttconv::{AxisGeometry, Implementation, TtConv, TtConvConfig, TtTensor, oracle};
use ttconv_cpu::{CpuBackend, CpuOptions};

/// `L = sum(y * gy)` for the layer's cores, bias and input, computed entirely in f64: the TT
/// reconstructed in f64 and the direct convolution accumulated in f64.
fn loss_f64(
    cores: &[Array3<f64>],
    bias: Option<&[f64]>,
    x: &ArrayD<f64>,
    gy: &ArrayD<f32>,
    geometry: &[AxisGeometry],
) -> f64 {
    let d = geometry.len();
    let tt = TtTensor::new(cores.to_vec()).unwrap();
    let dense = tt.to_dense().unwrap();
    let mut perm = vec![d + 1];
    perm.extend(0..d + 1);
    let kernel = dense.permuted_axes(IxDyn(&perm));
    let ksize = kernel.shape()[2..].to_vec();
    let (cin, in_sp) = (x.shape()[1], x.shape()[2..].to_vec());
    let mut total = 0.0;
    for (yi, &g) in gy.indexed_iter() {
        let (b, o) = (yi[0], yi[1]);
        let mut acc = bias.map_or(0.0, |bv| bv[o]);
        let kcount: usize = ksize.iter().product();
        'taps: for flat in 0..kcount {
            let mut rem = flat;
            let mut t = vec![0; d];
            for j in (0..d).rev() {
                t[j] = rem % ksize[j];
                rem /= ksize[j];
            }
            let mut xi = vec![b, 0];
            for j in 0..d {
                let g = &geometry[j];
                let pos =
                    (yi[j + 2] * g.stride + t[j] * g.dilation) as isize - g.pad_before as isize;
                if pos < 0 || pos >= in_sp[j] as isize {
                    continue 'taps;
                }
                xi.push(pos as usize);
            }
            let mut ki = vec![o, 0];
            ki.extend(&t);
            for c in 0..cin {
                xi[1] = c;
                ki[1] = c;
                acc += kernel[&ki[..]] * x[&xi[..]];
            }
        }
        total += acc * f64::from(g);
    }
    total
}

fn rel_err(ours: &[f32], reference: &[f64]) -> f64 {
    let scale = reference
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-12);
    ours.iter()
        .zip(reference)
        .fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()))
        / scale
}

/// Relative error (max abs difference over max abs reference) allowed against the f64 finite
/// differences. The loss is linear in every parameter block, so central differences are exact
/// up to f64 rounding; what remains is our f32 arithmetic: each gradient entry is a sum of at
/// most a few hundred f32 products, about 1e-7 relative error each, accumulated. 1e-6 is several
/// times the 1.6e-7 we observe (see the printed maxima); the f64 references are exact to 1e-12.
const FD_TOL: f64 = 1e-6;

fn check_against_finite_differences(case: &Case) {
    let (layer, x) = build(case);
    let cpu = CpuBackend::new();
    let geometry = layer.geometry().to_vec();
    let y = oracle_output(&layer, &x);
    let mut rng = StdRng::seed_from_u64(case.seed ^ 77);
    let gy = random_array(y.shape(), &mut rng);
    let cores64: Vec<Array3<f64>> = layer
        .tt()
        .cores()
        .iter()
        .map(|c| c.mapv(f64::from))
        .collect();
    let bias64: Option<Vec<f64>> = layer
        .bias()
        .map(|b| b.iter().map(|&v| f64::from(v)).collect());
    let x64 = x.mapv(f64::from);
    let h = 0.5; // the loss is linear in each block: any step is exact
    let loss =
        |c: &[Array3<f64>], b: Option<&[f64]>, xx: &ArrayD<f64>| loss_f64(c, b, xx, &gy, &geometry);

    let mut fd_cores = vec![];
    for k in 0..cores64.len() {
        let mut g = vec![];
        for i in 0..cores64[k].len() {
            let mut plus = cores64.clone();
            let mut minus = cores64.clone();
            plus[k].as_slice_mut().unwrap()[i] += h;
            minus[k].as_slice_mut().unwrap()[i] -= h;
            g.push(
                (loss(&plus, bias64.as_deref(), &x64) - loss(&minus, bias64.as_deref(), &x64))
                    / (2.0 * h),
            );
        }
        fd_cores.push(g);
    }
    let mut fd_x = vec![];
    for i in 0..x64.len() {
        let mut plus = x64.clone();
        let mut minus = x64.clone();
        plus.as_slice_mut().unwrap()[i] += h;
        minus.as_slice_mut().unwrap()[i] -= h;
        fd_x.push(
            (loss(&cores64, bias64.as_deref(), &plus) - loss(&cores64, bias64.as_deref(), &minus))
                / (2.0 * h),
        );
    }
    let fd_bias: Option<Vec<f64>> = bias64.as_ref().map(|b| {
        (0..b.len())
            .map(|o| {
                let mut plus = b.clone();
                let mut minus = b.clone();
                plus[o] += h;
                minus[o] -= h;
                (loss(&cores64, Some(&plus), &x64) - loss(&cores64, Some(&minus), &x64)) / (2.0 * h)
            })
            .collect()
    });

    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let grads = layer
            .forward_backward(&cpu, x.view(), gy.view(), implementation, true)
            .map(|(_, grads)| grads)
            .unwrap();
        let gx = grads.input.as_ref().unwrap();
        let ex = rel_err(gx.as_slice().unwrap(), &fd_x);
        println!(
            "{implementation:?} order {}: input rel err {ex:.2e}",
            case.kernel.len()
        );
        assert!(ex < FD_TOL, "{implementation:?} input gradient: {ex:.2e}");
        for (k, (g, fd)) in grads.cores.iter().zip(&fd_cores).enumerate() {
            let e = rel_err(g.as_slice().unwrap(), fd);
            println!("{implementation:?}: core {k} rel err {e:.2e}");
            assert!(e < FD_TOL, "{implementation:?} core {k} gradient: {e:.2e}");
        }
        if let (Some(gb), Some(fb)) = (&grads.bias, &fd_bias) {
            let e = rel_err(gb.as_slice().unwrap(), fb);
            assert!(e < FD_TOL, "{implementation:?} bias gradient: {e:.2e}");
        }
    }
}

#[test]
fn gradients_match_finite_differences_order_1() {
    check_against_finite_differences(&Case {
        batch: 2,
        cin: 3,
        cout: 2,
        kernel: vec![3],
        stride: vec![2],
        padding: vec![(2, 1)],
        dilation: vec![2],
        ranks: vec![1, 2, 3, 1],
        spatial: vec![9],
        bias: true,
        seed: 1,
    });
}

#[test]
fn gradients_match_finite_differences_order_2() {
    check_against_finite_differences(&Case {
        batch: 1,
        cin: 2,
        cout: 3,
        kernel: vec![3, 2],
        stride: vec![1, 2],
        padding: vec![(1, 1), (0, 1)],
        dilation: vec![1, 2],
        ranks: vec![1, 2, 3, 2, 1],
        spatial: vec![5, 6],
        bias: true,
        seed: 2,
    });
}

#[test]
fn gradients_match_finite_differences_order_3() {
    check_against_finite_differences(&Case {
        batch: 1,
        cin: 2,
        cout: 2,
        kernel: vec![2, 3, 2],
        stride: vec![2, 1, 1],
        padding: vec![(1, 0), (1, 1), (0, 0)],
        dilation: vec![1, 1, 2],
        ranks: vec![1, 2, 2, 3, 2, 1],
        spatial: vec![4, 4, 5],
        bias: false,
        seed: 3,
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Factorized gradients == reconstructed gradients, and both input gradients == the direct
    /// oracle's, over the forward suite's configuration space (f32, tolerance of equivalence.rs).
    #[test]
    fn factorized_gradients_equal_reconstructed(case in case_strategy()) {
        let (layer, x) = build(&case);
        let cpu = CpuBackend::new();
        let y = oracle_output(&layer, &x);
        let mut rng = StdRng::seed_from_u64(case.seed ^ 99);
        let gy = random_array(y.shape(), &mut rng);
        let f = layer.forward_backward(&cpu, x.view(), gy.view(), Implementation::Factorized, true).map(|(_, grads)| grads).unwrap();
        let r = layer.forward_backward(&cpu, x.view(), gy.view(), Implementation::Reconstructed, true).map(|(_, grads)| grads).unwrap();
        let terms = gradient_terms(&cpu, &layer, &x, &gy);
        compare_gradients(&f, &r, &terms)?;
        let (gx, _, gb) = oracle::conv_nd_grads(x.view(), layer.full_weights().view(), gy.view(), layer.geometry()).unwrap();
        assert_close("input vs oracle", f.input.as_ref().unwrap(), &gx, term_scale(terms.input.as_ref().unwrap()))?;
        if let (Some(b), Some(t)) = (&f.bias, &terms.bias) {
            assert_close("bias vs oracle", &b.clone().into_dyn(), &gb.into_dyn(), term_scale(&t.clone().into_dyn()))?;
        }
    }

    /// The CPU backend's fused training forward and backward (two items or more: one batch
    /// item per task, the intermediates in a per-thread workspace) give the output and the
    /// gradients of the steps run one primitive at a time (`fused: false`), within the
    /// tolerance of equivalence.rs: both are f32 sums of the same products, associated
    /// differently.
    #[test]
    fn fused_training_equals_the_primitives(
        case in case_strategy().prop_map(|mut c| { c.batch += 1; c }),
        input_grad in any::<bool>(),
    ) {
        let (layer, x) = build(&case);
        let (fused, plain) = (CpuBackend::new(), CpuBackend::with_options(CpuOptions { fused: false, ..CpuOptions::default() }));
        let y = oracle_output(&layer, &x);
        let mut rng = StdRng::seed_from_u64(case.seed ^ 7);
        let gy = random_array(y.shape(), &mut rng);
        let run = |backend: &CpuBackend| layer.forward_backward(backend, x.view(), gy.view(), Implementation::Factorized, input_grad).unwrap();
        let ((yf, f), (yp, p)) = (run(&fused), run(&plain));
        assert_close("training forward", &yf, &yp, max_abs(&y).max(output_terms(&layer, &x)))?;
        prop_assert_eq!(f.input.is_some(), input_grad);
        compare_gradients(&f, &p, &gradient_terms(&fused, &layer, &x, &gy))?;
    }

    /// A transducted layer's gradients equal those of a 3-D layer built from the same kernel
    /// (its cores given to a fresh 3-D layer), and the input gradient equals the oracle's for its
    /// full weights.
    #[test]
    fn transducted_gradients_equal_the_3d_layer(
        case in case_strategy().prop_filter("2-D layers", |c| c.kernel.len() == 2),
        k_new in 1..=3usize,
        mode in 0..=2usize,
    ) {
        let (mut layer, _) = build(&case);
        layer.transduct(mode, k_new, AxisGeometry::symmetric(1, 1, 1)).unwrap();
        let g = layer.geometry().to_vec();
        let config = TtConvConfig::new(case.cin, case.cout, layer.config().kernel_size.clone())
            .stride(g.iter().map(|a| a.stride).collect::<Vec<_>>())
            .dilation(g.iter().map(|a| a.dilation).collect::<Vec<_>>())
            .padding(ttconv::Padding::Asymmetric(g.iter().map(|a| (a.pad_before, a.pad_after)).collect()))
            .rank(ttconv::RankSpec::Explicit(layer.ranks()))
            .bias(case.bias);
        let mut layer3 = TtConv::new(config).unwrap();
        let (tt, bias) = layer.decomposition();
        layer3.init_from_decomposition(tt, bias.as_ref().map(|b| b.view())).unwrap();
        let mut rng = StdRng::seed_from_u64(case.seed ^ 5);
        let mut shape = vec![case.batch, case.cin];
        let mut spatial = case.spatial.clone();
        spatial.insert(mode, k_new + 2);
        shape.extend(spatial);
        let x = random_array(&shape, &mut rng);
        let cpu = CpuBackend::new();
        let y = oracle_output(&layer, &x);
        let gy = random_array(y.shape(), &mut rng);
        let terms = gradient_terms(&cpu, &layer3, &x, &gy);
        for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
            let a = layer.forward_backward(&cpu, x.view(), gy.view(), implementation, true).map(|(_, grads)| grads).unwrap();
            let b = layer3.forward_backward(&cpu, x.view(), gy.view(), Implementation::Reconstructed, true).map(|(_, grads)| grads).unwrap();
            compare_gradients(&a, &b, &terms)?;
        }
        let (gx, _, _) = oracle::conv_nd_grads(x.view(), layer.full_weights().view(), gy.view(), layer.geometry()).unwrap();
        let f = layer.forward_backward(&cpu, x.view(), gy.view(), Implementation::Factorized, true).map(|(_, grads)| grads).unwrap();
        assert_close("input vs oracle", f.input.as_ref().unwrap(), &gx, term_scale(terms.input.as_ref().unwrap()))?;
    }
}

#[test]
fn backward_rejects_a_wrong_output_gradient() {
    let (layer, x) = build(&Case {
        batch: 1,
        cin: 2,
        cout: 2,
        kernel: vec![3],
        stride: vec![1],
        padding: vec![(0, 0)],
        dilation: vec![1],
        ranks: vec![1, 2, 2, 1],
        spatial: vec![6],
        bias: false,
        seed: 9,
    });
    let gy = ArrayD::<f32>::zeros(IxDyn(&[1, 2, 5]));
    let cpu = CpuBackend::new();
    assert!(
        layer
            .forward_backward(&cpu, x.view(), gy.view(), Implementation::Factorized, false)
            .map(|(_, grads)| grads)
            .is_err()
    );
}

/// Layers whose ranks exceed their channels train through the merged-ends plan (the chain the
/// forward runs, `ttconv::FactorizedProgram`): one layer per merge pattern
/// (`common::merge_pattern_cases`); factorized gradients == reconstructed gradients == the
/// oracle's.
#[test]
fn merged_plan_gradients_match() {
    let cpu = CpuBackend::new();
    for (i, (case, (head, tail))) in merge_pattern_cases(100).into_iter().enumerate() {
        let (layer, x) = build(&case);
        let program = layer.program(x.shape()).unwrap();
        assert_eq!(
            (program.merges_head(), program.merges_tail()),
            (head, tail),
            "case {i}"
        );
        let y = oracle_output(&layer, &x);
        let mut rng = StdRng::seed_from_u64(case.seed);
        let gy = random_array(y.shape(), &mut rng);
        let prepared = layer.prepare(&cpu).unwrap();
        let (y_train, _) = prepared
            .forward_train(x.clone(), Implementation::Factorized)
            .unwrap();
        let scale = max_abs(&y).max(output_terms(&layer, &x));
        assert!(
            max_diff(&y_train, &y) <= REL_TOL * scale,
            "case {i}: output"
        );
        let f = layer
            .forward_backward(&cpu, x.view(), gy.view(), Implementation::Factorized, true)
            .map(|(_, grads)| grads)
            .unwrap();
        let r = layer
            .forward_backward(
                &cpu,
                x.view(),
                gy.view(),
                Implementation::Reconstructed,
                true,
            )
            .map(|(_, grads)| grads)
            .unwrap();
        let terms = gradient_terms(&cpu, &layer, &x, &gy);
        compare_gradients(&f, &r, &terms).unwrap_or_else(|e| panic!("case {i}: {e}"));
        // Without the input gradient, the core gradients are the same.
        let f2 = layer
            .forward_backward(&cpu, x.view(), gy.view(), Implementation::Factorized, false)
            .map(|(_, grads)| grads)
            .unwrap();
        assert!(f2.input.is_none());
        compare_gradients(&f2, &f, &terms).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}
