//! How the work of one primitive is cut into rayon tasks, and deterministic reductions.
//!
//! Maps (forward passes, input gradients) split their output into disjoint blocks, one task
//! each. Reductions (weight gradients) give each of a fixed number of groups its own partial sum
//! and add the partials in order, so their result does not depend on the thread count or on
//! scheduling.

use std::mem::MaybeUninit;
use std::ops::Range;

use ndarray::{Array2, Array3, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::prelude::*;

/// Fewest multiply-adds worth a rayon task (below this, scheduling costs more than it gains).
const MIN_TASK_MACS: usize = 1 << 16;
/// Tasks per thread a map aims for, so uneven tasks still balance.
const TASKS_PER_THREAD: usize = 4;
/// Size a per-task scratch buffer (im2col) aims for: half of the 1 MiB per-core L2.
pub(crate) const SCRATCH_BYTES: usize = 512 * 1024;
/// Most partial sums a reduction keeps (a constant, so results are thread-count independent).
pub(crate) const MAX_PARTIALS: usize = 16;
/// Most bytes all partial sums of a reduction may take together.
pub(crate) const PARTIALS_BYTES: usize = 32 << 20;
/// Fewest multiply-adds a group of a reduction does per float of its partial: zeroing a partial
/// and adding it into the total cost about as much as this many multiply-adds per float, so a
/// group with less work than that spends more time on its partial than on its share.
const PARTIAL_MACS_PER_FLOAT: usize = 32;

/// Rows per block when the `rows x cols` output of a reduction in `groups` groups is also split
/// by rows (see [`sum_partials`]): enough blocks for about [`MAX_PARTIALS`] tasks in all, at least
/// 8 rows and [`MIN_TASK_MACS`] of work (`macs_per_row` over the whole reduction) per block.
/// Depends only on the problem size.
pub(crate) fn row_block(rows: usize, groups: usize, macs_per_row: usize) -> usize {
    let blocks_wanted = MAX_PARTIALS.div_ceil(groups.max(1));
    let by_work = MIN_TASK_MACS
        .saturating_mul(groups.max(1))
        .div_ceil(macs_per_row.max(1));
    rows.div_ceil(blocks_wanted)
        .max(8)
        .max(by_work)
        .min(rows.max(1))
}

/// Chunk length (in units) for splitting each of `items` independent items of `per_item` units
/// into map tasks: about [`TASKS_PER_THREAD`] tasks per rayon thread over all items, at least
/// [`MIN_TASK_MACS`] of work each (`unit_macs` per unit), at most `max_len` units, at least 1.
pub(crate) fn chunk_len(items: usize, per_item: usize, unit_macs: usize, max_len: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let chunks_per_item = (TASKS_PER_THREAD * threads).div_ceil(items.max(1));
    let by_threads = per_item.div_ceil(chunks_per_item);
    let min_len = MIN_TASK_MACS.div_ceil(unit_macs.max(1));
    by_threads.max(min_len).min(max_len).min(per_item).max(1)
}

/// Splits `0..total` into consecutive ranges of `len` (the last one shorter).
pub(crate) fn ranges(total: usize, len: usize) -> impl Iterator<Item = Range<usize>> {
    let len = len.max(1);
    (0..total)
        .step_by(len)
        .map(move |start| start..(start + len).min(total))
}

/// A map's output `(batch, rows, cols)`, left uninitialised for a map whose tasks write every
/// element (no memset, and no extra pass over the pages, before the tasks write them). Debug
/// builds fill it with NaN, so the oracle property tests see any element a map leaves unwritten.
pub(crate) fn unwritten_output(shape: (usize, usize, usize)) -> Array3<MaybeUninit<f32>> {
    let mut y = Array3::uninit(shape);
    if cfg!(debug_assertions) {
        y.fill(MaybeUninit::new(f32::NAN));
    }
    y
}

/// One map task: batch item, range of units, and the output block it owns.
pub(crate) type ColumnTask<'a, A = f32> = (usize, Range<usize>, ArrayViewMut2<'a, A>);

/// Splits `y` `(batch, rows, units * unit)` into disjoint column blocks of `chunk` units per
/// batch item (the block of units `u0..u1` owns columns `u0 * unit..u1 * unit`).
pub(crate) fn column_tasks<'a, A>(
    y: ArrayViewMut3<'a, A>,
    chunk: usize,
    unit: usize,
) -> Vec<ColumnTask<'a, A>> {
    let units = y.dim().2.checked_div(unit).unwrap_or(0);
    split_items(y, Axis(1), units, chunk, unit)
}

/// Splits `y` `(batch, rows, cols)` into disjoint blocks of `chunk` rows per batch item.
pub(crate) fn row_tasks<'a>(y: ArrayViewMut3<'a, f32>, chunk: usize) -> Vec<ColumnTask<'a>> {
    let rows = y.dim().1;
    split_items(y, Axis(0), rows, chunk, 1)
}

/// Per batch item, cuts the item's `axis` (of its 2-D view) into blocks of `chunk * unit`
/// indices covering `units * unit` of them, in order.
fn split_items<'a, A>(
    y: ArrayViewMut3<'a, A>,
    axis: Axis,
    units: usize,
    chunk: usize,
    unit: usize,
) -> Vec<ColumnTask<'a, A>> {
    let batch = y.dim().0;
    let mut tasks = Vec::new();
    let mut rest = y;
    for b in 0..batch {
        let (item, tail) = rest.split_at(Axis(0), 1);
        rest = tail;
        let mut item = item.index_axis_move(Axis(0), 0);
        for r in ranges(units, chunk) {
            let (head, tail) = item.split_at(axis, r.len() * unit);
            item = tail;
            tasks.push((b, r, head));
        }
    }
    tasks
}

/// Number of blocks to cut each of `items` items into so that all items together give about
/// [`TASKS_PER_THREAD`] tasks per rayon thread (at least 1, at most `max_blocks`).
pub(crate) fn blocks_per_item(items: usize, max_blocks: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (TASKS_PER_THREAD * threads)
        .div_ceil(items.max(1))
        .min(max_blocks)
        .max(1)
}

/// A group of a reduction: `(item, units)` segments, processed in order into one partial sum.
pub(crate) type Group = Vec<(usize, Range<usize>)>;

/// Cuts the `items * per_item` units of a reduction into at most [`MAX_PARTIALS`] groups of
/// consecutive units (fewer when the work is small or `partial_len` floats per partial would
/// exceed [`PARTIALS_BYTES`]). Depends only on the problem size, never on the thread count.
pub(crate) fn reduction_groups(
    items: usize,
    per_item: usize,
    unit_macs: usize,
    partial_len: usize,
) -> Vec<Group> {
    let total = items * per_item;
    if total == 0 {
        return Vec::new();
    }
    let by_memory = (PARTIALS_BYTES / (4 * partial_len).max(1)).max(1);
    let macs = total.saturating_mul(unit_macs);
    let by_work = (macs / MIN_TASK_MACS).max(1);
    let by_overhead = (macs / (PARTIAL_MACS_PER_FLOAT * partial_len.max(1))).max(1);
    let groups = MAX_PARTIALS
        .min(by_memory)
        .min(by_work)
        .min(by_overhead)
        .min(total);
    ranges(total, total.div_ceil(groups))
        .map(|r| {
            let mut segments = Vec::new();
            let mut u = r.start;
            while u < r.end {
                let item = u / per_item;
                let start = u - item * per_item;
                let end = per_item.min(start + (r.end - u));
                segments.push((item, start..end));
                u += end - start;
            }
            segments
        })
        .collect()
}

/// Runs `f(group, rows, partial_rows)` for every group and every block of `row_block` rows of
/// the `shape = (rows, cols)` output, in parallel, each group into its own zeroed partial sum, and
/// returns the sum of the partials taken in group order.
///
/// `f` must add into `partial_rows` (rows `rows` of the group's partial) the contribution of the
/// group's units to those rows. The split into row blocks lets a reduction with few groups (a
/// large output, little work per element) still use every core; like the groups, `row_block`
/// must depend only on the problem size, so the result does not depend on the thread count.
/// Partial buffers come from a small pool reused across calls ([`scratch`]).
pub(crate) fn sum_partials<F>(
    groups: &[Group],
    shape: (usize, usize),
    row_block: usize,
    f: F,
) -> Array2<f32>
where
    F: Fn(&Group, Range<usize>, ArrayViewMut2<'_, f32>) + Sync,
{
    let (rows, cols) = shape;
    let len = rows * cols;
    if groups.is_empty() || len == 0 {
        return Array2::zeros(shape);
    }
    let row_block = row_block.clamp(1, rows);
    let mut partials: Vec<Vec<f32>> = groups.iter().map(|_| scratch::take(len)).collect();
    let tasks: Vec<(usize, Range<usize>, &mut [f32])> = partials
        .iter_mut()
        .enumerate()
        .flat_map(|(g, buf)| {
            buf.chunks_mut(row_block * cols)
                .enumerate()
                .map(move |(i, chunk)| {
                    let r0 = i * row_block;
                    (g, r0..r0 + chunk.len() / cols, chunk)
                })
        })
        .collect();
    tasks.into_par_iter().for_each(|(g, r, chunk)| {
        chunk.fill(0.0);
        let acc =
            ArrayViewMut2::from_shape((r.len(), cols), chunk).expect("a chunk holds whole rows");
        f(&groups[g], r, acc);
    });
    let total = sum_in_order(partials);
    Array2::from_shape_vec(shape, total).expect("rows * cols floats")
}

/// The element-wise sum of equally long partial sums, added in their order (blocks of elements
/// in parallel, so the result is the same on any thread count); every partial but the first,
/// which becomes the total, goes back to the [`scratch`] pool.
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>) -> Vec<f32> {
    let mut it = partials.into_iter();
    let Some(mut total) = it.next() else {
        return Vec::new();
    };
    let rest: Vec<Vec<f32>> = it.collect();
    if !rest.is_empty() {
        total
            .par_chunks_mut(SUM_BLOCK)
            .enumerate()
            .for_each(|(i, t)| {
                let span = i * SUM_BLOCK..i * SUM_BLOCK + t.len();
                for p in &rest {
                    for (a, b) in t.iter_mut().zip(&p[span.clone()]) {
                        *a += b;
                    }
                }
            });
    }
    rest.into_iter().for_each(scratch::give);
    total
}

/// Floats per task when the partial sums are added together.
const SUM_BLOCK: usize = 1 << 14;

/// Scratch buffers (partial sums, padded inputs, GEMM blocks) kept between calls.
///
/// A weight gradient of a large layer reduces into up to [`MAX_PARTIALS`] buffers of up to a
/// few MiB each. Allocated afresh on every call, their pages are mapped and zeroed by the kernel
/// on first touch each time (measured: a 'same'-rank fwd+bwd of 256 channels spent three
/// quarters of its time in page faults, 16 ms instead of 4.6). At most `POOL_BYTES` are kept.
pub(crate) mod scratch {
    use std::sync::Mutex;

    /// Most bytes the pool keeps.
    const POOL_BYTES: usize = 32 << 20;

    static FREE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

    /// A buffer of `len` initialised floats (arbitrary values: the caller zeroes it).
    pub(crate) fn take(len: usize) -> Vec<f32> {
        let reused = {
            let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= len)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            best.map(|i| free.swap_remove(i))
        };
        match reused {
            Some(mut v) => {
                v.truncate(len);
                v.resize(len, 0.0);
                v
            }
            None => vec![0.0; len],
        }
    }

    /// Returns a buffer to the pool (dropped when the pool is full).
    pub(crate) fn give(v: Vec<f32>) {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = free.iter().map(|b| b.capacity() * 4).sum();
        if held + v.capacity() * 4 <= POOL_BYTES {
            free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn groups_cover_every_unit_once_in_order() {
        for (items, per_item) in [(1, 1), (3, 7), (5, 100), (2, 1000)] {
            let groups = reduction_groups(items, per_item, 1 << 14, 10);
            let flat: Vec<(usize, usize)> = groups
                .iter()
                .flatten()
                .flat_map(|(b, r)| r.clone().map(move |u| (*b, u)))
                .collect();
            let want: Vec<(usize, usize)> = (0..items)
                .flat_map(|b| (0..per_item).map(move |u| (b, u)))
                .collect();
            assert_eq!(flat, want);
            assert!(groups.len() <= MAX_PARTIALS);
        }
    }

    #[test]
    fn partial_sums_are_exact_and_blocking_independent() {
        // f adds, for every unit u of the group, (u + 1) * (row + 1) + col to each entry: the
        // expected total is known in closed form, and integer-valued floats add exactly.
        let (items, per_item, rows, cols) = (3, 50, 13, 5);
        let groups = reduction_groups(items, per_item, 1 << 20, 1);
        assert!(groups.len() > 1);
        let units: f32 = (0..items * per_item)
            .map(|u| (u % per_item + 1) as f32)
            .sum();
        let mut results = Vec::new();
        for row_block in [1, 4, 13, 100] {
            let total = sum_partials(&groups, (rows, cols), row_block, |group, r, mut acc| {
                assert_eq!(acc.dim(), (r.len(), cols));
                for (_, us) in group {
                    for u in us.clone() {
                        for (i, mut row) in acc.outer_iter_mut().enumerate() {
                            for (j, v) in row.iter_mut().enumerate() {
                                *v += (u + 1) as f32 * (r.start + i + 1) as f32 + j as f32;
                            }
                        }
                    }
                }
            });
            for ((i, j), v) in total.indexed_iter() {
                let want = units * (i + 1) as f32 + (items * per_item * j) as f32;
                assert_eq!(*v, want, "row_block {row_block} at ({i}, {j})");
            }
            results.push(total);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn column_tasks_are_disjoint_and_complete() {
        let mut y = Array3::<f32>::zeros((2, 3, 10 * 4));
        let tasks = column_tasks(y.view_mut(), 3, 4);
        assert_eq!(tasks.len(), 2 * 4);
        for (b, r, mut v) in tasks {
            assert_eq!(v.dim(), (3, r.len() * 4));
            v.fill((b * 100 + r.start) as f32 + 1.0);
        }
        assert!(y.iter().all(|&v| v > 0.0));
        assert_eq!(y[[1, 2, 39]], 110.0);
    }
}
