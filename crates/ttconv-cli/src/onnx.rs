//! `ttconv compress IN.onnx -o OUT.onnx`: the ONNX path of the command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use ttconv_models::{Policy, ReportOptions};
use ttconv_onnx::{Runtime, Verification};

use crate::{CompressArgs, Display, Res, emit};

/// The ONNX options of `compress`.
#[derive(Args, Debug, Default)]
pub(crate) struct OnnxArgs {
    /// ONNX Runtime's library file (`onnxruntime/capi/libonnxruntime.so.1.31.*` of the
    /// `onnxruntime` PyPI wheel); default: $ORT_DYLIB_PATH.
    #[arg(long, value_name = "LIB")]
    onnxruntime: Option<PathBuf>,
    /// Do not run the two models (no runtime needed; nothing is checked).
    #[arg(long)]
    no_verify: bool,
    /// Model inputs for the check: a safetensors file with one tensor per graph input, by name;
    /// default: standard normal values for float inputs.
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// The size of a symbolic input dim for the random inputs, NAME=N (repeatable; others: 1).
    #[arg(long = "dim", value_name = "NAME=N")]
    dims: Vec<String>,
    /// Fail (non-zero exit, nothing written) when an output's relative error is above this.
    #[arg(long, value_name = "E")]
    max_output_error: Option<f64>,
    /// Timed runs of each model in the check (the median is printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// Whether `path` names an ONNX model (by its extension: protobuf has no magic number).
pub(crate) fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

fn dims(args: &OnnxArgs) -> Res<HashMap<String, usize>> {
    args.dims
        .iter()
        .map(|d| {
            let (name, n) = d
                .split_once('=')
                .ok_or_else(|| format!("--dim `{d}`: NAME=N expected"))?;
            let n: usize = n
                .trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("--dim `{d}`: a size >= 1 expected"))?;
            Ok((name.trim().to_string(), n))
        })
        .collect()
}

fn library(args: &OnnxArgs) -> Res<PathBuf> {
    if let Some(p) = &args.onnxruntime {
        return Ok(p.clone());
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(
            "checking the compressed model needs ONNX Runtime: `pip install onnxruntime==1.31.1`, then pass --onnxruntime .../site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 (or set ORT_DYLIB_PATH), or skip the check with --no-verify"
                .into(),
        ),
    }
}

fn verification_table(v: &Verification) -> String {
    let mut out = String::from("outputs (original vs compressed, same inputs, ONNX Runtime):\n");
    let width = v.outputs.iter().map(|o| o.name.len()).max().unwrap_or(0);
    for o in &v.outputs {
        out += &format!(
            "  {:<width$}  {:<14}  rel error {:.3e}  max abs {:.3e}\n",
            o.name,
            format!("{:?}", o.shape),
            o.rel_error,
            o.max_abs_error
        );
    }
    out += &format!(
        "run time (median): original {:.3} ms, compressed {:.3} ms ({:.2}x)\n",
        v.original_seconds * 1e3,
        v.compressed_seconds * 1e3,
        v.original_seconds / v.compressed_seconds.max(f64::MIN_POSITIVE)
    );
    out
}

pub(crate) fn run_compress(
    args: &CompressArgs,
    policy: &Policy,
    options: &ReportOptions,
) -> Res<()> {
    let o = &args.onnx;
    if !is_onnx(&args.output) {
        return Err(format!(
            "{}: an ONNX model is written to a .onnx file",
            args.output.display()
        )
        .into());
    }
    if let Some(e) = o.max_output_error
        && !(e.is_finite() && e >= 0.0)
    {
        return Err(format!("--max-output-error {e}: a finite value >= 0 expected").into());
    }
    let start = Instant::now();
    let model = ttconv_onnx::read_model(&args.input)?;
    let mut display = Display::new();
    let (out, report) = ttconv_onnx::compress(&model, policy, options, &mut |p| display.update(p))?;
    let mut text = report.to_table();
    let verification = if o.no_verify {
        text += "not checked (--no-verify)\n";
        None
    } else {
        let runtime = Runtime::load(&library(o)?, 0)?;
        let inputs = match &o.inputs {
            Some(path) => ttconv_onnx::read_inputs(path, &model)?,
            None => ttconv_onnx::random_inputs(&model, &dims(o)?, 0)?,
        };
        let v = ttconv_onnx::verify(
            &runtime,
            &ttconv_onnx::model_to_bytes(&model),
            &ttconv_onnx::model_to_bytes(&out),
            &inputs,
            o.runs,
        )?;
        text += &verification_table(&v);
        Some(v)
    };
    if let (Some(v), Some(max)) = (&verification, o.max_output_error)
        && let Some(worst) = v
            .outputs
            .iter()
            .find(|x| x.rel_error > max || x.rel_error.is_nan())
    {
        emit(&text)?;
        return Err(ttconv_onnx::Error::OutputError {
            output: worst.name.clone(),
            error: worst.rel_error,
            max,
        }
        .into());
    }
    ttconv_onnx::write_model(&args.output, &out, Some(&args.input))?;
    if let Some(path) = &args.report {
        let mut json: serde_json::Value = serde_json::from_str(&report.to_json())?;
        if let Some(v) = &verification {
            json["verification"] = serde_json::to_value(v)?;
        }
        ttconv_models::write_atomic(
            path,
            serde_json::to_string_pretty(&json)?.as_bytes(),
            Some(&args.input),
        )?;
    }
    emit(&format!(
        "{text}wrote {} in {:.2} s\n",
        args.output.display(),
        start.elapsed().as_secs_f64()
    ))
}
