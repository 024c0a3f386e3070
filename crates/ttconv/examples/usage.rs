//! The README's usage example: decompose a dense 3x3 kernel at TT rank 8, run it, print the
//! compression ratio and the error.

use ndarray::{ArrayD, IxDyn};
use ttconv::{Backend, ConvGeometry, Implementation, RankSpec, Truncation, TtConv};
use ttconv_cpu::CpuBackend;

fn main() -> Result<(), ttconv::Error> {
    let kernel = ArrayD::from_shape_fn(IxDyn(&[32, 16, 3, 3]), |i| {
        ((i[0] * 7 + i[1] * 3 + i[2] + 2 * i[3]) % 11) as f32 / 11.0 - 0.5
    });
    let (layer, report) = TtConv::from_dense(
        kernel.view(),
        None,
        &ConvGeometry::new().padding(1),
        &Truncation::rank(RankSpec::Uniform(8)),
    )?;
    println!(
        "ranks {:?}, compression {:.1}x, kernel relative error {:.2e}",
        layer.ranks(),
        layer.compression_ratio(),
        report.rel_error,
    );
    let cpu = CpuBackend::new();
    let x = ArrayD::from_shape_fn(IxDyn(&[2, 16, 28, 28]), |i| {
        // Pseudo-random values in [-0.5, 0.5): a multiplicative hash of the index.
        let h = (i[0] * 7919 + i[1] * 104_729 + i[2] * 1_299_709 + i[3] * 15_485_863) % 1000;
        h as f32 / 1000.0 - 0.5
    });
    let y = layer.forward_with(&cpu, x.view(), Implementation::Factorized)?;
    // The original dense layer, run by the same backend.
    let dense = cpu.conv_dense(
        &cpu.upload(x.view())?,
        &cpu.upload_weights(kernel.view())?,
        None,
        layer.geometry(),
    )?;
    let num: f32 = y
        .iter()
        .zip(dense.iter())
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    let den: f32 = dense.iter().map(|b| b * b).sum();
    println!(
        "output {:?}, relative error against the dense layer {:.2e}",
        y.shape(),
        (num / den).sqrt()
    );
    Ok(())
}
