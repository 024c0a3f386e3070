//! `TensorProto` <-> `ndarray`: the floating-point tensors a Conv's weight can be; and the graph
//! entry (`ValueInfoProto`) that declares a tensor value.

use ndarray::{ArrayD, IxDyn};
use ttconv_models::DType;

use crate::error::{Error, Result};
use crate::proto::{
    Dimension, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, data_type, dimension,
    type_proto,
};

/// The graph entry declaring tensor value `name` of element type `elem_type` and shape `dims`.
pub(crate) fn tensor_value_info(
    name: &str,
    elem_type: i32,
    dims: Vec<Dimension>,
) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

/// A dimension of known size.
pub(crate) fn dim_value(n: i64) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimValue(n)),
        ..Dimension::default()
    }
}

/// A named, symbolic dimension.
pub(crate) fn dim_param(name: &str) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimParam(name.into())),
        ..Dimension::default()
    }
}

/// The [`DType`] of an ONNX element type, for the float types a Conv weight can have.
pub fn float_dtype(elem_type: i32) -> Option<DType> {
    match elem_type {
        data_type::FLOAT => Some(DType::F32),
        data_type::DOUBLE => Some(DType::F64),
        data_type::FLOAT16 => Some(DType::F16),
        data_type::BFLOAT16 => Some(DType::BF16),
        _ => None,
    }
}

/// The [`DType`] of an ONNX element type, for the types the report names (`None` for the others:
/// strings, complex, unsigned above 8 bits, the 8-bit floats).
pub fn any_dtype(elem_type: i32) -> Option<DType> {
    float_dtype(elem_type).or(match elem_type {
        data_type::INT8 => Some(DType::I8),
        data_type::INT16 => Some(DType::I16),
        data_type::INT32 => Some(DType::I32),
        data_type::INT64 => Some(DType::I64),
        data_type::UINT8 => Some(DType::U8),
        data_type::BOOL => Some(DType::Bool),
        _ => None,
    })
}

/// The ONNX element type of a float [`DType`].
pub fn elem_type(dtype: DType) -> Option<i32> {
    match dtype {
        DType::F32 => Some(data_type::FLOAT),
        DType::F64 => Some(data_type::DOUBLE),
        DType::F16 => Some(data_type::FLOAT16),
        DType::BF16 => Some(data_type::BFLOAT16),
        _ => None,
    }
}

/// The tensor's dims as sizes; an error for a negative dim or an element count that overflows.
pub fn dims(t: &TensorProto) -> Result<Vec<usize>> {
    let what = || format!("tensor \"{}\"", t.name);
    let shape = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| Error::invalid(what(), format!("dims {:?}: a dim is >= 0", t.dims)))
        })
        .collect::<Result<Vec<_>>>()?;
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::invalid(what(), format!("dims {:?} overflow", t.dims)))?;
    Ok(shape)
}

/// The tensor as f32 in its shape, from `raw_data` (little-endian) or the typed fields; an error
/// for a non-float type, external data, or data that does not match the dims.
pub fn to_f32(t: &TensorProto) -> Result<ArrayD<f32>> {
    let what = || format!("tensor \"{}\"", t.name);
    if t.data_location == 1 || !t.external_data.is_empty() {
        return Err(Error::Unsupported(format!(
            "{}: data in an external file (save the model with its weights inside)",
            what()
        )));
    }
    let shape = dims(t)?;
    let n: usize = shape.iter().product();
    let Some(dtype) = float_dtype(t.data_type) else {
        return Err(Error::Unsupported(format!(
            "{}: element type {} is not a float type",
            what(),
            t.data_type
        )));
    };
    let width = match dtype {
        DType::F64 => 8,
        DType::F32 => 4,
        _ => 2,
    };
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        if n.checked_mul(width) != Some(t.raw_data.len()) {
            return Err(Error::invalid(
                what(),
                format!(
                    "dims {shape:?} need {n} values of {width} bytes ({dtype}), raw_data holds {} bytes",
                    t.raw_data.len()
                ),
            ));
        }
        let chunks = t.raw_data.chunks_exact(width);
        match dtype {
            DType::F32 => chunks
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            DType::F64 => chunks
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            DType::F16 => chunks
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => chunks
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    } else {
        let (len, values): (usize, Vec<f32>) = match dtype {
            DType::F32 => (t.float_data.len(), t.float_data.clone()),
            DType::F64 => (
                t.double_data.len(),
                t.double_data.iter().map(|&v| v as f32).collect(),
            ),
            DType::F16 => (
                t.int32_data.len(),
                t.int32_data
                    .iter()
                    .map(|&b| half::f16::from_bits(b as u16).to_f32())
                    .collect(),
            ),
            _ => (
                t.int32_data.len(),
                t.int32_data
                    .iter()
                    .map(|&b| half::bf16::from_bits(b as u16).to_f32())
                    .collect(),
            ),
        };
        if len != n {
            return Err(Error::invalid(
                what(),
                format!("dims {shape:?} need {n} values, the tensor holds {len}"),
            ));
        }
        values
    };
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), values).expect("length checked against the dims"))
}

/// A tensor named `name` holding `values` in `dtype` (one of the float types), as `raw_data`.
pub fn from_f32(name: &str, values: &ArrayD<f32>, dtype: DType) -> Result<TensorProto> {
    let data_type = elem_type(dtype)
        .ok_or_else(|| Error::Unsupported(format!("tensor \"{name}\": dtype {dtype}")))?;
    let it = values.iter();
    let raw_data: Vec<u8> = match dtype {
        DType::F32 => it.flat_map(|v| v.to_le_bytes()).collect(),
        DType::F64 => it.flat_map(|&v| f64::from(v).to_le_bytes()).collect(),
        DType::F16 => it
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => it
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    };
    Ok(TensorProto {
        dims: values.shape().iter().map(|&d| d as i64).collect(),
        data_type,
        name: name.to_string(),
        raw_data,
        ..TensorProto::default()
    })
}
