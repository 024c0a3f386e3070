//! Whatever a reader accepts must also go through the TT layer reader and the writer without a
//! panic (factor names with bad shapes, bad metadata JSON, ...).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ttconv_models::{Limits, checkpoint_to_bytes, find_tt_layers, parse_checkpoint};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_file_bytes: 1 << 24,
        max_tensor_bytes: 1 << 24,
        max_header_bytes: 1 << 20,
        max_tensors: 10_000,
    };
    if let Ok(ckpt) = parse_checkpoint(data, &limits) {
        let _ = find_tt_layers(&ckpt);
        if let Ok(bytes) = checkpoint_to_bytes(&ckpt) {
            parse_checkpoint(&bytes, &limits).expect("our own output reads back");
        }
    }
});
