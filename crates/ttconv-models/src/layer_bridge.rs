//! Every call this crate makes into the layer crates (`ttconv`, `tt-core`) lives here, so that a
//! change of their API touches one small file.
//!
//! Shapes: a kernel is `W (out, in, k_1..k_d)`; its TT is over `(in, k_1..k_d, out)` with cores
//! `G_0 (1, in, r_1)`, `G_j (r_j, k_j, r_{j+1})`, `G_{d+1} (r_{d+1}, out, 1)`.

use ndarray::{Array1, Array3, ArrayD, IxDyn};
use ttconv::{
    ConvGeometry, CostConstants, Implementation, Padding, RankSpec, Truncation, TtConv,
    TtConvConfig,
};

pub use tt_core::TtTensor;

use crate::error::{Error, Result};
use crate::meta::Geometry;

/// How one kernel is decomposed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Decomposition {
    /// TensorLy's rank spec, every resolved rank capped at `max_rank`.
    Rank {
        spec: RankSpec,
        max_rank: Option<usize>,
    },
    /// Relative error tolerance, ranks capped at `max_rank`.
    Tolerance { eps: f64, max_rank: Option<usize> },
    /// These exact ranks (each still capped by the unfolding sizes).
    Ranks(Vec<usize>),
}

/// The TT shape `(in, k_1..k_d, out)` of a kernel shape `(out, in, k_1..k_d)`.
pub(crate) fn tt_shape(kernel_shape: &[usize]) -> Vec<usize> {
    let mut s = kernel_shape[1..].to_vec();
    s.push(kernel_shape[0]);
    s
}

/// Parameters of TT cores of `shape` with `ranks`: `sum_k r_k n_k r_{k+1}`.
pub(crate) fn tt_params(shape: &[usize], ranks: &[usize]) -> usize {
    shape
        .iter()
        .enumerate()
        .map(|(k, n)| ranks[k] * n * ranks[k + 1])
        .sum()
}

/// Resolves a TensorLy rank spec on a TT shape.
pub(crate) fn resolve_rank(spec: &RankSpec, shape: &[usize]) -> Result<Vec<usize>> {
    Ok(spec.resolve(shape)?)
}

/// Decomposes `kernel` by TT-SVD as the layer crate does (`TtConv::from_dense`); returns the TT.
pub(crate) fn decompose(kernel: &ArrayD<f32>, how: &Decomposition) -> Result<TtTensor<f32>> {
    let truncation = match how {
        Decomposition::Rank { spec, max_rank } => match max_rank {
            None => Truncation::rank(spec.clone()),
            Some(cap) => {
                let shape = tt_shape(kernel.shape());
                let mut ranks = resolve_rank(spec, &shape)?;
                let n = ranks.len();
                for r in &mut ranks[1..n - 1] {
                    *r = (*r).min(*cap).max(1);
                }
                Truncation::rank(RankSpec::Explicit(ranks))
            }
        },
        Decomposition::Tolerance { eps, max_rank } => match max_rank {
            None => Truncation::tolerance(*eps),
            Some(cap) => Truncation::tolerance_capped(*eps, *cap),
        },
        Decomposition::Ranks(r) => Truncation::rank(RankSpec::Explicit(r.clone())),
    };
    let (layer, _) =
        TtConv::from_dense(kernel.view(), None, &ConvGeometry::default(), &truncation)?;
    Ok(layer.tt().clone())
}

/// Every singular value of each unfolding step of a full-rank TT-SVD of `kernel`'s TT shape
/// (step k: the k-th unfolding of the permuted kernel, since nothing is truncated before it),
/// and `||W||_F`.
pub(crate) fn spectra(kernel: &ArrayD<f32>) -> Result<(Vec<Vec<f64>>, f64)> {
    let (_, report) = TtConv::from_dense(
        kernel.view(),
        None,
        &ConvGeometry::default(),
        &Truncation::tolerance(0.0),
    )?;
    Ok((report.singular_values, report.norm))
}

/// Reconstructs the kernel `(out, in, k..)` of a TT in f64.
pub(crate) fn kernel_f64(tt: &TtTensor<f32>) -> Result<ArrayD<f64>> {
    let dense = tt.cast::<f64>().to_dense()?;
    let n = dense.ndim();
    let mut perm = vec![n - 1];
    perm.extend(0..n - 1);
    Ok(dense
        .permuted_axes(IxDyn(&perm))
        .as_standard_layout()
        .to_owned())
}

/// `||W - W_tt||_F / ||W||_F` in f64 (0 for a zero kernel reproduced exactly).
pub(crate) fn relative_error(kernel: &ArrayD<f32>, tt: &TtTensor<f32>) -> Result<f64> {
    let rec = kernel_f64(tt)?;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in kernel.iter().zip(rec.iter()) {
        let a = f64::from(*a);
        num += (a - b) * (a - b);
        den += a * a;
    }
    Ok(if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    })
}

/// A TT from cores `(r_k, n_k, r_{k+1})`, validated (chained ranks, end ranks 1).
pub(crate) fn tt_from_cores(cores: Vec<Array3<f32>>) -> Result<TtTensor<f32>> {
    Ok(TtTensor::new(cores)?)
}

/// The cores of a TT.
pub(crate) fn tt_cores(tt: &TtTensor<f32>) -> &[Array3<f32>] {
    tt.cores()
}

/// A `TtConv` with these weights and geometry (unit stride and dilation, no padding when
/// `geometry` is `None`): the TT over `(in, k_1..k_d, out)`, the bias `(out,)`.
pub fn build_layer(
    tt: TtTensor<f32>,
    bias: Option<&Array1<f32>>,
    geometry: Option<&Geometry>,
) -> Result<TtConv> {
    let shape = tt.shape();
    let n = shape.len();
    let (cin, cout, k) = (shape[0], shape[n - 1], shape[1..n - 1].to_vec());
    let d = k.len();
    let g = geometry.cloned().unwrap_or_else(|| Geometry::unit(d));
    if g.order() != d {
        return Err(Error::Layer {
            prefix: String::new(),
            reason: format!("geometry has {} spatial modes, the cores {d}", g.order()),
        });
    }
    let config = TtConvConfig::new(cin, cout, k)
        .stride(g.stride.clone())
        .padding(Padding::Asymmetric(
            g.padding.iter().map(|p| (p[0], p[1])).collect(),
        ))
        .dilation(g.dilation.clone())
        .bias(bias.is_some())
        .rank(RankSpec::Explicit(tt.ranks()));
    let mut layer = TtConv::new(config)?;
    layer.init_from_decomposition(tt, bias.map(|b| b.view()))?;
    Ok(layer)
}

/// A layer's TT, bias and geometry.
pub fn layer_parts(layer: &TtConv) -> (TtTensor<f32>, Option<Array1<f32>>, Geometry) {
    let (tt, bias) = layer.decomposition();
    let geometry = Geometry::from_axes(layer.geometry());
    (tt, bias, geometry)
}

/// Modelled multiply-adds of one forward of batch 1 on `input_spatial`, dense vs factorized,
/// and the implementation `Auto` picks under `constants`.
pub(crate) fn macs(
    tt: &TtTensor<f32>,
    geometry: &Geometry,
    input_spatial: &[usize],
    constants: &CostConstants,
) -> Result<(u64, u64, &'static str)> {
    let layer = build_layer(tt.clone(), None, Some(geometry))?;
    let mut input = vec![1, tt.shape()[0]];
    input.extend_from_slice(input_spatial);
    let dense = layer.flops(&input, Implementation::Reconstructed)?.macs;
    let factorized = layer.flops(&input, Implementation::Factorized)?.macs;
    let auto = match layer.resolve_implementation(&input, Implementation::Auto, constants)? {
        Implementation::Reconstructed => "dense",
        _ => "factorized",
    };
    Ok((dense, factorized, auto))
}
