//! The factorized program: the steps of the factorized chain for one layer and one input shape.
//!
//! It is the one owner of the chain. [`crate::TtConv::program`] builds it once per
//! (layer, input shape), with every step's shapes validated and its cost counted; the cost model
//! and `Auto` sum its steps, the [`Backend`]'s default factorized forward runs its steps through
//! the primitives ([`FactorizedProgram::run`]), a fused backend (the CPU one) reads the same steps,
//! the training forward keeps each step's input, the backward walks the steps in reverse
//! ([`FactorizedProgram::backward`], or a backend's fused version of it), and the
//! bench times them one by one ([`FactorizedProgram::run_step`]).
//!
//! The plain chain for a layer of order `d` with TT ranks `(1, r_1, .., r_{d+1}, 1)` is
//! `contract (in -> r_1)`, one 1-D convolution per spatial mode `j` `(r_{j+1} -> r_{j+2})`,
//! `contract (r_{d+1} -> out)` plus the bias. When a rank exceeds what it connects (e.g.
//! TensorLy's `'same'` ranks `(921, 21, 921)` on a 256-channel layer) contracting first costs more
//! than convolving with the merged core, so the program may merge:
//! - the head: `G_0 G_1` as one core `(in, k_1, r_2)`, the first convolution reading the input
//!   channels, when `in * k_1 * r_2 * S_1 < in * r_1 * S_0 + r_1 * k_1 * r_2 * S_1`;
//! - the tail: `G_d G_{d+1}` as one core `(r_d, k_d, out)`, the last convolution writing the
//!   output channels (and adding the bias), when `r_d * k_d * out < r_d * k_d * r_{d+1} +
//!   r_{d+1} * out`, and not for `d = 1` when the head is merged (that would be the dense
//!   convolution).
//!
//! `S_j` is the spatial size after mode `j` (modes `<= j` at their output size). Both merges give
//! the same result up to rounding.

use crate::backend::Backend;
use crate::cost::{Cost, LayerShape, saturating_product};
use crate::error::{Error, Result};
use crate::geometry::{AxisGeometry, output_spatial};

/// What one step of the chain computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOp {
    /// Channel contraction (a 1x1 convolution), weight `(in, out)`:
    /// `y[b, o, D] = sum_c w[c, o] x[b, c, D]`.
    Contract,
    /// 1-D convolution along spatial axis `axis` only, weight `(in, kernel, out)`; see
    /// [`Backend::conv_along`].
    ConvAlong {
        /// Spatial axis (0-based; array axis `axis + 2`).
        axis: usize,
        /// Kernel taps along the axis.
        kernel: usize,
        /// Stride, dilation and padding along the axis.
        geometry: AxisGeometry,
    },
}

/// Which of the layer's weights a step multiplies by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepWeight {
    /// `G_0` as a matrix `(in, r_1)`.
    First,
    /// The spatial core `G_{j+1}` `(r_{j+1}, k_j, r_{j+2})` of spatial mode `j`.
    Spatial(usize),
    /// `G_{d+1}` as a matrix `(r_{d+1}, out)`.
    Last,
    /// The merged head `G_0 G_1`, `(in, k_1, r_2)`.
    MergedHead,
    /// The merged tail `G_d G_{d+1}`, `(r_d, k_d, out)`.
    MergedTail,
}

/// One validated step of a [`FactorizedProgram`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What it computes.
    pub op: StepOp,
    /// The weight it reads.
    pub weight: StepWeight,
    /// Its input shape `(batch, in, D..)`.
    pub input_shape: Vec<usize>,
    /// Its output shape `(batch, out, D'..)`.
    pub output_shape: Vec<usize>,
    /// Whether it adds the layer's bias to its output (the last step of a layer with a bias).
    pub adds_bias: bool,
}

impl Step {
    /// Channels read.
    pub fn in_channels(&self) -> usize {
        self.input_shape[1]
    }

    /// Channels written.
    pub fn out_channels(&self) -> usize {
        self.output_shape[1]
    }

    /// The weight's shape: `(in, out)` for a contraction, `(in, kernel, out)` for a convolution.
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.op {
            StepOp::Contract => vec![self.in_channels(), self.out_channels()],
            StepOp::ConvAlong { kernel, .. } => {
                vec![self.in_channels(), kernel, self.out_channels()]
            }
        }
    }

    /// Multiply-adds: `prod(output_shape) * in * kernel` (kernel 1 for a contraction).
    pub fn macs(&self) -> u64 {
        // A program is only built when its total cost fits in u64 (see `program_cost`).
        self.macs_u128() as u64
    }

    /// [`Self::macs`] counted in `u128`, saturating.
    fn macs_u128(&self) -> u128 {
        let taps = match self.op {
            StepOp::Contract => 1,
            StepOp::ConvAlong { kernel, .. } => kernel as u128,
        };
        saturating_product(&self.output_shape)
            .saturating_mul(self.in_channels() as u128)
            .saturating_mul(taps)
    }

    /// Runs this step alone through the backend's primitives on its input `x`, with its weight
    /// and, when it adds one, the bias.
    pub fn run<B: Backend + ?Sized>(
        &self,
        backend: &B,
        x: &B::Tensor,
        weight: &B::Weights,
        bias: Option<&B::Weights>,
    ) -> Result<B::Tensor> {
        let bias = if self.adds_bias { bias } else { None };
        match self.op {
            StepOp::Contract => backend.contract_channels(x, weight, bias),
            StepOp::ConvAlong { axis, geometry, .. } => {
                let y = backend.conv_along(x, axis, weight, geometry)?;
                match bias {
                    Some(b) => backend.add_bias(y, b),
                    None => Ok(y),
                }
            }
        }
    }
}

/// What a factorized backward returns: `dL/dx` (when asked for) and the gradient of every step's
/// weight in step order, each of shape [`Step::weight_shape`].
pub type StepGradients<T> = (Option<T>, Vec<T>);

/// The weights of a program's steps on a backend, in step order, and the bias.
#[derive(Debug)]
pub struct StepWeights<'a, B: Backend + ?Sized> {
    /// `steps[i]` is the weight of step `i`, of shape [`Step::weight_shape`].
    pub steps: Vec<&'a B::Weights>,
    /// The layer's bias `(out,)`, if it has one.
    pub bias: Option<&'a B::Weights>,
}

/// The factorized chain for one layer and one input shape: its validated steps in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactorizedProgram {
    steps: Vec<Step>,
    ranks: Vec<usize>,
    cost: Cost,
}

impl FactorizedProgram {
    /// The program for a layer shape; an error when an output size cannot be computed.
    pub(crate) fn new(s: &LayerShape<'_>, bias: bool) -> Result<Self> {
        let d = s.kernel_size.len();
        if d == 0 || s.ranks.len() != d + 3 || s.geometry.len() != d || s.input_spatial.len() != d {
            return Err(Error::Shape {
                what: "factorized program".into(),
                expected: format!("{d} spatial modes with {} ranks", d + 3),
                got: s.ranks.to_vec(),
            });
        }
        let out_sp = output_spatial(s.input_spatial, s.kernel_size, s.geometry)?;
        let (merge_head, merge_tail) = merges(s, &out_sp);
        let mut shape = Vec::with_capacity(d + 2);
        shape.push(s.batch);
        shape.push(s.in_channels);
        shape.extend_from_slice(s.input_spatial);
        let mut steps = Vec::with_capacity(d + 2);
        let mut push = |op, weight, channels: usize, shape: &mut Vec<usize>| {
            let input_shape = shape.clone();
            shape[1] = channels;
            if let StepOp::ConvAlong { axis, .. } = op {
                shape[axis + 2] = out_sp[axis];
            }
            steps.push(Step {
                op,
                weight,
                input_shape,
                output_shape: shape.clone(),
                adds_bias: false,
            });
        };
        if !merge_head {
            push(StepOp::Contract, StepWeight::First, s.ranks[1], &mut shape);
        }
        for j in 0..d {
            let op = StepOp::ConvAlong {
                axis: j,
                kernel: s.kernel_size[j],
                geometry: s.geometry[j],
            };
            if j == 0 && merge_head {
                push(op, StepWeight::MergedHead, s.ranks[2], &mut shape);
            } else if j + 1 == d && merge_tail {
                push(op, StepWeight::MergedTail, s.out_channels, &mut shape);
            } else {
                push(op, StepWeight::Spatial(j), s.ranks[j + 2], &mut shape);
            }
        }
        if !merge_tail {
            push(
                StepOp::Contract,
                StepWeight::Last,
                s.out_channels,
                &mut shape,
            );
        }
        if bias {
            steps.last_mut().expect("at least one step").adds_bias = true;
        }
        let params: u128 = (0..d + 2)
            .map(|i| {
                let n = match i {
                    0 => s.in_channels,
                    i if i == d + 1 => s.out_channels,
                    i => s.kernel_size[i - 1],
                };
                s.ranks[i] as u128 * n as u128 * s.ranks[i + 1] as u128
            })
            .sum();
        let cost = program_cost(&steps, params)?;
        Ok(Self {
            steps,
            ranks: s.ranks.to_vec(),
            cost,
        })
    }

    /// The steps, in the order they run.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The input shape `(batch, in, D_1..D_d)`.
    pub fn input_shape(&self) -> &[usize] {
        &self.steps[0].input_shape
    }

    /// The output shape `(batch, out, D'_1..D'_d)`.
    pub fn output_shape(&self) -> &[usize] {
        &self.steps.last().expect("at least one step").output_shape
    }

    /// The layer's TT ranks `(1, r_1..r_{d+1}, 1)` the program was built for.
    pub fn ranks(&self) -> &[usize] {
        &self.ranks
    }

    /// Whether `G_0` is merged into the first spatial core.
    pub fn merges_head(&self) -> bool {
        self.steps[0].weight == StepWeight::MergedHead
    }

    /// Whether `G_{d+1}` is merged into the last spatial core.
    pub fn merges_tail(&self) -> bool {
        self.steps.last().expect("at least one step").weight == StepWeight::MergedTail
    }

    /// Multiply-adds of every step, and bytes moved when every intermediate is written and read
    /// once in main memory (an unfused backend): input, output and weights once, each
    /// intermediate twice.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// Runs step `i` through the backend's primitives on its input `x` (the bench times the
    /// chain this way, step by step).
    pub fn run_step<B: Backend + ?Sized>(
        &self,
        backend: &B,
        i: usize,
        x: &B::Tensor,
        weights: &StepWeights<'_, B>,
    ) -> Result<B::Tensor> {
        self.steps[i].run(backend, x, weights.steps[i], weights.bias)
    }

    /// Runs every step through the backend's primitives (the default factorized forward of
    /// [`Backend::factorized_forward`]).
    pub fn run<B: Backend + ?Sized>(
        &self,
        backend: &B,
        x: &B::Tensor,
        weights: &StepWeights<'_, B>,
    ) -> Result<B::Tensor> {
        self.chain(backend, x, weights, None)
    }

    /// Runs every step through the primitives and keeps each step's input: returns the output
    /// and `kept`, where `kept[i]` is the input of step `i` (`kept[0]` is `x`, moved in).
    pub fn run_keeping_inputs<B: Backend + ?Sized>(
        &self,
        backend: &B,
        x: B::Tensor,
        weights: &StepWeights<'_, B>,
    ) -> Result<(B::Tensor, Vec<B::Tensor>)> {
        let mut kept = Vec::with_capacity(self.steps.len());
        let y = self.chain(backend, &x, weights, Some(&mut kept))?;
        kept.insert(0, x);
        Ok((y, kept))
    }

    /// The backward of [`Self::run_keeping_inputs`] through the backend's primitives (the
    /// default [`Backend::factorized_backward`]): walks the steps in reverse from `gy = dL/dy`,
    /// each step's weight gradient from its kept input `kept[i]` and the gradient of its output,
    /// then the gradient of its input (skipped for step 0 unless `input_grad`).
    ///
    /// Returns `dL/dx` (when `input_grad`) and `dL/dw_i` for every step `i`, in step order, each
    /// of shape [`Step::weight_shape`] (a contraction's `(in, out)`, a convolution's
    /// `(in, kernel, out)`); the bias gradient is not part of it.
    pub fn backward<B: Backend + ?Sized>(
        &self,
        backend: &B,
        weights: &StepWeights<'_, B>,
        kept: &[B::Tensor],
        gy: &B::Tensor,
        input_grad: bool,
    ) -> Result<StepGradients<B::Tensor>> {
        self.check_weights(weights)?;
        self.check_kept(kept.len())?;
        let mut grads: Vec<Option<B::Tensor>> = self.steps.iter().map(|_| None).collect();
        let mut g: Option<B::Tensor> = None;
        for (i, step) in self.steps.iter().enumerate().rev() {
            let upstream = g.as_ref().unwrap_or(gy);
            let (z, w) = (&kept[i], weights.steps[i]);
            grads[i] = Some(match step.op {
                StepOp::Contract => backend.contract_channels_grad_weight(z, upstream)?,
                StepOp::ConvAlong {
                    axis,
                    kernel,
                    geometry,
                } => backend.conv_along_grad_weight(z, upstream, axis, kernel, geometry)?,
            });
            g = if i > 0 || input_grad {
                Some(match step.op {
                    StepOp::Contract => backend.contract_channels_grad_input(upstream, w)?,
                    StepOp::ConvAlong { axis, geometry, .. } => {
                        let len = step.input_shape[axis + 2];
                        backend.conv_along_grad_input(upstream, axis, w, geometry, len)?
                    }
                })
            } else {
                None
            };
        }
        let grads = grads
            .into_iter()
            .map(|g| g.expect("the walk visits every step"))
            .collect();
        Ok((if input_grad { g } else { None }, grads))
    }

    /// A backward needs one kept input per step.
    pub fn check_kept(&self, kept: usize) -> Result<()> {
        if kept == self.steps.len() {
            return Ok(());
        }
        Err(Error::Shape {
            what: "kept step inputs".into(),
            expected: format!("{} (one per step)", self.steps.len()),
            got: vec![kept],
        })
    }

    /// The chain; with `kept`, the output of every step but the last is pushed onto it.
    fn chain<B: Backend + ?Sized>(
        &self,
        backend: &B,
        x: &B::Tensor,
        weights: &StepWeights<'_, B>,
        mut kept: Option<&mut Vec<B::Tensor>>,
    ) -> Result<B::Tensor> {
        self.check_weights(weights)?;
        let mut z: Option<B::Tensor> = None;
        for i in 0..self.steps.len() {
            let next = self.run_step(backend, i, z.as_ref().unwrap_or(x), weights)?;
            if let (Some(prev), Some(kept)) = (z.replace(next), kept.as_deref_mut()) {
                kept.push(prev);
            }
        }
        Ok(z.expect("at least one step"))
    }

    /// The weights must be one per step (and a bias exactly when a step adds it); a backend
    /// that reads the weights' data by the steps' shapes checks those shapes itself.
    pub fn check_weights<B: Backend + ?Sized>(&self, weights: &StepWeights<'_, B>) -> Result<()> {
        let wants_bias = self.steps.iter().any(|s| s.adds_bias);
        if weights.steps.len() != self.steps.len() || weights.bias.is_some() != wants_bias {
            return Err(Error::Shape {
                what: "step weights".into(),
                expected: format!(
                    "{} weights (one per step), {} bias",
                    self.steps.len(),
                    if wants_bias { "with a" } else { "no" }
                ),
                got: vec![weights.steps.len(), usize::from(weights.bias.is_some())],
            });
        }
        Ok(())
    }
}

/// Whether the head and the tail are merged (see the module docs).
fn merges(s: &LayerShape<'_>, out_sp: &[usize]) -> (bool, bool) {
    let d = s.kernel_size.len();
    let prod = |v: &[usize]| v.iter().map(|&x| x as u128).product::<u128>();
    let s0 = prod(s.input_spatial);
    let s1 = prod(&out_sp[..1]) * prod(&s.input_spatial[1..]);
    let (cin, cout) = (s.in_channels as u128, s.out_channels as u128);
    let r = |i: usize| s.ranks[i] as u128;
    let k = |j: usize| s.kernel_size[j] as u128;
    let merge_head = cin * k(0) * r(2) * s1 < cin * r(1) * s0 + r(1) * k(0) * r(2) * s1;
    let (rd, re) = (r(d), r(d + 1));
    let merge_tail =
        (d >= 2 || !merge_head) && rd * k(d - 1) * cout < rd * k(d - 1) * re + re * cout;
    (merge_head, merge_tail)
}

/// The cost of `steps` with `params` weights, counted in `u128` (products of `usize` sizes
/// cannot overflow it for the few factors involved) and refused when it exceeds `u64`.
fn program_cost(steps: &[Step], params: u128) -> Result<Cost> {
    let prod = saturating_product;
    let macs = steps
        .iter()
        .fold(0u128, |acc, s| acc.saturating_add(s.macs_u128()));
    let inter = steps[..steps.len() - 1]
        .iter()
        .fold(0u128, |a, s| a.saturating_add(prod(&s.output_shape)));
    let x = prod(&steps[0].input_shape);
    let y = prod(&steps[steps.len() - 1].output_shape);
    let floats = x
        .saturating_add(inter.saturating_mul(2))
        .saturating_add(y)
        .saturating_add(params);
    let what = format!("factorized forward of input {:?}", steps[0].input_shape);
    Cost::from_counts(macs, floats.saturating_mul(4), &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape<'a>(
        ranks: &'a [usize],
        geometry: &'a [AxisGeometry],
        spatial: &'a [usize],
        channels: (usize, usize),
    ) -> LayerShape<'a> {
        LayerShape {
            batch: 8,
            in_channels: channels.0,
            out_channels: channels.1,
            kernel_size: &[3, 3],
            ranks,
            input_spatial: spatial,
            geometry,
        }
    }

    #[test]
    fn plain_chain_has_every_step_and_shape() {
        let g = [AxisGeometry::symmetric(2, 1, 1); 2];
        let p =
            FactorizedProgram::new(&shape(&[1, 2, 3, 2, 1], &g, &[8, 10], (4, 6)), true).unwrap();
        let ops: Vec<_> = p.steps().iter().map(|s| s.weight).collect();
        assert_eq!(
            ops,
            [
                StepWeight::First,
                StepWeight::Spatial(0),
                StepWeight::Spatial(1),
                StepWeight::Last
            ]
        );
        assert_eq!(p.steps()[1].output_shape, [8, 3, 4, 10]);
        assert_eq!(p.output_shape(), [8, 6, 4, 5]);
        assert!(p.steps()[3].adds_bias && !p.steps()[2].adds_bias);
        assert_eq!(p.steps()[2].weight_shape(), [3, 3, 2]);
    }

    #[test]
    fn cost_matches_the_formula_by_hand() {
        let g = [AxisGeometry::symmetric(2, 1, 1); 2];
        let s = crate::cost::by_hand_shape(&g);
        // output 4 x 5; ranks below the channel counts: nothing merged
        let p = FactorizedProgram::new(&s, false).unwrap();
        assert!(!p.merges_head() && !p.merges_tail());
        let expect = 2 * (80 * 4 * 2 + (4 * 10) * 2 * 3 * 3 + (4 * 5) * 3 * 3 * 2 + 20 * 2 * 6);
        assert_eq!(p.cost().macs, expect as u64);
    }

    #[test]
    fn same_ranks_merge_both_ends() {
        // TensorLy's 'same' ranks on (256, 3, 3, 256): (1, 921, 21, 921, 1).
        let g = [AxisGeometry::symmetric(1, 1, 1); 2];
        let p = FactorizedProgram::new(
            &shape(&[1, 921, 21, 921, 1], &g, &[14, 14], (256, 256)),
            false,
        )
        .unwrap();
        assert!(p.merges_head() && p.merges_tail());
        assert_eq!(p.steps().len(), 2);
        assert_eq!(p.steps()[0].weight_shape(), [256, 3, 21]);
        assert_eq!(p.steps()[1].weight_shape(), [21, 3, 256]);
        assert_eq!(p.cost().macs, 8 * 196 * (256 * 3 * 21 + 21 * 3 * 256));
    }
}
