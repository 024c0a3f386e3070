//! Checking a compressed model against the original: both run on the same inputs in ONNX
//! Runtime, each output's relative error reported.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::proto::{ModelProto, data_type, dimension, type_proto};
use crate::runtime::{Runtime, Value};

/// One graph input as the model declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// Its name.
    pub name: String,
    /// Its element type (`TensorProto.DataType`).
    pub elem_type: i32,
    /// Its dims: a size, or the symbol (or `None` for an unnamed unknown dim).
    pub dims: Vec<std::result::Result<usize, Option<String>>>,
}

/// The graph inputs a caller feeds: the declared inputs that no initializer backs.
pub fn input_specs(model: &ModelProto) -> Result<Vec<InputSpec>> {
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("model", "no graph"))?;
    let backed: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input
        .iter()
        .filter(|v| !backed.contains(v.name.as_str()))
        .map(|v| {
            let Some(type_proto::Value::TensorType(t)) =
                v.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                return Err(Error::Unsupported(format!(
                    "graph input `{}` is not a tensor",
                    v.name
                )));
            };
            let dims = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(n)) if *n > 0 => Ok(*n as usize),
                            Some(dimension::Value::DimParam(p)) if !p.is_empty() => {
                                Err(Some(p.clone()))
                            }
                            _ => Err(None),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(InputSpec {
                name: v.name.clone(),
                elem_type: t.elem_type,
                dims,
            })
        })
        .collect()
}

/// Random inputs for `model`: standard normal values (seeded) for float and double inputs, each
/// symbolic dim from `dims` by its name, every other unknown dim 1. Integer inputs cannot be
/// made up (they are indices, lengths, flags): an error that asks for them in a file.
pub fn random_inputs(
    model: &ModelProto,
    dims: &HashMap<String, usize>,
    seed: u64,
) -> Result<Vec<(String, Value)>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    input_specs(model)?
        .into_iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .dims
                .iter()
                .map(|d| match d {
                    Ok(n) => *n,
                    Err(Some(sym)) => dims.get(sym).copied().unwrap_or(1),
                    Err(None) => 1,
                })
                .collect();
            let n: usize = shape.iter().product();
            let value = match spec.elem_type {
                data_type::FLOAT => Value::F32(
                    ArrayD::from_shape_simple_fn(IxDyn(&shape), || StandardNormal.sample(&mut rng))
                        .into_dyn(),
                ),
                data_type::DOUBLE => Value::F64(ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
                    StandardNormal.sample(&mut rng)
                })),
                other => {
                    return Err(Error::Inputs(format!(
                        "graph input `{}` has element type {other}: only float inputs are made up; give real ones in a file",
                        spec.name
                    )));
                }
            };
            debug_assert_eq!(value.shape().iter().product::<usize>(), n);
            Ok((spec.name, value))
        })
        .collect()
}

/// Inputs read from a safetensors file whose tensor names are the graph input names (f32, f64,
/// i64 and i32 tensors); every input of the model must be there.
pub fn read_inputs(path: &Path, model: &ModelProto) -> Result<Vec<(String, Value)>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Inputs(format!("{}: {e}", path.display())))?;
    input_specs(model)?
        .into_iter()
        .map(|spec| {
            let t = file.tensor(&spec.name).map_err(|_| {
                Error::Inputs(format!(
                    "{}: no tensor named `{}` (one per graph input expected)",
                    path.display(),
                    spec.name
                ))
            })?;
            let shape = IxDyn(t.shape());
            let data = t.data();
            use safetensors::Dtype as D;
            let value = match t.dtype() {
                D::F32 => Value::F32(from_le(shape, data, f32::from_le_bytes)),
                D::F64 => Value::F64(from_le(shape, data, f64::from_le_bytes)),
                D::I64 => Value::I64(from_le(shape, data, i64::from_le_bytes)),
                D::I32 => Value::I32(from_le(shape, data, i32::from_le_bytes)),
                other => {
                    return Err(Error::Inputs(format!(
                        "{}: tensor `{}` is {other:?}; f32, f64, i64 or i32 expected",
                        path.display(),
                        spec.name
                    )));
                }
            };
            Ok((spec.name, value))
        })
        .collect()
}

fn from_le<T, const N: usize>(shape: IxDyn, data: &[u8], f: fn([u8; N]) -> T) -> ArrayD<T> {
    let values: Vec<T> = data
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("N bytes")))
        .collect();
    ArrayD::from_shape_vec(shape, values).expect("safetensors checked the data length")
}

/// One output of the two models side by side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputError {
    /// The graph output.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// `||y' - y||_2 / ||y||_2` (the absolute norm when `y` is zero).
    pub rel_error: f64,
    /// `max |y' - y|`.
    pub max_abs_error: f64,
    /// `mean (y' - y)^2`.
    pub mse: f64,
}

/// Each output's error of `got` against `want` (runs of two models on the same samples),
/// summed over the samples; an error when an output is missing or its shape differs.
pub fn output_errors(
    want: &[Vec<(String, Value)>],
    got: &[Vec<(String, Value)>],
) -> Result<Vec<OutputError>> {
    let Some(first) = want.first() else {
        return Ok(Vec::new());
    };
    first
        .iter()
        .enumerate()
        .map(|(k, (name, y0))| {
            let (mut num, mut den, mut max, mut count) = (0.0f64, 0.0f64, 0.0f64, 0usize);
            for (w, g) in want.iter().zip(got) {
                let y = &w[k].1;
                let (_, y2) = g.iter().find(|(n, _)| n == name).ok_or_else(|| {
                    Error::Runtime(format!("the compressed model has no output `{name}`"))
                })?;
                if y.shape() != y2.shape() {
                    return Err(Error::Runtime(format!(
                        "output `{name}`: shape {:?} in the original, {:?} compressed",
                        y.shape(),
                        y2.shape()
                    )));
                }
                for (x, z) in y.to_f64().iter().zip(&y2.to_f64()) {
                    num += (z - x) * (z - x);
                    den += x * x;
                    max = max.max((z - x).abs());
                    count += 1;
                }
            }
            Ok(OutputError {
                name: name.clone(),
                shape: y0.shape().to_vec(),
                rel_error: if den > 0.0 {
                    (num / den).sqrt()
                } else {
                    num.sqrt()
                },
                max_abs_error: max,
                mse: num / count.max(1) as f64,
            })
        })
        .collect()
}

/// Samples read from a safetensors file holding, for each graph input, a tensor of that name
/// with one more leading axis, the sample index (the same count for every input).
pub fn read_samples(path: &Path, model: &ModelProto) -> Result<Vec<Vec<(String, Value)>>> {
    let stacked = read_inputs(path, model)?;
    let count = stacked
        .first()
        .map_or(0, |(_, v)| v.shape().first().copied().unwrap_or(0));
    if count == 0 {
        return Err(Error::Inputs(format!(
            "{}: no samples (a leading sample axis of size >= 1 expected)",
            path.display()
        )));
    }
    for (name, v) in &stacked {
        if v.shape().first() != Some(&count) {
            return Err(Error::Inputs(format!(
                "{}: `{name}` has shape {:?}, {count} samples on its first axis expected",
                path.display(),
                v.shape()
            )));
        }
    }
    Ok((0..count)
        .map(|i| {
            stacked
                .iter()
                .map(|(name, v)| {
                    let one = v.index_first(i);
                    (name.clone(), one)
                })
                .collect()
        })
        .collect())
}

/// What a verification measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verification {
    /// Per output, in the original's order.
    pub outputs: Vec<OutputError>,
    /// Median time of one run of the original, seconds.
    pub original_seconds: f64,
    /// Median time of one run of the compressed model, seconds.
    pub compressed_seconds: f64,
}

impl Verification {
    /// The largest relative error over the outputs; NaN when any output's error is NaN.
    pub fn max_rel_error(&self) -> f64 {
        self.outputs.iter().map(|o| o.rel_error).fold(0.0, |m, e| {
            if m.is_nan() || e.is_nan() {
                f64::NAN
            } else {
                m.max(e)
            }
        })
    }
}

/// Runs `original` and `compressed` (model bytes) on every sample and compares their outputs by
/// name over all of them; times `repeats` runs of each on the first sample. An error when there
/// is no sample, or an output is missing or its shape differs.
pub fn verify(
    runtime: &Runtime,
    original: &[u8],
    compressed: &[u8],
    samples: &[Vec<(String, Value)>],
    repeats: usize,
) -> Result<Verification> {
    let first = samples
        .first()
        .ok_or_else(|| Error::Inputs("no sample to verify on".into()))?;
    let want = runtime.run_all(original, samples)?;
    let got = runtime.run_all(compressed, samples)?;
    let outputs = output_errors(&want, &got)?;
    let (_, t0) = runtime.run_timed(original, first, repeats)?;
    let (_, t1) = runtime.run_timed(compressed, first, repeats)?;
    Ok(Verification {
        outputs,
        original_seconds: t0,
        compressed_seconds: t1,
    })
}
