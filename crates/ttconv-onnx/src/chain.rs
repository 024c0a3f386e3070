//! A TT convolution as ONNX: `d + 2` plain `Conv` nodes and their weights.
//!
//! For a kernel `W (out, in, k_1..k_d)` with TT cores `G_0 (1, in, r_1)`,
//! `G_j (r_j, k_j, r_{j+1})` (`j = 1..d`) and `G_{d+1} (r_{d+1}, out, 1)`, the layer's factorized
//! forward (the steps of `ttconv::FactorizedProgram` without merged cores) is
//!
//! 1. a pointwise Conv `in -> r_1` with weight `W_0[b, c, 1..] = G_0[0, c, b]`;
//! 2. for each spatial axis `j`, a Conv `r_j -> r_{j+1}` with kernel `k_j` along axis `j` and 1
//!    elsewhere, weight `W_j[b, a, .., t, ..] = G_j[a, t, b]`, carrying axis `j`'s stride,
//!    dilation and padding only;
//! 3. a pointwise Conv `r_{d+1} -> out` with weight `W_{d+1}[o, a, 1..] = G_{d+1}[a, o, 0]` and
//!    the original bias.
//!
//! Each step's output along axis `j` is what the original Conv computes along `j`, since every
//! other step has kernel 1 and stride 1 there; so the chain's output has the original's shape and,
//! at full rank, its values.

use ndarray::{ArrayD, IxDyn};
use ttconv_models::{DType, TtTensor};

use crate::conv::ConvAttrs;
use crate::error::Result;
use crate::proto::{NodeProto, TensorProto};
use crate::tensor::from_f32;

/// The chain's `d + 2` Conv weights for `tt` (shapes in the module docs), in `dtype`, named
/// `names[i]`.
pub fn chain_weights(
    tt: &TtTensor<f32>,
    dtype: DType,
    names: &[String],
) -> Result<Vec<TensorProto>> {
    let cores = tt.cores();
    let n = cores.len();
    let d = n - 2;
    assert_eq!(names.len(), n, "one name per core");
    let mut out = Vec::with_capacity(n);
    for (i, core) in cores.iter().enumerate() {
        let (ra, k, rb) = core.dim();
        // (r_i, n_i, r_{i+1}) -> the Conv weight (out channels, in channels, spatial..).
        let (shape, perm): (Vec<usize>, [usize; 3]) = if i == 0 {
            let mut s = vec![rb, k];
            s.extend(vec![1; d]);
            (s, [2, 1, 0])
        } else if i == n - 1 {
            let mut s = vec![k, ra];
            s.extend(vec![1; d]);
            (s, [1, 0, 2])
        } else {
            let mut s = vec![rb, ra];
            s.extend((0..d).map(|j| if j + 1 == i { k } else { 1 }));
            (s, [2, 0, 1])
        };
        let permuted = core.view().permuted_axes(perm);
        let values: Vec<f32> = permuted.iter().copied().collect();
        let w = ArrayD::from_shape_vec(IxDyn(&shape), values)
            .expect("the permuted core holds r_a k r_b values in this order");
        out.push(from_f32(&names[i], &w, dtype)?);
    }
    Ok(out)
}

/// Names for one chain: its nodes and the values between them.
#[derive(Clone, Debug)]
pub struct ChainNames {
    /// The `d + 2` node names.
    pub nodes: Vec<String>,
    /// The `d + 1` intermediate values (the last node writes the original output).
    pub values: Vec<String>,
}

/// The chain's nodes replacing `conv` (a Conv node with geometry `attrs`), reading the weights
/// named `weights` (as made by [`chain_weights`]).
pub fn chain_nodes(
    conv: &NodeProto,
    attrs: &ConvAttrs,
    weights: &[String],
    names: &ChainNames,
) -> Vec<NodeProto> {
    let d = attrs.order();
    let node = |i: usize, input: &str, attribute, bias: Option<&String>, output: &str| {
        let mut inputs = vec![input.to_string(), weights[i].clone()];
        if let Some(b) = bias {
            inputs.push(b.clone());
        }
        NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: names.nodes[i].clone(),
            op_type: "Conv".into(),
            attribute,
            ..NodeProto::default()
        }
    };
    let mut nodes = Vec::with_capacity(d + 2);
    let mut first = node(
        0,
        &conv.input[0],
        attrs.pointwise_attributes(),
        None,
        &names.values[0],
    );
    first.doc_string = format!(
        "ttconv: TT chain of Conv \"{}\" ({} nodes), kernel {:?}",
        conv.name,
        d + 2,
        attrs.kernel
    );
    nodes.push(first);
    for j in 0..d {
        nodes.push(node(
            j + 1,
            &names.values[j],
            attrs.axis_attributes(j),
            None,
            &names.values[j + 1],
        ));
    }
    let bias = conv.input.get(2).filter(|b| !b.is_empty());
    nodes.push(node(
        d + 1,
        &names.values[d],
        attrs.pointwise_attributes(),
        bias,
        &conv.output[0],
    ));
    nodes
}
