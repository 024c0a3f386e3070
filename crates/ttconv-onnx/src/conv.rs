//! A `Conv` node's attributes, validated against its weight, and the attributes of the per-axis
//! convolutions of its TT chain.
//!
//! ONNX `Conv` (opset 1..22): `X (N, C, D_1..D_d)`, `W (M, C/group, k_1..k_d)`, optional `B (M)`;
//! attributes `kernel_shape`, `strides`, `dilations`, `pads` (`[b_1..b_d, e_1..e_d]`), `group`,
//! `auto_pad` (`NOTSET`, `SAME_UPPER`, `SAME_LOWER`, `VALID`).

use crate::error::{Error, Result};
use crate::proto::{AttributeProto, NodeProto, attribute_type};
use ttconv::AxisGeometry;
use ttconv_models::Geometry;

/// How the padding is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads`.
    NotSet,
    /// The output is `ceil(D / s)`; an odd padding total puts the extra at the end.
    SameUpper,
    /// As `SameUpper` with the extra at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    fn name(self) -> &'static str {
        match self {
            AutoPad::NotSet => "NOTSET",
            AutoPad::SameUpper => "SAME_UPPER",
            AutoPad::SameLower => "SAME_LOWER",
            AutoPad::Valid => "VALID",
        }
    }
}

/// A Conv node's geometry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvAttrs {
    /// `k_1..k_d`.
    pub kernel: Vec<usize>,
    /// Stride per spatial axis.
    pub strides: Vec<usize>,
    /// Dilation per spatial axis.
    pub dilations: Vec<usize>,
    /// `[begin, end]` per spatial axis (zeros unless `auto_pad` is `NotSet`).
    pub pads: Vec<[usize; 2]>,
    /// The padding mode.
    pub auto_pad: AutoPad,
    /// Channel groups.
    pub group: usize,
}

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn positive(list: &[i64], what: &str, node: &str) -> Result<Vec<usize>> {
    list.iter()
        .map(|&v| {
            usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
                Error::invalid(
                    format!("Conv \"{node}\""),
                    format!("{what} {list:?}: every entry is >= 1"),
                )
            })
        })
        .collect()
}

impl ConvAttrs {
    /// Reads and checks the attributes of `node` (a `Conv`) against its weight's shape
    /// `(M, C/group, k_1..k_d)`.
    pub fn parse(node: &NodeProto, weight_shape: &[usize]) -> Result<Self> {
        let name = node.name.as_str();
        let bad = |reason: String| Error::invalid(format!("Conv \"{name}\""), reason);
        if weight_shape.len() < 3 {
            return Err(bad(format!(
                "weight of shape {weight_shape:?}: (out, in/group, k_1..k_d) with d >= 1 expected"
            )));
        }
        let d = weight_shape.len() - 2;
        let ints = |key: &str| -> Result<Option<Vec<i64>>> {
            match attribute(node, key) {
                None => Ok(None),
                Some(a) if a.r#type == attribute_type::INTS || !a.ints.is_empty() => {
                    Ok(Some(a.ints.clone()))
                }
                Some(a) => Err(bad(format!(
                    "attribute {key} of type {} (INTS expected)",
                    a.r#type
                ))),
            }
        };
        let kernel = match ints("kernel_shape")? {
            Some(k) => positive(&k, "kernel_shape", name)?,
            None => weight_shape[2..].to_vec(),
        };
        if kernel != weight_shape[2..] {
            return Err(bad(format!(
                "kernel_shape {kernel:?} does not match the weight's spatial dims {:?}",
                &weight_shape[2..]
            )));
        }
        let per_axis = |key: &str| -> Result<Vec<usize>> {
            match ints(key)? {
                None => Ok(vec![1; d]),
                Some(v) if v.len() == d => positive(&v, key, name),
                Some(v) => Err(bad(format!("{key} {v:?}: {d} entries expected"))),
            }
        };
        let strides = per_axis("strides")?;
        let dilations = per_axis("dilations")?;
        // The dilated kernel extent `(k - 1) dil + 1` must be a size (the padding formulas and
        // the layer's geometry use it).
        for j in 0..d {
            let extent = (kernel[j] - 1)
                .checked_mul(dilations[j])
                .and_then(|e| e.checked_add(1))
                .filter(|&e| e <= isize::MAX as usize);
            if extent.is_none() {
                return Err(bad(format!(
                    "kernel {} with dilation {} on axis {j}: the dilated extent overflows",
                    kernel[j], dilations[j]
                )));
            }
        }
        let auto_pad = match attribute(node, "auto_pad") {
            None => AutoPad::NotSet,
            Some(a) => match std::str::from_utf8(&a.s).unwrap_or("(not UTF-8)") {
                "" | "NOTSET" => AutoPad::NotSet,
                "SAME_UPPER" => AutoPad::SameUpper,
                "SAME_LOWER" => AutoPad::SameLower,
                "VALID" => AutoPad::Valid,
                other => return Err(bad(format!("auto_pad \"{other}\" is not an ONNX mode"))),
            },
        };
        let pads = match ints("pads")? {
            None => vec![[0, 0]; d],
            Some(p) if p.len() == 2 * d && p.iter().all(|&v| v >= 0) => {
                (0..d).map(|j| [p[j] as usize, p[j + d] as usize]).collect()
            }
            Some(p) => {
                return Err(bad(format!(
                    "pads {p:?}: {} non-negative entries [begin_1..begin_d, end_1..end_d] expected",
                    2 * d
                )));
            }
        };
        if auto_pad != AutoPad::NotSet && pads.iter().any(|p| p != &[0, 0]) {
            return Err(bad(format!(
                "auto_pad {} together with explicit pads",
                auto_pad.name()
            )));
        }
        let group = match attribute(node, "group") {
            None => 1,
            Some(a) => usize::try_from(a.i)
                .ok()
                .filter(|&g| g > 0)
                .ok_or_else(|| bad(format!("group {}: >= 1 expected", a.i)))?,
        };
        if !weight_shape[0].is_multiple_of(group) {
            return Err(bad(format!(
                "group {group} does not divide the {} output channels",
                weight_shape[0]
            )));
        }
        Ok(Self {
            kernel,
            strides,
            dilations,
            pads,
            auto_pad,
            group,
        })
    }

    /// Number of spatial axes.
    pub fn order(&self) -> usize {
        self.kernel.len()
    }

    /// The geometry as the layer crate takes it, when it does not depend on the input size
    /// (`SAME_*` with a stride above 1 does).
    pub fn geometry(&self) -> Option<Geometry> {
        let pads: Vec<[usize; 2]> = match self.auto_pad {
            AutoPad::NotSet => self.pads.clone(),
            AutoPad::Valid => vec![[0, 0]; self.order()],
            AutoPad::SameUpper | AutoPad::SameLower => {
                if self.strides.iter().any(|&s| s != 1) {
                    return None;
                }
                (0..self.order()).map(|j| self.same_pads(j)).collect()
            }
        };
        Some(Geometry {
            stride: self.strides.clone(),
            padding: pads,
            dilation: self.dilations.clone(),
        })
    }

    /// `SAME_*` padding `[before, after]` of axis `j` at stride 1: `(k - 1) dil` in total, the
    /// odd one at the end for `SAME_UPPER`, at the beginning for `SAME_LOWER`.
    fn same_pads(&self, j: usize) -> [usize; 2] {
        let total = (self.kernel[j] - 1) * self.dilations[j];
        let (small, big) = (total / 2, total - total / 2);
        if self.auto_pad == AutoPad::SameUpper {
            [small, big]
        } else {
            [big, small]
        }
    }

    /// The per-axis geometry at input spatial size `input` (`D_1..D_d`), `auto_pad` resolved as
    /// ONNX defines it: `SAME_*` pads `max(0, (ceil(D / s) - 1) s + (k - 1) dil + 1 - D)` in
    /// total, the odd one at the end for `SAME_UPPER`, at the beginning for `SAME_LOWER`.
    pub fn resolve(&self, input: &[usize]) -> Result<Vec<AxisGeometry>> {
        if input.len() != self.order() {
            return Err(Error::invalid(
                "Conv input",
                format!(
                    "{} spatial dims for a kernel of order {}",
                    input.len(),
                    self.order()
                ),
            ));
        }
        Ok((0..self.order())
            .map(|j| {
                let (s, dil, k, n) = (self.strides[j], self.dilations[j], self.kernel[j], input[j]);
                let [pad_before, pad_after] = match self.auto_pad {
                    AutoPad::NotSet => self.pads[j],
                    AutoPad::Valid => [0, 0],
                    mode => {
                        let out = n.div_ceil(s).max(1);
                        let total = ((out - 1) * s + (k - 1) * dil + 1).saturating_sub(n);
                        let (small, big) = (total / 2, total - total / 2);
                        if mode == AutoPad::SameUpper {
                            [small, big]
                        } else {
                            [big, small]
                        }
                    }
                };
                AxisGeometry {
                    stride: s,
                    dilation: dil,
                    pad_before,
                    pad_after,
                }
            })
            .collect())
    }

    /// The attributes of a pointwise (1x..x1) convolution of the same order.
    pub fn pointwise_attributes(&self) -> Vec<AttributeProto> {
        vec![ints_attribute("kernel_shape", &vec![1; self.order()])]
    }

    /// The attributes of the chain's convolution along spatial axis `axis` only: kernel `k_j`,
    /// stride `s_j`, dilation `dil_j` and that axis's padding; 1 and 0 on every other axis. The
    /// padding is explicit except for `SAME_*` with a stride above 1 on that axis, where it
    /// depends on the input size: the same `auto_pad` mode then, which pads the other axes by
    /// zero since their kernel and stride are 1.
    pub fn axis_attributes(&self, axis: usize) -> Vec<AttributeProto> {
        let d = self.order();
        let only = |v: usize, rest: usize| -> Vec<usize> {
            (0..d).map(|j| if j == axis { v } else { rest }).collect()
        };
        let mut attrs = vec![
            ints_attribute("kernel_shape", &only(self.kernel[axis], 1)),
            ints_attribute("strides", &only(self.strides[axis], 1)),
            ints_attribute("dilations", &only(self.dilations[axis], 1)),
        ];
        // SAME at stride 1 does not depend on the input size: explicit pads then, which every
        // runtime takes (ONNX Runtime refuses SAME with a dilation).
        let explicit = match self.auto_pad {
            AutoPad::NotSet => Some(self.pads[axis]),
            AutoPad::SameUpper | AutoPad::SameLower if self.strides[axis] == 1 => {
                Some(self.same_pads(axis))
            }
            _ => None,
        };
        match (explicit, self.auto_pad) {
            (Some([before, after]), _) => {
                let mut pads = only(before, 0);
                pads.extend(only(after, 0));
                attrs.push(ints_attribute("pads", &pads));
            }
            (None, mode) => attrs.push(AttributeProto {
                name: "auto_pad".into(),
                r#type: attribute_type::STRING,
                s: mode.name().as_bytes().to_vec(),
                ..AttributeProto::default()
            }),
        }
        attrs
    }
}

/// An `INTS` attribute.
pub fn ints_attribute(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..AttributeProto::default()
    }
}
