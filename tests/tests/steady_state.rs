//! What already works and must keep working: one prepared layer used from several threads gives
//! the same bits as one thread, and repeated calls do not grow the allocator's live bytes.
//!
//! This binary installs a counting global allocator (live bytes = allocated - freed), so it holds
//! only these two tests; they run one after the other (a lock) so that neither counts the other's
//! allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use ndarray::{ArrayD, IxDyn};
use ttconv::{Implementation, RankSpec, TtConv, TtConvConfig};
use ttconv_cpu::CpuBackend;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counter is a side effect that never touches the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

/// A 2-D layer whose factorized program merges nothing (ranks below the channels), with a bias,
/// and a pseudo-random input.
fn layer_and_input() -> (TtConv, ArrayD<f32>) {
    let config = TtConvConfig::new(12, 10, vec![3, 3])
        .padding(1)
        .stride([1, 2])
        .rank(RankSpec::Uniform(5))
        .bias(true);
    let layer = TtConv::new(config).unwrap();
    let x = ArrayD::from_shape_fn(IxDyn(&[2, 12, 17, 15]), |i| {
        ((i[0] * 131 + i[1] * 71 + i[2] * 17 + i[3] * 7) % 23) as f32 / 23.0 - 0.5
    });
    (layer, x)
}

#[test]
fn one_prepared_layer_from_eight_threads_gives_the_same_bits() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (layer, x) = layer_and_input();
    let cpu = CpuBackend::new();
    let prepared = layer.prepare(&cpu).unwrap();
    for implementation in [Implementation::Factorized, Implementation::Reconstructed] {
        let want = prepared.forward_with(&x, implementation).unwrap();
        let results: Vec<ArrayD<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| prepared.forward_with(&x, implementation).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, got) in results.iter().enumerate() {
            // Bit for bit: the reductions are independent of the thread that runs them.
            let same = got
                .iter()
                .zip(want.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{implementation:?}: thread {t} differs");
        }
    }
}

#[test]
fn repeated_calls_do_not_grow_live_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (layer, x) = layer_and_input();
    let cpu = CpuBackend::new();
    let prepared = layer.prepare(&cpu).unwrap();
    let gy = ArrayD::<f32>::ones(IxDyn(&layer.output_shape(x.shape()).unwrap()));
    let round = |n: usize| {
        for _ in 0..n {
            drop(
                prepared
                    .forward_with(&x, Implementation::Factorized)
                    .unwrap(),
            );
            drop(
                prepared
                    .forward_with(&x, Implementation::Reconstructed)
                    .unwrap(),
            );
            let (y, ctx) = prepared
                .forward_train(x.clone(), Implementation::Factorized)
                .unwrap();
            drop(y);
            drop(prepared.backward(&ctx, &gy, true).unwrap());
        }
    };
    // Warm-up: per-thread workspaces, the cached dense kernel and packings are allocated once.
    round(50);
    let before = LIVE.load(Ordering::Relaxed);
    round(2000);
    let after = LIVE.load(Ordering::Relaxed);
    // Workspaces may still grow a little on a thread that gets a new task shape; a leak of one
    // output (2 x 10 x 17 x 8 floats) per round would be 2000 * 10880 bytes (over 21 MB).
    assert!(
        after - before < 256 * 1024,
        "live bytes grew by {} over 2000 rounds ({before} -> {after})",
        after - before
    );
}
