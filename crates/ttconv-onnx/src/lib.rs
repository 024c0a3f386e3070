//! ONNX models for ttconv: every eligible `Conv` of a graph becomes its TT chain of plain `Conv`
//! nodes, so the compressed model runs in any ONNX runtime without a custom operator.
//!
//! - [`read_model`] / [`parse_model`] / [`write_model`]: `.onnx` files through the protobuf
//!   messages of [`proto`] (the whole schema, so nothing the tool does not touch is lost);
//!   written atomically, never over the input.
//! - [`compress`]: a [`ttconv_models::Policy`] (the one checkpoints use) over a model; see
//!   [`chain`] for the chain's nodes and weights.
//! - [`Runtime`] and [`verify`]: the original and the compressed model run on the same inputs in
//!   ONNX Runtime (loaded from its library file), with each output's relative error.
//!
//! Bad files give an [`Error`], never a panic.

mod calibrate;
pub mod chain;
mod check;
mod compress;
pub mod conv;
mod error;
mod export;
pub mod graph;
mod model;
pub mod moments;
pub mod proto;
mod runtime;
pub mod tensor;
mod verify;

pub use calibrate::{
    CalibrationOptions, FitMethod, LayerFit, Sample, compress_calibrated, conv_input_shapes,
};
pub use check::{check_model, duplicate_node_names};
pub use compress::{InputShapes, compress, compress_at, parameter_count};
pub use error::{Error, Result};
pub use export::{EXPORT_OPSET, export_layer, import_layer};
pub use model::{MAX_MODEL_BYTES, model_to_bytes, parse_model, read_model, write_model};
pub use runtime::{Runtime, Value};
pub use tt_core::FitOptions;
pub use verify::{
    InputSpec, OutputError, Verification, input_specs, output_errors, random_inputs, read_inputs,
    read_samples, verify,
};
