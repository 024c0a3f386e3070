//! The direct N-D convolution: the plain loops of the definition, accumulated in f64.
//!
//! This is the ground truth every fast path is tested against. It is deliberately simple and
//! slow: `O(batch * out * prod(D') * in * prod(k))` scalar multiply-adds, no blocking, no GEMM.

use ndarray::{ArrayD, ArrayView1, ArrayViewD, IxDyn};

use crate::error::{Error, Result};
use crate::geometry::{AxisGeometry, output_spatial};

/// Iterates over every multi-index of `shape` in row-major order, calling `f` on each.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut axis = shape.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            idx[axis] += 1;
            if idx[axis] < shape[axis] {
                break;
            }
            idx[axis] = 0;
        }
    }
}

/// Input position read by output position `p` and kernel tap `t` along one axis, if inside.
fn input_position(g: &AxisGeometry, p: usize, t: usize, len: usize) -> Option<usize> {
    let pos = (p * g.stride + t * g.dilation).checked_sub(g.pad_before)?;
    (pos < len).then_some(pos)
}

fn check_operands(
    x: &ArrayViewD<'_, f32>,
    kernel: &ArrayViewD<'_, f32>,
    bias: Option<&ArrayView1<'_, f32>>,
    geometry: &[AxisGeometry],
) -> Result<usize> {
    let d = geometry.len();
    if x.ndim() != d + 2 {
        return Err(Error::Shape {
            what: "oracle input".into(),
            expected: format!("{} axes (batch, channels, {d} spatial)", d + 2),
            got: x.shape().to_vec(),
        });
    }
    if kernel.ndim() != d + 2 || kernel.shape()[1] != x.shape()[1] {
        return Err(Error::Shape {
            what: "oracle kernel".into(),
            expected: format!("(out, {}, k_1..k_{d})", x.shape()[1]),
            got: kernel.shape().to_vec(),
        });
    }
    if let Some(b) = bias
        && b.len() != kernel.shape()[0]
    {
        return Err(Error::Shape {
            what: "oracle bias".into(),
            expected: format!("({},)", kernel.shape()[0]),
            got: b.shape().to_vec(),
        });
    }
    Ok(d)
}

/// Direct N-D convolution (PyTorch's cross-correlation) of `x` `(batch, in, D_1..D_d)` with
/// `kernel` `(out, in, k_1..k_d)`, plus `bias` `(out,)`:
/// `y[b, o, p] = bias[o] + sum_{c, t} kernel[o, c, t] * x[b, c, p * stride + t * dilation - pad_before]`,
/// zero outside the input, accumulated in f64 and rounded once to f32.
pub fn conv_nd(
    x: ArrayViewD<'_, f32>,
    kernel: ArrayViewD<'_, f32>,
    bias: Option<ArrayView1<'_, f32>>,
    geometry: &[AxisGeometry],
) -> Result<ArrayD<f32>> {
    let d = check_operands(&x, &kernel, bias.as_ref(), geometry)?;
    let (batch, cin) = (x.shape()[0], x.shape()[1]);
    let cout = kernel.shape()[0];
    let ksize = &kernel.shape()[2..];
    let in_spatial = &x.shape()[2..];
    let out_spatial = output_spatial(in_spatial, ksize, geometry)?;
    let mut out_shape = vec![batch, cout];
    out_shape.extend_from_slice(&out_spatial);
    let mut y = ArrayD::<f32>::zeros(IxDyn(&out_shape));
    let mut xi = vec![0usize; d + 2];
    let mut ki = vec![0usize; d + 2];
    for_each_index(&out_shape, |yi| {
        let (b, o, p) = (yi[0], yi[1], &yi[2..]);
        let mut acc = bias.as_ref().map_or(0.0, |bv| f64::from(bv[o]));
        for_each_index(ksize, |t| {
            xi[0] = b;
            for j in 0..d {
                match input_position(&geometry[j], p[j], t[j], in_spatial[j]) {
                    Some(pos) => xi[j + 2] = pos,
                    None => return,
                }
            }
            ki[0] = o;
            ki[2..].copy_from_slice(t);
            for c in 0..cin {
                xi[1] = c;
                ki[1] = c;
                acc += f64::from(kernel[&ki[..]]) * f64::from(x[&xi[..]]);
            }
        });
        y[yi] = acc as f32;
    });
    Ok(y)
}

/// Gradients of `L = sum(y * gy)` for `y = conv_nd(x, kernel, bias)`, by the same direct loops
/// (f64 accumulation): returns `(grad_x, grad_kernel, grad_bias)`.
///
/// `grad_x[b, c, i] = sum_{o, t, p : p*s + t*dil - pad = i} kernel[o, c, t] * gy[b, o, p]`,
/// `grad_kernel[o, c, t] = sum_{b, p} x[b, c, p*s + t*dil - pad] * gy[b, o, p]`,
/// `grad_bias[o] = sum_{b, p} gy[b, o, p]`.
pub fn conv_nd_grads(
    x: ArrayViewD<'_, f32>,
    kernel: ArrayViewD<'_, f32>,
    gy: ArrayViewD<'_, f32>,
    geometry: &[AxisGeometry],
) -> Result<(ArrayD<f32>, ArrayD<f32>, ndarray::Array1<f32>)> {
    let d = check_operands(&x, &kernel, None, geometry)?;
    let cin = x.shape()[1];
    let cout = kernel.shape()[0];
    let ksize = kernel.shape()[2..].to_vec();
    let in_spatial = x.shape()[2..].to_vec();
    let out_spatial = output_spatial(&in_spatial, &ksize, geometry)?;
    let mut expected = vec![x.shape()[0], cout];
    expected.extend_from_slice(&out_spatial);
    if gy.shape() != expected.as_slice() {
        return Err(Error::Shape {
            what: "oracle output gradient".into(),
            expected: format!("{expected:?}"),
            got: gy.shape().to_vec(),
        });
    }
    let mut gx = ArrayD::<f64>::zeros(x.raw_dim());
    let mut gk = ArrayD::<f64>::zeros(kernel.raw_dim());
    let mut gb = vec![0f64; cout];
    let mut xi = vec![0usize; d + 2];
    let mut ki = vec![0usize; d + 2];
    for_each_index(gy.shape(), |yi| {
        let (b, o, p) = (yi[0], yi[1], &yi[2..]);
        let g = f64::from(gy[yi]);
        gb[o] += g;
        for_each_index(&ksize, |t| {
            xi[0] = b;
            for j in 0..d {
                match input_position(&geometry[j], p[j], t[j], in_spatial[j]) {
                    Some(pos) => xi[j + 2] = pos,
                    None => return,
                }
            }
            ki[0] = o;
            ki[2..].copy_from_slice(t);
            for c in 0..cin {
                xi[1] = c;
                ki[1] = c;
                gx[&xi[..]] += f64::from(kernel[&ki[..]]) * g;
                gk[&ki[..]] += f64::from(x[&xi[..]]) * g;
            }
        });
    });
    Ok((
        gx.mapv(|v| v as f32),
        gk.mapv(|v| v as f32),
        gb.into_iter().map(|v| v as f32).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn, array};

    #[test]
    fn one_d_hand_computed() {
        // x = [1, 2, 3], k = [1, -1], pad 1 each side: y = [0*1 + 1*(-1)?..] computed by hand:
        // padded = [0, 1, 2, 3, 0]; y[p] = padded[p] - padded[p+1] = [-1, -1, -1, 3]
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 3]), vec![1.0, 2.0, 3.0]).unwrap();
        let k = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2]), vec![1.0, -1.0]).unwrap();
        let g = AxisGeometry {
            stride: 1,
            dilation: 1,
            pad_before: 1,
            pad_after: 1,
        };
        let b = array![0.5f32];
        let y = conv_nd(x.view(), k.view(), Some(b.view()), &[g]).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[-0.5, -0.5, -0.5, 3.5]);
    }

    #[test]
    fn two_d_stride_dilation_hand_computed() {
        // 1 channel 4x4 input 0..16, 2x2 kernel of ones, dilation 2, stride 1, no padding:
        // y[i, j] = x[i, j] + x[i, j+2] + x[i+2, j] + x[i+2, j+2], output 2x2.
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 4, 4]), (0..16).map(|v| v as f32).collect())
            .unwrap();
        let k = ArrayD::from_elem(IxDyn(&[1, 1, 2, 2]), 1.0f32);
        let g = AxisGeometry {
            stride: 1,
            dilation: 2,
            pad_before: 0,
            pad_after: 0,
        };
        let y = conv_nd(x.view(), k.view(), None, &[g, g]).unwrap();
        let expect: Vec<f32> = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|&(i, j)| {
                let at = |a: usize, b: usize| (a * 4 + b) as f32;
                at(i, j) + at(i, j + 2) + at(i + 2, j) + at(i + 2, j + 2)
            })
            .collect();
        assert_eq!(y.as_slice().unwrap(), expect.as_slice());
    }

    #[test]
    fn grads_match_finite_differences_of_the_linear_map() {
        // The convolution is linear in x and in the kernel, so the gradient of sum(y * gy) with
        // respect to one entry equals the change of that sum when the entry moves by one.
        let x = ArrayD::from_shape_fn(IxDyn(&[2, 2, 5]), |i| {
            (i[0] * 7 + i[1] * 3 + i[2]) as f32 * 0.1
        });
        let k = ArrayD::from_shape_fn(IxDyn(&[3, 2, 3]), |i| {
            (i[0] + 2 * i[1]) as f32 * 0.5 - i[2] as f32
        });
        let g = AxisGeometry {
            stride: 2,
            dilation: 1,
            pad_before: 2,
            pad_after: 1,
        };
        let y = conv_nd(x.view(), k.view(), None, &[g]).unwrap();
        let gy = ArrayD::from_shape_fn(y.raw_dim(), |i| (i[0] + i[1] + i[2]) as f32 - 1.5);
        let loss = |x: &ArrayD<f32>, k: &ArrayD<f32>| -> f64 {
            let y = conv_nd(x.view(), k.view(), None, &[g]).unwrap();
            y.iter()
                .zip(gy.iter())
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let (gx, gk, gb) = conv_nd_grads(x.view(), k.view(), gy.view(), &[g]).unwrap();
        let base = loss(&x, &k);
        for idx in [[0, 0, 0], [1, 1, 4], [0, 1, 2]] {
            let mut xp = x.clone();
            xp[&idx[..]] += 1.0;
            assert!((loss(&xp, &k) - base - f64::from(gx[&idx[..]])).abs() < 1e-3);
        }
        for idx in [[0, 0, 0], [2, 1, 2], [1, 0, 1]] {
            let mut kp = k.clone();
            kp[&idx[..]] += 1.0;
            assert!((loss(&x, &kp) - base - f64::from(gk[&idx[..]])).abs() < 1e-3);
        }
        assert!((gb[1] - gy.index_axis(ndarray::Axis(1), 1).sum()).abs() < 1e-4);
    }
}
