//! Reading and writing `.onnx` files.

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::proto::ModelProto;

/// Protobuf messages cannot exceed 2 GiB; ONNX models above that keep their weights in external
/// files, which this crate does not read.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Decodes a model from its bytes; an error when they are not a `ModelProto` with a graph.
///
/// Decoding is bounded by the input: every length prefix is checked against the bytes left and
/// nesting is limited (prost's recursion limit), so a hostile file fails instead of allocating or
/// recursing without bound.
pub fn parse_model(bytes: &[u8]) -> Result<ModelProto> {
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(Error::TooLarge {
            what: "ONNX model".into(),
            size: bytes.len() as u64,
            limit: MAX_MODEL_BYTES,
        });
    }
    let model = ModelProto::decode(bytes)?;
    if model.graph.is_none() {
        return Err(Error::invalid("model", "no graph"));
    }
    if model.ir_version <= 0 {
        return Err(Error::invalid(
            "model",
            format!(
                "ir_version {} (a positive version expected)",
                model.ir_version
            ),
        ));
    }
    Ok(model)
}

/// Reads and decodes a model file ([`parse_model`]).
pub fn read_model(path: impl AsRef<Path>) -> Result<ModelProto> {
    let path = path.as_ref();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_MODEL_BYTES {
        return Err(Error::TooLarge {
            what: format!("{}", path.display()),
            size,
            limit: MAX_MODEL_BYTES,
        });
    }
    parse_model(&std::fs::read(path).map_err(io)?)
}

/// The model's protobuf bytes.
pub fn model_to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Writes a model atomically (temporary file, then rename), refusing to overwrite `input`.
pub fn write_model(path: impl AsRef<Path>, model: &ModelProto, input: Option<&Path>) -> Result<()> {
    Ok(ttconv_models::write_atomic(
        path,
        &model_to_bytes(model),
        input,
    )?)
}
