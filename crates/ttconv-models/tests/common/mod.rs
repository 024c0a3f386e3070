//! Helpers shared by the test files.
#![allow(dead_code)]

use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use ttconv_models::{Checkpoint, Limits, TtTensor, read_checkpoint};

/// A file of `tests/data`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn read(name: &str) -> Checkpoint {
    read_checkpoint(data(name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// f32 values of a little-endian f32 tensor.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The kernel `(out, in, k..)` of a TT, by the definition (a sum over every rank index path),
/// in f64: independent of the library's reconstruction.
pub fn naive_kernel(tt: &TtTensor<f32>) -> ArrayD<f64> {
    let shape = tt.shape();
    let n = shape.len();
    let mut kshape = vec![shape[n - 1]];
    kshape.extend_from_slice(&shape[..n - 1]);
    ArrayD::from_shape_fn(IxDyn(&kshape), |idx| {
        // TT index: (in, k.., out) = (idx[1..], idx[0])
        let mut t: Vec<usize> = (1..n).map(|a| idx[a]).collect();
        t.push(idx[0]);
        let mut row = vec![1.0f64];
        for (k, core) in tt.cores().iter().enumerate() {
            let (r0, _, r1) = core.dim();
            let mut next = vec![0.0f64; r1];
            for a in 0..r0 {
                for b in 0..r1 {
                    next[b] += row[a] * f64::from(core[[a, t[k], b]]);
                }
            }
            row = next;
        }
        row[0]
    })
}

/// `||a - b||_F / ||a||_F` in f64.
pub fn rel_err(a: &ArrayD<f32>, b: &ArrayD<f64>) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in a.iter().zip(b.iter()) {
        let x = f64::from(*x);
        num += (x - y) * (x - y);
        den += x * x;
    }
    (num / den).sqrt()
}
