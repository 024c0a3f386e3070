//! Operand validation: every inconsistency a caller can cause becomes an [`Error`], never a
//! panic.

use ndarray::{ArrayD, ArrayView1, ArrayView2, ArrayView3, CowArray, Ix1, Ix2, Ix3, IxDyn};
use ttconv::{AxisGeometry, Error, FactorizedProgram, Result, StepWeights};

use crate::{CpuBackend, CpuWeights};

/// A shape error for `what`.
pub(crate) fn shape(what: impl Into<String>, expected: impl Into<String>, got: &[usize]) -> Error {
    Error::Shape {
        what: what.into(),
        expected: expected.into(),
        got: got.to_vec(),
    }
}

/// An activation `(batch, channels, D_1..D_d)` with at least `min_spatial` spatial axes, in
/// standard layout (borrowed when it already is).
pub(crate) fn activation<'a>(
    what: &str,
    x: &'a ArrayD<f32>,
    min_spatial: usize,
) -> Result<CowArray<'a, f32, IxDyn>> {
    if x.ndim() < 2 + min_spatial {
        return Err(shape(
            what,
            format!("(batch, channels) then at least {min_spatial} spatial axes"),
            x.shape(),
        ));
    }
    Ok(x.as_standard_layout())
}

/// A standard-layout activation viewed as `(batch, channels, prod(spatial))`.
pub(crate) fn flat<'a>(x: &'a CowArray<'_, f32, IxDyn>) -> Result<ArrayView3<'a, f32>> {
    let sh = x.shape();
    let spatial: usize = sh[2..].iter().product();
    x.view()
        .into_shape_with_order((sh[0], sh[1], spatial))
        .map_err(|_| shape("activation", "a standard-layout array", sh))
}

/// A weight that must be a matrix.
pub(crate) fn matrix<'a>(what: &str, w: &'a CpuWeights) -> Result<ArrayView2<'a, f32>> {
    w.view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| shape(what, "a matrix (2 axes)", w.shape()))
}

/// A weight that must be a 3-axis core `(r_in, k, r_out)`.
pub(crate) fn core<'a>(what: &str, w: &'a CpuWeights) -> Result<ArrayView3<'a, f32>> {
    w.view()
        .into_dimensionality::<Ix3>()
        .map_err(|_| shape(what, "a core (r_in, k, r_out)", w.shape()))
}

/// A bias that must have `len` entries.
pub(crate) fn bias<'a>(what: &str, w: &'a CpuWeights, len: usize) -> Result<ArrayView1<'a, f32>> {
    w.view()
        .into_dimensionality::<Ix1>()
        .ok()
        .filter(|b| b.len() == len)
        .ok_or_else(|| shape(what, format!("({len},)"), w.shape()))
}

/// Stride and dilation of every axis must be at least 1.
pub(crate) fn geometry(geometry: &[AxisGeometry]) -> Result<()> {
    for (mode, g) in geometry.iter().enumerate() {
        if g.stride == 0 {
            return Err(Error::Config {
                field: "stride",
                reason: format!("spatial mode {mode}: stride must be >= 1, got 0"),
            });
        }
        if g.dilation == 0 {
            return Err(Error::Config {
                field: "dilation",
                reason: format!("spatial mode {mode}: dilation must be >= 1, got 0"),
            });
        }
    }
    Ok(())
}

/// `(batch, channels, spatial...)` as a shape vector.
pub(crate) fn nd_shape(batch: usize, channels: usize, spatial: &[usize]) -> Vec<usize> {
    let mut v = Vec::with_capacity(spatial.len() + 2);
    v.push(batch);
    v.push(channels);
    v.extend_from_slice(spatial);
    v
}

/// Reshapes a computed `(B, c, prod(spatial))` result to its N-D shape.
pub(crate) fn unflatten(y: ndarray::Array3<f32>, full: &[usize]) -> Result<ArrayD<f32>> {
    let got = y.shape().to_vec();
    into_standard(y)
        .into_shape_with_order(IxDyn(full))
        .map_err(|_| shape("result", format!("{full:?}"), &got))
}

/// The input and the step weights of a fused factorized forward must be those the program was
/// built for (the fused kernels index the weights' data by the program's shapes).
pub(crate) fn program_operands(
    x: &[usize],
    program: &FactorizedProgram,
    weights: &StepWeights<'_, CpuBackend>,
) -> Result<()> {
    if x != program.input_shape() {
        return Err(shape(
            "factorized input",
            format!("{:?} (the program's input)", program.input_shape()),
            x,
        ));
    }
    program.check_weights(weights)?;
    for (i, (step, w)) in program.steps().iter().zip(&weights.steps).enumerate() {
        if w.shape() != step.weight_shape().as_slice() {
            return Err(shape(
                format!("weight of step {i}"),
                format!("{:?}", step.weight_shape()),
                w.shape(),
            ));
        }
    }
    match weights.bias {
        Some(b) => bias("bias", b, program.output_shape()[1]).map(drop),
        None => Ok(()),
    }
}

/// The kept step inputs, the output gradient and the step weights of a fused factorized
/// backward must be those the program was built for: `kept[i]` of step `i`'s input shape, `gy`
/// of the program's output shape.
pub(crate) fn backward_operands(
    program: &FactorizedProgram,
    weights: &StepWeights<'_, CpuBackend>,
    kept: &[ArrayD<f32>],
    gy: &[usize],
) -> Result<()> {
    program.check_kept(kept.len())?;
    program_operands(kept[0].shape(), program, weights)?;
    for (i, (step, z)) in program.steps().iter().zip(kept).enumerate() {
        if z.shape() != step.input_shape.as_slice() {
            return Err(shape(
                format!("kept input of step {i}"),
                format!("{:?}", step.input_shape),
                z.shape(),
            ));
        }
    }
    if gy != program.output_shape() {
        return Err(shape(
            "factorized output gradient",
            format!("{:?} (the program's output)", program.output_shape()),
            gy,
        ));
    }
    Ok(())
}

/// `x` in standard (row-major) layout: moved when it already is, copied otherwise (a GEMM
/// result may come back column-major).
pub(crate) fn into_standard<D: ndarray::Dimension>(
    x: ndarray::Array<f32, D>,
) -> ndarray::Array<f32, D> {
    if x.is_standard_layout() {
        x
    } else {
        x.as_standard_layout().into_owned()
    }
}
