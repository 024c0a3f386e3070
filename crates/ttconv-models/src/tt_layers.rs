//! TT layers inside a checkpoint, under TensorLy-Torch 0.5's names:
//! `<prefix>.weight.factors.factor_0` `(1, in, r_1)`, `factor_j` `(r_j, k_j, r_{j+1})` for
//! j = 1..d, `factor_{d+1}` `(r_{d+1}, out, 1)`, and `<prefix>.bias` `(out,)` when there is one.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array3, Ix1, Ix3};
use ttconv::TtConv;

use crate::error::{Error, Result};
use crate::file::{read_checkpoint, write_checkpoint};
use crate::layer_bridge::{self, TtTensor};
use crate::meta::{Geometry, LayerMeta, TtMetadata};
use crate::tensor::{Checkpoint, DType, Limits, Tensor};

const FACTORS: &str = ".weight.factors.factor_";

/// One TT convolution layer found in (or to be put into) a checkpoint.
#[derive(Clone, Debug)]
pub struct TtLayer {
    /// The layer's name prefix (`features.0`).
    pub prefix: String,
    /// The kernel's TT over `(in, k_1..k_d, out)`.
    pub tt: TtTensor<f32>,
    /// The bias `(out,)`, if the checkpoint holds `<prefix>.bias` of that shape.
    pub bias: Option<Array1<f32>>,
    /// What the metadata records about the layer (ranks always; the rest when known).
    pub meta: LayerMeta,
    /// The dtype the cores are stored in.
    pub dtype: DType,
}

impl TtLayer {
    /// The kernel shape `(out, in, k_1..k_d)`.
    pub fn kernel_shape(&self) -> Vec<usize> {
        let s = self.tt.shape();
        let mut k = vec![s[s.len() - 1]];
        k.extend_from_slice(&s[..s.len() - 1]);
        k
    }

    /// Parameters of the cores.
    pub fn params(&self) -> usize {
        self.tt.num_params()
    }

    /// The layer as a [`TtConv`], with the recorded geometry (or `geometry` when the file records
    /// none; unit stride and dilation, no padding when both are absent).
    pub fn to_conv(&self, geometry: Option<&Geometry>) -> Result<TtConv> {
        let g = self.meta.geometry();
        layer_bridge::build_layer(self.tt.clone(), self.bias.as_ref(), g.as_ref().or(geometry))
            .map_err(|e| Error::Layer {
                prefix: self.prefix.clone(),
                reason: e.to_string(),
            })
    }
}

/// The TT layer prefixes of a checkpoint with, per prefix, the factor tensor names in index
/// order.
fn factor_groups(ckpt: &Checkpoint) -> Result<BTreeMap<String, Vec<String>>> {
    let mut groups: BTreeMap<String, BTreeMap<usize, String>> = BTreeMap::new();
    for (name, _) in &ckpt.tensors {
        if let Some(at) = name.rfind(FACTORS) {
            let idx = &name[at + FACTORS.len()..];
            if let Ok(i) = idx.parse::<usize>() {
                groups
                    .entry(name[..at].to_string())
                    .or_default()
                    .insert(i, name.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (prefix, by_index) in groups {
        let n = by_index.len();
        if by_index.keys().copied().ne(0..n) || n < 3 {
            return Err(Error::Layer {
                prefix,
                reason: format!(
                    "factors {:?}; factor_0..factor_{{d+1}} (at least 3) expected",
                    by_index.keys().collect::<Vec<_>>()
                ),
            });
        }
        out.insert(prefix, by_index.into_values().collect());
    }
    Ok(out)
}

/// Whether `name` belongs to a TT layer (a factor) of the checkpoint.
pub fn is_factor_name(name: &str) -> bool {
    name.rfind(FACTORS)
        .is_some_and(|at| name[at + FACTORS.len()..].parse::<usize>().is_ok())
}

/// Every TT layer of a checkpoint, in prefix order; an error when a layer's factors do not chain
/// (ranks, end ranks 1, 3-D) or its bias does not match its output channels.
pub fn find_tt_layers(ckpt: &Checkpoint) -> Result<Vec<TtLayer>> {
    let meta = TtMetadata::from_metadata(&ckpt.metadata)?;
    let mut layers = Vec::new();
    for (prefix, names) in factor_groups(ckpt)? {
        let err = |reason: String| Error::Layer {
            prefix: prefix.clone(),
            reason,
        };
        let mut cores = Vec::with_capacity(names.len());
        let mut dtype = DType::F32;
        for name in &names {
            let t = ckpt.get(name).expect("name from the checkpoint");
            dtype = t.dtype();
            let a = t.to_f32(name)?.into_dimensionality::<Ix3>().map_err(|_| {
                err(format!(
                    "`{name}` has shape {:?}, 3 axes expected",
                    t.shape()
                ))
            })?;
            cores.push(a);
        }
        let tt = layer_bridge::tt_from_cores(cores).map_err(|e| err(e.to_string()))?;
        let out = *tt.shape().last().expect("at least 3 cores");
        let bias_name = format!("{prefix}.bias");
        let bias = match ckpt.get(&bias_name) {
            None => None,
            Some(t) if t.shape() == [out] && t.dtype().is_float() => Some(
                t.to_f32(&bias_name)?
                    .into_dimensionality::<Ix1>()
                    .expect("1-D checked"),
            ),
            Some(t) => {
                return Err(err(format!(
                    "bias `{bias_name}` has shape {:?} and dtype {}, ({out},) float expected",
                    t.shape(),
                    t.dtype()
                )));
            }
        };
        let mut m = meta.layers.get(&prefix).cloned().unwrap_or_default();
        if !m.ranks.is_empty() && m.ranks != tt.ranks() {
            return Err(err(format!(
                "metadata records ranks {:?}, the factors have {:?}",
                m.ranks,
                tt.ranks()
            )));
        }
        m.ranks = tt.ranks();
        let mut layer = TtLayer {
            prefix: prefix.clone(),
            tt,
            bias,
            meta: m,
            dtype,
        };
        let kernel_shape = layer.kernel_shape();
        layer.meta.order.get_or_insert(kernel_shape.len() - 2);
        layer.meta.kernel_shape.get_or_insert(kernel_shape);
        layers.push(layer);
    }
    Ok(layers)
}

/// The factor tensors of a layer under TensorLy-Torch's names, in `dtype`.
pub(crate) fn factor_tensors(
    prefix: &str,
    tt: &TtTensor<f32>,
    dtype: DType,
) -> Vec<(String, Tensor)> {
    layer_bridge::tt_cores(tt)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                format!("{prefix}{FACTORS}{i}"),
                Tensor::from_f32_as(&c.clone().into_dyn(), dtype),
            )
        })
        .collect()
}

/// Puts a TT layer into a checkpoint: its factors (replacing any of that prefix), its bias, and
/// its entry of the `ttconv` metadata.
pub fn insert_tt_layer(ckpt: &mut Checkpoint, layer: &TtLayer) -> Result<()> {
    ckpt.tensors.retain(|(n, _)| {
        !(is_factor_name(n) && n.rfind(FACTORS).is_some_and(|at| n[..at] == layer.prefix))
    });
    for (name, t) in factor_tensors(&layer.prefix, &layer.tt, layer.dtype) {
        ckpt.insert(name, t);
    }
    if let Some(b) = &layer.bias {
        ckpt.insert(
            format!("{}.bias", layer.prefix),
            Tensor::from_f32_as(&b.clone().into_dyn(), layer.dtype),
        );
    }
    let mut meta = TtMetadata::from_metadata(&ckpt.metadata)?;
    let mut m = layer.meta.clone();
    m.ranks = layer.tt.ranks();
    m.kernel_shape = Some(layer.kernel_shape());
    m.order = Some(layer.kernel_shape().len() - 2);
    meta.layers.insert(layer.prefix.clone(), m);
    meta.store(&mut ckpt.metadata);
    Ok(())
}

/// A checkpoint holding one `TtConv` under `prefix` (geometry recorded in the metadata).
pub fn layer_checkpoint(layer: &TtConv, prefix: &str) -> Result<Checkpoint> {
    let (tt, bias, geometry) = layer_bridge::layer_parts(layer);
    let mut meta = LayerMeta::default();
    meta.set_geometry(Some(&geometry));
    let mut ckpt = Checkpoint::default();
    insert_tt_layer(
        &mut ckpt,
        &TtLayer {
            prefix: prefix.to_string(),
            tt,
            bias,
            meta,
            dtype: DType::F32,
        },
    )?;
    Ok(ckpt)
}

/// Saves one `TtConv` as a safetensors file under `prefix`, TensorLy-Torch's names, with its
/// ranks, kernel shape and geometry in the `ttconv` metadata (written atomically).
pub fn save_layer(layer: &TtConv, prefix: &str, path: impl AsRef<Path>) -> Result<()> {
    write_checkpoint(path, &layer_checkpoint(layer, prefix)?, None)
}

/// Loads the TT layer `prefix` (or the only one, when `None`) of a checkpoint file as a `TtConv`.
pub fn load_layer(path: impl AsRef<Path>, prefix: Option<&str>) -> Result<TtConv> {
    let ckpt = read_checkpoint(path, &Limits::default())?;
    let layers = find_tt_layers(&ckpt)?;
    let layer = match prefix {
        Some(p) => layers
            .iter()
            .find(|l| l.prefix == p)
            .ok_or_else(|| Error::Missing(format!("no TT layer `{p}` in the file")))?,
        None if layers.len() == 1 => &layers[0],
        None => {
            return Err(Error::Missing(format!(
                "{} TT layers in the file, name one of them",
                layers.len()
            )));
        }
    };
    layer.to_conv(None)
}

/// Replaces every TT layer by its dense kernel `<prefix>.weight` `(out, in, k..)` (reconstructed
/// in f64, stored in the cores' dtype), for fine-tuning in plain PyTorch; removes the `ttconv`
/// metadata of those layers. Returns the prefixes converted.
pub fn decompress(ckpt: &Checkpoint) -> Result<(Checkpoint, Vec<String>)> {
    let layers = find_tt_layers(ckpt)?;
    let mut out = Checkpoint {
        tensors: Vec::with_capacity(ckpt.tensors.len()),
        metadata: ckpt.metadata.clone(),
    };
    let by_prefix: BTreeMap<&str, &TtLayer> =
        layers.iter().map(|l| (l.prefix.as_str(), l)).collect();
    for (name, t) in &ckpt.tensors {
        if let Some(at) = name.rfind(FACTORS).filter(|_| is_factor_name(name)) {
            let prefix = &name[..at];
            if name.ends_with(&format!("{FACTORS}0")) {
                let layer = by_prefix[prefix];
                let w = layer_bridge::kernel_f64(&layer.tt)?.mapv(|v| v as f32);
                out.tensors.push((
                    format!("{prefix}.weight"),
                    Tensor::from_f32_as(&w, layer.dtype),
                ));
            }
            continue;
        }
        out.tensors.push((name.clone(), t.clone()));
    }
    let mut meta = TtMetadata::from_metadata(&out.metadata)?;
    for l in &layers {
        meta.layers.remove(&l.prefix);
    }
    meta.store(&mut out.metadata);
    Ok((out, layers.into_iter().map(|l| l.prefix).collect()))
}

/// Converts `Array3` cores for callers that hold them as plain arrays.
pub fn tt_from_cores(cores: Vec<Array3<f32>>) -> Result<TtTensor<f32>> {
    layer_bridge::tt_from_cores(cores)
}
