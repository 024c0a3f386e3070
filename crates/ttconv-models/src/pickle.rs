//! A restricted pickle reader: the subset of Python's pickle machine that `torch.save` emits,
//! which builds data and never runs code.
//!
//! Why our own and not a crate: `serde-pickle` has no persistent-id hook (torch refers to every
//! storage by a persistent id) and rejects or replaces the globals a checkpoint needs instead of
//! letting us allow exactly the tensor-rebuilding ones; candle's and burn's PyTorch readers sit
//! inside their frameworks (candle-core, burn-import) and would pull a tensor library into a
//! crate that only needs to read bytes; `repugnant-pickle` 0.0.1 describes itself as "low effort
//! scraping". The machine below is small (one `match` over opcodes), and it gives us what a safe
//! reader must have: every global is checked against an allow-list the moment it is named (so
//! `os.system` or `builtins.eval` is an error naming it), every length is checked against the
//! remaining input before it is read, containers nest at most [`MAX_DEPTH`] deep (dropping a
//! deeper value would recurse), and memo copies are charged to a budget proportional to the
//! pickle's size (so a few bytes cannot expand exponentially).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::tensor::DType;

/// Deepest container nesting accepted.
pub(crate) const MAX_DEPTH: u16 = 256;

/// A global that may appear in a checkpoint's pickle.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Global {
    /// `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor`.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`: a `Parameter` around a tensor.
    RebuildParameter,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch.FloatStorage` and friends.
    StorageType(DType),
}

/// A storage a tensor views, as named by its persistent id.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StorageRef {
    /// Key of the storage's bytes (zip entry `data/<key>`, or the legacy format's key list).
    pub key: String,
    /// Element type.
    pub dtype: DType,
    /// Elements in the storage, as the persistent id says.
    pub numel: u64,
    /// Legacy storage views: `(offset, size)` in elements into the root storage.
    pub view: Option<(u64, u64)>,
}

/// A tensor as the pickle describes it: a strided view of a storage (sizes in elements).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// A value on the pickle machine's stack. Containers carry their nesting depth.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>, u16),
    List(Vec<Value>, u16),
    Dict(Vec<(Value, Value)>, u16),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn depth(&self) -> u16 {
        match self {
            Value::Tuple(_, d) | Value::List(_, d) | Value::Dict(_, d) => *d,
            _ => 0,
        }
    }

    /// Number of nodes, for the copy budget.
    fn weight(&self) -> usize {
        match self {
            Value::Tuple(v, _) | Value::List(v, _) => {
                1 + v.iter().map(Value::weight).sum::<usize>()
            }
            Value::Dict(v, _) => {
                1 + v
                    .iter()
                    .map(|(k, x)| k.weight() + x.weight())
                    .sum::<usize>()
            }
            Value::Str(s) => 1 + s.len() / 64,
            Value::Bytes(b) => 1 + b.len() / 64,
            _ => 1,
        }
    }

    /// A short name of the value's kind, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(..) => "tuple",
            Value::List(..) => "list",
            Value::Dict(..) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

fn container_depth<'a>(items: impl Iterator<Item = &'a Value>) -> Result<u16> {
    let d = items.map(Value::depth).max().unwrap_or(0) + 1;
    if d > MAX_DEPTH {
        return Err(Error::corrupt(
            "pickle",
            format!("containers nest deeper than {MAX_DEPTH}"),
        ));
    }
    Ok(d)
}

fn tuple(items: Vec<Value>) -> Result<Value> {
    let d = container_depth(items.iter())?;
    Ok(Value::Tuple(items, d))
}

/// Resolves `module.name` against the allow-list.
fn resolve_global(module: &str, name: &str) -> Result<Global> {
    let storage = |dtype| Ok(Global::StorageType(dtype));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Ok(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("torch", "FloatStorage") => storage(DType::F32),
        ("torch", "DoubleStorage") => storage(DType::F64),
        ("torch", "HalfStorage") => storage(DType::F16),
        ("torch", "BFloat16Storage") => storage(DType::BF16),
        ("torch", "LongStorage") => storage(DType::I64),
        ("torch", "IntStorage") => storage(DType::I32),
        ("torch", "ShortStorage") => storage(DType::I16),
        ("torch", "CharStorage") => storage(DType::I8),
        ("torch", "ByteStorage") => storage(DType::U8),
        ("torch", "BoolStorage") => storage(DType::Bool),
        _ => Err(Error::ForbiddenGlobal {
            module: module.to_string(),
            name: name.to_string(),
        }),
    }
}

/// The pickle machine over one pickle (which may be followed by other data).
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Nodes that memo reads may still copy.
    copy_budget: usize,
}

/// Reads one pickle from the start of `data`; returns the value and the number of bytes used.
pub(crate) fn load(data: &[u8]) -> Result<(Value, usize)> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copy_budget: 1_000_000usize.saturating_add(data.len().saturating_mul(16)),
    };
    let value = m.run()?;
    Ok((value, m.pos))
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let available = self.data.len() - self.pos;
        if n > available {
            return Err(Error::Truncated {
                what: format!("pickle {what} at byte {}", self.pos),
                needed: n as u64,
                available: available as u64,
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1, "argument")?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, "argument")?);
        Ok(a)
    }

    fn len_arg<const N: usize>(&mut self) -> Result<usize> {
        let a: [u8; N] = self.le()?;
        let mut b = [0u8; 8];
        b[..N].copy_from_slice(&a);
        usize::try_from(u64::from_le_bytes(b))
            .map_err(|_| Error::corrupt("pickle", "length does not fit in memory"))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Error::Truncated {
                what: format!("pickle text argument at byte {}", self.pos),
                needed: rest.len() as u64 + 1,
                available: rest.len() as u64,
            })?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| Error::corrupt("pickle", "text argument is not UTF-8"))?;
        self.pos += end + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n, "string")?;
        let s =
            std::str::from_utf8(b).map_err(|_| Error::corrupt("pickle", "string is not UTF-8"))?;
        Ok(Value::Str(s.to_string()))
    }

    /// An error unless the stack holds a value above the innermost mark.
    fn check_not_empty(&self) -> Result<()> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(Error::corrupt(
                "pickle",
                format!("stack underflow at byte {}", self.pos),
            ));
        }
        Ok(())
    }

    fn pop(&mut self) -> Result<Value> {
        self.check_not_empty()?;
        Ok(self.stack.pop().expect("length checked"))
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.check_not_empty()?;
        Ok(self.stack.last_mut().expect("length checked"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| Error::corrupt("pickle", format!("no mark at byte {}", self.pos)))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let v = self
            .memo
            .get(&key)
            .ok_or_else(|| Error::corrupt("pickle", format!("memo key {key} was never stored")))?;
        let w = v.weight();
        if w > self.copy_budget {
            return Err(Error::corrupt(
                "pickle",
                "memo copies expand far beyond the pickle's size",
            ));
        }
        self.copy_budget -= w;
        let v = v.clone();
        self.stack.push(v);
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let v = self.top()?.clone();
        let w = v.weight();
        if w > self.copy_budget {
            return Err(Error::corrupt(
                "pickle",
                "memo copies expand far beyond the pickle's size",
            ));
        }
        self.copy_budget -= w;
        self.memo.insert(key, v);
        Ok(())
    }

    fn int(&mut self, bytes: &[u8]) -> Result<Value> {
        if bytes.len() > 16 {
            return Err(Error::corrupt(
                "pickle",
                format!("integer of {} bytes is too large", bytes.len()),
            ));
        }
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut a = [fill; 16];
        a[..bytes.len()].copy_from_slice(bytes);
        Ok(Value::Int(i128::from_le_bytes(a)))
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(Error::corrupt(
                "pickle",
                "SETITEMS with an odd number of values",
            ));
        }
        let d = container_depth(items.iter())?;
        let target = self.top()?;
        let Value::Dict(entries, depth) = target else {
            return Err(Error::corrupt(
                "pickle",
                format!("SETITEM(S) on a {}", target.kind()),
            ));
        };
        *depth = (*depth).max(d);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match entries.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => entries.push((k, v)),
            }
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        let d = container_depth(items.iter())?;
        let target = self.top()?;
        let Value::List(list, depth) = target else {
            return Err(Error::corrupt(
                "pickle",
                format!("APPEND(S) on a {}", target.kind()),
            ));
        };
        *depth = (*depth).max(d);
        list.extend(items);
        Ok(())
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(Error::corrupt(
                            "pickle",
                            format!("protocol {proto} (at most 5 expected)"),
                        ));
                    }
                }
                0x95 => {
                    self.take(8, "frame length")?;
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    let w = v.weight();
                    if w > self.copy_budget {
                        return Err(Error::corrupt("pickle", "DUP copies expand too far"));
                    }
                    self.copy_budget -= w;
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n, "long")?;
                    let v = self.int(b)?;
                    self.stack.push(v);
                }
                0x8b => {
                    let n = self.len_arg::<4>()?;
                    let b = self.take(n, "long")?;
                    let v = self.int(b)?;
                    self.stack.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.len_arg::<4>()?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len_arg::<8>()?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'T' | b'B' | b'U' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'U' | b'C' => self.u8()? as usize,
                        0x8e | 0x96 => self.len_arg::<8>()?,
                        _ => self.len_arg::<4>()?,
                    };
                    let b = self.take(n, "bytes")?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new(), 1)),
                b't' => {
                    let items = self.pop_mark()?;
                    let v = tuple(items)?;
                    self.stack.push(v);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let v = tuple(items)?;
                    self.stack.push(v);
                }
                b']' => self.stack.push(Value::List(Vec::new(), 1)),
                0x8f => self.stack.push(Value::List(Vec::new(), 1)),
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    let d = container_depth(items.iter())?;
                    self.stack.push(Value::List(items, d));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => self.stack.push(Value::Dict(Vec::new(), 1)),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Vec::new(), 1));
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = resolve_global(module, name)?;
                    self.stack.push(Value::Global(g));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        return Err(Error::corrupt(
                            "pickle",
                            format!("STACK_GLOBAL on a {} and a {}", module.kind(), name.kind()),
                        ));
                    };
                    let g = resolve_global(module, name)?;
                    self.stack.push(Value::Global(g));
                }
                b'i' => {
                    // INST names a class to instantiate: resolve (and so refuse) it by name.
                    let module = self.line()?;
                    let name = self.line()?;
                    resolve_global(module, name)?;
                    return Err(Error::UnsupportedOpcode {
                        opcode: op,
                        offset: at,
                    });
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = call(callable, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD sets an object's state; the only objects we build (dicts, tensors)
                    // carry none that matters for the weights (`_metadata` of a state_dict).
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid)?;
                    self.stack.push(v);
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?;
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len())
                        .map_err(|_| Error::corrupt("pickle", "memo overflow"))?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into())?;
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_get(k)?;
                }
                _ => {
                    return Err(Error::UnsupportedOpcode {
                        opcode: op,
                        offset: at,
                    });
                }
            }
        }
    }
}

fn as_u64(v: &Value, what: &str) -> Result<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i)
            .map_err(|_| Error::corrupt("pickle", format!("{what} is {i}, not a size"))),
        other => Err(Error::corrupt(
            "pickle",
            format!("{what} is a {}, an int was expected", other.kind()),
        )),
    }
}

fn as_sizes(v: &Value, what: &str) -> Result<Vec<u64>> {
    match v {
        Value::Tuple(items, _) | Value::List(items, _) => {
            items.iter().map(|x| as_u64(x, what)).collect()
        }
        other => Err(Error::corrupt(
            "pickle",
            format!("{what} is a {}, a tuple was expected", other.kind()),
        )),
    }
}

/// `torch`'s persistent id of a storage: `('storage', StorageType, key, location, numel)` in the
/// zip format, plus `view_metadata` (`None` or `(view_key, offset, size)`) in the legacy one.
fn persistent_load(pid: Value) -> Result<Value> {
    let Value::Tuple(items, _) = pid else {
        return Err(Error::corrupt(
            "pickle",
            format!("persistent id is a {}, a tuple was expected", pid.kind()),
        ));
    };
    let bad = || Error::corrupt("pickle", "persistent id is not a torch storage reference");
    if items.len() < 5 || items.len() > 6 || items[0] != Value::Str("storage".into()) {
        return Err(bad());
    }
    let Value::Global(Global::StorageType(dtype)) = items[1] else {
        return Err(bad());
    };
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return Err(bad()),
    };
    let numel = as_u64(&items[4], "storage size")?;
    let view = match items.get(5) {
        None | Some(Value::None) => None,
        Some(Value::Tuple(v, _)) if v.len() == 3 => {
            let offset = as_u64(&v[1], "view offset")?;
            let size = as_u64(&v[2], "view size")?;
            Some((offset, size))
        }
        Some(_) => return Err(bad()),
    };
    Ok(Value::Storage(StorageRef {
        key,
        dtype,
        numel,
        view,
    }))
}

/// Applies an allowed callable to its argument tuple.
fn call(callable: Value, args: Value) -> Result<Value> {
    let Value::Global(g) = callable else {
        return Err(Error::corrupt(
            "pickle",
            format!("REDUCE on a {}, a global was expected", callable.kind()),
        ));
    };
    let Value::Tuple(mut args, _) = args else {
        return Err(Error::corrupt(
            "pickle",
            format!("REDUCE arguments are a {}", args.kind()),
        ));
    };
    match g {
        Global::OrderedDict => {
            let mut entries = Vec::new();
            if let Some(Value::List(pairs, _)) = args.first() {
                for p in pairs {
                    match p {
                        Value::Tuple(kv, _) if kv.len() == 2 => {
                            entries.push((kv[0].clone(), kv[1].clone()))
                        }
                        _ => {
                            return Err(Error::corrupt("pickle", "OrderedDict item is not a pair"));
                        }
                    }
                }
            }
            let d = container_depth(entries.iter().flat_map(|(k, v)| [k, v]))?;
            Ok(Value::Dict(entries, d))
        }
        Global::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err(Error::corrupt(
                "pickle",
                "_rebuild_parameter without a tensor",
            )),
        },
        Global::RebuildTensor => {
            if args.len() < 4 {
                return Err(Error::corrupt(
                    "pickle",
                    format!(
                        "_rebuild_tensor with {} arguments, 4 or more expected",
                        args.len()
                    ),
                ));
            }
            let stride = as_sizes(&args[3], "stride")?;
            let size = as_sizes(&args[2], "size")?;
            let offset = as_u64(&args[1], "storage offset")?;
            let Value::Storage(storage) = std::mem::replace(&mut args[0], Value::None) else {
                return Err(Error::corrupt(
                    "pickle",
                    "_rebuild_tensor without a storage",
                ));
            };
            if size.len() != stride.len() {
                return Err(Error::corrupt(
                    "pickle",
                    format!("size {size:?} and stride {stride:?} differ in length"),
                ));
            }
            Ok(Value::Tensor(TensorRef {
                storage,
                offset,
                size,
                stride,
            }))
        }
        Global::StorageType(_) => Err(Error::corrupt("pickle", "a storage type called directly")),
    }
}
