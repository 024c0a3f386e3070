//! Minimal optimisers over a layer's parameters (TT cores and bias): SGD with momentum and Adam.
//!
//! A parameter `p` with gradient `g` is updated in place:
//! - SGD: `v <- momentum * v + g`, `p <- p - lr * v` (PyTorch's convention);
//! - Adam (Kingma & Ba): `m <- b1 m + (1 - b1) g`, `v <- b2 v + (1 - b2) g^2`,
//!   `p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
//!
//! State is kept per parameter in the order cores `0..N`, then bias, and is created on the first
//! step; a layer whose parameter shapes change afterwards (e.g. by `transduct`) needs a new
//! optimiser.

use ndarray::{Array1, Array3, ArrayViewMut1, Zip};

use crate::backward::Gradients;
use crate::error::{Error, Result};
use crate::layer::TtConv;

/// An optimiser of a [`TtConv`]'s parameters.
pub trait Optimizer {
    /// Applies one update with `grads` (as returned by [`TtConv::backward`]).
    fn step(&mut self, layer: &mut TtConv, grads: &Gradients) -> Result<()>;
}

/// Stochastic gradient descent with (heavy-ball) momentum.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor in `[0, 1)`; 0 is plain SGD.
    pub momentum: f32,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    /// SGD with learning rate `lr` and momentum `momentum`.
    pub fn new(lr: f32, momentum: f32) -> Self {
        Self {
            lr,
            momentum,
            velocity: Vec::new(),
        }
    }
}

/// Adam.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    t: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    /// Adam with learning rate `lr` and the usual defaults (0.9, 0.999, 1e-8).
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }
}

/// A layer's cores and bias.
type Params = (Vec<Array3<f32>>, Option<Array1<f32>>);

/// The layer's parameters and their gradients as flat vectors, checked for matching shapes.
fn flat_params(layer: &TtConv, grads: &Gradients) -> Result<Params> {
    let cores = layer.tt().cores().to_vec();
    if grads.cores.len() != cores.len()
        || grads
            .cores
            .iter()
            .zip(&cores)
            .any(|(g, c)| g.dim() != c.dim())
    {
        return Err(Error::Shape {
            what: "core gradients".into(),
            expected: format!("{:?}", cores.iter().map(|c| c.dim()).collect::<Vec<_>>()),
            got: grads.cores.iter().map(|g| g.len()).collect(),
        });
    }
    let bias = layer.bias().cloned();
    if bias.as_ref().map(|b| b.len()) != grads.bias.as_ref().map(|b| b.len()) {
        return Err(Error::Shape {
            what: "bias gradient".into(),
            expected: format!("{:?}", bias.as_ref().map(|b| b.len())),
            got: grads.bias.iter().map(|b| b.len()).collect(),
        });
    }
    Ok((cores, bias))
}

/// Runs `update(param_index, param, grad)` on every parameter, then writes them back.
fn apply(
    layer: &mut TtConv,
    grads: &Gradients,
    mut update: impl FnMut(usize, ArrayViewMut1<'_, f32>, &[f32]),
) -> Result<()> {
    let (mut cores, mut bias) = flat_params(layer, grads)?;
    for (i, (c, g)) in cores.iter_mut().zip(&grads.cores).enumerate() {
        let n = c.len();
        let flat = c
            .view_mut()
            .into_shape_with_order(n)
            .expect("contiguous core");
        update(i, flat, g.as_slice().expect("contiguous gradient"));
    }
    if let (Some(b), Some(g)) = (bias.as_mut(), grads.bias.as_ref()) {
        update(
            cores.len(),
            b.view_mut(),
            g.as_slice().expect("contiguous gradient"),
        );
    }
    layer.set_cores(cores)?;
    if let Some(b) = bias {
        layer.set_bias(b)?;
    }
    Ok(())
}

fn ensure_state(state: &mut Vec<Vec<f32>>, layer: &TtConv) {
    if state.is_empty() {
        state.extend(layer.tt().cores().iter().map(|c| vec![0.0; c.len()]));
        if let Some(b) = layer.bias() {
            state.push(vec![0.0; b.len()]);
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, layer: &mut TtConv, grads: &Gradients) -> Result<()> {
        ensure_state(&mut self.velocity, layer);
        let (lr, mu) = (self.lr, self.momentum);
        let velocity = &mut self.velocity;
        apply(layer, grads, |i, mut p, g| {
            let v = &mut velocity[i];
            Zip::from(&mut p)
                .and(&mut v[..])
                .and(g)
                .for_each(|p, v, &g| {
                    *v = mu * *v + g;
                    *p -= lr * *v;
                });
        })
    }
}

impl Optimizer for Adam {
    fn step(&mut self, layer: &mut TtConv, grads: &Gradients) -> Result<()> {
        ensure_state(&mut self.m, layer);
        ensure_state(&mut self.v, layer);
        self.t += 1;
        let (lr, b1, b2, eps) = (self.lr, self.beta1, self.beta2, self.eps);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        let (ms, vs) = (&mut self.m, &mut self.v);
        apply(layer, grads, |i, mut p, g| {
            let (m, v) = (&mut ms[i], &mut vs[i]);
            Zip::from(&mut p)
                .and(&mut m[..])
                .and(&mut v[..])
                .and(g)
                .for_each(|p, m, v, &g| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                });
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RankSpec, TtConvConfig};

    fn quadratic_grads(layer: &TtConv) -> Gradients {
        // Gradient of 0.5 * ||p||^2 is p itself: every optimiser must shrink the parameters.
        Gradients {
            input: None,
            cores: layer.tt().cores().to_vec(),
            bias: layer.bias().cloned(),
        }
    }

    #[test]
    fn both_optimisers_decrease_a_quadratic() {
        let config = TtConvConfig::new(3, 2, vec![3])
            .rank(RankSpec::Uniform(2))
            .bias(true);
        for which in 0..2 {
            let mut layer = TtConv::new(config.clone()).unwrap();
            layer.set_bias(Array1::from(vec![1.0, -2.0])).unwrap();
            let norm = |l: &TtConv| {
                l.tt()
                    .cores()
                    .iter()
                    .map(|c| c.iter().map(|v| v * v).sum::<f32>())
                    .sum::<f32>()
                    + l.bias().unwrap().iter().map(|v| v * v).sum::<f32>()
            };
            let start = norm(&layer);
            let mut sgd = Sgd::new(0.1, 0.9);
            let mut adam = Adam::new(0.05);
            for _ in 0..20 {
                let g = quadratic_grads(&layer);
                if which == 0 {
                    sgd.step(&mut layer, &g).unwrap();
                } else {
                    adam.step(&mut layer, &g).unwrap();
                }
            }
            assert!(norm(&layer) < 0.5 * start, "optimiser {which}");
        }
    }

    #[test]
    fn mismatched_gradients_are_rejected() {
        let config = TtConvConfig::new(3, 2, vec![3]).rank(RankSpec::Uniform(2));
        let mut layer = TtConv::new(config).unwrap();
        let mut g = quadratic_grads(&layer);
        g.cores.pop();
        assert!(Sgd::new(0.1, 0.0).step(&mut layer, &g).is_err());
    }
}
