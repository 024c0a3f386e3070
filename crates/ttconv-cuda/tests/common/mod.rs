//! Shared helpers of the CUDA test suites: the backend-or-skip helper, random data, host
//! references built on `ttconv::oracle` and tolerance checks.

#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::AxisGeometry;
use ttconv::oracle::{conv_nd, conv_nd_grads};
use ttconv_cuda::CudaBackend;

/// The CUDA backend of one test, holding the binary's GPU lock: tests of a binary share one
/// context and stream, so a kernel fault of one test would be reported by whichever test
/// synchronizes next, and poison the rest. Holding the lock for the whole test runs the CUDA
/// tests of a binary one at a time (whatever `--test-threads` says), so a fault stays with its
/// test. Dereferences to the backend; pass `&*gpu` where a `&B: Backend` is expected.
pub struct Gpu {
    backend: CudaBackend,
    _serial: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Gpu {
    type Target = CudaBackend;
    fn deref(&self) -> &CudaBackend {
        &self.backend
    }
}

/// The CUDA backend on device 0, or `None` after printing `skipped: <reason>` when this machine
/// has no usable CUDA (no driver, no device, no NVRTC or cuBLAS). Any other failure (a kernel
/// that does not compile, a driver error on a working installation) fails the test, and so
/// does a missing CUDA when `TTCONV_REQUIRE_CUDA=1` (set it on GPU machines so that a library
/// missing from `LD_LIBRARY_PATH` cannot turn the suite into silent skips).
///
/// `TTCONV_TEST_SYNC_LAUNCHES=1` (set by the GPU check's `run.sh --sync-launches`) turns on
/// the backend's synchronize-after-every-launch option in these tests, to name a faulting
/// kernel; the library itself reads no environment variable.
pub fn backend() -> Option<Gpu> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let required = flag("TTCONV_REQUIRE_CUDA");
    // A test that failed while holding the lock poisons it; the next test still runs.
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    match CudaBackend::open(0) {
        Ok(b) => Some(Gpu {
            backend: b.with_sync_after_each_launch(flag("TTCONV_TEST_SYNC_LAUNCHES")),
            _serial: serial,
        }),
        Err(e) if e.is_unavailable() && !required => {
            println!("skipped: {e}");
            None
        }
        Err(e) if e.is_unavailable() => panic!("TTCONV_REQUIRE_CUDA=1 but {e}"),
        Err(e) => panic!("CUDA is installed but the backend failed to start: {e}"),
    }
}

/// A deterministic array of `shape` with entries uniform in `[-1, 1)`.
pub fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0f32..1.0))
}

/// Asserts `got` and `want` have the same shape and `max |got - want| <= tol * max(1, max |want|)`.
pub fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let (worst, idx) =
        got.iter()
            .zip(want.iter())
            .enumerate()
            .fold((0.0f32, 0), |(w, wi), (i, (a, b))| {
                let d = (a - b).abs();
                if d > w { (d, i) } else { (w, wi) }
            });
    assert!(
        worst <= tol * scale,
        "{what}: max |diff| = {worst} at flat index {idx} (scale {scale}, tol {tol})"
    );
}

/// Geometry with stride, dilation and padding of one axis; unit elsewhere.
pub fn unit_except(d: usize, axis: usize, g: AxisGeometry) -> Vec<AxisGeometry> {
    (0..d)
        .map(|j| if j == axis { g } else { AxisGeometry::UNIT })
        .collect()
}

/// The dense kernel `(c_out, c_in, 1, .., 1)` of a channel contraction with `w (c_in, c_out)`.
pub fn contraction_kernel(w: &ArrayD<f32>, d: usize) -> ArrayD<f32> {
    let (cin, cout) = (w.shape()[0], w.shape()[1]);
    let mut shape = vec![cout, cin];
    shape.extend(std::iter::repeat_n(1, d));
    ArrayD::from_shape_fn(IxDyn(&shape), |i| w[[i[1], i[0]]])
}

/// The dense kernel `(r_out, r_in, 1.., k, ..1)` (k at `axis`) of a 1-D convolution with
/// `core (r_in, k, r_out)`.
pub fn along_kernel(core: &ArrayD<f32>, d: usize, axis: usize) -> ArrayD<f32> {
    let (r_in, k, r_out) = (core.shape()[0], core.shape()[1], core.shape()[2]);
    let mut shape = vec![r_out, r_in];
    shape.extend((0..d).map(|j| if j == axis { k } else { 1 }));
    ArrayD::from_shape_fn(IxDyn(&shape), |i| core[[i[1], i[axis + 2], i[0]]])
}

/// Oracle channel contraction.
pub fn ref_contract(x: &ArrayD<f32>, w: &ArrayD<f32>, bias: Option<&ArrayD<f32>>) -> ArrayD<f32> {
    let d = x.ndim() - 2;
    let b = bias.map(|b| b.clone().into_dimensionality::<ndarray::Ix1>().unwrap());
    conv_nd(
        x.view(),
        contraction_kernel(w, d).view(),
        b.as_ref().map(|b| b.view()),
        &vec![AxisGeometry::UNIT; d],
    )
    .unwrap()
}

/// Oracle 1-D convolution along `axis`.
pub fn ref_along(x: &ArrayD<f32>, axis: usize, core: &ArrayD<f32>, g: AxisGeometry) -> ArrayD<f32> {
    let d = x.ndim() - 2;
    conv_nd(
        x.view(),
        along_kernel(core, d, axis).view(),
        None,
        &unit_except(d, axis, g),
    )
    .unwrap()
}

/// Oracle gradients `(gx, gcore (r_in, k, r_out))` of the 1-D convolution along `axis`.
pub fn ref_along_grads(
    x: &ArrayD<f32>,
    axis: usize,
    core: &ArrayD<f32>,
    g: AxisGeometry,
    gy: &ArrayD<f32>,
) -> (ArrayD<f32>, ArrayD<f32>) {
    let d = x.ndim() - 2;
    let (gx, gk, _) = conv_nd_grads(
        x.view(),
        along_kernel(core, d, axis).view(),
        gy.view(),
        &unit_except(d, axis, g),
    )
    .unwrap();
    let gcore = ArrayD::from_shape_fn(IxDyn(core.shape()), |i| {
        let mut ki = vec![i[2], i[0]];
        ki.extend((0..d).map(|j| if j == axis { i[1] } else { 0 }));
        gk[&ki[..]]
    });
    (gx, gcore)
}

/// Oracle gradients `(gx, gw (c_in, c_out), gb)` of the channel contraction.
pub fn ref_contract_grads(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    gy: &ArrayD<f32>,
) -> (ArrayD<f32>, ArrayD<f32>, ArrayD<f32>) {
    let d = x.ndim() - 2;
    let (gx, gk, gb) = conv_nd_grads(
        x.view(),
        contraction_kernel(w, d).view(),
        gy.view(),
        &vec![AxisGeometry::UNIT; d],
    )
    .unwrap();
    let gw = ArrayD::from_shape_fn(IxDyn(w.shape()), |i| {
        let mut ki = vec![i[1], i[0]];
        ki.extend(std::iter::repeat_n(0, d));
        gk[&ki[..]]
    });
    (gx, gw, gb.into_dyn())
}

/// Reconstructs the dense kernel `(out, in, k_1..k_d)` of factorized weights: `first (in, r_1)`,
/// `spatial[j] (r_{j+1}, k_j, r_{j+2})`, `last (r_{d+1}, out)`.
pub fn reconstruct(
    first: &ArrayD<f32>,
    spatial: &[ArrayD<f32>],
    last: &ArrayD<f32>,
) -> ArrayD<f32> {
    let cin = first.shape()[0];
    // acc: (cin * prod(k so far), r) row-major
    let mut acc: Vec<f64> = first.iter().map(|&v| f64::from(v)).collect();
    let mut rows = cin;
    let mut r = first.shape()[1];
    let mut ks = Vec::new();
    for core in spatial {
        let (ra, k, rb) = (core.shape()[0], core.shape()[1], core.shape()[2]);
        assert_eq!(ra, r);
        let mut next = vec![0f64; rows * k * rb];
        for i in 0..rows {
            for a in 0..ra {
                let v = acc[i * ra + a];
                for t in 0..k {
                    for b in 0..rb {
                        next[(i * k + t) * rb + b] += v * f64::from(core[[a, t, b]]);
                    }
                }
            }
        }
        acc = next;
        rows *= k;
        r = rb;
        ks.push(k);
    }
    let cout = last.shape()[1];
    let taps = rows / cin;
    let mut shape = vec![cout, cin];
    shape.extend(&ks);
    ArrayD::from_shape_fn(IxDyn(&shape), |i| {
        let (o, c) = (i[0], i[1]);
        let mut t = 0;
        for (j, &k) in ks.iter().enumerate() {
            t = t * k + i[j + 2];
        }
        debug_assert!(t < taps);
        let row = c * taps + t;
        let s: f64 = (0..r)
            .map(|a| acc[row * r + a] * f64::from(last[[a, o]]))
            .sum();
        s as f32
    })
}
