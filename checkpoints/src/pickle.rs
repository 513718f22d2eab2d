//! A restricted reader of PyTorch's `pytorch_model.bin` (the zip container `torch.save` writes)
//! that understands tensor storage records and nothing else: the OneBit import path.
//!
//! It never executes anything. `data.pkl` is interpreted by a small stack machine that knows
//! the opcodes `torch.save` emits for a state dict (protocols 2–4: containers, strings, numbers,
//! memo, persistent ids) and exactly these globals: `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the typed storage
//! classes (`torch.FloatStorage`, ...). Any other opcode or global (e.g. `os.system`) is refused
//! with [`CheckpointError::PickleRefused`] before anything else happens; so is a top-level
//! object that is not a flat dictionary of tensors, a non-contiguous tensor, or a compressed
//! storage. The result is a list of [`PickledTensor`]s whose bytes are slices of the (stored,
//! uncompressed) zip entries, which [`crate::safetensors_dir`] maps like a safetensors file.

use crate::error::CheckpointError;
use safetensors::Dtype;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

/// One tensor of the state dict: where its bytes lie in the `.bin` file.
#[derive(Clone, Debug, PartialEq)]
pub struct PickledTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range in the `.bin` file.
    pub start: usize,
    pub end: usize,
}

/// A value on the machine's stack.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// An allowed global (module, name).
    Global(&'static str, &'static str),
    Storage {
        dtype: Dtype,
        key: String,
    },
    Tensor(TensorRecord),
    Mark,
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Clone, Debug, PartialEq)]
struct TensorRecord {
    dtype: Dtype,
    key: String,
    offset: usize,
    shape: Vec<usize>,
}

/// The globals the reader accepts; everything else is refused.
const ALLOWED: [(&str, &str); 13] = [
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "DoubleStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "ShortStorage"),
    ("torch", "IntStorage"),
    ("torch", "LongStorage"),
    ("torch", "BoolStorage"),
];

fn storage_dtype(name: &str) -> Option<Dtype> {
    Some(match name {
        "FloatStorage" => Dtype::F32,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "DoubleStorage" => Dtype::F64,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "ShortStorage" => Dtype::I16,
        "IntStorage" => Dtype::I32,
        "LongStorage" => Dtype::I64,
        "BoolStorage" => Dtype::BOOL,
        _ => return None,
    })
}

/// Reads the tensor records of the zip-format pickle at `path` (`bytes` is its content).
pub fn read_torch_zip(path: &Path, bytes: &[u8]) -> Result<Vec<PickledTensor>, CheckpointError> {
    let refuse = |reason: String| CheckpointError::PickleRefused {
        path: path.to_path_buf(),
        reason,
    };
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(refuse(
            "not a zip-format torch.save file (the legacy format is not read)".into(),
        ));
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| refuse(format!("unreadable zip container: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .map(str::to_string)
        .ok_or_else(|| refuse("no data.pkl in the zip container".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        std::io::Read::read_to_string(&mut f, &mut order)
            .map_err(|e| refuse(format!("byteorder: {e}")))?;
        if order.trim() != "little" {
            return Err(refuse(format!(
                "byte order {:?} (only little-endian is read)",
                order.trim()
            )));
        }
    }
    let pkl = {
        let mut f = zip
            .by_name(&pkl_name)
            .map_err(|e| refuse(format!("{pkl_name}: {e}")))?;
        let mut v = Vec::with_capacity(f.size() as usize);
        std::io::Read::read_to_end(&mut f, &mut v)
            .map_err(|e| refuse(format!("{pkl_name}: {e}")))?;
        v
    };
    let records = Machine::default()
        .run(&pkl)
        .map_err(|reason| refuse(format!("data.pkl: {reason}")))?;
    let mut tensors = Vec::with_capacity(records.len());
    for (name, r) in records {
        let entry = format!("{prefix}data/{}", r.key);
        let f = zip
            .by_name(&entry)
            .map_err(|e| refuse(format!("storage {entry} of tensor {name}: {e}")))?;
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(refuse(format!("storage {entry} is compressed")));
        }
        let (data_start, size) = (f.data_start() as usize, f.size() as usize);
        let elem = r.dtype.bitsize() / 8;
        let numel: usize = r.shape.iter().product();
        let start = data_start + r.offset * elem;
        let end = start + numel * elem;
        if end > data_start + size || end > bytes.len() {
            return Err(refuse(format!(
                "tensor {name} ({:?} {:?} at element {}) runs past its storage of {size} bytes",
                r.dtype, r.shape, r.offset
            )));
        }
        tensors.push(PickledTensor {
            name,
            dtype: r.dtype,
            shape: r.shape,
            start,
            end,
        });
    }
    Ok(tensors)
}

/// The restricted pickle machine.
#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

/// Reads little-endian numbers and strings from the pickle.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn utf8(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8 string".into())
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated GLOBAL")?;
        let s = self.utf8(n)?;
        self.at += 1;
        Ok(s)
    }
}

impl Machine {
    fn pop(&mut self) -> Result<Value, String> {
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    /// Pops everything down to the last mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("no mark")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn global(module: &str, name: &str) -> Result<Value, String> {
        ALLOWED
            .iter()
            .find(|(m, n)| *m == module && *n == name)
            .map(|(m, n)| Value::Global(m, n))
            .ok_or_else(|| {
                format!(
                    "global {module}.{name} is not allowed (only tensor storage records are read)"
                )
            })
    }

    /// Runs the pickle; returns the state dict's tensors in file order.
    fn run(mut self, data: &[u8]) -> Result<Vec<(String, TensorRecord)>, String> {
        let mut input = Input { data, at: 0 };
        loop {
            let at = input.at;
            let op = input.u8()?;
            match op {
                0x80 => {
                    input.u8()?; // PROTO
                }
                0x95 => {
                    input.take(8)?; // FRAME
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'(' => self.stack.push(Value::Mark),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = input.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let b = input.take(2)?;
                    self.stack
                        .push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
                }
                b'J' => {
                    let v = input.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = input.u8()? as usize;
                    let b = input.take(n)?;
                    if n > 8 {
                        return Err(format!("LONG1 of {n} bytes"));
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let b = input.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = input.u32()? as usize;
                    let s = input.utf8(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c | b'U' => {
                    let n = input.u8()? as usize;
                    let s = input.utf8(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'T' => {
                    let n = input.u32()? as usize;
                    let s = input.utf8(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'q' => {
                    let k = input.u8()? as u32;
                    self.memoize(k)?;
                }
                b'r' => {
                    let k = input.u32()?;
                    self.memoize(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memoize(k)?;
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        input.u8()? as u32
                    } else {
                        input.u32()?
                    };
                    let v = self.memo.get(&k).cloned().ok_or("memo key missing")?;
                    self.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'c' => {
                    let module = input.line()?;
                    let name = input.line()?;
                    self.stack.push(Self::global(&module, &name)?);
                }
                0x93 => {
                    let (name, module) = (self.pop()?, self.pop()?);
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Self::global(&m, &n)?),
                        _ => return Err("STACK_GLOBAL of non-strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_storage(pid)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack.push(reduce(callable, args)?);
                }
                b'b' => {
                    // BUILD: the state of an OrderedDict (e.g. `_metadata`) is dropped.
                    let _state = self.pop()?;
                    match self.stack.last() {
                        Some(Value::Dict(_) | Value::Tensor(_)) => {}
                        _ => return Err("BUILD on an object other than a dict or tensor".into()),
                    }
                }
                b's' => {
                    let (v, k) = (self.pop()?, self.pop()?);
                    self.dict_insert(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.dict_insert(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.list_extend(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_extend(items)?;
                }
                b'.' => break,
                other => {
                    return Err(format!(
                        "opcode 0x{other:02x} ({:?}) at byte {at} is not allowed",
                        other as char
                    ))
                }
            }
        }
        match self.stack.pop() {
            Some(Value::Dict(items)) if self.stack.is_empty() => items
                .into_iter()
                .map(|(k, v)| match (k, v) {
                    (Value::Str(name), Value::Tensor(t)) => Ok((name, t)),
                    (k, _) => Err(format!(
                        "entry {k:?} of the top-level dict is not a tensor (nested checkpoints \
                         are not read)"
                    )),
                })
                .collect(),
            _ => Err("the top-level object is not a flat state dict of tensors".into()),
        }
    }

    fn memoize(&mut self, key: u32) -> Result<(), String> {
        let top = self
            .stack
            .last()
            .ok_or("MEMOIZE on an empty stack")?
            .clone();
        self.memo.insert(key, top);
        Ok(())
    }

    fn dict_insert(&mut self, items: Vec<Value>) -> Result<(), String> {
        let Some(Value::Dict(d)) = self.stack.last_mut() else {
            return Err("SETITEM(S) on a non-dict".into());
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn list_extend(&mut self, items: Vec<Value>) -> Result<(), String> {
        let Some(Value::List(l)) = self.stack.last_mut() else {
            return Err("APPEND(S) on a non-list".into());
        };
        l.extend(items);
        Ok(())
    }
}

/// `('storage', <torch.XStorage>, key, location, numel)` → a storage reference.
fn persistent_storage(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global("torch", class), Value::Str(key), Value::Str(_), Value::Int(_)]
            if kind == "storage" =>
        {
            let dtype = storage_dtype(class).ok_or_else(|| format!("storage class {class}"))?;
            if key.contains('/') || key.contains("..") {
                return Err(format!("storage key {key:?}"));
            }
            Ok(Value::Storage {
                dtype,
                key: key.clone(),
            })
        }
        _ => Err("persistent id is not a tensor storage record".into()),
    }
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err(format!("{what} holds a non-integer")),
            })
            .collect(),
        _ => Err(format!("{what} is not a tuple")),
    }
}

/// Applies an allowed callable.
fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match callable {
        Value::Global("collections", "OrderedDict") if args.is_empty() => {
            Ok(Value::Dict(Vec::new()))
        }
        Value::Global("torch._utils", "_rebuild_tensor_v2") if args.len() >= 4 => {
            let Value::Storage { dtype, key } = &args[0] else {
                return Err("_rebuild_tensor_v2 without a storage".into());
            };
            let offset = match args[1] {
                Value::Int(o) if o >= 0 => o as usize,
                _ => return Err("_rebuild_tensor_v2 offset".into()),
            };
            let shape = usizes(&args[2], "size")?;
            let stride = usizes(&args[3], "stride")?;
            let mut expected = 1;
            for (dim, (&n, &s)) in shape.iter().zip(&stride).enumerate().rev() {
                if n > 1 && s != expected {
                    return Err(format!(
                        "a non-contiguous tensor (dimension {dim}: stride {s}, expected \
                         {expected}) is not read"
                    ));
                }
                expected *= n;
            }
            Ok(Value::Tensor(TensorRecord {
                dtype: *dtype,
                key: key.clone(),
                offset,
                shape,
            }))
        }
        Value::Global("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Value::Global(m, n) => Err(format!("call of {m}.{n} with these arguments")),
        _ => Err("REDUCE of something that is not an allowed global".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pkl: &[u8]) -> Result<Vec<(String, TensorRecord)>, String> {
        Machine::default().run(pkl)
    }

    #[test]
    fn reads_a_hand_written_state_dict() {
        // {'w': _rebuild_tensor_v2(('storage', torch.CharStorage, '0', 'cpu', 6), 0, (2, 3),
        //  (3, 1), False, OrderedDict())}
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'X'];
        p.extend(1u32.to_le_bytes());
        p.extend(b"wctorch._utils\n_rebuild_tensor_v2\nq\x01((X");
        p.extend(7u32.to_le_bytes());
        p.extend(b"storagectorch\nCharStorage\nX");
        p.extend(1u32.to_le_bytes());
        p.extend(b"0X");
        p.extend(3u32.to_le_bytes());
        p.extend(b"cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)Rtq\x02Rs.");
        let got = run(&p).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "w");
        assert_eq!(
            got[0].1,
            TensorRecord {
                dtype: Dtype::I8,
                key: "0".into(),
                offset: 0,
                shape: vec![2, 3]
            }
        );
    }

    #[test]
    fn refuses_other_globals_and_opcodes() {
        let err = run(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap_err();
        assert!(err.contains("global os.system is not allowed"), "{err}");
        let err = run(b"\x80\x02c__builtin__\neval\n.").unwrap_err();
        assert!(err.contains("global __builtin__.eval"), "{err}");
        // INST ('i') builds arbitrary objects.
        let err = run(b"(ios\nsystem\n.").unwrap_err();
        assert!(err.contains("opcode 0x69"), "{err}");
        let err = run(b"\x80\x02K\x01.").unwrap_err();
        assert!(err.contains("not a flat state dict"), "{err}");
    }
}
