//! What a compression did, per layer and in total; printed as a table and written as JSON.

use serde::Serialize;

use crate::policy::SkipReason;

/// Modelled multiply-adds of one forward (batch 1) at a given input size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Macs {
    /// The layer's input spatial size used.
    pub input_spatial: Vec<usize>,
    /// Dense convolution.
    pub dense: u64,
    /// Factorized chain.
    pub factorized: u64,
    /// What `Auto` picks under the cost constants given (`"dense"` or `"factorized"`).
    pub auto: String,
    /// Whether the geometry was assumed (stride 1, dilation 1, padding `(k-1)/2`) because the
    /// file does not record it.
    pub geometry_assumed: bool,
}

/// The result for one kernel.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Decomposed into TT cores.
    Compressed {
        /// The rule that chose the ranks (`rank 0.5`, `tol 0.3`, `ratio 2 (allocated)`).
        rule: String,
        /// The realised TT ranks `[1, r_1, .., 1]`.
        ranks: Vec<usize>,
        /// Kernel parameters over TT parameters.
        ratio: f64,
        /// `||W - W_tt||_F / ||W||_F` with `W_tt` reconstructed in f64 from the cores as written.
        rel_error: f64,
        /// With an input size: MACs dense vs factorized and `Auto`'s choice.
        #[serde(skip_serializing_if = "Option::is_none")]
        macs: Option<Macs>,
    },
    /// Kept as it was.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
}

/// One kernel-like tensor of the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerReport {
    /// The layer name (`features.0`).
    pub name: String,
    /// The kernel tensor's name (`features.0.weight`).
    pub tensor: String,
    /// `(out, in, k_1..k_d)`.
    pub kernel_shape: Vec<usize>,
    /// Parameters before (the kernel's elements).
    pub params_before: usize,
    /// Parameters after (the TT cores', or the kernel's when skipped).
    pub params_after: usize,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Totals over the file and over the eligible kernels.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Elements of every tensor before.
    pub file_params_before: usize,
    /// Elements of every tensor after.
    pub file_params_after: usize,
    /// Kernel elements of the eligible (not skipped by rule) kernels.
    pub eligible_params_before: usize,
    /// Their parameters after.
    pub eligible_params_after: usize,
    /// Layers decomposed.
    pub compressed: usize,
    /// Kernel-like tensors skipped.
    pub skipped: usize,
}

impl Totals {
    /// The totals of `layers` in a file of `file_params_before` elements that holds
    /// `file_params_after` after compression. A kernel kept dense because its TT form would not
    /// be smaller counts as eligible, at its dense size.
    pub fn from_layers(
        layers: &[LayerReport],
        file_params_before: usize,
        file_params_after: usize,
    ) -> Self {
        let mut totals = Totals {
            file_params_before,
            file_params_after,
            ..Totals::default()
        };
        for l in layers {
            match &l.outcome {
                Outcome::Compressed { .. } => {
                    totals.compressed += 1;
                    totals.eligible_params_before += l.params_before;
                    totals.eligible_params_after += l.params_after;
                }
                Outcome::Skipped { reason } => {
                    totals.skipped += 1;
                    if matches!(
                        reason,
                        SkipReason::NotSmaller { .. } | SkipReason::Slower { .. }
                    ) {
                        totals.eligible_params_before += l.params_before;
                        totals.eligible_params_after += l.params_before;
                    }
                }
            }
        }
        totals
    }

    /// `file_params_before / file_params_after`.
    pub fn file_ratio(&self) -> f64 {
        ratio(self.file_params_before, self.file_params_after)
    }

    /// `eligible_params_before / eligible_params_after`.
    pub fn eligible_ratio(&self) -> f64 {
        ratio(self.eligible_params_before, self.eligible_params_after)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// The report of [`crate::compress`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The policy, in words.
    pub policy: String,
    /// Every kernel-like tensor, in file order.
    pub layers: Vec<LayerReport>,
    /// Totals.
    pub totals: Totals,
}

fn shape_text(s: &[usize]) -> String {
    s.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// Names longer than 60 characters (exporters join op paths with `;`) shortened in the middle
/// for the table; the JSON keeps them whole.
fn short_name(name: &str) -> String {
    const HEAD: usize = 24;
    const TAIL: usize = 35;
    let n = name.chars().count();
    if n <= HEAD + TAIL + 1 {
        return name.to_string();
    }
    let head: String = name.chars().take(HEAD).collect();
    let tail: String = name.chars().skip(n - TAIL).collect();
    format!("{head}…{tail}")
}

fn mega(n: u64) -> String {
    format!("{:.2}M", n as f64 / 1e6)
}

impl Report {
    /// The JSON form (the same content as the table, machine-readable).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("plain data serialises");
        v["totals"]["file_ratio"] = self.totals.file_ratio().into();
        v["totals"]["eligible_ratio"] = self.totals.eligible_ratio().into();
        serde_json::to_string_pretty(&v).expect("plain data serialises")
    }

    /// A text table: one row per kernel (name, kernel shape, ranks, params before -> after,
    /// ratio, kernel error, and MACs when measured), then the totals.
    pub fn to_table(&self) -> String {
        let with_macs = self
            .layers
            .iter()
            .any(|l| matches!(&l.outcome, Outcome::Compressed { macs: Some(_), .. }));
        let mut rows: Vec<Vec<String>> = vec![{
            let mut h = vec!["layer", "kernel", "ranks", "params", "ratio", "error"];
            if with_macs {
                h.extend(["MACs dense -> TT", "auto"]);
            }
            h.into_iter().map(String::from).collect()
        }];
        for l in &self.layers {
            let mut row = vec![short_name(&l.name), shape_text(&l.kernel_shape)];
            match &l.outcome {
                Outcome::Compressed {
                    ranks,
                    ratio,
                    rel_error,
                    macs,
                    ..
                } => {
                    row.push(format!("{ranks:?}").replace(' ', ""));
                    row.push(format!("{} -> {}", l.params_before, l.params_after));
                    row.push(format!("{ratio:.2}x"));
                    row.push(format!("{rel_error:.4}"));
                    if with_macs {
                        match macs {
                            Some(m) => {
                                row.push(format!("{} -> {}", mega(m.dense), mega(m.factorized)));
                                row.push(m.auto.clone());
                            }
                            None => row.extend(["-".to_string(), "-".to_string()]),
                        }
                    }
                }
                Outcome::Skipped { reason } => {
                    row.push(format!("skipped: {reason}"));
                    row.push(format!("{}", l.params_before));
                    row.extend(["-".to_string(), "-".to_string()]);
                    if with_macs {
                        row.extend(["-".to_string(), "-".to_string()]);
                    }
                }
            }
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!("policy: {}\n", self.policy);
        for (i, r) in rows.iter().enumerate() {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out += line.join("  ").trim_end();
            out.push('\n');
            if i == 0 {
                out += &"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1));
                out.push('\n');
            }
        }
        let t = &self.totals;
        out += &format!(
            "eligible kernels: {} -> {} params ({:.2}x), {} compressed, {} skipped\n",
            t.eligible_params_before,
            t.eligible_params_after,
            t.eligible_ratio(),
            t.compressed,
            t.skipped
        );
        out += &format!(
            "whole file:       {} -> {} params ({:.2}x)\n",
            t.file_params_before,
            t.file_params_after,
            t.file_ratio()
        );
        if with_macs {
            out += "MACs: batch 1 at the given input size for every layer (a state_dict has no graph); geometry assumed stride 1, padding (k-1)/2 where the file does not record it\n";
        }
        out
    }
}
