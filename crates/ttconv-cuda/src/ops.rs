//! The primitives on device arrays, with this crate's typed errors: the bodies behind
//! [`CudaBackend`]'s [`ttconv::Backend`] methods.

use ttconv::AxisGeometry;

use crate::backend::CudaBackend;
use crate::blas::{self, to_i32};
use crate::error::{Error, Result};
use crate::kernels::ConvGeom;
use crate::launch::{self, AlongDims};
use crate::shapes::{
    activation_shape, check_bias, check_spatial, conv_geom, dense_kernel_shape, is_pointwise,
    matrix_shape, split_activation,
};
use crate::tensor::DeviceArray;

impl CudaBackend {
    pub(crate) fn contract_impl(
        &self,
        x: &DeviceArray,
        w: &DeviceArray,
        bias: Option<&DeviceArray>,
    ) -> Result<DeviceArray> {
        let (batch, cin, sp) = split_activation(x.shape(), "contract_channels input")?;
        let [wc, cout] = matrix_shape(w.shape(), "contract_channels weight")?;
        if wc != cin {
            return Err(Error::shape(
                "contract_channels weight",
                format!("({cin}, c_out)"),
                w.shape(),
            ));
        }
        check_bias(bias, cout)?;
        let m: usize = sp.iter().product();
        let mut out = self.alloc(activation_shape(batch, cout, sp))?;
        blas::left_mul(
            &self.exec(),
            &w.view(),
            (cin, cout),
            true,
            &x.view(),
            batch,
            m,
            &mut out.view_mut(),
        )?;
        if let Some(b) = bias {
            launch::add_bias(&self.exec(), &mut out.view_mut(), &b.view(), cout, m)?;
        }
        Ok(out)
    }

    pub(crate) fn contract_grad_input_impl(
        &self,
        gy: &DeviceArray,
        w: &DeviceArray,
    ) -> Result<DeviceArray> {
        let (batch, cout, sp) = split_activation(gy.shape(), "contract_channels output gradient")?;
        let [cin, wc] = matrix_shape(w.shape(), "contract_channels weight")?;
        if wc != cout {
            return Err(Error::shape(
                "contract_channels weight",
                format!("(c_in, {cout})"),
                w.shape(),
            ));
        }
        let m: usize = sp.iter().product();
        let mut gx = self.alloc(activation_shape(batch, cin, sp))?;
        blas::left_mul(
            &self.exec(),
            &w.view(),
            (cin, cout),
            false,
            &gy.view(),
            batch,
            m,
            &mut gx.view_mut(),
        )?;
        Ok(gx)
    }

    pub(crate) fn contract_grad_weight_impl(
        &self,
        x: &DeviceArray,
        gy: &DeviceArray,
    ) -> Result<DeviceArray> {
        let (batch, cin, sp) = split_activation(x.shape(), "contract_channels input")?;
        let (gb, cout, gsp) = split_activation(gy.shape(), "contract_channels output gradient")?;
        if gb != batch || gsp != sp {
            return Err(Error::shape(
                "contract_channels output gradient",
                format!("{:?}", activation_shape(batch, cout, sp)),
                gy.shape(),
            ));
        }
        let m: usize = sp.iter().product();
        self.weight_grad(x, Cols::Direct, cin, gy, cout, m, batch, true)
    }

    fn along_dims(
        x_shape: &[usize],
        axis: usize,
        core_shape: &[usize],
        g: AxisGeometry,
        input_len: usize,
        what: &str,
    ) -> Result<AlongDims> {
        let (batch, r_in, sp) = split_activation(x_shape, what)?;
        if axis >= sp.len() {
            return Err(Error::shape(
                what,
                format!("a spatial axis {axis}"),
                x_shape,
            ));
        }
        let &[cr_in, k, r_out] = core_shape else {
            return Err(Error::shape("core", "(r_in, k, r_out)", core_shape));
        };
        if cr_in != r_in {
            return Err(Error::shape(
                "core",
                format!("({r_in}, k, r_out)"),
                core_shape,
            ));
        }
        if g.stride == 0 || g.dilation == 0 {
            return Err(Error::Unsupported(format!(
                "stride and dilation must be >= 1 (got {g:?})"
            )));
        }
        let len_out = g.checked_output_len(axis, input_len, k)?;
        Ok(AlongDims {
            batch,
            r_in,
            r_out,
            outer: sp[..axis].iter().product(),
            len: input_len,
            inner: sp[axis + 1..].iter().product(),
            len_out,
            k,
            stride: g.stride,
            dil: g.dilation,
            pad: g.pad_before,
        })
    }

    pub(crate) fn conv_along_impl(
        &self,
        x: &DeviceArray,
        axis: usize,
        core: &DeviceArray,
        g: AxisGeometry,
    ) -> Result<DeviceArray> {
        let len = x.shape().get(axis + 2).copied().unwrap_or(0);
        let d = Self::along_dims(x.shape(), axis, core.shape(), g, len, "conv_along input")?;
        let mut shape = x.shape().to_vec();
        shape[1] = d.r_out;
        shape[axis + 2] = d.len_out;
        let mut out = self.alloc(shape)?;
        launch::conv_along_fwd(
            &self.exec(),
            &x.view(),
            &core.view(),
            &mut out.view_mut(),
            &d,
        )?;
        Ok(out)
    }

    pub(crate) fn conv_along_grad_input_impl(
        &self,
        gy: &DeviceArray,
        axis: usize,
        core: &DeviceArray,
        g: AxisGeometry,
        input_len: usize,
    ) -> Result<DeviceArray> {
        let (batch, r_out, sp) = split_activation(gy.shape(), "conv_along output gradient")?;
        if axis >= sp.len() {
            return Err(Error::shape(
                "conv_along output gradient",
                format!("a spatial axis {axis}"),
                gy.shape(),
            ));
        }
        let &[r_in, _, cr_out] = core.shape() else {
            return Err(Error::shape("core", "(r_in, k, r_out)", core.shape()));
        };
        if cr_out != r_out {
            return Err(Error::shape(
                "core",
                format!("(r_in, k, {r_out})"),
                core.shape(),
            ));
        }
        let mut x_shape = gy.shape().to_vec();
        x_shape[1] = r_in;
        x_shape[axis + 2] = input_len;
        let d = Self::along_dims(
            &x_shape,
            axis,
            core.shape(),
            g,
            input_len,
            "conv_along input",
        )?;
        if d.len_out != sp[axis] {
            return Err(Error::shape(
                "conv_along output gradient",
                format!("length {} along spatial axis {axis}", d.len_out),
                gy.shape(),
            ));
        }
        debug_assert_eq!(d.batch, batch);
        let mut gx = self.alloc(x_shape)?;
        launch::conv_along_bwd_input(
            &self.exec(),
            &gy.view(),
            &core.view(),
            &mut gx.view_mut(),
            &d,
        )?;
        Ok(gx)
    }

    pub(crate) fn conv_along_grad_weight_impl(
        &self,
        x: &DeviceArray,
        gy: &DeviceArray,
        axis: usize,
        kernel: usize,
        g: AxisGeometry,
    ) -> Result<DeviceArray> {
        let (_, r_out, gsp) = split_activation(gy.shape(), "conv_along output gradient")?;
        let (_, r_in, _) = split_activation(x.shape(), "conv_along input")?;
        let len = x.shape().get(axis + 2).copied().unwrap_or(0);
        let d = Self::along_dims(
            x.shape(),
            axis,
            &[r_in, kernel, r_out],
            g,
            len,
            "conv_along input",
        )?;
        let mut expect = x.shape().to_vec();
        expect[1] = r_out;
        expect[axis + 2] = d.len_out;
        if gy.shape() != expect.as_slice() {
            return Err(Error::shape(
                "conv_along output gradient",
                format!("{expect:?}"),
                gy.shape(),
            ));
        }
        let m = d.outer * d.len_out * d.inner;
        debug_assert_eq!(m, gsp.iter().product::<usize>());
        let q = r_in * kernel;
        let pointwise = kernel == 1 && d.stride == 1 && d.pad == 0 && d.len_out == d.len;
        let out = if pointwise {
            self.weight_grad(x, Cols::Direct, q, gy, r_out, m, d.batch, true)?
        } else {
            // im2col over the (outer, len, inner) view with a (1, k, 1) kernel.
            let mut geom = ConvGeom {
                d: 3,
                ..ConvGeom::default()
            };
            let axes = [
                (d.outer, d.outer, 1, 1, 1, 0),
                (d.len, d.len_out, kernel, d.stride, d.dil, d.pad),
                (d.inner, d.inner, 1, 1, 1, 0),
            ];
            for (j, &(i, o, k, s, dl, p)) in axes.iter().enumerate() {
                geom.in_sp[j] = to_i32(i, "spatial size")?;
                geom.out_sp[j] = to_i32(o, "spatial size")?;
                geom.k[j] = to_i32(k, "kernel size")?;
                geom.stride[j] = to_i32(s, "stride")?;
                geom.dil[j] = to_i32(dl, "dilation")?;
                geom.pad[j] = to_i32(p, "padding")?;
            }
            let cols = Cols::Im2col {
                geom: &geom,
                channels: r_in,
            };
            self.weight_grad(x, cols, q, gy, r_out, m, d.batch, true)?
        };
        Ok(out.reshape(vec![r_in, kernel, r_out]))
    }

    /// A weight gradient `sum_b X_b gy_b^T` (shape `(q, r)`, when `x_first`) or
    /// `sum_b gy_b X_b^T` (`(r, q)`), where `gy_b` is `(r, m)` and `X_b` is `(q, m)`: the batch
    /// element `x_b` itself ([`Cols::Direct`]) or its im2col columns ([`Cols::Im2col`]).
    ///
    /// Batch elements are processed in chunks within the workspace limit: one strided batched
    /// GEMM per chunk into per-element partial products, then a reduction kernel adds them to
    /// the result (a chunk of one element is multiplied into the result directly).
    fn weight_grad(
        &self,
        x: &DeviceArray,
        cols: Cols<'_>,
        q: usize,
        gy: &DeviceArray,
        r: usize,
        m: usize,
        batch: usize,
        x_first: bool,
    ) -> Result<DeviceArray> {
        let shape = if x_first { vec![q, r] } else { vec![r, q] };
        if batch == 0 {
            return DeviceArray::zeros(&self.dev.stream, shape);
        }
        let x_item = x.len() / batch;
        let col_item = match cols {
            Cols::Direct => {
                assert_eq!(x_item, q * m, "x is not (batch, q, m)");
                0
            }
            Cols::Im2col { .. } => q * m,
        };
        let nb = self.chunk(col_item + q * r, batch);
        let mut col = match cols {
            Cols::Direct => None,
            Cols::Im2col { .. } => Some(self.alloc(vec![nb, q, m])?),
        };
        let mut partial = if nb > 1 {
            Some(self.alloc(vec![nb, q * r])?)
        } else {
            None
        };
        let mut out = self.alloc(shape)?;
        let ex = self.exec();
        let mut b0 = 0;
        while b0 < batch {
            let n = nb.min(batch - b0);
            let xv = x.view_range(b0 * x_item, (b0 + n) * x_item);
            let xm = match (cols, col.as_mut()) {
                (Cols::Im2col { geom, channels }, Some(col)) => {
                    let mut cv = col.view_range_mut(0, n * q * m);
                    launch::im2col(&ex, &xv, &mut cv, geom, channels, n)?;
                    col.view_range(0, n * q * m)
                }
                _ => xv,
            };
            let gv = gy.view_range(b0 * r * m, (b0 + n) * r * m);
            let (a, pa, b, pb) = if x_first {
                (&xm, q, &gv, r)
            } else {
                (&gv, r, &xm, q)
            };
            let accumulate = b0 > 0;
            match partial.as_mut() {
                Some(partial) if n > 1 => {
                    let mut pv = partial.view_range_mut(0, n * q * r);
                    blas::batched_nt(&ex, a, pa, b, pb, n, m, &mut pv, false)?;
                    let pv = partial.view_range(0, n * q * r);
                    launch::sum_batches(&ex, &pv, &mut out.view_mut(), n, accumulate)?;
                }
                _ => {
                    let mut ov = out.view_mut();
                    blas::batched_nt(&ex, a, pa, b, pb, 1, m, &mut ov, accumulate)?;
                }
            }
            b0 += n;
        }
        Ok(out)
    }

    pub(crate) fn conv_dense_impl(
        &self,
        x: &DeviceArray,
        kernel: &DeviceArray,
        bias: Option<&DeviceArray>,
        geometry: &[AxisGeometry],
    ) -> Result<DeviceArray> {
        let (batch, cin, in_sp) = split_activation(x.shape(), "conv_dense input")?;
        let (cout, ksize) = dense_kernel_shape(kernel.shape(), cin, geometry.len())?;
        check_bias(bias, cout)?;
        let out_sp = check_spatial(in_sp, &ksize, geometry)?;
        let m: usize = out_sp.iter().product();
        let p_in: usize = in_sp.iter().product();
        let q = cin * ksize.iter().product::<usize>();
        let mut out = self.alloc(activation_shape(batch, cout, &out_sp))?;
        if is_pointwise(&ksize, geometry) {
            blas::left_mul(
                &self.exec(),
                &kernel.view(),
                (cout, q),
                false,
                &x.view(),
                batch,
                m,
                &mut out.view_mut(),
            )?;
        } else if batch > 0 {
            // Only the im2col path needs the kernels' geometry struct (at most MAX_DIMS modes);
            // the pointwise path above is a GEMM of any order.
            let geom = conv_geom(in_sp, &out_sp, &ksize, geometry)?;
            let nb = self.chunk(q * m, batch);
            let mut col = self.alloc(vec![nb, q, m])?;
            let mut b0 = 0;
            while b0 < batch {
                let n = nb.min(batch - b0);
                let xv = x.view_range(b0 * cin * p_in, (b0 + n) * cin * p_in);
                launch::im2col(
                    &self.exec(),
                    &xv,
                    &mut col.view_range_mut(0, n * q * m),
                    &geom,
                    cin,
                    n,
                )?;
                blas::left_mul(
                    &self.exec(),
                    &kernel.view(),
                    (cout, q),
                    false,
                    &col.view_range(0, n * q * m),
                    n,
                    m,
                    &mut out.view_range_mut(b0 * cout * m, (b0 + n) * cout * m),
                )?;
                b0 += n;
            }
        }
        if let Some(b) = bias {
            launch::add_bias(&self.exec(), &mut out.view_mut(), &b.view(), cout, m)?;
        }
        Ok(out)
    }

    pub(crate) fn conv_dense_grad_input_impl(
        &self,
        gy: &DeviceArray,
        kernel: &DeviceArray,
        geometry: &[AxisGeometry],
        input_spatial: &[usize],
    ) -> Result<DeviceArray> {
        let (batch, cout, gsp) = split_activation(gy.shape(), "conv_dense output gradient")?;
        let kshape = kernel.shape();
        if kshape.len() != geometry.len() + 2 || kshape[0] != cout {
            return Err(Error::shape(
                "conv_dense kernel",
                format!("({cout}, in, k_1..k_{})", geometry.len()),
                kshape,
            ));
        }
        let cin = kshape[1];
        let ksize = kshape[2..].to_vec();
        if input_spatial.len() != geometry.len() {
            return Err(Error::shape(
                "conv_dense input spatial shape",
                format!("{} modes", geometry.len()),
                input_spatial,
            ));
        }
        let out_sp = check_spatial(input_spatial, &ksize, geometry)?;
        if out_sp != gsp {
            return Err(Error::shape(
                "conv_dense output gradient",
                format!("{:?}", activation_shape(batch, cout, &out_sp)),
                gy.shape(),
            ));
        }
        let m: usize = out_sp.iter().product();
        let p_in: usize = input_spatial.iter().product();
        let q = cin * ksize.iter().product::<usize>();
        let mut gx = self.alloc(activation_shape(batch, cin, input_spatial))?;
        if is_pointwise(&ksize, geometry) {
            blas::left_mul(
                &self.exec(),
                &kernel.view(),
                (cout, q),
                true,
                &gy.view(),
                batch,
                m,
                &mut gx.view_mut(),
            )?;
        } else if batch > 0 {
            let geom = conv_geom(input_spatial, &out_sp, &ksize, geometry)?;
            let nb = self.chunk(q * m, batch);
            let mut col = self.alloc(vec![nb, q, m])?;
            let mut b0 = 0;
            while b0 < batch {
                let n = nb.min(batch - b0);
                blas::left_mul(
                    &self.exec(),
                    &kernel.view(),
                    (cout, q),
                    true,
                    &gy.view_range(b0 * cout * m, (b0 + n) * cout * m),
                    n,
                    m,
                    &mut col.view_range_mut(0, n * q * m),
                )?;
                launch::col2im(
                    &self.exec(),
                    &col.view_range(0, n * q * m),
                    &mut gx.view_range_mut(b0 * cin * p_in, (b0 + n) * cin * p_in),
                    &geom,
                    cin,
                    n,
                )?;
                b0 += n;
            }
        }
        Ok(gx)
    }

    pub(crate) fn conv_dense_grad_weight_impl(
        &self,
        x: &DeviceArray,
        gy: &DeviceArray,
        kernel_size: &[usize],
        geometry: &[AxisGeometry],
    ) -> Result<DeviceArray> {
        let (batch, cin, in_sp) = split_activation(x.shape(), "conv_dense input")?;
        let (gb, cout, gsp) = split_activation(gy.shape(), "conv_dense output gradient")?;
        if kernel_size.len() != geometry.len() || in_sp.len() != geometry.len() {
            return Err(Error::shape(
                "conv_dense kernel size",
                format!("{} modes", in_sp.len()),
                kernel_size,
            ));
        }
        let out_sp = check_spatial(in_sp, kernel_size, geometry)?;
        if gb != batch || out_sp != gsp {
            return Err(Error::shape(
                "conv_dense output gradient",
                format!("{:?}", activation_shape(batch, cout, &out_sp)),
                gy.shape(),
            ));
        }
        let m: usize = out_sp.iter().product();
        let q = cin * kernel_size.iter().product::<usize>();
        let geom = if is_pointwise(kernel_size, geometry) {
            None
        } else {
            Some(conv_geom(in_sp, &out_sp, kernel_size, geometry)?)
        };
        let cols = match &geom {
            None => Cols::Direct,
            Some(geom) => Cols::Im2col {
                geom,
                channels: cin,
            },
        };
        let out = self.weight_grad(x, cols, q, gy, cout, m, batch, false)?;
        let mut shape = vec![cout, cin];
        shape.extend_from_slice(kernel_size);
        Ok(out.reshape(shape))
    }

    pub(crate) fn add_bias_impl(&self, y: &mut DeviceArray, bias: &DeviceArray) -> Result<()> {
        let (_, cout, sp) = split_activation(y.shape(), "add_bias input")?;
        check_bias(Some(bias), cout)?;
        let m: usize = sp.iter().product();
        if m == 0 {
            return Ok(());
        }
        launch::add_bias(&self.exec(), &mut y.view_mut(), &bias.view(), cout, m)
    }

    pub(crate) fn bias_grad_impl(&self, gy: &DeviceArray) -> Result<DeviceArray> {
        let (batch, cout, sp) = split_activation(gy.shape(), "output gradient")?;
        let m: usize = sp.iter().product();
        let mut gb = self.alloc(vec![cout])?;
        launch::bias_grad(&self.exec(), &gy.view(), &mut gb.view_mut(), batch, cout, m)?;
        Ok(gb)
    }
}

/// The `(q, m)` matrices a weight gradient multiplies per batch element.
#[derive(Clone, Copy, Debug)]
enum Cols<'a> {
    /// The batch element itself, `(channels, positions)`.
    Direct,
    /// The im2col columns of the batch element for this geometry.
    Im2col {
        /// The convolution geometry.
        geom: &'a ConvGeom,
        /// Input channels of the batch element.
        channels: usize,
    },
}
