//! One `TtConv` as an ONNX model (its chain of [`crate::chain`]), and such a model back as a
//! `TtConv`.
//!
//! The exported graph reads `x (batch, in, D_1..D_d)` (symbolic batch and spatial dims) and
//! writes `y (batch, out, D'_1..D'_d)` through `d + 2` Conv nodes whose weights are
//! initializers `tt_core0..tt_core{d+1}` and, with a bias, `bias`. Import takes any graph of
//! that form: a pointwise Conv, one Conv per spatial axis in order (kernel, stride, dilation and
//! padding on its own axis only), a pointwise Conv with an optional bias.

use ndarray::{Array1, Array3};
use ttconv::TtConv;
use ttconv_models::{DType, Geometry, build_layer, layer_parts, tt_from_cores};

use crate::chain::{ChainNames, chain_nodes, chain_weights};
use crate::conv::{AutoPad, ConvAttrs};
use crate::error::{Error, Result};
use crate::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, data_type};
use crate::tensor::{dim_param, dim_value, dims, from_f32, tensor_value_info, to_f32};

/// The opset of exported models: `Conv` is unchanged since opset 11.
pub const EXPORT_OPSET: i64 = 17;

/// `layer` as an ONNX model (module docs).
pub fn export_layer(layer: &TtConv) -> Result<ModelProto> {
    let (tt, bias, g) = layer_parts(layer);
    let shape = tt.shape();
    let d = shape.len() - 2;
    let (cin, cout) = (shape[0], shape[d + 1]);
    let attrs = ConvAttrs {
        kernel: shape[1..=d].to_vec(),
        strides: g.stride.clone(),
        dilations: g.dilation.clone(),
        pads: g.padding.clone(),
        auto_pad: AutoPad::NotSet,
        group: 1,
    };
    let mut conv = NodeProto {
        input: vec!["x".into(), "weight".into()],
        output: vec!["y".into()],
        name: "tt_conv".into(),
        op_type: "Conv".into(),
        ..NodeProto::default()
    };
    let weights: Vec<String> = (0..d + 2).map(|i| format!("tt_core{i}")).collect();
    let mut initializer = chain_weights(&tt, DType::F32, &weights)?;
    if let Some(b) = &bias {
        conv.input.push("bias".into());
        initializer.push(from_f32("bias", &b.clone().into_dyn(), DType::F32)?);
    }
    let names = ChainNames {
        nodes: (0..d + 2).map(|i| format!("tt_conv/{i}")).collect(),
        values: (0..d + 1).map(|i| format!("y/{i}")).collect(),
    };
    let node = chain_nodes(&conv, &attrs, &weights, &names);
    let mut x_dims = vec![dim_param("batch"), dim_value(cin as i64)];
    x_dims.extend((0..d).map(|j| dim_param(&format!("in_{j}"))));
    let mut y_dims = vec![dim_param("batch"), dim_value(cout as i64)];
    y_dims.extend((0..d).map(|j| dim_param(&format!("out_{j}"))));
    Ok(ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: EXPORT_OPSET,
        }],
        producer_name: "ttconv".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "A TT convolution {cin} -> {cout}, kernel {:?}, ranks {:?}, stride {:?}, padding {:?}, dilation {:?}",
            attrs.kernel,
            tt.ranks(),
            g.stride,
            g.padding,
            g.dilation
        ),
        graph: Some(GraphProto {
            node,
            name: "tt_conv".into(),
            initializer,
            input: vec![tensor_value_info("x", data_type::FLOAT, x_dims)],
            output: vec![tensor_value_info("y", data_type::FLOAT, y_dims)],
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    })
}

/// The `TtConv` a chain model computes (module docs); an error naming the first node that does
/// not fit the form.
pub fn import_layer(model: &ModelProto) -> Result<TtConv> {
    crate::check_model(model)?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("model", "no graph"))?;
    let bad = |n: usize, reason: String| Error::invalid(format!("TT chain node {n}"), reason);
    let n = g.node.len();
    if n < 3 || g.node.iter().any(|x| x.op_type != "Conv") {
        return Err(Error::invalid(
            "TT chain",
            format!("{n} nodes; d + 2 >= 3 Conv nodes and nothing else expected"),
        ));
    }
    let d = n - 2;
    let inputs = crate::input_specs(model)?;
    if inputs.len() != 1 || g.output.len() != 1 {
        return Err(Error::invalid(
            "TT chain",
            format!(
                "{} graph inputs and {} outputs; one of each expected",
                inputs.len(),
                g.output.len()
            ),
        ));
    }
    if g.node[0].input.first() != Some(&inputs[0].name) {
        return Err(Error::invalid(
            "TT chain",
            "the first node does not read the graph input",
        ));
    }
    let weight = |node: &NodeProto, i: usize, k: usize| -> Result<ndarray::ArrayD<f32>> {
        let name = node
            .input
            .get(k)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(i, format!("input {k} missing")))?;
        let t = g
            .initializer
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| bad(i, format!("`{name}` is not an initializer")))?;
        dims(t)?;
        to_f32(t)
    };
    let mut cores: Vec<Array3<f32>> = Vec::with_capacity(n);
    let mut geometry = Geometry::unit(d);
    let mut bias = None;
    for (i, node) in g.node.iter().enumerate() {
        if i > 0 && node.input.first() != g.node[i - 1].output.first() {
            return Err(bad(i, "does not read the previous node's output".into()));
        }
        let w = weight(node, i, 1)?;
        let attrs = ConvAttrs::parse(node, w.shape())?;
        if attrs.order() != d || attrs.group != 1 {
            return Err(bad(
                i,
                format!(
                    "order {} group {}: order {d}, group 1 expected",
                    attrs.order(),
                    attrs.group
                ),
            ));
        }
        let Some(geo) = attrs.geometry() else {
            return Err(bad(
                i,
                "SAME padding with a stride has no fixed geometry".into(),
            ));
        };
        let axis = i.checked_sub(1).filter(|&j| j < d);
        for j in 0..d {
            let own = Some(j) == axis;
            let unit = attrs.kernel[j] == 1
                && geo.stride[j] == 1
                && geo.dilation[j] == 1
                && geo.padding[j] == [0, 0];
            if !own && !unit {
                return Err(bad(
                    i,
                    format!("kernel, stride, dilation or padding on axis {j}"),
                ));
            }
            if own {
                geometry.stride[j] = geo.stride[j];
                geometry.dilation[j] = geo.dilation[j];
                geometry.padding[j] = geo.padding[j];
            }
        }
        let (out_c, in_c) = (w.shape()[0], w.shape()[1]);
        let core = match axis {
            None if i == 0 => {
                // W_0 (r_1, in, 1..) -> G_0 (1, in, r_1).
                let m = w
                    .to_shape((out_c, in_c))
                    .expect("pointwise")
                    .reversed_axes();
                m.to_owned().insert_axis(ndarray::Axis(0))
            }
            None => {
                // W_{d+1} (out, r, 1..) -> G_{d+1} (r, out, 1).
                let m = w
                    .to_shape((out_c, in_c))
                    .expect("pointwise")
                    .reversed_axes();
                m.to_owned().insert_axis(ndarray::Axis(2))
            }
            Some(j) => {
                // W_j (r_{j+1}, r_j, .., k_j, ..) -> G (r_j, k_j, r_{j+1}).
                let k = attrs.kernel[j];
                let m = w
                    .to_shape((out_c, in_c, k))
                    .expect("one spatial axis above 1");
                m.permuted_axes([1, 2, 0]).as_standard_layout().into_owned()
            }
        };
        cores.push(core);
        let has_bias = node.input.get(2).is_some_and(|b| !b.is_empty());
        if has_bias && i + 1 < n {
            return Err(bad(i, "a bias before the last node".into()));
        }
        if has_bias {
            let b = weight(node, i, 2)?;
            bias = Some(Array1::from_iter(b.iter().copied()));
        }
    }
    if g.output.first().map(|o| &o.name) != g.node[n - 1].output.first() {
        return Err(Error::invalid(
            "TT chain",
            "the last node does not write the graph output",
        ));
    }
    let tt = tt_from_cores(cores)?;
    Ok(build_layer(tt, bias.as_ref(), Some(&geometry))?)
}
