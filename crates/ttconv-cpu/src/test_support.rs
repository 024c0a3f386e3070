//! Shared pieces of the crate's unit tests: a random dense convolution and its check against the
//! f64 oracle.

use ndarray::{Array1, Array3, ArrayD, ArrayView2, ArrayView3, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::AxisGeometry;

/// One axis of a case: `(size, kernel, dilation, padding before, padding after, stride)`.
pub(crate) type Axis = (usize, usize, usize, usize, usize, usize);

/// A random dense convolution: input `(batch, cin, in_spatial)`, kernel `(cout, cin, k..)`,
/// entries uniform in (-1, 1).
pub(crate) struct DenseCase {
    pub x: ArrayD<f32>,
    pub kernel: ArrayD<f32>,
    pub bias: Option<Array1<f32>>,
    pub in_spatial: Vec<usize>,
    pub kernel_size: Vec<usize>,
    pub geometry: Vec<AxisGeometry>,
}

fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0f32..1.0))
}

impl DenseCase {
    /// The validated sizes of this case's convolution.
    pub(crate) fn dense_shape(&self) -> crate::conv_dense::DenseShape {
        let cin = self.x.shape()[1];
        crate::conv_dense::DenseShape::new(cin, &self.in_spatial, &self.kernel_size, &self.geometry)
            .expect("a case with a non-empty output")
    }

    /// The case, or `None` when its output would be empty.
    pub(crate) fn new(
        batch: usize,
        cin: usize,
        cout: usize,
        axes: &[Axis],
        bias: bool,
        seed: u64,
    ) -> Option<Self> {
        let in_spatial: Vec<usize> = axes.iter().map(|a| a.0).collect();
        let kernel_size: Vec<usize> = axes.iter().map(|a| a.1).collect();
        let geometry: Vec<AxisGeometry> = axes
            .iter()
            .map(|a| AxisGeometry {
                stride: a.5,
                dilation: a.2,
                pad_before: a.3,
                pad_after: a.4,
            })
            .collect();
        let out_spatial = ttconv::output_spatial(&in_spatial, &kernel_size, &geometry).ok()?;
        if out_spatial.contains(&0) {
            return None;
        }
        let mut xs = vec![batch, cin];
        xs.extend(&in_spatial);
        let mut ks = vec![cout, cin];
        ks.extend(&kernel_size);
        let bias = bias.then(|| {
            random(&[cout], seed ^ 2)
                .into_dimensionality()
                .expect("one axis")
        });
        Some(Self {
            x: random(&xs, seed),
            kernel: random(&ks, seed ^ 1),
            bias,
            in_spatial,
            kernel_size,
            geometry,
        })
    }

    /// The input as `(batch, cin, positions)`.
    pub(crate) fn x3(&self) -> ArrayView3<'_, f32> {
        let sh = self.x.shape();
        self.x
            .view()
            .into_shape_with_order((sh[0], sh[1], sh[2..].iter().product::<usize>()))
            .expect("standard layout")
    }

    /// The kernel as the matrix `(cout, cin * prod(k))`.
    pub(crate) fn kernel_matrix(&self) -> ArrayView2<'_, f32> {
        let sh = self.kernel.shape();
        self.kernel
            .view()
            .into_shape_with_order((sh[0], sh[1..].iter().product::<usize>()))
            .expect("standard layout")
    }

    /// `got` `(batch, cout, positions)` against the f64 oracle, within `1e-5` of the larger of the
    /// largest output and the largest root-sum-square of the products summed into one output
    /// (the scale of f32 rounding; the oracle on squared operands gives the sums of squares).
    pub(crate) fn check(&self, got: &Array3<f32>) -> Result<(), TestCaseError> {
        let oracle = |x: &ArrayD<f32>, k: &ArrayD<f32>, b: Option<Array1<f32>>| {
            ttconv::oracle::conv_nd(
                x.view(),
                k.view(),
                b.as_ref().map(|b| b.view()),
                &self.geometry,
            )
            .expect("a valid case")
        };
        let sq = |a: &ArrayD<f32>| a.mapv(|v| v * v);
        let want = oracle(&self.x, &self.kernel, self.bias.clone());
        let terms = oracle(
            &sq(&self.x),
            &sq(&self.kernel),
            self.bias.as_ref().map(|b| b.mapv(|v| v * v)),
        )
        .iter()
        .fold(0f32, |m, v| m.max(v.sqrt()));
        let scale = want.iter().fold(terms, |m, v| m.max(v.abs()));
        prop_assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            prop_assert!(
                (g - w).abs() <= 1e-5 * scale,
                "entry {}: {} vs {} (scale {})",
                i,
                g,
                w,
                scale
            );
        }
        Ok(())
    }
}
