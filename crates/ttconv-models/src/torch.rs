//! PyTorch checkpoints (`torch.save`): the zip format (torch >= 1.6) and the legacy format
//! (a sequence of pickles followed by the raw storages), read with the restricted
//! [`crate::pickle`] machine.
//!
//! The zip format holds `<root>/data.pkl` (the object, storages as persistent ids
//! `('storage', type, key, location, numel)`) and `<root>/data/<key>` (each storage's raw bytes).
//! The legacy format is: pickle(magic number), pickle(protocol version), pickle(sys info),
//! pickle(object), pickle(list of storage keys), then per key in that order an `i64` element
//! count and the storage's bytes.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use crate::error::{Error, Result};
use crate::pickle::{self, TensorRef, Value};
use crate::tensor::{Checkpoint, Limits, Tensor};

/// The legacy format's magic number, `0x1950a86a20f9469cfc6c`, as pickled (LONG1, 10 bytes).
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;

/// Whether `bytes` starts like a zip archive.
pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Whether `bytes` starts like a legacy torch file (a protocol-2 pickle of a long integer).
pub(crate) fn is_legacy(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x80, 0x02, 0x8a, 0x0a])
}

/// Reads a zip-format checkpoint.
pub(crate) fn read_zip(bytes: &[u8], limits: &Limits) -> Result<Checkpoint> {
    let zip_err = |e: zip::result::ZipError| Error::corrupt("zip archive", e.to_string());
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
    if archive.len() > limits.max_tensors.saturating_add(16) {
        return Err(Error::TooLarge {
            what: "zip entry count".into(),
            size: archive.len() as u64,
            limit: limits.max_tensors as u64,
        });
    }
    let pkl_name = archive
        .file_names()
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| Error::corrupt("torch zip", "no `<root>/data.pkl` entry"))?;
    let archive_len = bytes.len() as u64;
    let root = pkl_name.trim_end_matches("data.pkl").to_string();
    let mut read_entry = |name: &str, limit: u64, what: &str| -> Result<Option<Vec<u8>>> {
        let mut file = match archive.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(zip_err(e)),
        };
        Limits::check(what, file.size(), limit)?;
        // Entries are stored uncompressed: an announced size beyond the archive is a lie.
        Limits::check(what, file.size(), archive_len)?;
        let mut buf = Vec::with_capacity(file.size() as usize);
        file.read_to_end(&mut buf)
            .map_err(|e| Error::corrupt("zip archive", format!("{name}: {e}")))?;
        Ok(Some(buf))
    };
    if let Some(order) = read_entry(&format!("{root}byteorder"), 64, "byteorder")?
        && order.trim_ascii() != b"little"
    {
        return Err(Error::corrupt(
            "torch zip",
            format!(
                "byte order `{}` (only little-endian checkpoints are read)",
                String::from_utf8_lossy(&order)
            ),
        ));
    }
    let pkl = read_entry(&pkl_name, limits.max_header_bytes, "pickle")?
        .ok_or_else(|| Error::corrupt("torch zip", "data.pkl vanished"))?;
    let (value, _) = pickle::load(&pkl)?;
    let entries = state_dict_entries(value)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        if !storages.contains_key(&t.storage.key) {
            let entry = format!("{root}data/{}", t.storage.key);
            let data =
                read_entry(&entry, limits.max_tensor_bytes, "storage")?.ok_or_else(|| {
                    Error::corrupt(
                        "torch zip",
                        format!("tensor `{name}` refers to missing entry `{entry}`"),
                    )
                })?;
            storages.insert(t.storage.key.clone(), data);
        }
        let tensor = materialize(&name, &t, &storages[&t.storage.key], limits)?;
        tensors.push((name, tensor));
    }
    Ok(Checkpoint {
        tensors,
        metadata: Default::default(),
    })
}

/// Reads a legacy-format checkpoint.
pub(crate) fn read_legacy(bytes: &[u8], limits: &Limits) -> Result<Checkpoint> {
    let mut pos = 0usize;
    let mut next = |what: &str| -> Result<Value> {
        let rest = &bytes[pos..];
        let window = &rest[..rest.len().min(limits.max_header_bytes as usize)];
        let (v, used) = pickle::load(window).map_err(|e| match e {
            Error::Corrupt { what: w, reason } => {
                Error::corrupt(format!("{w} of the legacy file's {what}"), reason)
            }
            other => other,
        })?;
        pos += used;
        Ok(v)
    };
    if next("magic number")? != Value::Int(LEGACY_MAGIC) {
        return Err(Error::corrupt("legacy torch file", "wrong magic number"));
    }
    match next("protocol version")? {
        Value::Int(1001) => {}
        other => {
            return Err(Error::corrupt(
                "legacy torch file",
                format!("protocol version {other:?}, 1001 expected"),
            ));
        }
    }
    if let Value::Dict(info, _) = next("sys info")?
        && info
            .iter()
            .any(|(k, v)| *k == Value::Str("little_endian".into()) && *v == Value::Bool(false))
    {
        return Err(Error::corrupt(
            "legacy torch file",
            "big-endian file (only little-endian checkpoints are read)",
        ));
    }
    let object = next("object")?;
    let keys = match next("storage keys")? {
        Value::List(keys, _) => keys,
        other => {
            return Err(Error::corrupt(
                "legacy torch file",
                format!("storage keys are a {}, a list was expected", other.kind()),
            ));
        }
    };
    if keys.len() > limits.max_tensors {
        return Err(Error::TooLarge {
            what: "storage count".into(),
            size: keys.len() as u64,
            limit: limits.max_tensors as u64,
        });
    }
    let entries = state_dict_entries(object)?;
    let dtype_of: HashMap<&str, crate::tensor::DType> = entries
        .iter()
        .map(|(_, t)| (t.storage.key.as_str(), t.storage.dtype))
        .collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err(Error::corrupt(
                "legacy torch file",
                "a storage key is not a string",
            ));
        };
        let header = bytes.get(pos..pos + 8).ok_or(Error::Truncated {
            what: format!("storage `{key}` header"),
            needed: 8,
            available: (bytes.len() - pos) as u64,
        })?;
        let numel = u64::from_le_bytes(header.try_into().expect("8 bytes"));
        pos += 8;
        let esize = dtype_of.get(key.as_str()).map_or(1, |d| d.size()) as u64;
        let size = numel
            .checked_mul(esize)
            .ok_or_else(|| Error::corrupt("legacy torch file", "storage size overflows"))?;
        Limits::check("storage", size, limits.max_tensor_bytes)?;
        let available = (bytes.len() - pos) as u64;
        if size > available {
            return Err(Error::Truncated {
                what: format!("storage `{key}`"),
                needed: size,
                available,
            });
        }
        storages.insert(key, bytes[pos..pos + size as usize].to_vec());
        pos += size as usize;
    }
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let data = storages.get(&t.storage.key).ok_or_else(|| {
            Error::corrupt(
                "legacy torch file",
                format!(
                    "tensor `{name}` refers to storage `{}` that the file lacks",
                    t.storage.key
                ),
            )
        })?;
        tensors.push((name.clone(), materialize(&name, &t, data, limits)?));
    }
    Ok(Checkpoint {
        tensors,
        metadata: Default::default(),
    })
}

/// The `(name, tensor)` entries of a state_dict, or of the state_dict inside the common wrappers
/// `{"state_dict": ...}` / `{"model": ...}`.
fn state_dict_entries(value: Value) -> Result<Vec<(String, TensorRef)>> {
    let Value::Dict(entries, _) = value else {
        return Err(Error::corrupt(
            "checkpoint",
            format!(
                "the pickled object is a {}, a dict (state_dict) was expected",
                value.kind()
            ),
        ));
    };
    let wrapped = entries.iter().position(|(k, v)| {
        matches!(k, Value::Str(s) if s == "state_dict" || s == "model")
            && matches!(v, Value::Dict(..))
    });
    let entries = match wrapped {
        Some(i) if !entries.iter().all(|(_, v)| matches!(v, Value::Tensor(_))) => {
            let Value::Dict(inner, _) = entries.into_iter().nth(i).expect("index found").1 else {
                unreachable!("matched a dict above")
            };
            inner
        }
        _ => entries,
    };
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        let Value::Str(name) = k else {
            return Err(Error::corrupt(
                "checkpoint",
                format!("a state_dict key is a {}, a str was expected", k.kind()),
            ));
        };
        match v {
            Value::Tensor(t) => out.push((name, t)),
            other => {
                return Err(Error::corrupt(
                    "checkpoint",
                    format!(
                        "state_dict entry `{name}` is a {}, a tensor was expected",
                        other.kind()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Copies a strided view out of a storage's bytes into a row-major tensor; every index is
/// checked against the storage first.
fn materialize(name: &str, t: &TensorRef, storage: &[u8], limits: &Limits) -> Result<Tensor> {
    let dtype = t.storage.dtype;
    let esize = dtype.size() as u64;
    let bad = |reason: String| Error::corrupt(format!("tensor `{name}`"), reason);
    let (base, bound) = t.storage.view.unwrap_or((0, t.storage.numel));
    let storage_numel = storage.len() as u64 / esize;
    if base
        .checked_add(bound)
        .is_none_or(|end| end > storage_numel)
    {
        return Err(bad(format!(
            "storage view ({base}, {bound}) runs past the storage's {storage_numel} elements"
        )));
    }
    let numel = t
        .size
        .iter()
        .try_fold(1u64, |a, &n| a.checked_mul(n))
        .ok_or_else(|| bad(format!("size {:?} overflows", t.size)))?;
    let nbytes = numel
        .checked_mul(esize)
        .ok_or_else(|| bad(format!("size {:?} overflows", t.size)))?;
    Limits::check(&format!("tensor `{name}`"), nbytes, limits.max_tensor_bytes)?;
    let shape: Vec<usize> = t.size.iter().map(|&n| n as usize).collect();
    if numel == 0 {
        return Tensor::from_bytes(dtype, shape, Vec::new());
    }
    // Largest element index the view touches.
    let mut last = t.offset;
    for (&n, &s) in t.size.iter().zip(&t.stride) {
        last = (n - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or_else(|| bad("strides overflow".into()))?;
    }
    if last >= bound {
        return Err(bad(format!(
            "offset {} with size {:?} and stride {:?} reaches element {last}, past the storage's {bound}",
            t.offset, t.size, t.stride
        )));
    }
    let src = &storage[(base * esize) as usize..((base + bound) * esize) as usize];
    let es = esize as usize;
    let mut data = Vec::with_capacity(nbytes as usize);
    let contiguous = {
        let mut expect = 1u64;
        let mut ok = true;
        for (&n, &s) in t.size.iter().zip(&t.stride).rev() {
            if n != 1 && s != expect {
                ok = false;
            }
            expect *= n;
        }
        ok
    };
    if contiguous {
        let start = (t.offset * esize) as usize;
        data.extend_from_slice(&src[start..start + nbytes as usize]);
    } else {
        let mut index = vec![0u64; shape.len()];
        for _ in 0..numel {
            let off = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
            let at = (off * esize) as usize;
            data.extend_from_slice(&src[at..at + es]);
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                if index[axis] < t.size[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
    }
    Tensor::from_bytes(dtype, shape, data)
}
