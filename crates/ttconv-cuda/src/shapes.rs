//! Shape checks and geometry conversions shared by the primitives.

use ttconv::AxisGeometry;
use ttconv::output_spatial;

use crate::blas::to_i32;
use crate::error::{Error, Result};
use crate::kernels::{ConvGeom, MAX_DIMS};
use crate::tensor::DeviceArray;

/// `(batch, channels, spatial)` of an activation shape with at least one spatial mode.
pub(crate) fn split_activation<'s>(
    shape: &'s [usize],
    what: &str,
) -> Result<(usize, usize, &'s [usize])> {
    if shape.len() < 3 {
        return Err(Error::shape(what, "(batch, channels, D_1, ...)", shape));
    }
    Ok((shape[0], shape[1], &shape[2..]))
}

pub(crate) fn matrix_shape(shape: &[usize], what: &str) -> Result<[usize; 2]> {
    match *shape {
        [r, c] => Ok([r, c]),
        _ => Err(Error::shape(what, "a matrix", shape)),
    }
}

pub(crate) fn check_bias(bias: Option<&DeviceArray>, cout: usize) -> Result<()> {
    match bias {
        Some(b) if b.shape() != [cout] => {
            Err(Error::shape("bias", format!("({cout},)"), b.shape()))
        }
        _ => Ok(()),
    }
}

pub(crate) fn activation_shape(batch: usize, channels: usize, spatial: &[usize]) -> Vec<usize> {
    let mut s = vec![batch, channels];
    s.extend_from_slice(spatial);
    s
}

/// `(out, kernel sizes)` of a dense kernel `(out, cin, k_1..k_d)`.
pub(crate) fn dense_kernel_shape(
    shape: &[usize],
    cin: usize,
    d: usize,
) -> Result<(usize, Vec<usize>)> {
    if shape.len() != d + 2 || shape[1] != cin {
        return Err(Error::shape(
            "conv_dense kernel",
            format!("(out, {cin}, k_1..k_{d})"),
            shape,
        ));
    }
    Ok((shape[0], shape[2..].to_vec()))
}

/// Output spatial sizes, after checking the number of modes and that strides and dilations
/// are positive.
pub(crate) fn check_spatial(
    in_sp: &[usize],
    ksize: &[usize],
    geometry: &[AxisGeometry],
) -> Result<Vec<usize>> {
    if in_sp.len() != geometry.len() || ksize.len() != geometry.len() {
        return Err(Error::shape(
            "conv_dense input",
            format!("{} spatial modes", geometry.len()),
            in_sp,
        ));
    }
    if let Some(g) = geometry.iter().find(|g| g.stride == 0 || g.dilation == 0) {
        return Err(Error::Unsupported(format!(
            "stride and dilation must be >= 1 (got {g:?})"
        )));
    }
    Ok(output_spatial(in_sp, ksize, geometry)?)
}

/// A 1x1 kernel with stride 1 and no padding: the convolution is a channel contraction.
pub(crate) fn is_pointwise(ksize: &[usize], geometry: &[AxisGeometry]) -> bool {
    ksize.iter().all(|&k| k == 1)
        && geometry
            .iter()
            .all(|g| g.stride == 1 && g.pad_before == 0 && g.pad_after == 0)
}

pub(crate) fn conv_geom(
    in_sp: &[usize],
    out_sp: &[usize],
    ksize: &[usize],
    geometry: &[AxisGeometry],
) -> Result<ConvGeom> {
    let d = geometry.len();
    if d == 0 || d > MAX_DIMS {
        return Err(Error::Unsupported(format!(
            "dense convolution of order {d} (the CUDA kernels take 1 to {MAX_DIMS} spatial modes)"
        )));
    }
    let mut g = ConvGeom {
        d: d as i32,
        ..ConvGeom::default()
    };
    for j in 0..d {
        g.in_sp[j] = to_i32(in_sp[j], "spatial size")?;
        g.out_sp[j] = to_i32(out_sp[j], "spatial size")?;
        g.k[j] = to_i32(ksize[j], "kernel size")?;
        g.stride[j] = to_i32(geometry[j].stride, "stride")?;
        g.dil[j] = to_i32(geometry[j].dilation, "dilation")?;
        g.pad[j] = to_i32(geometry[j].pad_before, "padding")?;
    }
    Ok(g)
}
