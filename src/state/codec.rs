//! The byte form of a [`State`]: little-endian, checksummed, versioned (the layout is in
//! `docs/state-format.md`). Decoding checks every length against the bytes present and every
//! value against the others before building anything, so no input makes it panic or allocate
//! more than the file's size.

use super::{DomainNodes, InputId, InputNodes, State};
use crate::error::{Error, ErrorKind, Result};
use crate::kernel::Need;
use crate::moments::{Acc, Node};
use crate::source::{ByteOrder, DType, Kind, Order};
use crate::{NanPolicy, Stat};
use std::path::PathBuf;

/// The first 8 bytes of every state file.
pub const MAGIC: &[u8; 8] = b"COLSTATE";
/// The format version this code writes and the newest it reads.
pub const VERSION: u32 = 1;
/// Magic, version, flags, payload length.
const HEAD: usize = 8 + 4 + 4 + 8;
/// Bytes of one accumulator.
const ACC_BYTES: usize = 8 * 8 + 3 * 16;

fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::State, None, msg)
}

pub(super) fn encode(s: &State) -> Vec<u8> {
    let mut p = Vec::new();
    let kind = match s.dtype.kind {
        Kind::Bool => 0u8,
        Kind::Int => 1,
        Kind::UInt => 2,
        Kind::Float => 3,
    };
    p.extend([
        kind,
        s.dtype.size as u8,
        (s.dtype.order == ByteOrder::Big) as u8,
        (s.order == Order::F) as u8,
        (s.nan == NanPolicy::Propagate) as u8,
        s.need.moments as u8 | (s.need.minmax as u8) << 1,
    ]);
    put_u64(&mut p, s.ddof);
    put_u32(&mut p, s.stats.len() as u32);
    for st in &s.stats {
        p.push(Stat::ALL.iter().position(|x| x == st).expect("a Stat") as u8);
    }
    put_u32(&mut p, s.shape.len() as u32);
    s.shape.iter().for_each(|&d| put_u64(&mut p, d));
    match &s.dataset {
        Some(d) => {
            p.push(1);
            put_bytes(&mut p, d.as_bytes());
        }
        None => p.push(0),
    }
    put_u32(&mut p, s.inputs.len() as u32);
    for i in &s.inputs {
        use std::os::unix::ffi::OsStrExt;
        put_bytes(&mut p, i.path.as_os_str().as_bytes());
        put_u64(&mut p, i.start);
        put_u64(&mut p, i.rows);
        put_u64(&mut p, i.size);
        put_u64(&mut p, i.mtime_ns as u64);
        put_u32(&mut p, i.header_crc);
        match &i.dataset {
            Some(d) => {
                p.push(1);
                put_bytes(&mut p, d.as_bytes());
            }
            None => p.push(0),
        }
    }
    put_u64(&mut p, s.columns.len() as u64);
    s.columns.iter().for_each(|&c| put_u64(&mut p, c));
    s.shift.iter().for_each(|&c| put_u64(&mut p, c));
    put_u64(&mut p, s.output.len() as u64);
    s.output.iter().for_each(|&c| put_u64(&mut p, c));
    put_u32(&mut p, s.rows.len() as u32);
    for r in &s.rows {
        put_u64(&mut p, r.start);
        put_u64(&mut p, r.end);
    }
    put_u32(&mut p, s.domains.len() as u32);
    for d in &s.domains {
        put_tree(&mut p, d);
    }
    match &s.per_input {
        None => p.push(0),
        Some(per) => {
            p.push(1);
            put_u32(&mut p, per.len() as u32);
            for i in per {
                put_u32(&mut p, i.input as u32);
                p.push((i.order == Order::F) as u8);
                put_tree(&mut p, &i.tree);
            }
        }
    }
    let mut out = Vec::with_capacity(HEAD + p.len() + 4);
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, VERSION);
    put_u32(&mut out, 0);
    put_u64(&mut out, p.len() as u64);
    let crc = crc32fast::hash(&p);
    out.extend_from_slice(&p);
    put_u32(&mut out, crc);
    out
}

fn put_tree(p: &mut Vec<u8>, d: &DomainNodes) {
    put_u64(p, d.rows.start);
    put_u64(p, d.rows.end);
    put_u64(p, d.leaf_rows);
    put_u64(p, d.nodes.len() as u64);
    for n in &d.nodes {
        put_u64(p, n.first_leaf);
        put_u32(p, n.level.unwrap_or(u32::MAX));
        for a in &n.accs {
            put_acc(p, a);
        }
    }
}

fn put_u32(p: &mut Vec<u8>, v: u32) {
    p.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(p: &mut Vec<u8>, v: u64) {
    p.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(p: &mut Vec<u8>, b: &[u8]) {
    put_u32(p, b.len() as u32);
    p.extend_from_slice(b);
}
fn put_acc(p: &mut Vec<u8>, a: &Acc) {
    put_u64(p, a.n);
    put_u64(p, a.nan);
    for f in [a.mean, a.m2, a.sum_hi, a.sum_lo, a.min, a.max] {
        put_u64(p, f.to_bits());
    }
    for i in [a.isum, a.imin, a.imax] {
        p.extend_from_slice(&i.to_le_bytes());
    }
}

/// A cursor that fails, rather than panics, past the end.
struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.b.len() {
            return Err(bad(
                "corrupt state: a field runs past the end of the payload",
            ));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i128(&mut self) -> Result<i128> {
        Ok(i128::from_le_bytes(
            self.take(16)?.try_into().expect("16 bytes"),
        ))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
    /// A count of items of at least `each` bytes, checked against the bytes left.
    fn count(&mut self, n: u64, each: usize) -> Result<usize> {
        if n.saturating_mul(each.max(1) as u64) > self.b.len() as u64 {
            return Err(bad("corrupt state: a count exceeds the bytes present"));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as u64;
        let n = self.count(n, 1)?;
        self.take(n)
    }
    /// A flag byte (0 none, 1 some) and a UTF-8 string.
    fn opt_str(&mut self) -> Result<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => String::from_utf8(self.bytes()?.to_vec())
                .map(Some)
                .map_err(|_| bad("corrupt state: a dataset name is not UTF-8")),
            _ => Err(bad("corrupt state: bad dataset flag")),
        }
    }

    fn acc(&mut self) -> Result<Acc> {
        Ok(Acc {
            n: self.u64()?,
            nan: self.u64()?,
            mean: self.f64()?,
            m2: self.f64()?,
            sum_hi: self.f64()?,
            sum_lo: self.f64()?,
            min: self.f64()?,
            max: self.f64()?,
            isum: self.i128()?,
            imin: self.i128()?,
            imax: self.i128()?,
        })
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<State> {
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(bad("not a colstats state file (no COLSTATE signature)"));
    }
    if bytes.len() < HEAD + 4 {
        return Err(bad(format!(
            "truncated state file ({} bytes, the header alone is {})",
            bytes.len(),
            HEAD + 4
        )));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version > VERSION || version == 0 {
        return Err(bad(format!(
            "state format version {version}, but this colstats reads version {VERSION} \
             (written by a newer colstats?)"
        )));
    }
    let flags = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if flags != 0 {
        return Err(bad(format!(
            "state flags {flags:#x} are unknown to this colstats (written by a newer one?)"
        )));
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let have = (bytes.len() - HEAD - 4) as u64;
    if len != have {
        return Err(bad(if len > have {
            format!("truncated state file: the payload is {len} bytes, {have} are present")
        } else {
            format!("{} unexpected bytes after the state", have - len)
        }));
    }
    let payload = &bytes[HEAD..HEAD + len as usize];
    let crc = u32::from_le_bytes(bytes[HEAD + len as usize..].try_into().expect("4 bytes"));
    if crc32fast::hash(payload) != crc {
        return Err(bad("corrupt state file: checksum mismatch"));
    }
    let s = parse(&mut Rd { b: payload })?;
    validate(&s)?;
    Ok(s)
}

fn parse(r: &mut Rd<'_>) -> Result<State> {
    let (kind, size, big, order_f, prop, need) =
        (r.u8()?, r.u8()?, r.u8()?, r.u8()?, r.u8()?, r.u8()?);
    let kind = match kind {
        0 => Kind::Bool,
        1 => Kind::Int,
        2 => Kind::UInt,
        3 => Kind::Float,
        k => return Err(bad(format!("corrupt state: unknown dtype kind {k}"))),
    };
    let order = if big == 1 {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    let dtype = DType::new(kind, size as usize, order)
        .ok_or_else(|| bad(format!("corrupt state: no {size}-byte type of that kind")))?;
    let ddof = r.u64()?;
    let n = r.u32()? as u64;
    let n = r.count(n, 1)?;
    let mut stats = Vec::with_capacity(n);
    for _ in 0..n {
        let i = r.u8()? as usize;
        stats.push(
            *Stat::ALL
                .get(i)
                .ok_or_else(|| bad(format!("corrupt state: unknown statistic {i}")))?,
        );
    }
    let n = r.u32()? as u64;
    let n = r.count(n, 8)?;
    let shape = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
    let dataset = r.opt_str()?;
    let n = r.u32()? as u64;
    let n = r.count(n, 4 + 8 * 4 + 4 + 1)?;
    let mut inputs = Vec::with_capacity(n);
    for _ in 0..n {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
        inputs.push(InputId {
            path,
            start: r.u64()?,
            rows: r.u64()?,
            size: r.u64()?,
            mtime_ns: r.u64()? as i64,
            header_crc: r.u32()?,
            dataset: r.opt_str()?,
        });
    }
    let n = r.u64()?;
    let n = r.count(n, 16)?;
    let columns = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
    let shift = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
    let n = r.u64()?;
    let n = r.count(n, 8)?;
    let output = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
    let n = r.u32()? as u64;
    let n = r.count(n, 16)?;
    let rows = (0..n)
        .map(|_| Ok(r.u64()?..r.u64()?))
        .collect::<Result<Vec<_>>>()?;
    let n = r.u32()? as u64;
    let n = r.count(n, 32)?;
    let mut domains = Vec::with_capacity(n);
    for _ in 0..n {
        domains.push(tree(r, columns.len())?);
    }
    let per_input = match r.u8()? {
        0 => None,
        1 => {
            let n = r.u32()? as u64;
            let n = r.count(n, 37)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let input = r.u32()? as usize;
                let order = match r.u8()? {
                    0 => Order::C,
                    1 => Order::F,
                    _ => return Err(bad("corrupt state: bad memory order")),
                };
                v.push(InputNodes {
                    input,
                    order,
                    tree: tree(r, columns.len())?,
                });
            }
            Some(v)
        }
        _ => return Err(bad("corrupt state: bad per-input flag")),
    };
    if !r.b.is_empty() {
        return Err(bad("corrupt state: bytes left after the last field"));
    }
    Ok(State {
        dtype,
        shape,
        order: if order_f == 1 { Order::F } else { Order::C },
        dataset,
        nan: if prop == 1 {
            NanPolicy::Propagate
        } else {
            NanPolicy::Skip
        },
        ddof,
        stats,
        need: Need {
            moments: need & 1 != 0,
            minmax: need & 2 != 0,
        },
        inputs,
        columns,
        output,
        shift,
        rows,
        domains,
        per_input,
    })
}

/// One tree's nodes: its rows, leaf rows, then each node.
fn tree(r: &mut Rd<'_>, columns: usize) -> Result<DomainNodes> {
    let (a, b, leaf_rows) = (r.u64()?, r.u64()?, r.u64()?);
    let k = r.u64()?;
    let k = r.count(k, 12 + ACC_BYTES * columns)?;
    let mut nodes = Vec::with_capacity(k);
    for _ in 0..k {
        let first_leaf = r.u64()?;
        let level = match r.u32()? {
            u32::MAX => None,
            l if l < 64 => Some(l),
            l => return Err(bad(format!("corrupt state: tree level {l}"))),
        };
        let accs = (0..columns).map(|_| r.acc()).collect::<Result<Vec<_>>>()?;
        nodes.push(Node {
            first_leaf,
            level,
            accs,
        });
    }
    Ok(DomainNodes {
        rows: a..b,
        leaf_rows,
        nodes,
    })
}

/// Checks what the rest of the code relies on: sorted unique columns inside the array,
/// output columns among them, rows and domains inside the array and in order.
fn validate(s: &State) -> Result<()> {
    let fail = |m: &str| Err(bad(format!("corrupt state: {m}")));
    if s.shape.is_empty() || s.shape.len() > 64 {
        return fail("bad shape");
    }
    let columns = s.shape[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let Some(ncols) = columns else {
        return fail("bad shape");
    };
    let nrows = s.shape[0];
    if s.columns.windows(2).any(|w| w[0] >= w[1]) || s.columns.last().is_some_and(|&c| c >= ncols) {
        return fail("columns out of order or out of range");
    }
    if s.output.iter().any(|c| s.columns.binary_search(c).is_err()) {
        return fail("an output column that was not selected");
    }
    if s.stats.is_empty() {
        return fail("no statistics");
    }
    if s.rows.iter().any(|r| r.start >= r.end || r.end > nrows)
        || s.rows.windows(2).any(|w| w[0].end > w[1].start)
    {
        return fail("row ranges out of order or out of range");
    }
    let mut at = 0;
    for d in &s.domains {
        if d.rows.start < at {
            return fail("domains out of order");
        }
        at = d.rows.end;
        check_tree(d, nrows, s.columns.len())?;
    }
    if let Some(per) = &s.per_input {
        for (k, i) in per.iter().enumerate() {
            if i.input >= s.inputs.len() || per[..k].iter().any(|j| j.input == i.input) {
                return fail("per-input trees of unknown or repeated inputs");
            }
            check_tree(&i.tree, nrows, s.columns.len())?;
        }
    }
    let mut at = 0;
    for i in &s.inputs {
        if i.start != at {
            return fail("inputs out of order");
        }
        at = i.start.saturating_add(i.rows);
    }
    if !s.inputs.is_empty() && at != nrows {
        return fail("the inputs' rows do not add up to the array's");
    }
    Ok(())
}

/// A tree inside the array, its nodes in order, each aligned to its level and inside it.
fn check_tree(d: &DomainNodes, nrows: u64, columns: usize) -> Result<()> {
    let fail = |m: &str| Err(bad(format!("corrupt state: {m}")));
    if d.rows.start >= d.rows.end || d.rows.end > nrows || d.leaf_rows == 0 {
        return fail("a tree out of range");
    }
    if d.nodes
        .windows(2)
        .any(|w| w[0].first_leaf > w[1].first_leaf)
    {
        return fail("tree nodes out of order");
    }
    let leaves = (d.rows.end - d.rows.start).div_ceil(d.leaf_rows);
    for n in &d.nodes {
        let ok = match n.level {
            Some(l) => {
                l < 63
                    && n.first_leaf % (1u64 << l) == 0
                    && n.first_leaf < leaves
                    && (1u64 << l) <= leaves.next_power_of_two()
            }
            None => n.first_leaf < leaves,
        };
        if !ok || n.accs.len() != columns {
            return fail("a tree node out of place");
        }
    }
    Ok(())
}
