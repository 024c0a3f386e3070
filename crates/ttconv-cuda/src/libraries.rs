//! Which CUDA library files this process has actually loaded, read from `/proc/self/maps`.
//!
//! cudarc `dlopen`s `libcuda`, `libnvrtc` and `libcublas` by name, so the dynamic loader picks
//! the files (the first match on `LD_LIBRARY_PATH`, then its cache); printing the mapped files
//! shows what a run really used, e.g. a toolkit's `libnvrtc.so` instead of the one meant.

use std::path::PathBuf;

/// The library name stems reported by `loaded_cuda_libraries`: the driver, NVRTC (and its
/// builtins), cuBLAS and cuBLASLt.
const CUDA_LIBRARY_STEMS: &[&str] = &["libcuda", "libnvrtc", "libcublas"];

/// The files mapped into this process whose name starts with `libcuda`, `libnvrtc` or `libcublas`
/// (`libcuda.so.1`, `libnvrtc.so.13`, `libnvrtc-builtins.so.13.0`, `libcublas.so.12`,
/// `libcublasLt.so.12`, ...), as the kernel names them (symbolic links resolved), sorted, each
/// once. Empty where `/proc/self/maps` cannot be read (not Linux) or nothing is loaded yet.
pub fn loaded_cuda_libraries() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| cuda_libraries_in_maps(&maps))
        .unwrap_or_default()
}

/// The CUDA library paths named in the text of a `/proc/<pid>/maps` file.
fn cuda_libraries_in_maps(maps: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = maps
        .lines()
        // address perms offset dev inode path: the path is the sixth field, and may hold spaces.
        .filter_map(|line| line.splitn(6, char::is_whitespace).nth(5))
        .map(str::trim)
        .filter(|path| path.starts_with('/'))
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or_default();
            CUDA_LIBRARY_STEMS.iter().any(|stem| {
                name.strip_prefix(stem)
                    .is_some_and(|rest| rest.starts_with(['.', '-']) || rest.starts_with("Lt"))
            })
        })
        .map(PathBuf::from)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_cuda_libraries_out_of_a_maps_file() {
        let maps = "\
7f00 r--p 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06
7f01 r-xp 00001000 08:01 1 /usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06
7f02 r--p 00000000 08:01 2 /tmp/my libs/libnvrtc.so.13
7f03 r--p 00000000 08:01 3 /tmp/w/libnvrtc-builtins.so.13.0
7f04 r--p 00000000 08:01 4 /site/nvidia/cublas/lib/libcublasLt.so.12
7f05 r--p 00000000 08:01 5 /site/nvidia/cublas/lib/libcublas.so.12
7f06 r--p 00000000 08:01 6 /usr/lib/libcudart_like.so
7f07 r--p 00000000 08:01 7 /usr/lib/libcudnn.so.9
7f08 rw-p 00000000 00:00 0 [heap]
7f09 rw-p 00000000 00:00 0
7f0a r--p 00000000 08:01 8 /usr/lib/libc.so.6
";
        let got: Vec<String> = cuda_libraries_in_maps(maps)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "/site/nvidia/cublas/lib/libcublas.so.12",
                "/site/nvidia/cublas/lib/libcublasLt.so.12",
                "/tmp/my libs/libnvrtc.so.13",
                "/tmp/w/libnvrtc-builtins.so.13.0",
                "/usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06",
            ]
        );
    }

    #[test]
    fn reading_this_process_never_fails() {
        // Whatever is loaded here (nothing CUDA on a machine without it), the call returns.
        for p in loaded_cuda_libraries() {
            assert!(p.is_absolute(), "{}", p.display());
        }
    }
}
