//! The CPU backend the conv part times: the library's defaults, or the A/B variants the bench
//! flags ask for (`--cpu-dense rows|im2col`, `--unfused`), as explicit backend options.

use ttconv_cpu::{CpuBackend, CpuOptions};

/// The backend every conv case and the sweep run on.
pub fn cpu_backend(options: CpuOptions) -> CpuBackend {
    CpuBackend::with_options(options)
}
