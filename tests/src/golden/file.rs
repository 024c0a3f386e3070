//! Loading one golden file: a `*.safetensors` case or a `*.json` case collection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use serde_json::{Map, Value};

use super::GoldenError;

/// A decoded tensor of a safetensors case (the golden files hold only `F32` and `F64`).
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    /// `F32` data.
    F32(ArrayD<f32>),
    /// `F64` data.
    F64(ArrayD<f64>),
}

impl Tensor {
    /// The safetensors dtype name, `"F32"` or `"F64"`.
    pub fn dtype(&self) -> &'static str {
        match self {
            Tensor::F32(_) => "F32",
            Tensor::F64(_) => "F64",
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::F64(a) => a.shape(),
        }
    }

    /// A copy widened (or copied) to f64.
    pub fn to_f64(&self) -> ArrayD<f64> {
        match self {
            Tensor::F32(a) => a.mapv(f64::from),
            Tensor::F64(a) => a.clone(),
        }
    }
}

/// One golden file, loaded: its kind, its metadata (every value parsed as JSON) and its tensors.
///
/// For a safetensors file `metadata` is the `__metadata__` map with each value parsed as a JSON
/// document; for a JSON file it is the top-level object and `tensors` is empty.
#[derive(Clone, Debug)]
pub struct CaseFile {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The `kind` metadata value, unparsed (the runner maps it to a [`super::Kind`]).
    pub kind: String,
    /// Metadata keys and their JSON values.
    pub metadata: Map<String, Value>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl CaseFile {
    /// Loads a `*.safetensors` or `*.json` file.
    pub fn load(path: &Path) -> Result<Self, GoldenError> {
        let bytes = std::fs::read(path).map_err(|source| GoldenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Self::from_safetensors(path, &bytes),
            Some("json") => Self::from_json(path, &bytes),
            _ => Err(GoldenError::UnknownFileType {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Parses safetensors bytes (`path` only names the file in errors).
    pub fn from_safetensors(path: &Path, bytes: &[u8]) -> Result<Self, GoldenError> {
        let st_err = |e: safetensors::SafeTensorError| GoldenError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
        let raw = header
            .metadata()
            .as_ref()
            .ok_or_else(|| GoldenError::MissingKey {
                path: path.to_path_buf(),
                key: "__metadata__".into(),
            })?;
        let mut metadata = Map::new();
        for (key, text) in raw {
            let value =
                serde_json::from_str::<Value>(text).map_err(|source| GoldenError::Json {
                    path: path.to_path_buf(),
                    what: format!("metadata value `{key}`"),
                    source,
                })?;
            metadata.insert(key.clone(), value);
        }
        let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            let tensor = decode(path, name, view.dtype(), view.shape(), view.data())?;
            tensors.insert(name.to_string(), tensor);
        }
        let kind = kind_of(path, &metadata)?;
        Ok(Self {
            path: path.to_path_buf(),
            kind,
            metadata,
            tensors,
        })
    }

    /// Parses a JSON case collection (a top-level object with a string `kind`).
    pub fn from_json(path: &Path, bytes: &[u8]) -> Result<Self, GoldenError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|source| GoldenError::Json {
            path: path.to_path_buf(),
            what: "the file".into(),
            source,
        })?;
        let Value::Object(metadata) = value else {
            return Err(GoldenError::BadValue {
                path: path.to_path_buf(),
                key: "(top level)".into(),
                expected: "a JSON object",
                value: short(&value),
            });
        };
        let kind = kind_of(path, &metadata)?;
        Ok(Self {
            path: path.to_path_buf(),
            kind,
            metadata,
            tensors: BTreeMap::new(),
        })
    }

    /// The file name, e.g. `ttsvd_dense_int4.safetensors`: how cases are named in reports.
    pub fn file_name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// An error naming this file and a metadata key whose value is not what a check expects.
    pub fn bad_value(&self, key: &str, expected: &'static str, value: &Value) -> GoldenError {
        GoldenError::BadValue {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
            value: short(value),
        }
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<&Value, GoldenError> {
        self.metadata
            .get(key)
            .ok_or_else(|| GoldenError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    /// A metadata value that must be a JSON number (int or float).
    pub fn meta_f64(&self, key: &str) -> Result<f64, GoldenError> {
        let v = self.meta(key)?;
        v.as_f64().ok_or_else(|| self.bad_value(key, "a number", v))
    }

    /// A metadata value that must be a non-negative JSON integer.
    pub fn meta_usize(&self, key: &str) -> Result<usize, GoldenError> {
        let v = self.meta(key)?;
        as_usize(v).ok_or_else(|| self.bad_value(key, "a non-negative integer", v))
    }

    /// A metadata value that must be a JSON boolean.
    pub fn meta_bool(&self, key: &str) -> Result<bool, GoldenError> {
        let v = self.meta(key)?;
        v.as_bool()
            .ok_or_else(|| self.bad_value(key, "a boolean", v))
    }

    /// A metadata value that must be a list of non-negative JSON integers.
    pub fn meta_usize_list(&self, key: &str) -> Result<Vec<usize>, GoldenError> {
        let v = self.meta(key)?;
        usize_list(v).ok_or_else(|| self.bad_value(key, "a list of non-negative integers", v))
    }

    /// A metadata value that must be a list of numbers or nulls.
    pub fn meta_opt_f64_list(&self, key: &str) -> Result<Vec<Option<f64>>, GoldenError> {
        let v = self.meta(key)?;
        let bad = || self.bad_value(key, "a list of numbers or nulls", v);
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|x| match x {
                Value::Null => Ok(None),
                _ => x.as_f64().map(Some).ok_or_else(bad),
            })
            .collect()
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Result<&Tensor, GoldenError> {
        self.tensors
            .get(name)
            .ok_or_else(|| GoldenError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// A tensor that must be stored as `F64`.
    pub fn f64_tensor(&self, name: &str) -> Result<&ArrayD<f64>, GoldenError> {
        match self.tensor(name)? {
            Tensor::F64(a) => Ok(a),
            other => Err(self.bad_dtype(name, other, "F64")),
        }
    }

    /// A tensor that must be stored as `F32`.
    pub fn f32_tensor(&self, name: &str) -> Result<&ArrayD<f32>, GoldenError> {
        match self.tensor(name)? {
            Tensor::F32(a) => Ok(a),
            other => Err(self.bad_dtype(name, other, "F32")),
        }
    }

    /// The tensors `{prefix}0`, `{prefix}1`, .. (e.g. `core_`), in order, until one is missing.
    pub fn numbered_tensors(&self, prefix: &str) -> Vec<&Tensor> {
        (0..)
            .map_while(|i| self.tensors.get(&format!("{prefix}{i}")))
            .collect()
    }

    fn bad_dtype(&self, name: &str, tensor: &Tensor, expected: &'static str) -> GoldenError {
        GoldenError::BadDtype {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: tensor.dtype().to_string(),
            expected,
        }
    }
}

/// A non-negative JSON integer (not a float, even an integral one).
pub fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|u| usize::try_from(u).ok())
}

/// A JSON list of non-negative integers.
pub fn usize_list(v: &Value) -> Option<Vec<usize>> {
    v.as_array()?.iter().map(as_usize).collect()
}

/// A JSON value as short text for error messages.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

fn kind_of(path: &Path, metadata: &Map<String, Value>) -> Result<String, GoldenError> {
    match metadata.get("kind") {
        Some(Value::String(kind)) => Ok(kind.clone()),
        Some(other) => Err(GoldenError::BadValue {
            path: path.to_path_buf(),
            key: "kind".into(),
            expected: "a JSON string",
            value: short(other),
        }),
        None => Err(GoldenError::MissingKey {
            path: path.to_path_buf(),
            key: "kind".into(),
        }),
    }
}

/// Decodes little-endian `F32`/`F64` bytes (possibly unaligned) into a row-major array.
fn decode(
    path: &Path,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
) -> Result<Tensor, GoldenError> {
    let bad = |message: String| GoldenError::BadTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        message,
    };
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F64 => 8,
        other => {
            return Err(GoldenError::BadDtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: format!("{other:?}"),
                expected: "F32 or F64",
            });
        }
    };
    if count.checked_mul(width) != Some(data.len()) {
        return Err(bad(format!(
            "{} bytes for shape {shape:?} of {dtype:?} ({count} elements of {width} bytes)",
            data.len()
        )));
    }
    let reshape = |e: ndarray::ShapeError| bad(e.to_string());
    Ok(match width {
        4 => {
            let v = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Tensor::F32(ArrayD::from_shape_vec(IxDyn(shape), v).map_err(reshape)?)
        }
        _ => {
            let v = data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect();
            Tensor::F64(ArrayD::from_shape_vec(IxDyn(shape), v).map_err(reshape)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn decodes_unaligned_little_endian_data() {
        // One f32 tensor at an odd file offset (header length 9 + 8 bytes of length prefix).
        let header = r#"{"__metadata__":{"kind":"\"tt_svd\"","n":"3","f":"1.0"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut data = 1.5f32.to_le_bytes().to_vec();
        data.extend_from_slice(&(-2.25f32).to_le_bytes());
        let bytes = safetensors_bytes(header, &data);
        let case = CaseFile::from_safetensors(Path::new("x.safetensors"), &bytes).unwrap();
        assert_eq!(case.kind, "tt_svd");
        assert_eq!(
            case.f32_tensor("a").unwrap().as_slice().unwrap(),
            &[1.5, -2.25]
        );
        assert!(case.meta("n").unwrap().is_u64());
        assert!(case.meta("f").unwrap().is_f64());
        assert!(matches!(
            case.f64_tensor("a"),
            Err(GoldenError::BadDtype { .. })
        ));
        assert!(matches!(
            case.tensor("b"),
            Err(GoldenError::MissingTensor { .. })
        ));
    }

    #[test]
    fn rejects_malformed_files() {
        let p = Path::new("bad.safetensors");
        assert!(matches!(
            CaseFile::from_safetensors(p, b"abc"),
            Err(GoldenError::Safetensors { .. })
        ));
        // Metadata value that is not JSON (an unquoted string).
        let header = r#"{"__metadata__":{"kind":"conv"}}"#;
        assert!(matches!(
            CaseFile::from_safetensors(p, &safetensors_bytes(header, &[])),
            Err(GoldenError::Json { .. })
        ));
        // No kind.
        let header = r#"{"__metadata__":{"name":"\"x\""}}"#;
        assert!(matches!(
            CaseFile::from_safetensors(p, &safetensors_bytes(header, &[])),
            Err(GoldenError::MissingKey { .. })
        ));
        // Unsupported dtype.
        let header = r#"{"__metadata__":{"kind":"\"conv\""},"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        assert!(matches!(
            CaseFile::from_safetensors(p, &safetensors_bytes(header, &[0; 8])),
            Err(GoldenError::BadDtype { .. })
        ));
        assert!(matches!(
            CaseFile::from_json(Path::new("x.json"), b"[1, 2]"),
            Err(GoldenError::BadValue { .. })
        ));
    }
}
