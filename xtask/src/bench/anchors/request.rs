//! The anchor script's input and output: the selected cases in the form the script reads
//! (`xtask/anchors/anchor_bench.py` documents it), and its answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use ttconv::{Padding, RankSpec};

use crate::bench::BenchOptions;
use crate::bench::conv::spec::{CaseSpec, padding_text};
use crate::bench::conv::suite::Selection;
use crate::bench::measure::Reps;
use crate::bench::ttsvd;

/// Seed of the anchors' random data (their timings do not depend on the values).
const SEED: u64 = 0;

/// One conv case as the script reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvCase {
    /// The bench's case id.
    pub id: String,
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input spatial size.
    pub spatial: Vec<usize>,
    /// Kernel size per mode.
    pub kernel: Vec<usize>,
    /// Stride per mode.
    pub stride: Vec<usize>,
    /// Symmetric zero padding per mode (what `torch.nn.functional.convNd` takes).
    pub padding: Vec<usize>,
    /// Dilation per mode.
    pub dilation: Vec<usize>,
    /// The rank spec as TensorLy takes it: `"same"`, a fraction, an int or every rank.
    pub rank: Value,
}

impl ConvCase {
    /// The case `spec` with id `id`; an error naming the reason when PyTorch cannot express its
    /// padding (an asymmetric padding, or `same` with an odd total on some axis).
    pub fn new(id: &str, spec: &CaseSpec) -> Result<Self, String> {
        let d = spec.spatial.len();
        let padding = match &spec.padding {
            Padding::All(p) => vec![*p; d],
            Padding::Each(v) => v.clone(),
            Padding::Asymmetric(v) if v.iter().all(|(a, b)| a == b) => {
                v.iter().map(|(a, _)| *a).collect()
            }
            Padding::Same => (0..d)
                .map(|j| {
                    let total = spec.dilation[j] * (spec.kernel[j] - 1);
                    total.is_multiple_of(2).then_some(total / 2)
                })
                .collect::<Option<Vec<_>>>()
                .ok_or("padding `same` is asymmetric on some axis (even kernel extent)")?,
            p => {
                return Err(format!(
                    "padding {} is asymmetric; PyTorch's convolution pads both sides alike",
                    padding_text(p)
                ));
            }
        };
        Ok(Self {
            id: id.to_string(),
            batch: spec.batch,
            in_channels: spec.in_channels,
            out_channels: spec.out_channels,
            spatial: spec.spatial.clone(),
            kernel: spec.kernel.clone(),
            stride: spec.stride.clone(),
            padding,
            dilation: spec.dilation.clone(),
            rank: rank_value(&spec.rank),
        })
    }
}

/// A rank spec as TensorLy's `rank=` argument.
pub fn rank_value(rank: &RankSpec) -> Value {
    match rank {
        RankSpec::Same => Value::from("same"),
        RankSpec::Fraction(f) => Value::from(*f),
        RankSpec::Uniform(r) => Value::from(*r),
        RankSpec::Explicit(v) => Value::from(v.clone()),
    }
}

/// The conv part's request.
#[derive(Debug, Clone, Serialize)]
pub struct ConvRequest {
    /// Threads of torch (the bench's rayon threads).
    pub threads: usize,
    /// Seed of the random data.
    pub seed: u64,
    /// The repeat protocol, the bench's own.
    pub reps: Reps,
    /// The cases.
    pub cases: Vec<ConvCase>,
}

/// One TT-SVD case as the script reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TtSvdCase {
    /// The bench's case id.
    pub id: String,
    /// The kernel's shape in TT order.
    pub shape: Vec<usize>,
    /// The rank spec as TensorLy takes it.
    pub rank: Value,
    /// `float32` or `float64`.
    pub dtype: &'static str,
    /// Untimed runs, as the bench makes.
    pub warmup: usize,
    /// Timed runs, as the bench makes.
    pub runs: usize,
}

/// The TT-SVD part's request.
#[derive(Debug, Clone, Serialize)]
pub struct TtSvdRequest {
    /// Seed of the random data.
    pub seed: u64,
    /// The cases.
    pub cases: Vec<TtSvdCase>,
}

/// Both parts' requests, for the cases a run selects.
#[derive(Debug, Clone)]
pub struct Request {
    /// The conv cases (the sweep is not anchored).
    pub conv: ConvRequest,
    /// The TT-SVD cases.
    pub ttsvd: TtSvdRequest,
    /// Selected cases left out, with the reason.
    pub skipped: BTreeMap<String, String>,
}

impl Request {
    /// The requests for what `options` select (an error for a `--case` that does not parse).
    pub fn for_options(options: &BenchOptions) -> Result<Self, String> {
        let mut skipped = BTreeMap::new();
        let mut conv = Vec::new();
        for (id, spec) in Selection::new(options)?.cases {
            match ConvCase::new(&id, &spec) {
                Ok(c) => conv.push(c),
                Err(why) => {
                    skipped.insert(id, why);
                }
            }
        }
        let ttsvd = ttsvd::selected(options)
            .into_iter()
            .map(|c| TtSvdCase {
                rank: rank_value(&c.spec),
                dtype: c.dtype.numpy(),
                shape: c.shape.to_vec(),
                warmup: c.warmup,
                runs: c.runs,
                id: c.id,
            })
            .collect();
        Ok(Self {
            conv: ConvRequest {
                threads: rayon::current_num_threads(),
                seed: SEED,
                reps: Reps::for_options(options),
                cases: conv,
            },
            ttsvd: TtSvdRequest {
                seed: SEED,
                cases: ttsvd,
            },
            skipped,
        })
    }
}

/// The script's figures for one conv case (milliseconds, medians of the timed runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvAnchor {
    /// The bench's case id.
    pub id: String,
    /// TensorLy-Torch's resolved TT ranks.
    pub ranks: Vec<usize>,
    /// TensorLy-Torch factorized forward.
    pub fact_ms: f64,
    /// TensorLy-Torch reconstructed forward (rebuilds the kernel on every call).
    pub rec_ms: f64,
    /// PyTorch dense forward, kernel rebuilt beforehand.
    pub dense_ms: f64,
    /// TensorLy-Torch factorized forward + backward of `out.sum()`.
    pub fact_train_ms: f64,
    /// TensorLy-Torch reconstructed forward + backward.
    pub rec_train_ms: f64,
    /// PyTorch dense forward + backward.
    pub dense_train_ms: f64,
    /// `max |y_fact - y_dense| / max |y_dense|` on the script's side (a layout check).
    pub fact_vs_dense_rel_diff: f64,
    /// CPU share other processes took while the case ran.
    pub external_load: Option<f64>,
}

/// The script's figures for one TT-SVD case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtSvdAnchor {
    /// The bench's case id.
    pub id: String,
    /// Median seconds of `tensor_train`.
    pub median_s: f64,
    /// The TT ranks it returned.
    pub ranks: Vec<usize>,
    /// Its relative error `||T - TT|| / ||T||`.
    pub rel_error: f64,
    /// CPU share other processes took while the case ran.
    pub external_load: Option<f64>,
}

/// The conv part's answer: the cases and the versions.
#[derive(Debug, Clone, Deserialize)]
pub struct ConvReply {
    /// Per case.
    pub cases: Vec<ConvAnchor>,
    /// Everything else (versions, threads).
    #[serde(flatten)]
    pub info: BTreeMap<String, Value>,
}

/// The TT-SVD part's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TtSvdReply {
    /// Per case.
    pub cases: Vec<TtSvdAnchor>,
    /// Everything else (versions).
    #[serde(flatten)]
    pub info: BTreeMap<String, Value>,
}

impl ConvReply {
    /// The versions as one JSON object.
    pub fn versions(&self) -> Value {
        Value::Object(self.info.clone().into_iter().collect())
    }
}

impl TtSvdReply {
    /// The versions as one JSON object.
    pub fn versions(&self) -> Value {
        Value::Object(self.info.clone().into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_cases_become_symmetric_paddings_and_tensorly_ranks() {
        let options = BenchOptions::default();
        let r = Request::for_options(&options).unwrap();
        assert_eq!(r.conv.cases.len(), 14);
        assert!(r.skipped.is_empty());
        let c = &r.conv.cases[0];
        assert_eq!(c.id, "conv/2d_c64_s56_r16");
        assert_eq!(
            (c.padding.clone(), c.rank.clone()),
            (vec![1, 1], Value::from(16))
        );
        assert_eq!(r.conv.cases[1].rank, Value::from(0.1));
        assert_eq!(r.conv.cases[5].rank, Value::from("same"));
        assert_eq!(r.conv.cases[7].padding, vec![4]);
        assert_eq!(r.ttsvd.cases.len(), 18);
        assert_eq!(r.ttsvd.cases[0].dtype, "float32");
        assert_eq!(r.conv.reps, Reps::for_options(&options));
    }

    #[test]
    fn paddings_pytorch_cannot_take_are_skipped_with_a_reason() {
        let options = BenchOptions {
            cases: vec![
                "c=4,s=9,k=4,pad=same,name=even".into(),
                "c=4,s=9,k=3,pad=same,name=odd".into(),
            ],
            filter: Some("conv/".into()),
            ..BenchOptions::default()
        };
        let r = Request::for_options(&options).unwrap();
        assert_eq!(r.conv.cases.len(), 1);
        assert_eq!(r.conv.cases[0].padding, vec![1]);
        assert!(r.skipped["conv/user/even"].contains("asymmetric"));
        assert!(r.ttsvd.cases.is_empty());
        let spec = CaseSpec {
            padding: Padding::Asymmetric(vec![(0, 1)]),
            ..CaseSpec::parse("c=4,s=9,k=3").unwrap()
        };
        assert!(ConvCase::new("x", &spec).unwrap_err().contains("0:1"));
    }

    #[test]
    fn answers_parse_with_their_versions() {
        let text = r#"{"torch": "2.15.0", "threads": 2, "cases": [{"id": "conv/a", "ranks": [1, 4, 1],
            "fact_ms": 1.0, "rec_ms": 2.0, "dense_ms": 3.0, "fact_train_ms": 4.0,
            "rec_train_ms": 5.0, "dense_train_ms": 6.0, "fact_vs_dense_rel_diff": 1e-7,
            "external_load": null}]}"#;
        let reply: ConvReply = serde_json::from_str(text).unwrap();
        assert_eq!(reply.cases[0].dense_train_ms, 6.0);
        assert_eq!(reply.versions()["torch"], "2.15.0");
        assert!(serde_json::from_str::<ConvReply>(r#"{"cases": [{"id": "x"}]}"#).is_err());
    }
}
