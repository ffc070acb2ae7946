//! `.npy` header parsing and validation (format versions 1.0, 2.0 and 3.0).

use std::path::Path;

use super::dtype::{ByteOrder, DType, Kind};
use super::{ArrayMeta, Order};
use crate::error::{Error, Result};

/// The six magic bytes every `.npy` file starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Headers longer than this are refused rather than allocated: numpy itself caps them at
/// 10,000 bytes for safety, and colstats's dtypes never need more than a few hundred.
const MAX_HEADER_LEN: usize = 1 << 20;

/// Parses the header at the start of `bytes` (the first bytes of the file, at least enough to
/// hold the header) and validates it against `file_len`.
pub fn parse(path: &Path, bytes: &[u8], file_len: u64) -> Result<ArrayMeta> {
    let bad = |msg: String| Error::format(path, msg);
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("not a .npy file (bad magic bytes)".into()));
    }
    if bytes.len() < 8 {
        return Err(bad("truncated .npy header (no version)".into()));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_bytes, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => {
            return Err(bad(format!(
                "unsupported .npy format version {major}.{minor}"
            )))
        }
    };
    let start = 8 + len_bytes;
    if bytes.len() < start {
        return Err(bad("truncated .npy header (no header length)".into()));
    }
    let header_len = if len_bytes == 2 {
        u16::from_le_bytes([bytes[8], bytes[9]]) as usize
    } else {
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
    };
    if header_len > MAX_HEADER_LEN {
        return Err(bad(format!(
            "header length {header_len} is implausibly large (limit {MAX_HEADER_LEN})"
        )));
    }
    let data_offset = (start + header_len) as u64;
    if data_offset > file_len || bytes.len() < start + header_len {
        return Err(bad(format!(
            "truncated .npy header: it claims {header_len} bytes but the file has {} after the preamble",
            file_len.saturating_sub(start as u64)
        )));
    }
    let raw = &bytes[start..start + header_len];
    let text = if utf8 {
        std::str::from_utf8(raw).map_err(|_| bad("header is not valid UTF-8".into()))?
    } else {
        if !raw.is_ascii() {
            return Err(bad(format!(
                "header of a version {major}.0 file is not ASCII"
            )));
        }
        std::str::from_utf8(raw).expect("ASCII is UTF-8")
    };
    if !text.ends_with('\n') {
        return Err(bad("header does not end with a newline".into()));
    }
    let header = parse_dict(text).map_err(|e| bad(format!("corrupt header: {e}")))?;
    let dtype = parse_descr(path, &header.descr)?;
    let order = if header.fortran_order {
        Order::F
    } else {
        Order::C
    };
    ArrayMeta::new(path, dtype, header.shape, order, data_offset, file_len)
}

struct Header {
    descr: Descr,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// The `descr` value: a type string, or a list (a structured dtype).
enum Descr {
    Str(String),
    List,
}

/// A tiny parser for the Python dict literal numpy writes.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<Value>),
    List,
    Int(i128),
    Other,
}

impl<'a> Lexer<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let q = self.peek().ok_or("unexpected end")?;
        if q != b'\'' && q != b'"' {
            return Err(format!("expected a string at byte {}", self.i));
        }
        self.i += 1;
        let st = self.i;
        while self.i < self.s.len() && self.s[self.i] != q {
            if self.s[self.i] == b'\\' {
                return Err("escapes in header strings are not supported".into());
            }
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return Err("unterminated string".into());
        }
        let out = String::from_utf8_lossy(&self.s[st..self.i]).into_owned();
        self.i += 1;
        Ok(out)
    }
    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > 8 {
            return Err("header nests too deeply".into());
        }
        match self.peek().ok_or("unexpected end")? {
            b'\'' | b'"' => Ok(Value::Str(self.string()?)),
            b'(' | b'[' => {
                let open = self.s[self.i];
                let close = if open == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.i += 1;
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(c) if c == close => {}
                        _ => return Err(format!("expected ',' or '{}'", close as char)),
                    }
                }
                Ok(if open == b'(' {
                    Value::Tuple(items)
                } else {
                    Value::List
                })
            }
            b'{' => Err("nested dict in header".into()),
            c if c == b'-' || c.is_ascii_digit() => {
                let st = self.i;
                self.i += 1;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let txt = std::str::from_utf8(&self.s[st..self.i]).unwrap();
                // Python 2 wrote long integers with an `L` suffix.
                if self.i < self.s.len() && self.s[self.i] == b'L' {
                    self.i += 1;
                }
                txt.parse::<i128>()
                    .map(Value::Int)
                    .map_err(|_| format!("bad integer '{txt}'"))
            }
            c if c.is_ascii_alphabetic() => {
                let st = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
                {
                    self.i += 1;
                }
                Ok(match &self.s[st..self.i] {
                    b"True" => Value::Bool(true),
                    b"False" => Value::Bool(false),
                    _ => Value::Other,
                })
            }
            c => Err(format!("unexpected '{}' at byte {}", c as char, self.i)),
        }
    }
}

fn parse_dict(text: &str) -> Result<Header, String> {
    let mut lx = Lexer {
        s: text.as_bytes(),
        i: 0,
    };
    lx.eat(b'{')
        .map_err(|_| "header is not a dict literal".to_string())?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        if lx.peek() == Some(b'}') {
            lx.i += 1;
            break;
        }
        let key = lx.string()?;
        lx.eat(b':')?;
        let val = lx.value(0)?;
        let dup = |k: &str| format!("key '{k}' appears twice");
        match key.as_str() {
            "descr" => {
                let d = match val {
                    Value::Str(s) => Descr::Str(s),
                    Value::List => Descr::List,
                    _ => return Err("'descr' is neither a string nor a list".into()),
                };
                if descr.replace(d).is_some() {
                    return Err(dup("descr"));
                }
            }
            "fortran_order" => {
                let Value::Bool(b) = val else {
                    return Err("'fortran_order' is not True or False".into());
                };
                if fortran.replace(b).is_some() {
                    return Err(dup("fortran_order"));
                }
            }
            "shape" => {
                let Value::Tuple(items) = val else {
                    return Err("'shape' is not a tuple".into());
                };
                let mut dims = Vec::with_capacity(items.len());
                for it in items {
                    match it {
                        Value::Int(n) if n >= 0 && n <= u64::MAX as i128 => dims.push(n as u64),
                        Value::Int(n) => return Err(format!("'shape' has a negative entry {n}")),
                        _ => return Err("'shape' holds something other than integers".into()),
                    }
                }
                if shape.replace(dims).is_some() {
                    return Err(dup("shape"));
                }
            }
            other => return Err(format!("unexpected key '{other}'")),
        }
        match lx.peek() {
            Some(b',') => lx.i += 1,
            Some(b'}') => {}
            _ => return Err("expected ',' or '}' in the header dict".into()),
        }
    }
    if lx.peek().is_some() {
        return Err("trailing characters after the header dict".into());
    }
    Ok(Header {
        descr: descr.ok_or("missing key 'descr'")?,
        fortran_order: fortran.ok_or("missing key 'fortran_order'")?,
        shape: shape.ok_or("missing key 'shape'")?,
    })
}

/// Maps a numpy type string (or type name) to a [`DType`], refusing non-numeric types.
fn parse_descr(path: &Path, descr: &Descr) -> Result<DType> {
    let unsupported =
        |d: &str, why: &str| Error::unsupported(path, format!("unsupported dtype {d}: {why}"));
    let s = match descr {
        Descr::List => {
            return Err(unsupported(
                "[...]",
                "structured (record) arrays are not supported; pass a plain numeric array",
            ))
        }
        Descr::Str(s) => s.as_str(),
    };
    if let Some(dt) = dtype_from_str(s) {
        return Ok(dt);
    }
    let body = s.trim_start_matches(['<', '>', '|', '=']);
    let why = match body.chars().next() {
        Some('c') | Some('F') | Some('D') | Some('G') => "complex numbers are not supported",
        Some('O') => "object arrays are not supported",
        Some('U') | Some('S') | Some('a') => "string arrays are not supported",
        Some('V') => "void/structured arrays are not supported",
        Some('M') | Some('m') => "datetime and timedelta arrays are not supported",
        Some('f') | Some('g') => "only float16, float32 and float64 are supported",
        _ => "not a numeric type colstats knows",
    };
    Err(unsupported(s, why))
}

/// Parses the numeric type strings numpy accepts: `<f8`, `>i4`, `|b1`, `=u2`, `?`, `float64`...
pub fn dtype_from_str(s: &str) -> Option<DType> {
    let named = |k, n| DType::new(k, n, ByteOrder::NATIVE);
    match s {
        "bool" | "?" | "b1" => return named(Kind::Bool, 1),
        "int8" | "b" => return named(Kind::Int, 1),
        "uint8" | "B" => return named(Kind::UInt, 1),
        "int16" | "h" => return named(Kind::Int, 2),
        "uint16" | "H" => return named(Kind::UInt, 2),
        "int32" | "i" => return named(Kind::Int, 4),
        "uint32" | "I" => return named(Kind::UInt, 4),
        "int64" | "q" | "l" => return named(Kind::Int, 8),
        "uint64" | "Q" | "L" => return named(Kind::UInt, 8),
        "float16" | "e" => return named(Kind::Float, 2),
        "float32" | "f" => return named(Kind::Float, 4),
        "float64" | "d" => return named(Kind::Float, 8),
        _ => {}
    }
    let mut chars = s.chars();
    let first = chars.next()?;
    let (order, rest) = match first {
        '<' => (Some(ByteOrder::Little), &s[1..]),
        '>' => (Some(ByteOrder::Big), &s[1..]),
        '=' => (Some(ByteOrder::NATIVE), &s[1..]),
        '|' => (None, &s[1..]),
        _ => (Some(ByteOrder::NATIVE), s),
    };
    let mut rc = rest.chars();
    let kind = match rc.next()? {
        'b' => Kind::Bool,
        '?' => return named(Kind::Bool, 1).filter(|_| rc.as_str().is_empty()),
        'i' => Kind::Int,
        'u' => Kind::UInt,
        'f' => Kind::Float,
        _ => return None,
    };
    let digits = rc.as_str();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 2 {
        return None;
    }
    let size: usize = digits.parse().ok()?;
    // '|' means "not applicable": only valid for one-byte types.
    if order.is_none() && size != 1 {
        return None;
    }
    DType::new(kind, size, order.unwrap_or(ByteOrder::NATIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descr_strings() {
        let f8 = dtype_from_str("<f8").unwrap();
        assert_eq!(
            (f8.kind, f8.size, f8.order),
            (Kind::Float, 8, ByteOrder::Little)
        );
        assert_eq!(dtype_from_str(">i4").unwrap().order, ByteOrder::Big);
        assert_eq!(dtype_from_str("|b1").unwrap().kind, Kind::Bool);
        assert_eq!(dtype_from_str("|u1").unwrap().kind, Kind::UInt);
        assert_eq!(dtype_from_str("<f2").unwrap().name(), "float16");
        assert!(dtype_from_str("<f16").is_none());
        assert!(dtype_from_str("<c16").is_none());
        assert!(dtype_from_str("|f8").is_none());
        assert!(dtype_from_str("<b2").is_none());
        assert!(dtype_from_str("").is_none());
    }
}
