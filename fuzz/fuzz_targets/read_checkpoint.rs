//! Any bytes through every reader (format detected from content: safetensors, torch zip, torch
//! legacy): an error is fine, a panic, a hang or a huge allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ttconv_models::{Limits, parse_checkpoint};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_file_bytes: 1 << 24,
        max_tensor_bytes: 1 << 24,
        max_header_bytes: 1 << 20,
        max_tensors: 10_000,
    };
    let _ = parse_checkpoint(data, &limits);
});
