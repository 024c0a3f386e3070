//! Minimal optimisers over a layer's parameters (TT cores and bias): SGD with momentum and Adam.
//!
//! A parameter `p` with gradient `g` is updated in place:
//! - SGD: `v <- momentum * v + g`, `p <- p - lr * v` (PyTorch's convention);
//! - Adam (Kingma & Ba): `m <- b1 m + (1 - b1) g`, `v <- b2 v + (1 - b2) g^2`,
//!   `p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
//!
//! State is kept per parameter in the order cores `0..N`, then bias. It is created on the first
//! step and belongs to the layer of that step: a step with another layer (one optimiser shared by
//! two layers, the PyTorch habit of one optimiser per model) or after the layer's parameter
//! shapes changed (e.g. by `transduct`) is an error; use one optimiser per layer.
//!
//! Non-finite values: a step whose hyperparameters are out of range, whose gradients hold NaN or
//! infinity, or whose update would make a parameter non-finite returns an error and leaves both
//! the layer and the optimiser's state unchanged.

use ndarray::{Array1, Array3, ArrayViewMut1, Zip};

use crate::backward::Gradients;
use crate::error::{Error, Result, check_finite};
use crate::layer::TtConv;

/// An optimiser of a [`TtConv`]'s parameters.
pub trait Optimizer {
    /// Applies one update with `grads` (as returned by [`crate::PreparedTtConv::backward`]);
    /// on an error the layer and the optimiser are unchanged.
    fn step(&mut self, layer: &mut TtConv, grads: &Gradients) -> Result<()>;
}

/// Per-parameter state (one or more slots of the parameter's size) and the layer it belongs to.
#[derive(Clone, Debug, Default)]
struct State {
    /// `(layer id, parameter sizes)` of the first step.
    owner: Option<(u64, Vec<usize>)>,
    /// `slots[s][i]`: slot `s` (velocity, or first and second moments) of parameter `i`.
    slots: Vec<Vec<Vec<f32>>>,
}

impl State {
    /// A working copy of the state for `layer` (created on the first step with `n_slots`
    /// zeroed slots), written back by the caller only when its step succeeds; an error when the
    /// state belongs to another layer or the layer's parameter sizes changed.
    fn for_layer(&self, layer: &TtConv, n_slots: usize) -> Result<State> {
        let sizes: Vec<usize> = layer
            .tt()
            .cores()
            .iter()
            .map(|c| c.len())
            .chain(layer.bias().map(|b| b.len()))
            .collect();
        match &self.owner {
            None => Ok(State {
                slots: (0..n_slots)
                    .map(|_| sizes.iter().map(|&n| vec![0.0; n]).collect())
                    .collect(),
                owner: Some((layer.id(), sizes)),
            }),
            Some((id, _)) if *id != layer.id() => Err(Error::State(format!(
                "optimiser state belongs to layer #{id}, stepped with layer #{}: use one \
                 optimiser per layer",
                layer.id()
            ))),
            Some((_, known)) if *known != sizes => Err(Error::State(format!(
                "the layer's parameter sizes changed since the optimiser's first step ({known:?} \
                 -> {sizes:?}, e.g. by transduct): create a new optimiser"
            ))),
            Some(_) => Ok(self.clone()),
        }
    }
}

/// Hyperparameter checks: an error naming the field unless `ok`.
fn hyper(ok: bool, field: &'static str, rule: &str, value: f32) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Config {
            field,
            reason: format!("expected {rule}, got {value}"),
        })
    }
}

/// Stochastic gradient descent with (heavy-ball) momentum.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Learning rate, finite and >= 0.
    pub lr: f32,
    /// Momentum factor in `[0, 1)`; 0 is plain SGD.
    pub momentum: f32,
    state: State,
}

impl Sgd {
    /// SGD with learning rate `lr` and momentum `momentum`.
    pub fn new(lr: f32, momentum: f32) -> Self {
        Self {
            lr,
            momentum,
            state: State::default(),
        }
    }
}

/// Adam.
#[derive(Clone, Debug)]
pub struct Adam {
    /// Learning rate, finite and >= 0.
    pub lr: f32,
    /// Decay of the first moment, in `[0, 1)`.
    pub beta1: f32,
    /// Decay of the second moment, in `[0, 1)`.
    pub beta2: f32,
    /// Added to the denominator, finite and > 0.
    pub eps: f32,
    t: i32,
    state: State,
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
            state: State::default(),
        }
    }
}

/// A layer's cores and bias.
type Params = (Vec<Array3<f32>>, Option<Array1<f32>>);

/// Copies of the layer's parameters (row-major), checked against the gradients' shapes and for
/// finite gradients.
fn checked_params(layer: &TtConv, grads: &Gradients) -> Result<Params> {
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
    for (k, g) in grads.cores.iter().enumerate() {
        check_finite(&format!("gradient of core {k}"), g.iter().copied())?;
    }
    if let Some(g) = &grads.bias {
        check_finite("bias gradient", g.iter().copied())?;
    }
    Ok((cores, bias))
}

/// Runs `update(param_index, param, grad, slots)` on copies of every parameter and on
/// `working` (a copy of the optimiser's state), then writes both back only if the layer accepts
/// the new (finite) values.
fn apply(
    layer: &mut TtConv,
    grads: &Gradients,
    state: &mut State,
    mut working: State,
    mut update: impl FnMut(ArrayViewMut1<'_, f32>, &[f32], &mut [&mut Vec<f32>]),
) -> Result<()> {
    let (mut cores, mut bias) = checked_params(layer, grads)?;
    let mut run = |i: usize, p: ArrayViewMut1<'_, f32>, g: &[f32]| {
        let mut mine: Vec<&mut Vec<f32>> = working.slots.iter_mut().map(|s| &mut s[i]).collect();
        update(p, g, &mut mine);
    };
    for (i, (c, g)) in cores.iter_mut().zip(&grads.cores).enumerate() {
        let n = c.len();
        // `TtTensor` keeps its cores row-major; a gradient may come in any layout.
        let flat = c
            .view_mut()
            .into_shape_with_order(n)
            .expect("TtTensor cores are row-major");
        let g = g.as_standard_layout();
        run(
            i,
            flat,
            g.as_slice().expect("standard layout is contiguous"),
        );
    }
    if let (Some(b), Some(g)) = (bias.as_mut(), grads.bias.as_ref()) {
        let g = g.as_standard_layout();
        run(
            cores.len(),
            b.view_mut(),
            g.as_slice().expect("standard layout is contiguous"),
        );
    }
    // The moments must stay finite too: a gradient of 1e20 squares past f32 into the second
    // moment, and the next step would turn the weights into NaN.
    for (s, slot) in working.slots.iter().enumerate() {
        for (i, v) in slot.iter().enumerate() {
            check_finite(
                &format!("optimiser state (slot {s} of parameter {i})"),
                v.iter().copied(),
            )?;
        }
    }
    // Both setters check every value is finite before changing anything; the bias is checked
    // here first so that a bad bias cannot leave the cores updated alone.
    if let Some(b) = &bias {
        check_finite("updated bias", b.iter().copied())?;
    }
    layer.set_cores(cores)?;
    if let Some(b) = bias {
        layer.set_bias(b)?;
    }
    *state = working;
    Ok(())
}

impl Optimizer for Sgd {
    fn step(&mut self, layer: &mut TtConv, grads: &Gradients) -> Result<()> {
        let (lr, mu) = (self.lr, self.momentum);
        hyper(lr.is_finite() && lr >= 0.0, "lr", "a finite value >= 0", lr)?;
        hyper(
            (0.0..1.0).contains(&mu),
            "momentum",
            "a value in [0, 1)",
            mu,
        )?;
        let working = self.state.for_layer(layer, 1)?;
        apply(layer, grads, &mut self.state, working, |mut p, g, slots| {
            Zip::from(&mut p)
                .and(&mut slots[0][..])
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
        let (lr, b1, b2, eps) = (self.lr, self.beta1, self.beta2, self.eps);
        hyper(lr.is_finite() && lr >= 0.0, "lr", "a finite value >= 0", lr)?;
        hyper((0.0..1.0).contains(&b1), "beta1", "a value in [0, 1)", b1)?;
        hyper((0.0..1.0).contains(&b2), "beta2", "a value in [0, 1)", b2)?;
        hyper(
            eps.is_finite() && eps > 0.0,
            "eps",
            "a finite value > 0",
            eps,
        )?;
        let working = self.state.for_layer(layer, 2)?;
        let t = self.t.saturating_add(1);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        apply(layer, grads, &mut self.state, working, |mut p, g, slots| {
            let [m, v] = slots else {
                unreachable!("Adam keeps two slots")
            };
            Zip::from(&mut p)
                .and(&mut m[..])
                .and(&mut v[..])
                .and(g)
                .for_each(|p, m, v, &g| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                });
        })?;
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

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

    fn layer_2x3() -> TtConv {
        let config = TtConvConfig::new(3, 2, vec![3])
            .rank(RankSpec::Uniform(2))
            .bias(true);
        TtConv::new(config).unwrap()
    }

    fn params(l: &TtConv) -> (Vec<Array3<f32>>, Option<Array1<f32>>) {
        (l.tt().cores().to_vec(), l.bias().cloned())
    }

    #[test]
    fn one_optimiser_is_tied_to_one_layer() {
        let (mut a, mut b) = (layer_2x3(), layer_2x3());
        let mut adam = Adam::new(0.01);
        let ga = quadratic_grads(&a);
        adam.step(&mut a, &ga).unwrap();
        let gb = quadratic_grads(&b);
        let before = params(&b);
        let err = adam.step(&mut b, &gb).unwrap_err();
        assert!(matches!(err, Error::State(ref m) if m.contains("one optimiser per layer")));
        assert_eq!(params(&b), before, "the other layer is unchanged");
        // Still usable with its own layer.
        let ga = quadratic_grads(&a);
        adam.step(&mut a, &ga).unwrap();
    }

    #[test]
    fn a_step_after_transduct_is_an_error_not_a_panic() {
        let mut layer = layer_2x3();
        let mut sgd = Sgd::new(0.1, 0.9);
        let g = quadratic_grads(&layer);
        sgd.step(&mut layer, &g).unwrap();
        layer.transduct(0, 2, crate::AxisGeometry::UNIT).unwrap();
        let g = quadratic_grads(&layer);
        let err = sgd.step(&mut layer, &g).unwrap_err();
        assert!(matches!(err, Error::State(ref m) if m.contains("transduct")));
    }

    #[test]
    fn fortran_order_cores_and_gradients_step_like_row_major_ones() {
        let mut row = layer_2x3();
        let mut fortran = row.clone();
        let f_cores: Vec<Array3<f32>> = row
            .tt()
            .cores()
            .iter()
            .map(|c| {
                let mut f = Array3::zeros(c.raw_dim().f());
                f.assign(c);
                f
            })
            .collect();
        fortran.set_cores(f_cores).unwrap();
        let g = quadratic_grads(&row);
        let f_grads = Gradients {
            input: None,
            cores: g
                .cores
                .iter()
                .map(|c| {
                    let mut f = Array3::zeros(c.raw_dim().f());
                    f.assign(c);
                    f
                })
                .collect(),
            bias: g.bias.clone(),
        };
        Adam::new(0.01).step(&mut row, &g).unwrap();
        Adam::new(0.01).step(&mut fortran, &f_grads).unwrap();
        assert_eq!(params(&row), params(&fortran));
    }

    #[test]
    fn non_finite_steps_are_refused_and_change_nothing() {
        let mut layer = layer_2x3();
        let good = quadratic_grads(&layer);
        let mut nan_grad = good.clone();
        nan_grad.cores[1][[0, 1, 0]] = f32::NAN;
        let mut inf_bias = good.clone();
        inf_bias.bias.as_mut().unwrap()[0] = f32::INFINITY;
        let mut adam = Adam::new(0.01);
        let before = params(&layer);
        assert!(matches!(
            adam.step(&mut layer, &nan_grad),
            Err(Error::NonFinite { .. })
        ));
        assert!(adam.step(&mut layer, &inf_bias).is_err());
        for (field, mut bad) in [
            ("lr", Adam::new(f32::NAN)),
            ("lr", Adam::new(-1.0)),
            (
                "beta1",
                Adam {
                    beta1: 1.0,
                    ..Adam::new(0.01)
                },
            ),
            (
                "beta2",
                Adam {
                    beta2: 1.5,
                    ..Adam::new(0.01)
                },
            ),
            (
                "eps",
                Adam {
                    eps: -1e-8,
                    ..Adam::new(0.01)
                },
            ),
        ] {
            match bad.step(&mut layer, &good) {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
        for (field, mut bad) in [
            ("lr", Sgd::new(f32::INFINITY, 0.0)),
            ("momentum", Sgd::new(0.1, 5.0)),
        ] {
            assert!(
                matches!(bad.step(&mut layer, &good), Err(Error::Config { field: f, .. }) if f == field)
            );
        }
        assert_eq!(params(&layer), before, "no refused step changed the layer");
        // The refused steps left the optimiser's state alone: its next step is a first step.
        let mut fresh = layer.clone();
        adam.step(&mut layer, &good).unwrap();
        Adam::new(0.01).step(&mut fresh, &good).unwrap();
        assert_eq!(params(&layer), params(&fresh));
        // An update that overflows to infinity is refused too.
        let mut huge = good.clone();
        huge.cores[0].fill(f32::MAX);
        let before = params(&layer);
        assert!(Sgd::new(f32::MAX, 0.0).step(&mut layer, &huge).is_err());
        assert_eq!(params(&layer), before);
    }

    #[test]
    fn setters_refuse_non_finite_values() {
        let mut layer = layer_2x3();
        let mut cores = layer.tt().cores().to_vec();
        cores[0][[0, 0, 0]] = f32::NAN;
        assert!(matches!(
            layer.set_cores(cores),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            layer.set_bias(Array1::from(vec![0.0, f32::NEG_INFINITY])),
            Err(Error::NonFinite { .. })
        ));
    }

    /// Found by the API property suite: with lr 0, a gradient of 1e21 left the weights alone
    /// but squared to infinity in Adam's second moment, and the next (ordinary) step turned the
    /// weights into NaN. Such a step is refused, the state unchanged.
    #[test]
    fn a_step_whose_moments_overflow_is_refused() {
        let mut layer = layer_2x3();
        let mut huge = quadratic_grads(&layer);
        for c in &mut huge.cores {
            c.fill(1e21);
        }
        let mut adam = Adam::new(0.0);
        let before = format!("{adam:?}");
        assert!(matches!(
            adam.step(&mut layer, &huge),
            Err(Error::NonFinite { .. })
        ));
        assert_eq!(format!("{adam:?}"), before);
        let good = quadratic_grads(&layer);
        adam.step(&mut layer, &good).unwrap();
        assert!(
            layer
                .tt()
                .cores()
                .iter()
                .all(|c| c.iter().all(|v| v.is_finite()))
        );
    }

    /// A refused first step (a non-finite gradient) does not tie the optimiser to the layer.
    #[test]
    fn a_refused_first_step_leaves_the_optimiser_fresh() {
        let (mut a, mut b) = (layer_2x3(), layer_2x3());
        let mut bad = quadratic_grads(&a);
        bad.cores[0].fill(f32::NAN);
        let mut sgd = Sgd::new(0.1, 0.0);
        assert!(sgd.step(&mut a, &bad).is_err());
        let good = quadratic_grads(&b);
        sgd.step(&mut b, &good).unwrap();
    }
}
