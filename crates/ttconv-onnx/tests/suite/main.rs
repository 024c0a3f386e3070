//! The ttconv-onnx suites, in one test binary (one link instead of six):
//! - `geometry`: every Conv geometry through the rewrite, on the oracle and in ONNX Runtime;
//! - `graphs`: shared and Constant weights, subgraphs, skip reasons, preserved graph parts;
//! - `real_models`: basic-pitch and silero-vad from `tests/golden/onnx`;
//! - `malformed`: hostile and inconsistent files;
//! - `calibration`: data-aware fitting on a synthetic CNN;
//! - `export`: one `TtConv` to ONNX and back.
//!
//! Tests that need ONNX Runtime print `skipped: <reason>` without it (see `common::runtime`).

mod calibration;
#[allow(dead_code)]
mod common;
mod export;
mod geometry;
mod graphs;
mod malformed;
mod real_models;
