//! The `ttconv` entry of a safetensors file's `__metadata__`: JSON describing each TT layer.
//!
//! ```json
//! {"format": 1, "layers": {"features.0": {"ranks": [1, 8, 4, 12, 1], "kernel_shape": [16, 8, 3, 3],
//!   "order": 2, "rel_error": 0.12, "stride": [1, 1], "padding": [[1, 1], [1, 1]], "dilation": [1, 1]}}}
//! ```
//! `stride` / `padding` (`[before, after]` per spatial mode) / `dilation` are present when known
//! (a state_dict does not record them). Reading is lenient: every field but `ranks` may be absent,
//! so files written by other tools with a subset of the fields are read too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The metadata key.
pub const METADATA_KEY: &str = "ttconv";

/// Stride, padding (`[before, after]`) and dilation per spatial mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    /// Stride per mode.
    pub stride: Vec<usize>,
    /// Zero padding `[before, after]` per mode.
    pub padding: Vec<[usize; 2]>,
    /// Dilation per mode.
    pub dilation: Vec<usize>,
}

impl Geometry {
    /// Stride 1, no padding, dilation 1 on `order` modes.
    pub fn unit(order: usize) -> Self {
        Self {
            stride: vec![1; order],
            padding: vec![[0, 0]; order],
            dilation: vec![1; order],
        }
    }

    /// Stride 1, dilation 1, padding `(k - 1) / 2` per mode (the output keeps the input's size
    /// for odd kernels): what most CNN layers use, assumed when a file does not say.
    pub fn same_like(kernel: &[usize]) -> Self {
        Self {
            stride: vec![1; kernel.len()],
            padding: kernel.iter().map(|k| [(k - 1) / 2, (k - 1) / 2]).collect(),
            dilation: vec![1; kernel.len()],
        }
    }

    /// The geometry of the layer crate's per-axis form.
    pub fn from_axes(axes: &[ttconv::AxisGeometry]) -> Self {
        Self {
            stride: axes.iter().map(|a| a.stride).collect(),
            padding: axes.iter().map(|a| [a.pad_before, a.pad_after]).collect(),
            dilation: axes.iter().map(|a| a.dilation).collect(),
        }
    }

    /// Number of spatial modes.
    pub fn order(&self) -> usize {
        self.stride.len()
    }
}

/// What the file records about one TT layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// Exact TT ranks `[1, r_1, .., r_{d+1}, 1]` (a TensorLy-Torch loader builds the layer with
    /// `rank=` this list, since its own rank resolution does not clip).
    pub ranks: Vec<usize>,
    /// Kernel shape `(out, in, k_1..k_d)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_shape: Option<Vec<usize>>,
    /// Number of spatial modes `d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<usize>,
    /// `||W - W_tt||_F / ||W||_F` of the decomposition that produced the cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_error: Option<f64>,
    /// Stride per mode, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Vec<usize>>,
    /// Padding `[before, after]` per mode, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<Vec<[usize; 2]>>,
    /// Dilation per mode, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dilation: Option<Vec<usize>>,
}

impl LayerMeta {
    /// The geometry, when all three parts are recorded and agree in length.
    pub fn geometry(&self) -> Option<Geometry> {
        let g = Geometry {
            stride: self.stride.clone()?,
            padding: self.padding.clone()?,
            dilation: self.dilation.clone()?,
        };
        (g.padding.len() == g.order() && g.dilation.len() == g.order()).then_some(g)
    }

    /// Records `geometry` (or clears it).
    pub fn set_geometry(&mut self, geometry: Option<&Geometry>) {
        self.stride = geometry.map(|g| g.stride.clone());
        self.padding = geometry.map(|g| g.padding.clone());
        self.dilation = geometry.map(|g| g.dilation.clone());
    }
}

/// The whole `ttconv` metadata entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TtMetadata {
    /// Version of this layout (1).
    #[serde(default = "one")]
    pub format: u32,
    /// Per layer prefix.
    #[serde(default)]
    pub layers: BTreeMap<String, LayerMeta>,
}

fn one() -> u32 {
    1
}

impl TtMetadata {
    /// Parses the entry from a checkpoint's metadata (empty when absent).
    pub fn from_metadata(metadata: &BTreeMap<String, String>) -> Result<Self> {
        match metadata.get(METADATA_KEY) {
            None => Ok(Self {
                format: 1,
                layers: BTreeMap::new(),
            }),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                Error::corrupt("`ttconv` metadata", format!("not the expected JSON ({e})"))
            }),
        }
    }

    /// Stores the entry into a checkpoint's metadata (removes it when there are no layers).
    pub fn store(&self, metadata: &mut BTreeMap<String, String>) {
        if self.layers.is_empty() {
            metadata.remove(METADATA_KEY);
        } else {
            metadata.insert(
                METADATA_KEY.to_string(),
                serde_json::to_string(self).expect("plain data serialises"),
            );
        }
    }
}
