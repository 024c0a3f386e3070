//! safetensors files, through the `safetensors` crate (which validates the header: offsets in
//! bounds, contiguous, non-overlapping, sizes consistent with dtype and shape).

use std::collections::HashMap;

use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::tensor::{Checkpoint, DType, Limits, Tensor};

fn from_st(dtype: StDtype, name: &str) -> Result<DType> {
    Ok(match dtype {
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        StDtype::I8 => DType::I8,
        StDtype::I16 => DType::I16,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        StDtype::U8 => DType::U8,
        StDtype::BOOL => DType::Bool,
        other => {
            return Err(Error::UnsupportedDtype {
                tensor: name.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    })
}

fn to_st(dtype: DType) -> StDtype {
    match dtype {
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::I8 => StDtype::I8,
        DType::I16 => StDtype::I16,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::U8 => StDtype::U8,
        DType::Bool => StDtype::BOOL,
    }
}

/// Whether `bytes` can be a safetensors file: an 8-byte header length followed by `{`.
pub(crate) fn looks_like(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[8] == b'{'
}

/// Reads a safetensors file held in memory. Tensors come in the order of their data offsets
/// (the order the writer laid them out).
pub(crate) fn read(bytes: &[u8], limits: &Limits) -> Result<Checkpoint> {
    let what = "safetensors header";
    if bytes.len() < 8 {
        return Err(Error::Truncated {
            what: what.into(),
            needed: 8,
            available: bytes.len() as u64,
        });
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    Limits::check(what, header_len, limits.max_header_bytes)?;
    if header_len > bytes.len() as u64 - 8 {
        return Err(Error::Truncated {
            what: what.into(),
            needed: header_len,
            available: bytes.len() as u64 - 8,
        });
    }
    let st_err =
        |e: safetensors::SafeTensorError| Error::corrupt("safetensors file", e.to_string());
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
    let file = SafeTensors::deserialize(bytes).map_err(st_err)?;
    if file.len() > limits.max_tensors {
        return Err(Error::TooLarge {
            what: "tensor count".into(),
            size: file.len() as u64,
            limit: limits.max_tensors as u64,
        });
    }
    let mut named: Vec<(usize, String, Tensor)> = Vec::with_capacity(file.len());
    for (name, view) in file.iter() {
        let dtype = from_st(view.dtype(), name)?;
        let data = view.data();
        Limits::check(
            &format!("tensor `{name}`"),
            data.len() as u64,
            limits.max_tensor_bytes,
        )?;
        let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
        let tensor = Tensor::from_bytes(dtype, view.shape().to_vec(), data.to_vec())?;
        named.push((start, name.to_string(), tensor));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(Checkpoint {
        tensors: named.into_iter().map(|(_, n, t)| (n, t)).collect(),
        metadata,
    })
}

/// Serialises a checkpoint to safetensors bytes (metadata as `__metadata__`).
pub(crate) fn to_bytes(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    let mut views = Vec::with_capacity(checkpoint.tensors.len());
    for (name, t) in &checkpoint.tensors {
        let view = TensorView::new(to_st(t.dtype()), t.shape().to_vec(), t.bytes())
            .map_err(|e| Error::corrupt(format!("tensor `{name}`"), e.to_string()))?;
        views.push((name.as_str(), view));
    }
    let metadata: Option<HashMap<String, String>> = if checkpoint.metadata.is_empty() {
        None
    } else {
        Some(checkpoint.metadata.clone().into_iter().collect())
    };
    safetensors::tensor::serialize(views, metadata)
        .map_err(|e| Error::corrupt("safetensors output", e.to_string()))
}
