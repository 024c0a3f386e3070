//! How the work of one primitive is cut into rayon tasks, and deterministic reductions.
//!
//! Maps (forward passes, input gradients) split their output into disjoint blocks, one task
//! each. Reductions (weight gradients) give each of a fixed number of groups its own partial sum
//! and add the partials in order, so their result does not depend on the thread count or on
//! scheduling.

use std::ops::Range;

use ndarray::{Array2, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::prelude::*;

/// Fewest multiply-adds worth a rayon task (below this, scheduling costs more than it gains).
const MIN_TASK_MACS: usize = 1 << 16;
/// Tasks per thread a map aims for, so uneven tasks still balance.
const TASKS_PER_THREAD: usize = 4;
/// Size a per-task scratch buffer (im2col) aims for: half of the 1 MiB per-core L2.
pub(crate) const SCRATCH_BYTES: usize = 512 * 1024;
/// Most partial sums a reduction keeps (a constant, so results are thread-count independent).
const MAX_PARTIALS: usize = 16;
/// Most bytes all partial sums of a reduction may take together.
const PARTIALS_BYTES: usize = 32 << 20;

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

/// One map task: batch item, range of units, and the output block it owns.
pub(crate) type ColumnTask<'a> = (usize, Range<usize>, ArrayViewMut2<'a, f32>);

/// Splits `y` `(batch, rows, units * unit)` into disjoint column blocks of `chunk` units per
/// batch item (the block of units `u0..u1` owns columns `u0 * unit..u1 * unit`).
pub(crate) fn column_tasks<'a>(
    y: ArrayViewMut3<'a, f32>,
    chunk: usize,
    unit: usize,
) -> Vec<ColumnTask<'a>> {
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
fn split_items<'a>(
    y: ArrayViewMut3<'a, f32>,
    axis: Axis,
    units: usize,
    chunk: usize,
    unit: usize,
) -> Vec<ColumnTask<'a>> {
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
    let by_work = (total.saturating_mul(unit_macs) / MIN_TASK_MACS).max(1);
    let groups = MAX_PARTIALS.min(by_memory).min(by_work).min(total);
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

/// Runs `f(group, partial)` for every group in parallel, each into its own zeroed `shape`
/// partial, and returns the sum of the partials taken in group order.
pub(crate) fn sum_partials<F>(groups: &[Group], shape: (usize, usize), f: F) -> Array2<f32>
where
    F: Fn(&Group, ArrayViewMut2<'_, f32>) + Sync,
{
    let partials: Vec<Array2<f32>> = groups
        .par_iter()
        .map(|g| {
            let mut acc = Array2::<f32>::zeros(shape);
            f(g, acc.view_mut());
            acc
        })
        .collect();
    let mut it = partials.into_iter();
    let mut total = it.next().unwrap_or_else(|| Array2::zeros(shape));
    for p in it {
        total += &p;
    }
    total
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
