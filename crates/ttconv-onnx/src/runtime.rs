//! Running a model in ONNX Runtime, loaded from a library file at run time.
//!
//! The library (`libonnxruntime.so.1.31.*`, `onnxruntime.dll`, `libonnxruntime.*.dylib`) comes
//! from a package registry: the `onnxruntime` PyPI wheel ships it under
//! `onnxruntime/capi/`. Nothing is downloaded at build time; without the library this crate still
//! builds and everything but running a model works.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ndarray::{ArrayD, IxDyn};
use ort::session::Session;
use ort::value::{DynValue, Tensor, ValueType};

use crate::error::{Error, Result};

/// A tensor fed to or read from a model.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `tensor(float)`.
    F32(ArrayD<f32>),
    /// `tensor(double)`.
    F64(ArrayD<f64>),
    /// `tensor(int64)`.
    I64(ArrayD<i64>),
    /// `tensor(int32)`.
    I32(ArrayD<i32>),
}

impl Value {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F32(a) => a.shape(),
            Value::F64(a) => a.shape(),
            Value::I64(a) => a.shape(),
            Value::I32(a) => a.shape(),
        }
    }

    /// Entry `i` of the first axis (one sample of a stacked set); `i` must be in range.
    pub fn index_first(&self, i: usize) -> Value {
        fn take<T: Clone>(a: &ArrayD<T>, i: usize) -> ArrayD<T> {
            a.index_axis(ndarray::Axis(0), i).to_owned()
        }
        match self {
            Value::F32(a) => Value::F32(take(a, i)),
            Value::F64(a) => Value::F64(take(a, i)),
            Value::I64(a) => Value::I64(take(a, i)),
            Value::I32(a) => Value::I32(take(a, i)),
        }
    }

    /// The values as f64 (for comparisons).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Value::F32(a) => a.iter().map(|&v| f64::from(v)).collect(),
            Value::F64(a) => a.iter().copied().collect(),
            Value::I64(a) => a.iter().map(|&v| v as f64).collect(),
            Value::I32(a) => a.iter().map(|&v| f64::from(v)).collect(),
        }
    }

    fn to_ort(&self) -> Result<DynValue> {
        Ok(match self {
            Value::F32(a) => Tensor::from_array(a.clone())?.into_dyn(),
            Value::F64(a) => Tensor::from_array(a.clone())?.into_dyn(),
            Value::I64(a) => Tensor::from_array(a.clone())?.into_dyn(),
            Value::I32(a) => Tensor::from_array(a.clone())?.into_dyn(),
        })
    }

    fn from_ort(name: &str, v: &DynValue) -> Result<Self> {
        let unsupported = || {
            Error::Runtime(format!(
                "output `{name}` is a {:?}; float, double, int64 and int32 tensors are read",
                v.dtype()
            ))
        };
        let ValueType::Tensor { ty, .. } = v.dtype() else {
            return Err(unsupported());
        };
        use ort::value::TensorElementType as T;
        fn owned<E: Clone>(shape: &[i64], data: &[E]) -> ArrayD<E> {
            let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            ArrayD::from_shape_vec(IxDyn(&shape), data.to_vec())
                .expect("ONNX Runtime's shape matches its data")
        }

        Ok(match ty {
            T::Float32 => {
                let (s, d) = v.try_extract_tensor::<f32>()?;
                Value::F32(owned(s, d))
            }
            T::Float64 => {
                let (s, d) = v.try_extract_tensor::<f64>()?;
                Value::F64(owned(s, d))
            }
            T::Int64 => {
                let (s, d) = v.try_extract_tensor::<i64>()?;
                Value::I64(owned(s, d))
            }
            T::Int32 => {
                let (s, d) = v.try_extract_tensor::<i32>()?;
                Value::I32(owned(s, d))
            }
            _ => return Err(unsupported()),
        })
    }
}

/// Output `name` of a run: a graph output that is also a graph input is the input itself (ONNX
/// Runtime hands such an output back without data, which `ort` would read through a null
/// pointer).
fn read_output(
    name: &str,
    outputs: &ort::session::SessionOutputs<'_>,
    inputs: &[(String, Value)],
) -> Result<Value> {
    if let Some((_, v)) = inputs.iter().find(|(n, _)| n == name) {
        return Ok(v.clone());
    }
    Value::from_ort(name, &outputs[name])
}

/// One run of `session` on `inputs`: every graph output by name, in the graph's order, and the
/// seconds the run itself took (inputs converted before the clock starts, outputs read after).
fn run_once(
    session: &mut Session,
    inputs: &[(String, Value)],
) -> Result<(Vec<(String, Value)>, f64)> {
    let names: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let feed: Vec<(String, DynValue)> = inputs
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.to_ort()?)))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    let outputs = session.run(feed)?;
    let seconds = start.elapsed().as_secs_f64();
    let values = names
        .iter()
        .map(|n| Ok((n.clone(), read_output(n, &outputs, inputs)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((values, seconds))
}

/// ONNX Runtime, loaded from its library.
#[derive(Debug)]
pub struct Runtime {
    env: ort::environment::Environment,
    threads: usize,
}

/// The library a process has loaded and its one environment (ONNX Runtime's C API is loaded
/// once per process, and `ort` allows one environment).
static LOADED: Mutex<Option<(PathBuf, ort::environment::Environment)>> = Mutex::new(None);

impl Runtime {
    /// Loads ONNX Runtime from `library` (once per process) and returns a handle whose sessions
    /// use `threads` intra-op threads (0: ONNX Runtime's default, one per core).
    ///
    /// A process loads one library: a later call with another path is an error.
    pub fn load(library: &Path, threads: usize) -> Result<Self> {
        if !library.is_file() {
            return Err(Error::Runtime(format!(
                "{}: no such library file (install the `onnxruntime` wheel and pass its onnxruntime/capi/libonnxruntime.so.*)",
                library.display()
            )));
        }
        // The lock is held while loading, so two threads cannot both load.
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        match loaded.as_ref() {
            Some((path, env)) if path == library => Ok(Self {
                env: env.clone(),
                threads,
            }),
            Some((path, _)) => Err(Error::Runtime(format!(
                "this process already loaded {}; it cannot load {} as well",
                path.display(),
                library.display()
            ))),
            None => {
                let env = ort::init_from(library)
                    .map_err(|e| Error::Runtime(format!("{}: {e}", library.display())))?
                    .with_name("ttconv")
                    .build()?;
                *loaded = Some((library.to_path_buf(), env.clone()));
                Ok(Self { env, threads })
            }
        }
    }

    /// Runs the model `bytes` on `inputs` (by graph input name); returns every graph output by
    /// name, in the graph's order.
    pub fn run(&self, bytes: &[u8], inputs: &[(String, Value)]) -> Result<Vec<(String, Value)>> {
        Ok(self.run_timed(bytes, inputs, 1)?.0)
    }

    /// Runs the model `bytes` on each of `samples` (one session for all); returns the outputs of
    /// each run as [`Runtime::run`] does.
    pub fn run_all(
        &self,
        bytes: &[u8],
        samples: &[Vec<(String, Value)>],
    ) -> Result<Vec<Vec<(String, Value)>>> {
        let mut session = self.session(bytes)?;
        samples
            .iter()
            .map(|inputs| Ok(run_once(&mut session, inputs)?.0))
            .collect()
    }

    fn session(&self, bytes: &[u8]) -> Result<Session> {
        let mut builder = Session::builder(&self.env)?;
        if self.threads > 0 {
            builder = builder.with_intra_threads(self.threads)?;
        }
        Ok(builder.commit_from_memory(bytes)?)
    }

    /// As [`Runtime::run`], then `repeats - 1` more runs; returns the outputs and the median
    /// wall time of one run in seconds (the session is created once, before the clock starts).
    pub fn run_timed(
        &self,
        bytes: &[u8],
        inputs: &[(String, Value)],
        repeats: usize,
    ) -> Result<(Vec<(String, Value)>, f64)> {
        let mut session = self.session(bytes)?;
        let mut times = Vec::with_capacity(repeats.max(1));
        let mut last = Vec::new();
        for _ in 0..repeats.max(1) {
            let (outputs, seconds) = run_once(&mut session, inputs)?;
            times.push(seconds);
            last = outputs;
        }
        times.sort_by(f64::total_cmp);
        Ok((last, times[times.len() / 2]))
    }
}
