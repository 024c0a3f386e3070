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
    /// `onnxruntime` PyPI wheel; `bash .ci/install-onnxruntime.sh` prints its path).
    #[arg(long, value_name = "LIB")]
    onnxruntime: Option<PathBuf>,
    /// Do not run the two models (no runtime needed; nothing is checked).
    #[arg(long)]
    no_verify: bool,
    /// Model inputs for the check: a safetensors file with, per graph input, a tensor of that
    /// name with a leading sample axis; default: the held-out samples when calibrating, else
    /// one sample of standard normal values for float inputs.
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
    /// Fit each compressed Conv's cores to the original layer's outputs on these model inputs
    /// (safetensors: per graph input, a tensor with a leading sample axis), layer by layer.
    #[arg(long, value_name = "FILE")]
    calibrate: Option<PathBuf>,
    /// Held-out inputs (same format) on which the whole model's output error is reported with
    /// and without fitting; default: the last third of the calibration samples (not fitted on).
    #[arg(long, value_name = "FILE", requires = "calibrate")]
    holdout: Option<PathBuf>,
    /// Ridge toward the dense kernel in the fit, relative to the patch energy.
    #[arg(long, default_value_t = 1e-2, requires = "calibrate")]
    calibration_alpha: f64,
    /// ALS sweeps over the cores in the fit.
    #[arg(long, default_value_t = 5, requires = "calibrate")]
    sweeps: usize,
    /// Fit with Adam through the layer's backward instead of ALS, for this many full-batch
    /// steps (for comparison: ALS did better on every layer measured).
    #[arg(long, value_name = "STEPS", requires = "calibrate")]
    adam_steps: Option<usize>,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3, requires = "adam_steps")]
    adam_lr: f32,
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

fn library(args: &OnnxArgs) -> Res<&Path> {
    args.onnxruntime.as_deref().ok_or_else(|| {
        "running the models needs ONNX Runtime: `pip install onnxruntime==1.31.1`, then pass --onnxruntime .../site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1, or skip the check with --no-verify"
            .into()
    })
}

fn verification_table(v: &Verification) -> String {
    let mut out = String::from("outputs (original vs compressed, ONNX Runtime):\n");
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

/// What calibration adds to the output.
struct Calibrated {
    text: String,
    json: serde_json::Value,
    holdout: Vec<ttconv_onnx::Sample>,
}

/// Compresses with fitting on the calibration samples, and reports the held-out output error of
/// the whole model with TT-SVD alone and with fitting.
fn calibrated(
    model: &ttconv_onnx::proto::ModelProto,
    policy: &Policy,
    options: &ReportOptions,
    shapes: &ttconv_onnx::InputShapes,
    rt: &Runtime,
    o: &OnnxArgs,
    path: &Path,
) -> Res<(
    ttconv_onnx::proto::ModelProto,
    ttconv_models::Report,
    Calibrated,
)> {
    let mut samples = ttconv_onnx::read_samples(path, model)?;
    let holdout = match &o.holdout {
        Some(h) => ttconv_onnx::read_samples(h, model)?,
        None => {
            if samples.len() < 2 {
                return Err(format!(
                    "{}: {} sample; give --holdout or at least 2 samples (the last third is held out)",
                    path.display(),
                    samples.len()
                )
                .into());
            }
            let keep = samples.len() - (samples.len() / 3).max(1);
            samples.split_off(keep)
        }
    };
    let copts = ttconv_onnx::CalibrationOptions {
        alpha: o.calibration_alpha,
        fit: ttconv_onnx::FitOptions {
            sweeps: o.sweeps,
            ..ttconv_onnx::FitOptions::default()
        },
        method: match o.adam_steps {
            Some(steps) => ttconv_onnx::FitMethod::Adam {
                steps,
                lr: o.adam_lr,
            },
            None => ttconv_onnx::FitMethod::Als,
        },
    };
    let (svd, _) = ttconv_onnx::compress_at(model, policy, options, shapes, &mut |_| {})?;
    let mut display = Display::new();
    let (out, report, fits) = ttconv_onnx::compress_calibrated(
        model,
        policy,
        options,
        shapes,
        rt,
        &samples,
        &copts,
        &mut |p| display.update(p),
    )?;
    let bytes = |m: &ttconv_onnx::proto::ModelProto| ttconv_onnx::model_to_bytes(m);
    let want = rt.run_all(&bytes(model), &holdout)?;
    let e_svd = ttconv_onnx::output_errors(&want, &rt.run_all(&bytes(&svd), &holdout)?)?;
    let e_fit = ttconv_onnx::output_errors(&want, &rt.run_all(&bytes(&out), &holdout)?)?;
    let method = match copts.method {
        ttconv_onnx::FitMethod::Als => {
            format!("ALS, alpha {}, {} sweeps", copts.alpha, copts.fit.sweeps)
        }
        ttconv_onnx::FitMethod::Adam { steps, lr } => format!("Adam, {steps} steps, lr {lr}"),
    };
    let mut text = format!(
        "calibration: {} samples, {} held out, {method}\n",
        samples.len(),
        holdout.len(),
    );
    for f in &fits {
        match &f.skipped {
            Some(why) => text += &format!("  {}: not fitted ({why})\n", f.weight),
            None => {
                text += &format!(
                    "  {}: layer output error {:.4} -> {:.4}, kernel error {:.4}, {:.2} s\n",
                    f.weight,
                    f.output_error_before,
                    f.output_error_after,
                    f.kernel_error_after,
                    f.seconds
                )
            }
        }
    }
    text += "held-out outputs (vs the original): MSE TT-SVD -> fitted, relative error\n";
    for (a, b) in e_svd.iter().zip(&e_fit) {
        text += &format!(
            "  {}: MSE {:.4e} -> {:.4e} ({:.1}x lower), rel error {:.4} -> {:.4}\n",
            a.name,
            a.mse,
            b.mse,
            a.mse / b.mse.max(f64::MIN_POSITIVE),
            a.rel_error,
            b.rel_error
        );
    }
    let json = serde_json::json!({
        "samples": samples.len(),
        "holdout": holdout.len(),
        "method": method,
        "layers": fits,
        "holdout_tt_svd": e_svd,
        "holdout_fitted": e_fit,
    });
    Ok((
        out,
        report,
        Calibrated {
            text,
            json,
            holdout,
        },
    ))
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
    let runtime = if o.no_verify && o.calibrate.is_none() && !args.auto_speed {
        None
    } else {
        Some(Runtime::load(library(o)?, 0)?)
    };
    // With a runtime, the Conv input shapes of one run: exact MACs per layer, and --auto-speed.
    let shapes = match &runtime {
        Some(rt) => {
            let sample = match (&o.inputs, &o.calibrate) {
                (Some(path), _) | (None, Some(path)) => {
                    ttconv_onnx::read_samples(path, &model)?.swap_remove(0)
                }
                (None, None) => ttconv_onnx::random_inputs(&model, &dims(o)?, 0)?,
            };
            ttconv_onnx::conv_input_shapes(rt, &model, &sample)?
        }
        None => ttconv_onnx::InputShapes::new(),
    };
    let (out, report, calibration) = match (&o.calibrate, &runtime) {
        (Some(path), Some(rt)) => {
            let (out, report, c) = calibrated(&model, policy, options, &shapes, rt, o, path)?;
            (out, report, Some(c))
        }
        _ => {
            let (out, report) =
                ttconv_onnx::compress_at(&model, policy, options, &shapes, &mut |p| {
                    display.update(p)
                })?;
            (out, report, None)
        }
    };
    let mut text = report.to_table();
    if let Some(c) = &calibration {
        text += &c.text;
    }
    let verification = if o.no_verify {
        text += "not checked (--no-verify)\n";
        None
    } else {
        let runtime = runtime.as_ref().expect("loaded above unless --no-verify");
        let (inputs, what) = match (&o.inputs, &calibration) {
            (Some(path), _) => (
                ttconv_onnx::read_samples(path, &model)?,
                format!("the samples of {}", path.display()),
            ),
            (None, Some(c)) => (c.holdout.clone(), "the held-out samples".to_string()),
            (None, None) => (
                vec![ttconv_onnx::random_inputs(&model, &dims(o)?, 0)?],
                "one sample of standard normal inputs".to_string(),
            ),
        };
        text += &format!("checked on {what} ({}):\n", inputs.len());
        let v = ttconv_onnx::verify(
            runtime,
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
        if let Some(c) = &calibration {
            json["calibration"] = c.json.clone();
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

/// `ttconv export`: one TT layer of a checkpoint as an ONNX chain.
pub(crate) fn run_export(input: &Path, output: &Path, layer: Option<&str>) -> Res<()> {
    if !is_onnx(output) {
        return Err(format!("{}: a .onnx output expected", output.display()).into());
    }
    let tt = ttconv_models::load_layer(input, layer)?;
    let model = ttconv_onnx::export_layer(&tt)?;
    ttconv_onnx::write_model(output, &model, Some(input))?;
    // A state_dict does not record stride, padding or dilation: say what was assumed.
    let ckpt = ttconv_models::read_checkpoint(input, &ttconv_models::Limits::default())?;
    let known = ttconv_models::find_tt_layers(&ckpt)?
        .iter()
        .filter(|l| layer.is_none_or(|p| p == l.prefix))
        .any(|l| l.meta.geometry().is_some());
    if !known {
        emit(
            "note: the file records no geometry for this layer: exported with stride 1, dilation 1 and no padding\n",
        )?;
    }
    emit(&format!(
        "wrote {} ({} Conv nodes, ranks {:?}, {} parameters)\n",
        output.display(),
        model.graph.as_ref().map_or(0, |g| g.node.len()),
        tt.tt().ranks(),
        ttconv_onnx::parameter_count(&model)
    ))
}

/// `ttconv import`: a TT chain ONNX model as a TT layer checkpoint.
pub(crate) fn run_import(input: &Path, output: &Path, prefix: &str) -> Res<()> {
    let model = ttconv_onnx::read_model(input)?;
    let layer = ttconv_onnx::import_layer(&model)?;
    let ckpt = ttconv_models::layer_checkpoint(&layer, prefix)?;
    ttconv_models::write_checkpoint(output, &ckpt, Some(input))?;
    emit(&format!(
        "wrote {} (layer `{prefix}`, ranks {:?})\n",
        output.display(),
        layer.tt().ranks()
    ))
}
