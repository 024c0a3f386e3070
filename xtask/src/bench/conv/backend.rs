//! The CPU backend the conv part times. Today the library picks its A/B variants (the dense
//! algorithm, the fused or unfused factorized chain) itself, once per process; the bench builds
//! the default backend and records its name in the JSON (`"backend"`).

use ttconv_cpu::CpuBackend;

/// The backend every conv case and the sweep run on.
pub fn cpu_backend() -> CpuBackend {
    CpuBackend::new()
}
