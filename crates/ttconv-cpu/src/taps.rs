//! Which output positions a kernel tap reads inside the input, along one axis.
//!
//! Output position `p` and tap `t` read input position `p * stride + offset(t)` with
//! `offset(t) = t * dilation - pad_before`; positions outside the input are padding (zero). The
//! convolutions never materialise padding: they restrict each tap to the exact range of output
//! positions whose input position is inside, computed here.

use std::ops::Range;

use ttconv::AxisGeometry;

/// `t * dilation - pad_before`: the input position read by output position 0 and tap `t`.
/// Exact for the taps of a validated geometry: `t * dilation < padded length <= isize::MAX`
/// ([`AxisGeometry::padded_len`]).
pub(crate) fn tap_offset(g: &AxisGeometry, t: usize) -> isize {
    (t * g.dilation) as isize - g.pad_before as isize
}

/// The output positions `p < out_len` whose input position `p * stride + tap_offset(t)` lies
/// in `inputs`; empty (possibly `0..0`) when there is none. `stride >= 1`.
pub(crate) fn outputs_reading(
    g: &AxisGeometry,
    t: usize,
    inputs: Range<usize>,
    out_len: usize,
) -> Range<usize> {
    if inputs.is_empty() {
        return 0..0;
    }
    let off = tap_offset(g, t);
    // p * s + off >= inputs.start  <=>  p >= ceil((inputs.start - off) / s)
    let first = inputs.start as isize - off;
    let lo = if first <= 0 {
        0
    } else {
        (first as usize).div_ceil(g.stride)
    };
    // p * s + off <= inputs.end - 1  <=>  p <= floor((inputs.end - 1 - off) / s)
    let last = inputs.end as isize - 1 - off;
    if last < 0 {
        return 0..0;
    }
    // The stride may exceed isize::MAX (one output position): divide as usize.
    let hi = (last as usize / g.stride).saturating_add(1).min(out_len);
    if lo >= hi { 0..0 } else { lo..hi }
}

/// The output positions whose tap-`t` input position is inside `0..in_len`.
pub(crate) fn valid_outputs(
    g: &AxisGeometry,
    t: usize,
    in_len: usize,
    out_len: usize,
) -> Range<usize> {
    outputs_reading(g, t, 0..in_len, out_len)
}

/// Every tap of a kernel of sizes `kernel`, as a multi-index, in row-major order (the column
/// order of a kernel `(out, in, k_1..k_d)` viewed as a matrix `(out, in * prod(k))`).
pub(crate) fn row_major_taps(kernel: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let mut t = vec![0usize; kernel.len()];
    (0..kernel.iter().product::<usize>()).map(move |_| {
        let tap = t.clone();
        for j in (0..kernel.len()).rev() {
            t[j] += 1;
            if t[j] < kernel[j] {
                break;
            }
            t[j] = 0;
        }
        tap
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_come_in_row_major_order() {
        let taps: Vec<Vec<usize>> = row_major_taps(&[2, 3]).collect();
        assert_eq!(
            taps,
            vec![
                vec![0, 0],
                vec![0, 1],
                vec![0, 2],
                vec![1, 0],
                vec![1, 1],
                vec![1, 2]
            ]
        );
        assert_eq!(row_major_taps(&[4]).count(), 4);
    }

    #[test]
    fn ranges_match_brute_force() {
        for stride in 1..4 {
            for dilation in 1..4 {
                for pad_before in 0..4 {
                    let g = AxisGeometry {
                        stride,
                        dilation,
                        pad_before,
                        pad_after: 2,
                    };
                    for t in 0..4 {
                        for lo in 0..6 {
                            for hi in lo..9 {
                                let out_len = 7;
                                let want: Vec<usize> = (0..out_len)
                                    .filter(|&p| {
                                        let i = (p * stride) as isize + tap_offset(&g, t);
                                        i >= lo as isize && i < hi as isize
                                    })
                                    .collect();
                                let got: Vec<usize> =
                                    outputs_reading(&g, t, lo..hi, out_len).collect();
                                assert_eq!(got, want, "{g:?} t={t} {lo}..{hi}");
                            }
                        }
                    }
                }
            }
        }
    }
}
