//! Distillation: fit a randomly initialised TT conv to a fixed dense 2-D convolution by Adam on
//! the mean squared output error over random inputs, then compare with the TT-SVD of the dense
//! kernel at the same rank.
//!
//! ```text
//! cargo run --release --example distill -- [RANK] [STEPS]
//! ```
//! The teacher is a 16 -> 16 channel 3x3 convolution whose kernel is a random TT of rank 6 plus
//! 5% dense noise: a dense kernel with a decaying TT spectrum, as trained kernels have.

use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ttconv::{
    Adam, ConvGeometry, Implementation, Init, Optimizer, Padding, RankSpec, Truncation, TtConv,
    TtConvConfig, TtTensor,
};
use ttconv_cpu::CpuBackend;

const CHANNELS: usize = 16;
const SIZE: usize = 12;
const BATCH: usize = 8;

fn random_input(rng: &mut StdRng) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(&[BATCH, CHANNELS, SIZE, SIZE]), || {
        rng.random::<f32>() * 2.0 - 1.0
    })
}

fn mse(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rank: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(600);
    let cpu = CpuBackend::new();
    let mut rng = StdRng::seed_from_u64(2026);

    // Teacher: a dense kernel (out, in, 3, 3) with a decaying TT spectrum.
    let low = TtTensor::<f64>::random(&[CHANNELS, 3, 3, CHANNELS], &[1, 6, 6, 6, 1], 1.0, 7)?;
    let mut kernel = low
        .to_dense()?
        .permuted_axes(IxDyn(&[3, 0, 1, 2]))
        .mapv(|v| v as f32);
    let norm = (kernel.iter().map(|v| v * v).sum::<f32>() / kernel.len() as f32).sqrt();
    kernel.mapv_inplace(|v| 0.1 * v / norm + 0.005 * (rng.random::<f32>() * 2.0 - 1.0));
    let teacher = TtConv::from_dense(
        kernel.view(),
        None,
        &ConvGeometry::new().padding(1),
        &Truncation::rank(RankSpec::Uniform(10_000)),
    )?
    .0;

    let config = TtConvConfig::new(CHANNELS, CHANNELS, vec![3, 3])
        .padding(Padding::All(1))
        .rank(RankSpec::Uniform(rank));
    let mut student = TtConv::new(config)?;
    student.init_from_random(Init::Direct, 1)?;
    let mut adam = Adam::new(0.01);

    let probe = random_input(&mut rng);
    let probe_target = teacher.forward_with(&cpu, probe.view(), Implementation::Reconstructed)?;
    let start = mse(&student.forward(&cpu, probe.view())?, &probe_target);
    println!("distilling a rank-{rank} TT conv into a 16->16 3x3 dense conv, {steps} Adam steps");
    println!("step {:>5}  probe mse {:.4e}", 0, start);
    let t0 = Instant::now();
    for step in 1..=steps {
        let x = random_input(&mut rng);
        let target = teacher.forward_with(&cpu, x.view(), Implementation::Reconstructed)?;
        let y = student.forward(&cpu, x.view())?;
        // d/dy of mean((y - t)^2)
        let scale = 2.0 / y.len() as f32;
        let gy = (&y - &target).mapv(|v| v * scale);
        let grads = student
            .forward_backward(&cpu, x.view(), gy.view(), Implementation::Factorized, false)
            .map(|(_, grads)| grads)?;
        adam.step(&mut student, &grads)?;
        if step % (steps / 12).max(1) == 0 || step == steps {
            let loss = mse(&student.forward(&cpu, probe.view())?, &probe_target);
            println!(
                "step {step:>5}  probe mse {loss:.4e}  ({:.3}% of start)",
                100.0 * loss / start
            );
        }
    }
    let end = mse(&student.forward(&cpu, probe.view())?, &probe_target);
    let kernel_err = {
        let w = student.full_weights();
        let num: f32 = w
            .iter()
            .zip(kernel.iter())
            .map(|(a, b)| (a - b).powi(2))
            .sum();
        let den: f32 = kernel.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    };
    let (svd_layer, report) = TtConv::from_dense(
        kernel.view(),
        None,
        &ConvGeometry::new().padding(1),
        &Truncation::rank(RankSpec::Uniform(rank)),
    )?;
    let svd_mse = mse(&svd_layer.forward(&cpu, probe.view())?, &probe_target);
    println!(
        "final: probe mse {end:.4e} = {:.2}% of start, kernel relative error {kernel_err:.4} ({:.1} s)",
        100.0 * end / start,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "TT-SVD at the same rank: kernel relative error {:.4}, probe mse {svd_mse:.4e}",
        report.rel_error
    );
    Ok(())
}
