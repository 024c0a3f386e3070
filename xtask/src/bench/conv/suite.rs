//! The suite: the default cases, the rank sweep, and which of them (or of the `--case` specs)
//! a run selects, with their case ids (`conv/<name>`, `conv/user/<name>`,
//! `conv/sweep/2d_c64_s56_r<R>`).

use ttconv::{Padding, RankSpec};

use super::spec::CaseSpec;
use crate::bench::BenchOptions;
use crate::bench::anchors::request::ConvCase;

fn spec2d(
    name: &str,
    c_in: usize,
    c_out: usize,
    s: usize,
    stride: usize,
    rank: RankSpec,
) -> CaseSpec {
    CaseSpec {
        name: name.into(),
        batch: 8,
        in_channels: c_in,
        out_channels: c_out,
        spatial: vec![s, s],
        kernel: vec![3, 3],
        stride: vec![stride; 2],
        padding: Padding::All(1),
        dilation: vec![1, 1],
        rank,
    }
}

/// A 1-D case of batch 8, `c -> c` channels over `len` positions, kernel `k`, padding `pad`.
fn spec1d(name: &str, c: usize, len: usize, k: usize, pad: usize, rank: RankSpec) -> CaseSpec {
    CaseSpec {
        name: name.into(),
        batch: 8,
        in_channels: c,
        out_channels: c,
        spatial: vec![len],
        kernel: vec![k],
        stride: vec![1],
        padding: Padding::All(pad),
        dilation: vec![1],
        rank,
    }
}

/// A 2-D case of batch `batch`, kernel `kernel`, padding `padding` (symmetric per mode) and
/// dilation `dilation`, stride 1.
fn spec2d_kernel(
    name: &str,
    batch: usize,
    c: usize,
    s: usize,
    kernel: [usize; 2],
    padding: [usize; 2],
    dilation: usize,
    rank: RankSpec,
) -> CaseSpec {
    CaseSpec {
        name: name.into(),
        batch,
        in_channels: c,
        out_channels: c,
        spatial: vec![s, s],
        kernel: kernel.to_vec(),
        stride: vec![1, 1],
        padding: Padding::Each(padding.to_vec()),
        dilation: vec![dilation; 2],
        rank,
    }
}

/// The default suite: nine layers of ResNet-like and 1-D / 3-D networks at TT ranks from 16 to
/// `same`, batch 8 (2 for the 3-D case), 3x3 kernels with padding 1 (9 with padding 4 in 1-D);
/// then five shapes users run that those nine lack: batch 1 (latency), a dilation-2 layer
/// (DeepLab), a 5x5 kernel, a 1x7 kernel (Inception's factorised 7x7) and a wide 1-D layer
/// (c = 256, audio / text).
pub fn default_suite() -> Vec<CaseSpec> {
    use RankSpec::{Fraction, Same, Uniform};
    vec![
        spec2d("2d_c64_s56_r16", 64, 64, 56, 1, Uniform(16)),
        spec2d("2d_c64_s56_r0.1", 64, 64, 56, 1, Fraction(0.1)),
        spec2d("2d_c128_s28_r32", 128, 128, 28, 1, Uniform(32)),
        spec2d("2d_c256_s14_r32", 256, 256, 14, 1, Uniform(32)),
        spec2d("2d_c512_s7_r64", 512, 512, 7, 1, Uniform(64)),
        spec2d("2d_c256_s14_rsame", 256, 256, 14, 1, Same),
        spec2d("2d_c64to128_s56_stride2_r16", 64, 128, 56, 2, Uniform(16)),
        spec1d("1d_c64_L4096_k9_r16", 64, 4096, 9, 4, Uniform(16)),
        CaseSpec {
            name: "3d_c32_s8x28x28_r16".into(),
            batch: 2,
            in_channels: 32,
            out_channels: 32,
            spatial: vec![8, 28, 28],
            kernel: vec![3, 3, 3],
            stride: vec![1; 3],
            padding: Padding::All(1),
            dilation: vec![1; 3],
            rank: Uniform(16),
        },
        spec2d_kernel(
            "2d_c256_s14_b1_r32",
            1,
            256,
            14,
            [3, 3],
            [1, 1],
            1,
            Uniform(32),
        ),
        spec2d_kernel(
            "2d_c128_s28_dil2_r32",
            8,
            128,
            28,
            [3, 3],
            [2, 2],
            2,
            Uniform(32),
        ),
        spec2d_kernel(
            "2d_c64_s28_k5_r16",
            8,
            64,
            28,
            [5, 5],
            [2, 2],
            1,
            Uniform(16),
        ),
        spec2d_kernel(
            "2d_c128_s17_k1x7_r32",
            8,
            128,
            17,
            [1, 7],
            [0, 3],
            1,
            Uniform(32),
        ),
        spec1d("1d_c256_L1024_k3_r32", 256, 1024, 3, 1, Uniform(32)),
    ]
}

/// The default suite as `suite.json` of the GPU check (`{"cases": [...]}`, each case in the
/// anchors' form, its id the case name): the one list of cases `gpu_bench` and the GPU anchor
/// read. An error names a case PyTorch cannot express (none of the default ones).
pub fn default_suite_json() -> Result<String, String> {
    let cases = default_suite()
        .iter()
        .map(|c| ConvCase::new(&c.name, c))
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string_pretty(&serde_json::json!({ "cases": cases }))
        .map_err(|e| format!("suite.json: {e}"))
}

/// The ranks of the plotted sweep (2d_c64_s56, batch 8, 3x3, padding 1).
pub const SWEEP_RANKS: [usize; 7] = [4, 8, 16, 24, 32, 48, 64];

/// The spec of the sweep point at uniform rank `r` (2d_c64_s56, batch 8, 3x3, padding 1).
pub fn sweep_spec(r: usize) -> CaseSpec {
    spec2d(&sweep_id(r), 64, 64, 56, 1, RankSpec::Uniform(r))
}

/// The case id of the sweep point at rank `r`.
pub fn sweep_id(r: usize) -> String {
    format!("conv/sweep/2d_c64_s56_r{r}")
}

/// What a run of the conv part does.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The cases to time, with their ids: the `--case` specs or the default suite, filtered.
    pub cases: Vec<(String, CaseSpec)>,
    /// The sweep ranks selected (empty with `--quick`, `--check` or `--case`).
    pub sweep: Vec<usize>,
}

impl Selection {
    /// The cases and sweep points `options` select; an error for a `--case` that does not parse.
    pub fn new(options: &BenchOptions) -> Result<Self, String> {
        let user = !options.cases.is_empty();
        let cases: Vec<(String, CaseSpec)> = if user {
            options
                .cases
                .iter()
                .map(|s| {
                    CaseSpec::parse(s)
                        .map(|c| (format!("conv/user/{}", c.name), c))
                        .map_err(|e| format!("--case `{s}`: {e}"))
                })
                .collect::<Result<_, _>>()?
        } else {
            default_suite()
                .into_iter()
                .map(|c| (format!("conv/{}", c.name), c))
                .collect()
        };
        let cases = cases
            .into_iter()
            .filter(|(id, _)| options.selects(id))
            .collect();
        let sweep = if user || options.quick || options.check {
            Vec::new()
        } else {
            SWEEP_RANKS
                .into_iter()
                .filter(|&r| options.selects(&sweep_id(r)))
                .collect()
        };
        Ok(Self { cases, sweep })
    }

    /// Every selected id, cases first.
    pub fn ids(&self) -> Vec<String> {
        let cases = self.cases.iter().map(|(id, _)| id.clone());
        cases
            .chain(self.sweep.iter().map(|&r| sweep_id(r)))
            .collect()
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty() && self.sweep.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(filter: Option<&str>) -> BenchOptions {
        BenchOptions {
            filter: filter.map(String::from),
            ..BenchOptions::default()
        }
    }

    #[test]
    fn the_suite_has_its_fourteen_cases_with_tensorly_ranks() {
        let suite = default_suite();
        let names: Vec<&str> = suite.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "2d_c64_s56_r16",
                "2d_c64_s56_r0.1",
                "2d_c128_s28_r32",
                "2d_c256_s14_r32",
                "2d_c512_s7_r64",
                "2d_c256_s14_rsame",
                "2d_c64to128_s56_stride2_r16",
                "1d_c64_L4096_k9_r16",
                "3d_c32_s8x28x28_r16",
                "2d_c256_s14_b1_r32",
                "2d_c128_s28_dil2_r32",
                "2d_c64_s28_k5_r16",
                "2d_c128_s17_k1x7_r32",
                "1d_c256_L1024_k3_r32",
            ]
        );
        // TensorLy's rank rules (`validate_tt_rank`) on the TT shapes (in, k.., out).
        let ranks = |name: &str| {
            let c = suite.iter().find(|c| c.name == name).unwrap();
            c.config().resolved_ranks().unwrap()
        };
        assert_eq!(ranks("2d_c64_s56_r0.1"), vec![1, 26, 2, 26, 1]);
        assert_eq!(ranks("2d_c256_s14_rsame"), vec![1, 921, 21, 921, 1]);
        assert_eq!(ranks("3d_c32_s8x28x28_r16"), vec![1, 16, 16, 16, 16, 1]);
        for c in &suite {
            let g = c.config().validate().unwrap();
            assert!(ttconv::output_spatial(&c.spatial, &c.kernel, &g).is_ok());
        }
    }

    /// The GPU check's suite.json holds every case, in the anchors' form.
    #[test]
    fn the_gpu_suite_file_is_the_default_suite() {
        let text = default_suite_json().unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), default_suite().len());
        assert_eq!(cases[5]["id"], "2d_c256_s14_rsame");
        assert_eq!(cases[5]["rank"], "same");
        let k1x7 = cases
            .iter()
            .find(|c| c["id"] == "2d_c128_s17_k1x7_r32")
            .unwrap();
        assert_eq!(k1x7["kernel"], serde_json::json!([1, 7]));
        assert_eq!(k1x7["padding"], serde_json::json!([0, 3]));
    }

    #[test]
    fn selection_follows_filter_and_flags() {
        let all = Selection::new(&options(None)).unwrap();
        assert_eq!((all.cases.len(), all.sweep.len()), (14, 7));
        assert_eq!(all.ids()[0], "conv/2d_c64_s56_r16");
        assert_eq!(all.ids()[14], "conv/sweep/2d_c64_s56_r4");
        let one = Selection::new(&options(Some("c512"))).unwrap();
        assert_eq!(one.ids(), ["conv/2d_c512_s7_r64"]);
        let sweep = Selection::new(&options(Some("sweep/"))).unwrap();
        assert_eq!((sweep.cases.len(), sweep.sweep.len()), (0, 7));
        let quick = Selection::new(&BenchOptions {
            quick: true,
            ..options(None)
        })
        .unwrap();
        assert!(quick.sweep.is_empty() && quick.cases.len() == 14);
        assert!(Selection::new(&options(Some("ttsvd"))).unwrap().is_empty());
        let user = Selection::new(&BenchOptions {
            cases: vec!["c=8,s=16,k=3,name=mine".into()],
            ..options(Some("conv/"))
        })
        .unwrap();
        assert!(user.sweep.is_empty());
        assert_eq!(user.ids(), ["conv/user/mine"]);
        let bad = Selection::new(&BenchOptions {
            cases: vec!["c=8".into()],
            ..options(None)
        });
        assert!(bad.unwrap_err().starts_with("--case `c=8`"));
    }
}
