//! NVRTC compilation of the kernel sources (`kernels.rs`): to a CUBIN for the device's own
//! `sm_XY` when the loaded NVRTC knows that architecture, to PTX for the newest virtual
//! architecture it knows otherwise.
//!
//! A CUBIN is machine code: the driver loads it without its JIT, so the NVRTC may be of any
//! CUDA version the driver can run binaries of. PTX is needed only for a device newer than the
//! NVRTC; the driver then compiles it, and only accepts PTX whose ISA version it knows (PTX
//! from an NVRTC newer than the driver fails with `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`).
//!
//! cudarc's `compile_ptx_with_opts` only returns PTX, so this module drives NVRTC through
//! cudarc's thin `result` / `sys` bindings (`nvrtcGetCUBIN` included).

use std::ffi::{CStr, CString, c_char};
use std::fmt;

use cudarc::nvrtc::{result, sys};

use crate::error::{Error, Result};
use crate::kernels::kernel_sources;

/// What NVRTC is asked to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileTarget {
    /// Machine code for the real architecture `sm_XY` (`XY` = `10 * major + minor`).
    Cubin(i32),
    /// PTX for the virtual architecture `compute_XY`, compiled by the driver when loaded.
    Ptx(i32),
}

impl CompileTarget {
    /// NVRTC's `--gpu-architecture` value: `sm_XY` or `compute_XY`.
    pub fn arch(&self) -> String {
        match *self {
            CompileTarget::Cubin(a) => format!("sm_{a}"),
            CompileTarget::Ptx(a) => format!("compute_{a}"),
        }
    }

    /// The target for a device of compute capability `device` (`10 * major + minor`) given the
    /// architectures the loaded NVRTC supports (ascending, as [`nvrtc_supported_archs`] gives
    /// them): a CUBIN for the device's own architecture when NVRTC lists it (or lists nothing,
    /// as NVRTC older than 11.2 does), else PTX for the newest listed architecture below the
    /// device (a device newer than the NVRTC).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when every listed architecture is newer than the device (an NVRTC
    /// that dropped the device's generation).
    pub fn for_device(device: i32, supported: &[i32]) -> Result<Self> {
        if supported.is_empty() || supported.contains(&device) {
            return Ok(CompileTarget::Cubin(device));
        }
        match supported.iter().copied().filter(|&a| a < device).max() {
            Some(a) => Ok(CompileTarget::Ptx(a)),
            None => Err(Error::Unsupported(format!(
                "the loaded NVRTC compiles for {:?} only; the device is sm_{device} (use an \
                 NVRTC of an older CUDA version)",
                supported
            ))),
        }
    }
}

impl fmt::Display for CompileTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileTarget::Cubin(_) => write!(f, "{} (CUBIN)", self.arch()),
            CompileTarget::Ptx(_) => write!(f, "{} (PTX, compiled by the driver)", self.arch()),
        }
    }
}

/// One compiled kernel module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelImage {
    /// An ELF CUBIN (`nvrtcGetCUBIN`).
    Cubin(Vec<u8>),
    /// PTX text (`nvrtcGetPTX`).
    Ptx(String),
}

impl KernelImage {
    /// The image in the form the driver's module loader takes.
    pub(crate) fn into_loadable(self) -> cudarc::nvrtc::Ptx {
        match self {
            KernelImage::Cubin(bytes) => cudarc::nvrtc::Ptx::from_binary(bytes),
            KernelImage::Ptx(text) => cudarc::nvrtc::Ptx::from_src(text),
        }
    }
}

/// Whether `libnvrtc` can be loaded by the dynamic loader (so that compiling cannot panic).
pub fn nvrtc_available() -> bool {
    // SAFETY: `is_culib_present` only tries `dlopen` on a list of library names and drops the
    // handles; it has no preconditions.
    unsafe { sys::is_culib_present() }
}

/// The architectures (`XY` of `sm_XY` / `compute_XY`) the loaded NVRTC can target, ascending;
/// empty when NVRTC is absent or does not answer.
pub fn nvrtc_supported_archs() -> Vec<i32> {
    if !nvrtc_available() {
        return Vec::new();
    }
    let mut count: std::ffi::c_int = 0;
    // SAFETY: NVRTC is loadable (checked above); the call writes one int through a valid pointer.
    let status = unsafe { sys::nvrtcGetNumSupportedArchs(&mut count) };
    if status != sys::nvrtcResult::NVRTC_SUCCESS || count <= 0 {
        return Vec::new();
    }
    let mut archs = vec![0 as std::ffi::c_int; count as usize];
    // SAFETY: `archs` holds exactly `count` ints, the number NVRTC just reported.
    let status = unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) };
    if status != sys::nvrtcResult::NVRTC_SUCCESS {
        return Vec::new();
    }
    archs.sort_unstable();
    archs
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: `self.0` was created by `create_program` and is destroyed only here, once.
        // A failure to destroy only leaks the program.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

/// A NUL-terminated buffer NVRTC filled, as text.
fn text(buf: &[c_char]) -> String {
    // SAFETY: `c_char` and `u8` have the same size and alignment; the slice stays borrowed.
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len()) };
    match CStr::from_bytes_until_nul(bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn nvrtc_failed(kernel: &'static str, step: &str, e: result::NvrtcError) -> Error {
    Error::Compile {
        kernel,
        log: format!("{step}: {e:?}"),
    }
}

/// Compiles the module `name` (source `src`) for `target`.
///
/// # Errors
/// [`Error::NoNvrtc`] when `libnvrtc` does not load; [`Error::Compile`] with NVRTC's log and
/// options when the source does not compile (an architecture NVRTC does not know included).
pub fn compile(name: &'static str, src: &str, target: CompileTarget) -> Result<KernelImage> {
    if !nvrtc_available() {
        return Err(Error::NoNvrtc);
    }
    let c_src = CString::new(src).map_err(|e| Error::Compile {
        kernel: name,
        log: format!("the source holds a NUL byte: {e}"),
    })?;
    let c_name = CString::new(format!("{name}.cu")).expect("module names hold no NUL");
    let prog = result::create_program(&c_src, Some(&c_name))
        .map_err(|e| nvrtc_failed(name, "nvrtcCreateProgram", e))?;
    let prog = Program(prog);
    let options = [
        format!("--gpu-architecture={}", target.arch()),
        "--std=c++17".to_string(),
    ];
    // SAFETY: `prog` is a live program (created above, destroyed when `prog` drops); the
    // options hold no NUL byte.
    if let Err(e) = unsafe { result::compile_program(prog.0, &options) } {
        // SAFETY: as above; the log is read from the same live program.
        let log = unsafe { result::get_program_log(prog.0) }
            .map(|l| text(&l))
            .unwrap_or_default();
        return Err(Error::Compile {
            kernel: name,
            log: format!("{e:?} with options {options:?}\n{log}"),
        });
    }
    match target {
        CompileTarget::Ptx(_) => {
            // SAFETY: `prog` is live and was compiled successfully.
            let ptx = unsafe { result::get_ptx(prog.0) }
                .map_err(|e| nvrtc_failed(name, "nvrtcGetPTX", e))?;
            Ok(KernelImage::Ptx(text(&ptx)))
        }
        CompileTarget::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: `prog` is live and compiled for a real architecture; NVRTC writes one
            // usize through a valid pointer.
            unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }
                .result()
                .map_err(|e| nvrtc_failed(name, "nvrtcGetCUBINSize", e))?;
            let mut cubin = vec![0u8; size];
            // SAFETY: `cubin` holds exactly the `size` bytes NVRTC reported for this program.
            unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast::<c_char>()) }
                .result()
                .map_err(|e| nvrtc_failed(name, "nvrtcGetCUBIN", e))?;
            if size == 0 {
                return Err(Error::Compile {
                    kernel: name,
                    log: format!("NVRTC returned an empty CUBIN for {}", target.arch()),
                });
            }
            Ok(KernelImage::Cubin(cubin))
        }
    }
}

/// Compiles every source of [`kernel_sources`] for `target`, as `(module name, image)` pairs.
/// Needs `libnvrtc` only, no GPU and no driver. Errors as [`compile`].
pub fn compile_all(target: CompileTarget) -> Result<Vec<(&'static str, KernelImage)>> {
    kernel_sources()
        .into_iter()
        .map(|(name, src)| Ok((name, compile(name, src, target)?)))
        .collect()
}

/// Compiles every source of [`kernel_sources`] to PTX for the virtual architecture `arch`
/// (`"compute_90"`) and returns `(module name, PTX text)` pairs. Needs `libnvrtc` only.
///
/// # Errors
/// [`Error::Unsupported`] when `arch` is not of the form `compute_XY`; otherwise as [`compile`].
pub fn compile_all_to_ptx(arch: &str) -> Result<Vec<(&'static str, String)>> {
    let a = parse_arch(arch, "compute_")?;
    compile_all(CompileTarget::Ptx(a))?
        .into_iter()
        .map(|(name, image)| match image {
            KernelImage::Ptx(text) => Ok((name, text)),
            KernelImage::Cubin(_) => unreachable!("a PTX target gives PTX"),
        })
        .collect()
}

/// Compiles every source of [`kernel_sources`] to a CUBIN for the real architecture `arch`
/// (`"sm_90"`) and returns `(module name, ELF bytes)` pairs. Needs `libnvrtc` only.
///
/// # Errors
/// [`Error::Unsupported`] when `arch` is not of the form `sm_XY`; otherwise as [`compile`].
pub fn compile_all_to_cubin(arch: &str) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let a = parse_arch(arch, "sm_")?;
    compile_all(CompileTarget::Cubin(a))?
        .into_iter()
        .map(|(name, image)| match image {
            KernelImage::Cubin(bytes) => Ok((name, bytes)),
            KernelImage::Ptx(_) => unreachable!("a CUBIN target gives a CUBIN"),
        })
        .collect()
}

/// `XY` of `"{prefix}XY"`.
fn parse_arch(arch: &str, prefix: &str) -> Result<i32> {
    arch.strip_prefix(prefix)
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "architecture `{arch}`: expected `{prefix}XY` (e.g. `{prefix}90`)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubin_for_a_listed_device_ptx_for_a_newer_one() {
        let nvrtc_13_0 = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];
        assert_eq!(
            CompileTarget::for_device(90, &nvrtc_13_0).unwrap(),
            CompileTarget::Cubin(90)
        );
        // A device NVRTC does not list, newer than some it does: PTX for the newest below.
        assert_eq!(
            CompileTarget::for_device(130, &nvrtc_13_0).unwrap(),
            CompileTarget::Ptx(121)
        );
        assert_eq!(
            CompileTarget::for_device(95, &nvrtc_13_0).unwrap(),
            CompileTarget::Ptx(90)
        );
        // No list (an old NVRTC): try the device's own.
        assert_eq!(
            CompileTarget::for_device(86, &[]).unwrap(),
            CompileTarget::Cubin(86)
        );
        // A device older than everything NVRTC knows.
        let e = CompileTarget::for_device(60, &nvrtc_13_0).unwrap_err();
        assert!(e.to_string().contains("sm_60"), "{e}");
    }

    #[test]
    fn arch_strings() {
        assert_eq!(CompileTarget::Cubin(90).arch(), "sm_90");
        assert_eq!(CompileTarget::Ptx(120).arch(), "compute_120");
        assert!(CompileTarget::Ptx(120).to_string().contains("PTX"));
        assert_eq!(parse_arch("sm_90", "sm_").unwrap(), 90);
        assert!(parse_arch("compute_90", "sm_").is_err());
        assert!(parse_arch("sm_", "sm_").is_err());
        assert!(compile_all_to_cubin("compute_90").is_err());
        assert!(compile_all_to_ptx("sm_90").is_err());
    }
}
