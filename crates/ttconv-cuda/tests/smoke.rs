//! The first thing the GPU check runs: does this machine's CUDA work at all? Opens the backend,
//! prints the CUDA library files the process loaded (`/proc/self/maps`), then allocates,
//! launches one kernel and one cuBLAS GEMM, copies back and compares, and prints one line. An
//! environment failure (a library that does not load, stream-ordered allocation refused, a
//! CUBIN the driver rejects) shows here in seconds, before the long suites.
//!
//! Without a usable CUDA it prints `skipped: <reason>` (and fails under
//! `TTCONV_REQUIRE_CUDA=1`, like every CUDA test).

mod common;

use std::time::Instant;

use common::{backend, random};
use ndarray::{ArrayD, Axis, IxDyn};
use ttconv::Backend;
use ttconv_cuda::{CudaBackend, loaded_cuda_libraries};

fn print_loaded_libraries() {
    let libs = loaded_cuda_libraries();
    if libs.is_empty() {
        println!("smoke: loaded CUDA libraries: none");
    }
    for lib in libs {
        println!("smoke: loaded {}", lib.display());
    }
}

#[test]
fn smoke_allocate_launch_copy_back_compare() {
    let t0 = Instant::now();
    let gpu = backend();
    print_loaded_libraries();
    let Some(gpu) = gpu else { return };
    let cuda: &CudaBackend = &gpu;

    // A kernel launch: y = x + bias (one f32 addition per element, so the same bits as here).
    let x = random(&[2, 3, 5], 1);
    let bias = random(&[3], 2);
    let y = cuda
        .add_bias(
            cuda.upload(x.view()).unwrap(),
            &cuda.upload_weights(bias.view()).unwrap(),
        )
        .unwrap();
    let got = cuda.download(&y).unwrap();
    let want = ArrayD::from_shape_fn(IxDyn(&[2, 3, 5]), |i| x[[i[0], i[1], i[2]]] + bias[[i[1]]]);
    assert_eq!(got, want, "bias kernel");

    // A cuBLAS GEMM: the channel contraction z[b, o, m] = sum_c w[c, o] x[b, c, m].
    let w = random(&[3, 4], 3);
    let z = cuda
        .contract_channels(
            &cuda.upload(x.view()).unwrap(),
            &cuda.upload_weights(w.view()).unwrap(),
            None,
        )
        .unwrap();
    let got = cuda.download(&z).unwrap();
    let want = ArrayD::from_shape_fn(IxDyn(&[2, 4, 5]), |i| {
        (0..3)
            .map(|c| w[[c, i[1]]] * x[[i[0], c, i[2]]])
            .sum::<f32>()
    });
    // Three products summed in f32 in some order: a few roundings of values below 3.
    let worst = (&got - &want).iter().fold(0f32, |m, d| m.max(d.abs()));
    assert!(worst <= 1e-5, "cuBLAS GEMM differs by {worst}");

    println!(
        "smoke: ok on {} ({}, kernels {}): allocate, launch a kernel and a GEMM, copy back, \
         compare, in {:.2} s",
        cuda.device_name(),
        cuda.name(),
        cuda.compile_target(),
        t0.elapsed().as_secs_f64()
    );
}

/// A tensor dropped on a thread that never made a CUDA call is freed there without leaving an
/// error behind (the backend binds the context before freeing).
#[test]
fn tensor_dropped_on_a_fresh_thread_leaves_no_error() {
    let Some(gpu) = backend() else { return };
    let cuda: &CudaBackend = &gpu;
    let x = random(&[4, 8, 16], 4);
    let tensors: Vec<_> = (0..4).map(|_| cuda.upload(x.view()).unwrap()).collect();
    cuda.synchronize().unwrap();
    std::thread::spawn(move || drop(tensors))
        .join()
        .expect("the dropping thread panicked");
    // A free that failed would be recorded and returned by the next checked call.
    cuda.synchronize()
        .expect("an error was left behind by the free");
    let y = cuda.upload(x.view()).unwrap();
    assert_eq!(
        cuda.download(&y).unwrap().sum_axis(Axis(0)),
        x.sum_axis(Axis(0))
    );
}
