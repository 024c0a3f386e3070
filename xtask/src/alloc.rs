//! A counting global allocator: the system allocator plus the number of bytes currently
//! allocated and the peak since the last [`reset_peak`], over all threads.
//!
//! The bench uses it to report the extra memory a forward pass allocates: reset the peak, run the
//! forward, read [`peak`] minus the bytes allocated before. The counters are two relaxed atomics
//! updated on every allocation; that costs a few nanoseconds per call, negligible next to the
//! kernels timed here (and the backend is meant not to allocate in its hot loops anyway).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting bytes.
#[derive(Debug)]
pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static GLOBAL: Counting = Counting;

fn grow(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrink(n: usize) {
    CURRENT.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (so by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller upholds the rest.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        p
    }
}

/// Bytes allocated now (all threads).
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// Highest [`current`] since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Restarts the peak from the bytes allocated now, which it returns.
pub fn reset_peak() -> usize {
    let now = current();
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Runs `f` and returns its result with the most bytes allocated at once during it beyond those
/// allocated before (what it returns included, as long as it was alive at the peak).
///
/// Other threads allocating at the same time are counted too: run it when nothing else runs.
pub fn extra_peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = reset_peak();
    let r = f();
    (r, peak().saturating_sub(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_a_vector() {
        // Other tests run on other threads of this process and may free memory meanwhile: use a
        // vector much larger than anything they hold.
        let (v, extra) = extra_peak(|| vec![1u8; 64 << 20]);
        assert!(extra >= 32 << 20, "extra {extra}");
        drop(v);
    }
}
