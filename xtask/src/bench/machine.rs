//! The machine's limits, measured in the same run as the benchmarks they scale: the f32 FMA peak
//! (a register-only FMA loop on every rayon thread), the memory bandwidth (STREAM-like copy and
//! triad over arrays much larger than the caches, on every rayon thread) and, for reference, what
//! a large f32 GEMM (faer, all rayon threads) reaches.
//!
//! The FMA loop runs with the widest vector extension the CPU has among AVX2+FMA and AVX-512F
//! (runtime detection); both are measured where both exist and the peak is the faster one, since
//! the GEMM engine of the CPU backend (faer) dispatches to AVX-512 where it exists. On other
//! architectures (or x86 without AVX2+FMA) a portable scalar loop stands in, and the report says so.

use std::time::Instant;

use rayon::prelude::*;
use serde_json::{Value, json};

/// The machine figures of one run.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Rayon threads everything ran on.
    pub threads: usize,
    /// Peak f32 GFLOP/s on all threads (the best FMA loop).
    pub peak_gflops: f64,
    /// Which loop gave the peak (`"avx2+fma"`, `"avx512f"`, `"scalar"`).
    pub peak_method: String,
    /// Every FMA loop measured: `(method, GFLOP/s on all threads, GFLOP/s on one thread)`.
    pub fma: Vec<(String, f64, f64)>,
    /// Main-memory bandwidth in GB/s (triad, 3 arrays, bytes read + written).
    pub bandwidth_gbs: f64,
    /// Copy bandwidth in GB/s (bytes read + written).
    pub copy_gbs: f64,
    /// Triad bandwidth in GB/s over 8 MiB: larger than L2, inside a large L3 (32 MiB on the
    /// development machine), where the bench's activations of a few MiB stay between runs.
    pub cache_gbs: f64,
    /// Bytes of the bandwidth arrays together.
    pub bandwidth_bytes: usize,
    /// GFLOP/s of a square f32 GEMM of this size on all threads (faer).
    pub gemm: (usize, f64),
    /// CPU model from /proc/cpuinfo, if readable.
    pub cpu: String,
}

impl Machine {
    /// Measures everything; `quick` shortens each measurement (and halves the arrays).
    pub fn measure(quick: bool) -> Self {
        if quick {
            Self::measure_with(2_000_000, 128 << 20, 3, 1024, 2)
        } else {
            Self::measure_with(10_000_000, 256 << 20, 6, 2048, 5)
        }
    }

    /// Token measurements for `--check` (meaningless figures; only keeps the code running).
    pub fn measure_tiny() -> Self {
        Self::measure_with(10_000, 3 << 20, 1, 64, 1)
    }

    fn measure_with(
        iters: usize,
        bytes: usize,
        passes: usize,
        gemm_n: usize,
        gemm_runs: usize,
    ) -> Self {
        let threads = rayon::current_num_threads();
        let mut fma = Vec::new();
        for method in fma_methods() {
            let all = fma_gflops(method, iters, true);
            let one = fma_gflops(method, iters, false);
            fma.push((method.name().to_string(), all, one));
        }
        let best = fma
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("the scalar loop always runs")
            .clone();
        let (copy_gbs, bandwidth_gbs) = bandwidth(bytes, passes);
        let cache_gbs = bandwidth((8 << 20).min(bytes), 4 * passes).1;
        Self {
            threads,
            peak_gflops: best.1,
            peak_method: best.0,
            fma,
            bandwidth_gbs,
            copy_gbs,
            cache_gbs,
            bandwidth_bytes: bytes,
            gemm: (gemm_n, gemm_gflops(gemm_n, gemm_runs)),
            cpu: cpu_model(),
        }
    }

    /// The figures against which a run with the CPU kernels capped at `simd` is judged: the
    /// peak of that level's FMA loop (`avx2+fma`, `scalar`) instead of the best one. Unchanged
    /// for `Auto`, or when that loop was not measured (not an x86-64 machine).
    pub fn capped(mut self, simd: ttconv_cpu::SimdLevel) -> Self {
        let name = match simd {
            ttconv_cpu::SimdLevel::Auto => return self,
            ttconv_cpu::SimdLevel::Avx2 => "avx2+fma",
            ttconv_cpu::SimdLevel::Portable => "scalar",
        };
        if let Some((method, all, _)) = self.fma.iter().find(|f| f.0 == name).cloned() {
            self.peak_gflops = all;
            self.peak_method = format!("{method} (capped by --simd)");
        }
        self
    }

    /// The JSON record (`peak_gflops`, `bandwidth_gbs`, `threads` are read by other tools).
    pub fn json(&self) -> Value {
        json!({
            "threads": self.threads,
            "peak_gflops": self.peak_gflops,
            "peak_method": format!("{} FMA loop, 12 independent accumulators per thread, all rayon threads", self.peak_method),
            "fma_loops": self.fma.iter().map(|(m, all, one)| json!({
                "method": m, "gflops_all_threads": all, "gflops_one_thread": one,
            })).collect::<Vec<_>>(),
            "bandwidth_gbs": self.bandwidth_gbs,
            "bandwidth_method": format!(
                "triad a = b + s*c over 3 f32 arrays of {} MiB in all, all rayon threads, best pass, bytes read + written",
                self.bandwidth_bytes >> 20
            ),
            "copy_gbs": self.copy_gbs,
            "cache_triad_gbs": self.cache_gbs,
            "cache_triad_method": "the same triad over 8 MiB in all (beyond L2, within a large L3)",
            "gemm_n": self.gemm.0,
            "gemm_gflops": self.gemm.1,
            "gemm_method": "faer f32 matmul n x n x n, Par::rayon(all threads), best of runs",
            "cpu": self.cpu,
        })
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        let loops: Vec<String> = self
            .fma
            .iter()
            .map(|(m, all, one)| format!("{m} {all:.0} ({one:.0} on 1 thread)"))
            .collect();
        format!(
            "machine: {}, {} thread(s); FMA peak {:.0} GFLOP/s ({}) [{}]; bandwidth {:.1} GB/s triad, {:.1} copy ({:.0} GB/s triad over 8 MiB); f32 GEMM {n}^3 (faer) {:.0} GFLOP/s",
            self.cpu,
            self.threads,
            self.peak_gflops,
            self.peak_method,
            loops.join(", "),
            self.bandwidth_gbs,
            self.copy_gbs,
            self.cache_gbs,
            self.gemm.1,
            n = self.gemm.0,
        )
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FmaMethod {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    Scalar,
}

impl FmaMethod {
    fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            FmaMethod::Avx2 => "avx2+fma",
            #[cfg(target_arch = "x86_64")]
            FmaMethod::Avx512 => "avx512f",
            FmaMethod::Scalar => "scalar",
        }
    }
}

/// The FMA loops this CPU can run (the scalar one only where no vector one can).
fn fma_methods() -> Vec<FmaMethod> {
    #[allow(unused_mut)]
    let mut m = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            m.push(FmaMethod::Avx2);
        }
        if is_x86_feature_detected!("avx512f") {
            m.push(FmaMethod::Avx512);
        }
    }
    if m.is_empty() {
        m.push(FmaMethod::Scalar);
    }
    m
}

/// Independent accumulators per thread: FMA latency (4-5 cycles) times 2 FMA ports, plus slack.
const ACC: usize = 12;

/// Flops of one loop iteration: `ACC` FMAs of `lanes` f32, 2 flops each.
fn flops_per_iter(method: FmaMethod) -> f64 {
    let lanes = match method {
        #[cfg(target_arch = "x86_64")]
        FmaMethod::Avx2 => 8,
        #[cfg(target_arch = "x86_64")]
        FmaMethod::Avx512 => 16,
        FmaMethod::Scalar => 1,
    };
    (ACC * lanes * 2) as f64
}

fn fma_loop(method: FmaMethod, iters: usize) -> f32 {
    match method {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: listed by `fma_methods` only when the CPU has AVX2 and FMA.
        FmaMethod::Avx2 => unsafe { x86::fma_avx2(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: listed by `fma_methods` only when the CPU has AVX-512F.
        FmaMethod::Avx512 => unsafe { x86::fma_avx512(iters) },
        FmaMethod::Scalar => fma_scalar(iters),
    }
}

fn fma_scalar(iters: usize) -> f32 {
    let mut acc = [0.0f32; ACC];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = std::hint::black_box(i as f32 * 1e-3);
    }
    let (m, c) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-7f32),
    );
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(m, c);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::ACC;

    /// `iters` rounds of `ACC` independent 8-wide FMAs; returns a value depending on all of them.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma_avx2(iters: usize) -> f32 {
        let m = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let c = _mm256_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm256_setzero_ps(); ACC];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_set1_ps(std::hint::black_box(i as f32 * 1e-3));
        }
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        let mut sum = _mm256_setzero_ps();
        for a in acc {
            sum = _mm256_add_ps(sum, a);
        }
        let mut out = [0.0f32; 8];
        // SAFETY: `out` holds 8 f32, the unaligned store writes exactly those.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }

    /// `iters` rounds of `ACC` independent 16-wide FMAs.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fma_avx512(iters: usize) -> f32 {
        let m = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let c = _mm512_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm512_setzero_ps(); ACC];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm512_set1_ps(std::hint::black_box(i as f32 * 1e-3));
        }
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for a in acc {
            sum = _mm512_add_ps(sum, a);
        }
        _mm512_reduce_add_ps(sum)
    }
}

/// GFLOP/s of the FMA loop on every rayon thread at once (`all`) or on one thread; best of 3.
fn fma_gflops(method: FmaMethod, iters: usize, all: bool) -> f64 {
    let per_call = flops_per_iter(method) * iters as f64;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let calls = if all {
            let r = rayon::broadcast(|_| fma_loop(method, iters));
            std::hint::black_box(r);
            rayon::current_num_threads()
        } else {
            std::hint::black_box(fma_loop(method, iters));
            1
        };
        let secs = start.elapsed().as_secs_f64();
        best = best.max(per_call * calls as f64 / secs / 1e9);
    }
    best
}

/// `(copy GB/s, triad GB/s)`: best of `passes` over arrays of `bytes` in all, split evenly over
/// the rayon threads (first touch in parallel, so each thread's pages are local to it).
fn bandwidth(bytes: usize, passes: usize) -> (f64, f64) {
    let threads = rayon::current_num_threads().max(1);
    let n = bytes / 3 / 4;
    let chunk = n.div_ceil(threads);
    let filled = |v: f32| {
        let mut a = Vec::<f32>::with_capacity(n);
        // SAFETY: f32 has no invalid bit patterns and every element is written just below
        // before any read; `set_len` stays within the capacity.
        #[allow(clippy::uninit_vec)]
        unsafe {
            a.set_len(n)
        };
        a.par_chunks_mut(chunk).for_each(|c| c.fill(v));
        a
    };
    let mut a = filled(0.0);
    let b = filled(1.0);
    let c = filled(2.0);
    let mut copy = 0.0f64;
    let mut triad = 0.0f64;
    for _ in 0..passes {
        let start = Instant::now();
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .for_each(|(a, b)| a.copy_from_slice(b));
        copy = copy.max((2 * n * 4) as f64 / start.elapsed().as_secs_f64() / 1e9);
        std::hint::black_box(&a);
        let s = std::hint::black_box(0.5f32);
        let start = Instant::now();
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .zip(c.par_chunks(chunk))
            .for_each(|((a, b), c)| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + s * c;
                }
            });
        triad = triad.max((3 * n * 4) as f64 / start.elapsed().as_secs_f64() / 1e9);
        std::hint::black_box(&a);
    }
    (copy, triad)
}

/// GFLOP/s of an `n x n x n` f32 GEMM with faer on all rayon threads, best of `runs`.
fn gemm_gflops(n: usize, runs: usize) -> f64 {
    use faer::{Accum, Mat, Par};
    let a = Mat::<f32>::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 13) as f32 * 0.01);
    let b = Mat::<f32>::from_fn(n, n, |i, j| ((i * 5 + j * 11) % 17) as f32 * 0.01);
    let mut c = Mat::<f32>::zeros(n, n);
    let par = Par::rayon(rayon::current_num_threads());
    let mut best = 0.0f64;
    for _ in 0..runs + 1 {
        let start = Instant::now();
        faer::linalg::matmul::matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, par);
        let secs = start.elapsed().as_secs_f64();
        best = best.max(2.0 * (n as f64).powi(3) / secs / 1e9);
    }
    std::hint::black_box(&c);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_run_and_count_something() {
        for m in fma_methods() {
            assert!(fma_loop(m, 1000).is_finite());
            assert!(fma_gflops(m, 10_000, false) > 0.0);
        }
        let (copy, triad) = bandwidth(3 << 20, 1);
        assert!(copy > 0.0 && triad > 0.0);
        assert!(gemm_gflops(64, 1) > 0.0);
    }
}

/// CPU time other processes used while a block ran, as a fraction of all cores (the anchor
/// script's `ExternalLoad`): 0 when the bench had the machine to itself, 0.5 on 2 cores when
/// another process kept one core busy. Linux only (`/proc`); `None` elsewhere.
#[derive(Debug)]
pub struct LoadMeter {
    start: Option<(f64, f64)>,
    wall: Instant,
}

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on every Linux platform).
const USER_HZ: f64 = 100.0;

fn busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0.0);
    Some((fields.iter().sum::<f64>() - idle) / USER_HZ)
}

fn own_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / USER_HZ)
}

impl LoadMeter {
    /// Starts measuring.
    pub fn start() -> Self {
        Self {
            start: busy_secs().zip(own_secs()),
            wall: Instant::now(),
        }
    }

    /// The external load since [`Self::start`].
    pub fn fraction(&self) -> Option<f64> {
        let (b0, o0) = self.start?;
        let (b1, o1) = busy_secs().zip(own_secs())?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = self.wall.elapsed().as_secs_f64();
        (wall > 0.05).then(|| (((b1 - b0) - (o1 - o0)).max(0.0) / (wall * cores)).min(1.0))
    }
}
