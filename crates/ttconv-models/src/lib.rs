//! Model files for ttconv: checkpoints in, TT layers out.
//!
//! - Reading: safetensors, and PyTorch `.pt` / `.pth` in the zip and the legacy format
//!   ([`read_checkpoint`]), through a restricted pickle reader that refuses every global but the
//!   tensor-rebuilding ones; strides honoured; f16 / bf16 / f32 / f64 and integer tensors.
//! - TT layers under TensorLy-Torch 0.5's names ([`find_tt_layers`], [`insert_tt_layer`]), with a
//!   `ttconv` JSON metadata entry per layer ([`TtMetadata`]); one [`ttconv::TtConv`] saved and
//!   loaded the same way ([`save_layer`], [`load_layer`]).
//! - [`compress`]: a [`Policy`] over a whole checkpoint, returning the new checkpoint and a
//!   [`Report`]; [`decompress`] turns TT layers back into dense kernels.
//!
//! Every size a file announces is checked against [`Limits`] before allocation; bad files give
//! an [`Error`], never a panic. Output is written atomically ([`write_checkpoint`]).

mod budget;
mod compress;
mod error;
mod file;
mod kernels;
mod layer_bridge;
mod meta;
mod pickle;
mod policy;
mod report;
mod st;
mod tensor;
mod torch;
mod tt_layers;

pub use budget::{Spectrum, allocate_ranks};
pub use compress::{Progress, ReportOptions, compress};
pub use error::{Error, Result};
pub use file::{
    Format, checkpoint_to_bytes, detect_format, parse_checkpoint, read_checkpoint, write_atomic,
    write_checkpoint,
};
pub use kernels::{KernelInput, KernelOutcome, compress_kernels};
pub use layer_bridge::{TtTensor, build_layer, layer_parts};
pub use meta::{Geometry, LayerMeta, METADATA_KEY, TtMetadata};
pub use policy::{Pattern, Policy, RankRule, SkipReason, Target, is_kernel_candidate, layer_name};
pub use report::{LayerReport, Macs, Outcome, Report, Totals};
pub use tensor::{Checkpoint, DType, Limits, Tensor};
pub use tt_layers::{
    TtLayer, decompress, find_tt_layers, insert_tt_layer, is_factor_name, layer_checkpoint,
    load_layer, save_layer, tt_from_cores,
};
