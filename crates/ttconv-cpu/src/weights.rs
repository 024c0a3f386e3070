//! The CPU form of an uploaded weight array.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{ArrayD, ArrayViewD};

/// Source of [`CpuWeights`] identities.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A weight array held by [`crate::CpuBackend`]: its logical shape and its f32 data in
/// row-major (standard) layout.
///
/// No repacking is needed: every GEMM of the backend takes its operands as strided views, so a
/// transposed use of a weight costs nothing. The data never changes after construction, so the
/// fused factorized forward may cache, inside the weight, a product of it with another weight
/// (identified by that weight's `id`): a merged core is computed once per prepared layer.
#[derive(Clone, Debug)]
pub struct CpuWeights {
    data: ArrayD<f32>,
    /// Identity of this array's contents (shared by clones, which hold the same data).
    id: u64,
    /// A product with the weight of identity `.0`, row-major (see `fused.rs`).
    merged: OnceLock<(u64, Vec<f32>)>,
    /// A dense kernel packed for the direct convolution (see `direct.rs`).
    packed: OnceLock<Vec<f32>>,
}

impl PartialEq for CpuWeights {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl CpuWeights {
    /// Copies `w` (any strides) into row-major layout.
    pub fn new(w: ArrayViewD<'_, f32>) -> Self {
        Self {
            data: w.as_standard_layout().into_owned(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            merged: OnceLock::new(),
            packed: OnceLock::new(),
        }
    }

    /// The logical shape, e.g. `(r_in, k, r_out)` for a core.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// A row-major view of the data.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        self.data.view()
    }

    /// The row-major data.
    pub(crate) fn as_slice(&self) -> &[f32] {
        self.data
            .as_slice()
            .expect("weights are stored in standard layout")
    }

    /// The identity of this array's contents.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// This weight repacked by `f` (the direct convolution's layout of a dense kernel), computed
    /// on first use and kept: the data never changes, so neither does the packing.
    pub(crate) fn packed_with(&self, f: impl FnOnce() -> Vec<f32>) -> &[f32] {
        self.packed.get_or_init(f)
    }

    /// The product of this weight with the weight `partner` (by identity), computed by `f` on
    /// first use and cached; computed afresh (not cached) when a product with another partner
    /// is already cached.
    pub(crate) fn merged_with(
        &self,
        partner: u64,
        f: impl FnOnce() -> Vec<f32>,
    ) -> std::borrow::Cow<'_, [f32]> {
        let mut f = Some(f);
        let (id, data) = self
            .merged
            .get_or_init(|| (partner, (f.take().expect("once"))()));
        if *id == partner {
            std::borrow::Cow::Borrowed(data.as_slice())
        } else {
            std::borrow::Cow::Owned((f.take().expect("not used by get_or_init"))())
        }
    }
}
