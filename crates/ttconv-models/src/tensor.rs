//! Tensors and checkpoints as read from a file: named, typed, little-endian bytes.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean, one byte.
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether the elements are floating point (the only kind a kernel can be).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// The name safetensors gives this dtype (`"F32"`, `"I64"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::I8 => "I8",
            DType::I16 => "I16",
            DType::I32 => "I32",
            DType::I64 => "I64",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense tensor: shape, dtype and its elements as little-endian bytes in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Tensor {
    /// A tensor from raw little-endian row-major bytes; an error when `data.len()` is not
    /// `prod(shape) * dtype.size()`.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &n| acc.checked_mul(n))
            .ok_or_else(|| Error::corrupt("tensor", format!("shape {shape:?} overflows")))?;
        if data.len() != expected {
            return Err(Error::corrupt(
                "tensor",
                format!(
                    "shape {shape:?} of {dtype} needs {expected} bytes, got {}",
                    data.len()
                ),
            ));
        }
        Ok(Self { dtype, shape, data })
    }

    /// An f32 tensor holding `array`'s values.
    pub fn from_f32(array: &ArrayD<f32>) -> Self {
        let data = array.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            dtype: DType::F32,
            shape: array.shape().to_vec(),
            data,
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The raw little-endian bytes, row-major.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The values as f32 (f16 / bf16 widened exactly, f64 rounded), an error for integer
    /// tensors.
    pub fn to_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        let d = &self.data;
        let values: Vec<f32> = match self.dtype {
            DType::F32 => d
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::F64 => d
                .chunks_exact(8)
                .map(|b| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    f64::from_le_bytes(a) as f32
                })
                .collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => d
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::UnsupportedDtype {
                    tensor: name.to_string(),
                    dtype: format!("{other} (a floating-point tensor was expected)"),
                });
            }
        };
        Ok(ArrayD::from_shape_vec(IxDyn(&self.shape), values)
            .expect("length checked at construction"))
    }

    /// `array` stored in `dtype` (a float dtype; f16 / bf16 round to nearest even).
    pub fn from_f32_as(array: &ArrayD<f32>, dtype: DType) -> Self {
        let data: Vec<u8> = match dtype {
            DType::F64 => array
                .iter()
                .flat_map(|&v| f64::from(v).to_le_bytes())
                .collect(),
            DType::F16 => array
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            DType::BF16 => array
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            _ => return Self::from_f32(array),
        };
        Self {
            dtype,
            shape: array.shape().to_vec(),
            data,
        }
    }
}

/// A checkpoint: named tensors in file order, plus the string metadata a safetensors file
/// carries (`__metadata__`; empty for PyTorch files).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// `(name, tensor)` in the order the file gave them; names are unique.
    pub tensors: Vec<(String, Tensor)>,
    /// Free-form metadata, key -> value.
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Adds or replaces the tensor `name`.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.tensors.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = tensor,
            None => self.tensors.push((name, tensor)),
        }
    }

    /// Removes and returns the tensor `name`.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        let i = self.tensors.iter().position(|(n, _)| n == name)?;
        Some(self.tensors.remove(i).1)
    }

    /// Total number of elements of every tensor.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|(_, t)| t.numel()).sum()
    }
}

/// Bounds applied while reading untrusted files; every size a file announces is checked against
/// them before anything is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, bytes.
    pub max_file_bytes: u64,
    /// Largest single tensor or storage, bytes.
    pub max_tensor_bytes: u64,
    /// Largest safetensors JSON header or pickle, bytes.
    pub max_header_bytes: u64,
    /// Most tensors (or storages) in one file.
    pub max_tensors: usize,
}

impl Default for Limits {
    /// 16 GiB files, 4 GiB tensors, 64 MiB headers and pickles, 1,000,000 tensors.
    fn default() -> Self {
        Self {
            max_file_bytes: 16 << 30,
            max_tensor_bytes: 4 << 30,
            max_header_bytes: 64 << 20,
            max_tensors: 1_000_000,
        }
    }
}

impl Limits {
    /// An error when `size` (bytes of `what`) is over `limit`.
    pub(crate) fn check(what: &str, size: u64, limit: u64) -> Result<()> {
        if size > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                size,
                limit,
            });
        }
        Ok(())
    }
}
