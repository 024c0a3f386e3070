//! The TT convolution layer: its state, initialisations, decomposition and transduction.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array1, Array3, ArrayD, ArrayView1, ArrayViewD, Axis, IxDyn};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use tt_core::{RankSpec, Truncation, TruncationReport, TtTensor, merge_cores, tt_svd};

use crate::config::{ConvGeometry, Implementation, TtConvConfig};
use crate::cost::{self, Cost, CostConstants, LayerShape};
use crate::error::{Error, Result, check_finite};
use crate::geometry::{AxisGeometry, output_spatial};
use crate::program::FactorizedProgram;

/// Most elements an activation (a layer's input or output) may have: `2^32` (16 GiB of f32).
/// Larger shapes are refused before anything is allocated.
pub const MAX_ACTIVATION_ELEMENTS: usize = 1 << 32;

/// Most entries a layer's dense kernel `(out, in, k_1..k_d)` may have: `2^30` (4 GiB of f32;
/// its reconstruction runs in f64), so that [`TtConv::full_weights`] and the reconstructed path
/// can always build it. Checked by [`TtConvConfig::validate`], with the TT's own limit
/// [`tt_core::MAX_TT_PARAMETERS`].
pub const MAX_KERNEL_ELEMENTS: usize = 1 << 30;

/// Standard deviation of the reconstructed kernel that random initialisation aims at
/// (TensorLy-Torch's default).
pub const INIT_STD: f64 = 0.02;

/// How [`TtConv::init_from_random`] draws the weights (TensorLy-Torch's
/// `decompose_full_weight` flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Init {
    /// Every core ~ N(0, s^2) at the layer's resolved ranks with
    /// `s = (0.02 / prod_{k=1..d+1} sqrt(r_k))^(1 / (d + 2))`, so that each reconstructed entry,
    /// a sum of `prod r_k` products of `d + 2` core entries, has standard deviation about 0.02.
    #[default]
    Direct,
    /// A dense kernel ~ N(0, 0.02^2) of the layer's shape, decomposed by TT-SVD at the layer's
    /// rank spec (ranks capped by TT-SVD).
    DecomposeFullWeight,
}

/// A Tensor-Train factorized N-D convolution (TensorLy-Torch's `TTConv`).
///
/// The kernel `W (out, in, k_1..k_d)` is held as a TT over `(in, k_1..k_d, out)`: cores
/// `G_0 (1, in, r_1)`, `G_j (r_j, k_j, r_{j+1})` for spatial mode `j = 1..d`,
/// `G_{d+1} (r_{d+1}, out, 1)`. Activations are `(batch, channels, D_1..D_d)`.
#[derive(Debug)]
pub struct TtConv {
    config: TtConvConfig,
    geometry: Vec<AxisGeometry>,
    tt: TtTensor<f32>,
    bias: Option<Array1<f32>>,
    dense: OnceLock<ArrayD<f32>>,
    /// Identity of this layer and the state of its weights (see [`TtConv::stamp`]).
    stamp: u64,
    /// Identity of this layer, kept across weight changes (see [`TtConv::id`]).
    id: u64,
}

/// Source of [`TtConv::stamp`] values.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

fn new_stamp() -> u64 {
    NEXT_STAMP.fetch_add(1, Ordering::Relaxed)
}

impl Clone for TtConv {
    /// A copy with the same weights and a stamp of its own.
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            geometry: self.geometry.clone(),
            tt: self.tt.clone(),
            bias: self.bias.clone(),
            dense: OnceLock::new(),
            stamp: new_stamp(),
            id: new_stamp(),
        }
    }
}

impl TtConv {
    /// A layer for `config`, initialised with [`Self::init_from_random`]`(Init::Direct, 0)`: random cores
    /// whose reconstruction has standard deviation about 0.02, zero bias.
    ///
    /// The ranks are the rank spec's on `(in, k_1..k_d, out)` and are not capped by the
    /// unfolding sizes, as in TensorLy-Torch (a 2 -> 2 layer with kernel 3 accepts ranks
    /// `[1, 40, 40, 1]`: more parameters than its 12-entry dense kernel); [`Self::from_dense`]
    /// caps them. A configuration whose cores would exceed [`tt_core::MAX_TT_PARAMETERS`] is an
    /// error, not an allocation.
    pub fn new(config: TtConvConfig) -> Result<Self> {
        let geometry = config.validate()?;
        let ranks = config.resolved_ranks()?;
        let tt = random_cores(&config.tt_shape(), &ranks, 0)?;
        let bias = config.bias.then(|| Array1::zeros(config.out_channels));
        Ok(Self {
            config,
            geometry,
            tt,
            bias,
            dense: OnceLock::new(),
            stamp: new_stamp(),
            id: new_stamp(),
        })
    }

    /// A layer built from a dense kernel `(out, in, k_1..k_d)` and optional bias `(out,)`, with the
    /// given stride, padding and dilation, decomposed by TT-SVD under `truncation` (TensorLy-Torch's
    /// `from_conv`). Returns the layer and the decomposition report (achieved relative error).
    pub fn from_dense(
        kernel: ArrayViewD<'_, f32>,
        bias: Option<ArrayView1<'_, f32>>,
        geometry: &ConvGeometry,
        truncation: &Truncation,
    ) -> Result<(Self, TruncationReport)> {
        if kernel.ndim() < 3 {
            return Err(Error::Shape {
                what: "kernel".into(),
                expected: "(out, in, k_1..k_d) with d >= 1".into(),
                got: kernel.shape().to_vec(),
            });
        }
        let rank = match truncation {
            Truncation::Rank { spec, .. } => spec.clone(),
            Truncation::Tolerance { .. } => RankSpec::Same,
        };
        let config = TtConvConfig::new(kernel.shape()[1], kernel.shape()[0], &kernel.shape()[2..])
            .geometry(geometry.clone())
            .bias(bias.is_some())
            .rank(rank);
        let mut layer = Self::new(config)?;
        let report = layer.init_from_tensor(kernel, bias, truncation)?;
        Ok((layer, report))
    }

    /// The configuration (its `rank` is updated to the realised ranks by initialisations that
    /// change them).
    pub fn config(&self) -> &TtConvConfig {
        &self.config
    }

    /// Per-mode stride, dilation and padding.
    pub fn geometry(&self) -> &[AxisGeometry] {
        &self.geometry
    }

    /// Number of spatial modes `d`.
    pub fn order(&self) -> usize {
        self.geometry.len()
    }

    /// The TT ranks `(1, r_1..r_{d+1}, 1)`.
    pub fn ranks(&self) -> Vec<usize> {
        self.tt.ranks()
    }

    /// The TT of the kernel over `(in, k_1..k_d, out)`.
    pub fn tt(&self) -> &TtTensor<f32> {
        &self.tt
    }

    /// The bias `(out,)`, if any.
    pub fn bias(&self) -> Option<&Array1<f32>> {
        self.bias.as_ref()
    }

    /// A value unique to this layer and the current state of its weights: it changes whenever
    /// the weights or the configuration change, and a clone gets its own. Training contexts
    /// record it so that a backward refuses a context made by another layer.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// A value unique to this layer object, kept while its weights change (a clone gets its
    /// own). Optimisers record it so that their state is never applied to another layer.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Marks a change of weights or configuration: cached results are dropped.
    fn weights_changed(&mut self) {
        self.dense = OnceLock::new();
        self.stamp = new_stamp();
    }

    fn set_weights(&mut self, tt: TtTensor<f32>, bias: Option<Array1<f32>>) {
        self.config.rank = RankSpec::Explicit(tt.ranks());
        self.config.bias = bias.is_some();
        self.tt = tt;
        self.bias = bias;
        self.weights_changed();
    }

    fn check_bias(&self, bias: Option<&ArrayView1<'_, f32>>) -> Result<Option<Array1<f32>>> {
        match bias {
            None => Ok(None),
            Some(b) if b.len() == self.config.out_channels => {
                check_finite("bias", b.iter().copied())?;
                Ok(Some(b.to_owned()))
            }
            Some(b) => Err(Error::Shape {
                what: "bias".into(),
                expected: format!("({},)", self.config.out_channels),
                got: b.shape().to_vec(),
            }),
        }
    }

    /// Decomposes a dense kernel `(out, in, k_1..k_d)` into this layer's TT by TT-SVD of the
    /// permuted kernel `(in, k_1..k_d, out)` under `truncation` (rank spec or tolerance) and sets
    /// the bias (`None` removes it). Returns the report with the achieved relative error.
    pub fn init_from_tensor(
        &mut self,
        kernel: ArrayViewD<'_, f32>,
        bias: Option<ArrayView1<'_, f32>>,
        truncation: &Truncation,
    ) -> Result<TruncationReport> {
        let mut expected = vec![self.config.out_channels, self.config.in_channels];
        expected.extend_from_slice(&self.config.kernel_size);
        if kernel.shape() != expected.as_slice() {
            return Err(Error::Shape {
                what: "kernel".into(),
                expected: format!("{expected:?} (out, in, k_1..k_d)"),
                got: kernel.shape().to_vec(),
            });
        }
        // Checked here, in the caller's index order (the TT-SVD would name an index of the
        // permuted kernel).
        check_finite("kernel", kernel.iter().copied())?;
        let bias = self.check_bias(bias.as_ref())?;
        let d = self.order();
        // (out, in, k..) -> (in, k.., out)
        let mut perm: Vec<usize> = (1..d + 2).collect();
        perm.push(0);
        let permuted = kernel.permuted_axes(IxDyn(&perm));
        let (tt, report) = tt_svd(permuted, truncation)?;
        self.set_weights(tt, bias);
        Ok(report)
    }

    /// Random initialisation (TensorLy-Torch's `init_from_random`) as `init` says, reproducible
    /// from `seed`; the bias, if any, is set to zero.
    pub fn init_from_random(&mut self, init: Init, seed: u64) -> Result<()> {
        let shape = self.config.tt_shape();
        let bias = self.bias.as_ref().map(|b| Array1::zeros(b.len()));
        if init == Init::DecomposeFullWeight {
            let mut kshape = vec![self.config.out_channels, self.config.in_channels];
            kshape.extend_from_slice(&self.config.kernel_size);
            let normal = Normal::new(0.0, INIT_STD).expect("valid normal");
            let mut rng = StdRng::seed_from_u64(seed);
            let kernel =
                ArrayD::from_shape_simple_fn(IxDyn(&kshape), || normal.sample(&mut rng) as f32);
            let spec = self.config.rank.clone();
            let options = self.config.rank_options;
            let bias_view = bias.as_ref().map(|b| b.view());
            self.init_from_tensor(
                kernel.view(),
                bias_view,
                &Truncation::Rank { spec, options },
            )?;
        } else {
            let ranks = self.config.resolved_ranks()?;
            let tt = random_cores(&shape, &ranks, seed)?;
            self.set_weights(tt, bias);
        }
        Ok(())
    }

    /// Sets the layer's weights from a TT over `(in, k_1..k_d, out)` and an optional bias
    /// `(out,)`; an error on a shape mismatch or a non-finite value.
    pub fn init_from_decomposition(
        &mut self,
        tt: TtTensor<f32>,
        bias: Option<ArrayView1<'_, f32>>,
    ) -> Result<()> {
        let expected = self.config.tt_shape();
        if tt.shape() != expected {
            return Err(Error::Shape {
                what: "TT decomposition".into(),
                expected: format!("{expected:?} (in, k_1..k_d, out)"),
                got: tt.shape(),
            });
        }
        for (k, core) in tt.cores().iter().enumerate() {
            check_finite(&format!("core {k}"), core.iter().copied())?;
        }
        let bias = self.check_bias(bias.as_ref())?;
        self.set_weights(tt, bias);
        Ok(())
    }

    /// A copy of the TT of the kernel and of the bias (TensorLy-Torch's `get_decomposition`;
    /// [`Self::tt`] and [`Self::bias`] borrow them instead).
    pub fn decomposition(&self) -> (TtTensor<f32>, Option<Array1<f32>>) {
        (self.tt.clone(), self.bias.clone())
    }

    /// Replaces the cores in place (e.g. after an optimiser step); shapes must not change and
    /// every value must be finite (the layer is unchanged on an error).
    pub fn set_cores(&mut self, cores: Vec<Array3<f32>>) -> Result<()> {
        for (k, core) in cores.iter().enumerate() {
            check_finite(&format!("core {k}"), core.iter().copied())?;
        }
        let tt = TtTensor::new(cores)?;
        if tt.ranks() != self.tt.ranks() || tt.shape() != self.tt.shape() {
            return Err(Error::Shape {
                what: "cores".into(),
                expected: format!("shape {:?} ranks {:?}", self.tt.shape(), self.tt.ranks()),
                got: tt.ranks(),
            });
        }
        self.tt = tt;
        self.weights_changed();
        Ok(())
    }

    /// Replaces the bias values in place; its length must not change and every value must be
    /// finite (the layer is unchanged on an error).
    pub fn set_bias(&mut self, bias: Array1<f32>) -> Result<()> {
        match &self.bias {
            Some(b) if b.len() == bias.len() => {
                check_finite("bias", bias.iter().copied())?;
                self.bias = Some(bias);
                self.weights_changed();
                Ok(())
            }
            _ => Err(Error::Shape {
                what: "bias".into(),
                expected: format!("{:?}", self.bias.as_ref().map(|b| b.len())),
                got: bias.shape().to_vec(),
            }),
        }
    }

    /// The dense kernel `(out, in, k_1..k_d)`: the TT reconstructed in f64, the last axis moved to
    /// the front, rounded to f32. Computed once and cached until the weights change.
    pub fn full_weights(&self) -> &ArrayD<f32> {
        self.dense.get_or_init(|| {
            let dense = self
                .tt
                .cast::<f64>()
                .to_dense()
                .expect("a layer's kernel fits in memory");
            let d = self.order();
            let mut perm = vec![d + 1];
            perm.extend(0..d + 1);
            dense
                .permuted_axes(IxDyn(&perm))
                .as_standard_layout()
                .mapv(|v| v as f32)
        })
    }

    /// Adds a spatial mode at position `mode` (0 = before every existing spatial mode) with
    /// kernel size `kernel_size` and the stride, dilation and (possibly asymmetric) padding of
    /// `geometry`, turning e.g. a 2-D layer into a 3-D one. The new core `(r, k_new, r)` has
    /// identity slices (`r` = the bond rank at that place), so the new kernel repeats the old one
    /// along the new axis: `W'[o, c, .., t_new, ..] = W[o, c, ..]`.
    pub fn transduct(
        &mut self,
        mode: usize,
        kernel_size: usize,
        geometry: AxisGeometry,
    ) -> Result<()> {
        let d = self.order();
        if mode > d {
            return Err(Error::Config {
                field: "mode",
                reason: format!("new mode position must be in 0..={d}, got {mode}"),
            });
        }
        let mut kernel = self.config.kernel_size.clone();
        kernel.insert(mode, kernel_size);
        let mut geoms = self.geometry.clone();
        geoms.insert(mode, geometry);
        let config = TtConvConfig::new(self.config.in_channels, self.config.out_channels, kernel)
            .geometry(ConvGeometry::from(geoms.as_slice()))
            .bias(self.config.bias)
            .implementation(self.config.implementation)
            .rank_options(self.config.rank_options);
        // Validates kernel_size, stride and dilation >= 1 with the field named.
        let r = self.tt.ranks()[mode + 1];
        let mut ranks = self.tt.ranks();
        ranks.insert(mode + 1, r);
        let config = config.rank(RankSpec::Explicit(ranks));
        let geometry = config.validate()?;
        let mut identity = Array3::<f32>::zeros((r, kernel_size, r));
        for t in 0..kernel_size {
            for i in 0..r {
                identity[[i, t, i]] = 1.0;
            }
        }
        let mut cores = self.tt.cores().to_vec();
        cores.insert(mode + 1, identity);
        self.tt = TtTensor::new(cores)?;
        self.config = config;
        self.geometry = geometry;
        self.weights_changed();
        Ok(())
    }

    /// Number of trainable parameters: TT cores plus bias.
    pub fn num_params(&self) -> usize {
        self.tt.num_params() + self.bias.as_ref().map_or(0, |b| b.len())
    }

    /// Parameters of the dense kernel over those of the TT cores
    /// (`out * in * prod(k) / sum_k r_k n_k r_{k+1}`; the bias is left out of both).
    pub fn compression_ratio(&self) -> f64 {
        self.tt.compression_ratio()
    }

    /// Checks an input shape `(batch, in, D_1..D_d)` and returns the output shape
    /// `(batch, out, D'_1..D'_d)`.
    pub fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        let d = self.order();
        if input_shape.len() != d + 2 || input_shape[1] != self.config.in_channels {
            return Err(Error::Shape {
                what: "input".into(),
                expected: format!(
                    "(batch, {}, D_1..D_{d}) ({} axes)",
                    self.config.in_channels,
                    d + 2
                ),
                got: input_shape.to_vec(),
            });
        }
        if input_shape.contains(&0) {
            return Err(Error::Shape {
                what: "input".into(),
                expected: "every axis of size at least 1".into(),
                got: input_shape.to_vec(),
            });
        }
        let out = output_spatial(&input_shape[2..], &self.config.kernel_size, &self.geometry)?;
        let mut shape = vec![input_shape[0], self.config.out_channels];
        shape.extend(out);
        for (what, s) in [("input", input_shape), ("output", shape.as_slice())] {
            let elements = s.iter().fold(1u128, |a, &n| a.saturating_mul(n as u128));
            if elements > MAX_ACTIVATION_ELEMENTS as u128 {
                return Err(Error::TooLarge {
                    what: format!("the {what} {s:?}"),
                    detail: format!(
                        "{elements} elements, over the limit of {MAX_ACTIVATION_ELEMENTS}"
                    ),
                });
            }
        }
        Ok(shape)
    }

    pub(crate) fn layer_shape<'a>(
        &'a self,
        input_shape: &'a [usize],
        ranks: &'a [usize],
    ) -> LayerShape<'a> {
        LayerShape {
            batch: input_shape[0],
            in_channels: self.config.in_channels,
            out_channels: self.config.out_channels,
            kernel_size: &self.config.kernel_size,
            ranks,
            input_spatial: &input_shape[2..],
            geometry: &self.geometry,
        }
    }

    /// The implementation a forward on `input_shape` runs: the configured one, with `Auto`
    /// resolved by the cost model under `constants`.
    pub fn resolve_implementation(
        &self,
        input_shape: &[usize],
        implementation: Implementation,
        constants: &CostConstants,
    ) -> Result<Implementation> {
        if implementation != Implementation::Auto {
            // Only `Auto` needs the costs (and so a program); the others just check the input.
            self.output_shape(input_shape)?;
            return Ok(implementation);
        }
        let (factorized, dense) = self.costs(input_shape)?;
        Ok(cost::choose_implementation(
            &factorized,
            &dense,
            implementation,
            constants,
        ))
    }

    /// Modelled work and traffic of a forward on `input_shape` with `implementation` (`Auto`
    /// resolved with the default constants). `flops()` of the result is `2 * macs`.
    pub fn flops(&self, input_shape: &[usize], implementation: Implementation) -> Result<Cost> {
        let (factorized, dense) = self.costs(input_shape)?;
        let constants = CostConstants::default();
        Ok(
            match cost::choose_implementation(&factorized, &dense, implementation, &constants) {
                Implementation::Reconstructed => dense,
                _ => factorized,
            },
        )
    }

    /// The factorized cost (the program's) and the dense cost of a forward on `input_shape`.
    fn costs(&self, input_shape: &[usize]) -> Result<(Cost, Cost)> {
        let factorized = self.program(input_shape)?.cost();
        let ranks = self.ranks();
        let dense = cost::dense_cost(&self.layer_shape(input_shape, &ranks))?;
        Ok((factorized, dense))
    }

    /// The factorized program for an input `(batch, in, D_1..D_d)`: the steps of the chain
    /// (with the ends merged where that is cheaper), each with its validated shapes and cost.
    /// Every factorized forward and backward of this layer runs it.
    pub fn program(&self, input_shape: &[usize]) -> Result<FactorizedProgram> {
        self.output_shape(input_shape)?;
        let ranks = self.ranks();
        FactorizedProgram::new(&self.layer_shape(input_shape, &ranks), self.bias.is_some())
    }

    /// The merged head core `G_0 G_1`, `(in, k_1, r_2)`:
    /// `M[c, t, s] = sum_r G_0[c, r] G_1[r, t, s]` (accumulated in f64).
    pub(crate) fn merged_head(&self) -> Array3<f32> {
        let cores = self.tt.cores();
        let (cin, k, r2) = (cores[0].dim().1, cores[1].dim().1, cores[1].dim().2);
        merge_cores(cores[0].view(), cores[1].view())
            .expect("a TtTensor's neighbouring bonds agree")
            .into_shape_with_order((cin, k, r2))
            .expect("(1, in, k_1, r_2) is (in, k_1, r_2)")
    }

    /// The merged tail core `G_d G_{d+1}`, `(r_d, k_d, out)`:
    /// `M[a, t, o] = sum_s G_d[a, t, s] G_{d+1}[s, o]` (accumulated in f64).
    pub(crate) fn merged_tail(&self) -> Array3<f32> {
        let cores = self.tt.cores();
        let d = self.order();
        let (rd, k, _) = cores[d].dim();
        let cout = cores[d + 1].dim().1;
        merge_cores(cores[d].view(), cores[d + 1].view())
            .expect("a TtTensor's neighbouring bonds agree")
            .into_shape_with_order((rd, k, cout))
            .expect("(r_d, k_d, out, 1) is (r_d, k_d, out)")
    }

    /// The cores in the layout of the factorized forward: `G_0` as `(in, r_1)`, the spatial cores,
    /// `G_{d+1}` as `(r_{d+1}, out)`.
    pub(crate) fn factor_matrices(&self) -> (ArrayD<f32>, Vec<ArrayD<f32>>, ArrayD<f32>) {
        let cores = self.tt.cores();
        let d = self.order();
        let first = cores[0].index_axis(Axis(0), 0).to_owned().into_dyn();
        let last = cores[d + 1].index_axis(Axis(2), 0).to_owned().into_dyn();
        let spatial = cores[1..=d].iter().map(|c| c.clone().into_dyn()).collect();
        (first, spatial, last)
    }
}

/// Random cores ~ N(0, s^2) with `s = (0.02 / prod_{k=1..N-1} sqrt(r_k))^(1/N)`.
fn random_cores(shape: &[usize], ranks: &[usize], seed: u64) -> Result<TtTensor<f32>> {
    let n = shape.len() as f64;
    let rank_prod: f64 = ranks[1..ranks.len() - 1]
        .iter()
        .map(|&r| (r as f64).sqrt())
        .product();
    let std = (INIT_STD / rank_prod).powf(1.0 / n);
    Ok(TtTensor::random(shape, ranks, std, seed)?)
}
