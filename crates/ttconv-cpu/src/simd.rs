//! The SIMD level the hand-written kernels run at: the best this CPU supports, capped by
//! [`crate::SimdLevel`] (an option of the backend, so that AVX2-only processors' paths can be
//! tested and timed on an AVX-512 machine).

use crate::options::SimdLevel;

/// A SIMD level of the kernels, ordered from the plainest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// Plain loops (any processor).
    Portable,
    /// AVX2 with FMA (256-bit vectors, 16 registers).
    Avx2,
    /// AVX-512F (512-bit vectors, 32 registers).
    Avx512,
}

impl Level {
    /// Whether this CPU runs `self`.
    pub(crate) fn supported(self) -> bool {
        match self {
            Level::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best level this CPU supports (detected once).
    pub(crate) fn detected() -> Level {
        static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            [Level::Avx512, Level::Avx2]
                .into_iter()
                .find(|&lv| lv.supported())
                .unwrap_or(Level::Portable)
        })
    }

    /// The level the kernels run at under the option `cap`: the detected one, at most `cap`.
    pub(crate) fn capped(cap: SimdLevel) -> Level {
        let cap = match cap {
            SimdLevel::Auto => Level::Avx512,
            SimdLevel::Avx2 => Level::Avx2,
            SimdLevel::Portable => Level::Portable,
        };
        Level::detected().min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_never_raises_the_level() {
        assert_eq!(Level::capped(SimdLevel::Auto), Level::detected());
        assert_eq!(Level::capped(SimdLevel::Portable), Level::Portable);
        assert!(Level::capped(SimdLevel::Avx2) <= Level::Avx2);
        assert!(Level::capped(SimdLevel::Avx2).supported());
    }
}
