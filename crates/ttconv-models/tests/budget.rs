//! The global budget allocation: the budget is respected, and spending it by the spectra beats
//! spending it evenly.

use proptest::prelude::*;
use ttconv_models::{Spectrum, allocate_ranks};

fn params(shape: &[usize], ranks: &[usize]) -> usize {
    (0..shape.len())
        .map(|k| ranks[k] * shape[k] * ranks[k + 1])
        .sum()
}

/// A spectrum with geometric decay `decay^i` on every bond, of the sizes of a TT shape.
fn spectrum(shape: &[usize], decay: f64) -> Spectrum {
    let n = shape.len();
    let singular_values: Vec<Vec<f64>> = (1..n)
        .map(|k| {
            let left: usize = shape[..k].iter().product();
            let right: usize = shape[k..].iter().product();
            (0..left.min(right)).map(|i| decay.powi(i as i32)).collect()
        })
        .collect();
    let norm = singular_values[0].iter().map(|s| s * s).sum::<f64>().sqrt();
    Spectrum {
        shape: shape.to_vec(),
        singular_values,
        norm,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_budget_is_respected(
        dims in prop::collection::vec((2usize..9, 2usize..4, 2usize..9), 1..4),
        decay in 0.3f64..0.95,
        frac in 0.05f64..0.9,
        cap in prop::option::of(1usize..6),
    ) {
        let layers: Vec<Spectrum> = dims.iter().map(|&(i, k, o)| spectrum(&[i, k, k, o], decay)).collect();
        let dense: usize = dims.iter().map(|&(i, k, o)| i * k * k * o).sum();
        let minimum: usize = layers.iter().map(|s| s.shape.iter().sum::<usize>()).sum();
        let budget = ((dense as f64 * frac) as usize).max(minimum);
        let ranks = allocate_ranks(&layers, budget, cap).unwrap();
        let total: usize = layers.iter().zip(&ranks).map(|(s, r)| params(&s.shape, r)).sum();
        prop_assert!(total <= budget);
        for (s, r) in layers.iter().zip(&ranks) {
            prop_assert_eq!(r.len(), s.shape.len() + 1);
            prop_assert!(r[0] == 1 && *r.last().unwrap() == 1);
            if let Some(c) = cap { prop_assert!(r.iter().all(|&x| x <= c.max(1))); }
        }
    }
}

#[test]
fn spending_by_the_spectra_beats_an_even_split() {
    // One layer whose spectrum decays fast (little gained by rank) and one that decays slowly:
    // the allocation gives the slow one the ranks, and its total error bound is below that of
    // the same budget split evenly (same uniform rank on both).
    let fast = spectrum(&[16, 3, 3, 16], 0.3);
    let slow = spectrum(&[16, 3, 3, 16], 0.9);
    let layers = [fast, slow];
    let even = [1usize, 6, 6, 6, 1];
    let budget = 2 * params(&layers[0].shape, &even);
    let ranks = allocate_ranks(&layers, budget, None).unwrap();
    let err =
        |r: &[Vec<usize>]| -> f64 { layers.iter().zip(r).map(|(s, r)| s.error_bound(r)).sum() };
    let ours = err(&ranks);
    let split = err(&[even.to_vec(), even.to_vec()]);
    assert!(ours < split, "allocated {ranks:?}: {ours} vs even {split}");
    assert!(ranks[1][2] > ranks[0][2], "{ranks:?}");
}

#[test]
fn an_unreachable_budget_is_an_error() {
    let layers = [spectrum(&[4, 3, 4], 0.5)];
    let e = allocate_ranks(&layers, 5, None).unwrap_err();
    assert!(e.to_string().contains("below"), "{e}");
}
