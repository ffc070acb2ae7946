//! The byte form of a [`State`]: little-endian, checksummed, versioned (the layout is in
//! `docs/state-format.md`). Version 2 is a list of tagged sections; version 1 (colstats
//! 0.1, one fixed layout) is still read. Decoding checks every length against the bytes
//! present and every value against the others before building anything, so no input makes
//! it panic or allocate more than the file's size.

use super::{DomainNodes, Head, InputId, InputNodes, Job, State};
use crate::error::{Error, ErrorKind, Result};
use crate::kernel::Need;
use crate::moments::{Acc, Node};
use crate::source::{ByteOrder, DType, Kind, Order};
use crate::{NanPolicy, Stat};
use std::path::PathBuf;

/// The first 8 bytes of every state file.
pub const MAGIC: &[u8; 8] = b"COLSTATE";
/// The format version this code writes and the newest it reads.
pub const VERSION: u32 = 2;
/// Magic, version, flags, payload length.
const HEAD: usize = 8 + 4 + 4 + 8;

/// The accumulator fields a version-2 state can hold, by their number in its `ACCL`
/// section, with their width in bytes. Numbers are never reused.
const FIELDS: [(u16, usize); 11] = [
    (1, 8),   // n: u64, non-NaN values
    (2, 8),   // nan: u64, NaN values
    (3, 8),   // mean: f64, minus the shift
    (4, 8),   // m2: f64
    (5, 8),   // sum_hi: f64
    (6, 8),   // sum_lo: f64
    (7, 8),   // min: f64
    (8, 8),   // max: f64
    (9, 16),  // isum: i128
    (10, 16), // imin: i128
    (11, 16), // imax: i128
];

/// Bytes of one accumulator of every field (version 1's fixed layout too).
const ACC_BYTES: usize = 8 * 8 + 3 * 16;

fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::State, None, msg)
}

/// The section tags of version 2, in the order they are written. A tag whose first byte is
/// an upper-case letter is critical: a reader that does not know it refuses the file; one
/// in lower case may be skipped.
mod tag {
    pub const ARRAY: [u8; 4] = *b"ARRY";
    pub const RUN: [u8; 4] = *b"RUNP";
    pub const JOB: [u8; 4] = *b"JOBS";
    pub const INPUTS: [u8; 4] = *b"INPT";
    pub const COLUMNS: [u8; 4] = *b"COLS";
    pub const ROWS: [u8; 4] = *b"ROWS";
    pub const ACCS: [u8; 4] = *b"ACCL";
    pub const HEAD: [u8; 4] = *b"HEAD";
    pub const DOMAINS: [u8; 4] = *b"DOMN";
    pub const PER_INPUT: [u8; 4] = *b"PERI";
}

pub(super) fn encode(s: &State) -> Vec<u8> {
    let mut p = Vec::new();
    let mut section = |tag: [u8; 4], body: Vec<u8>| {
        p.extend_from_slice(&tag);
        put_u64(&mut p, body.len() as u64);
        p.extend_from_slice(&body);
    };
    let mut b = vec![
        kind_code(s.dtype.kind),
        s.dtype.size as u8,
        (s.dtype.order == ByteOrder::Big) as u8,
        (s.order == Order::F) as u8,
    ];
    put_u32(&mut b, s.shape.len() as u32);
    s.shape.iter().for_each(|&d| put_u64(&mut b, d));
    put_opt_str(&mut b, s.dataset.as_deref());
    section(tag::ARRAY, b);

    let mut b = vec![(s.nan == NanPolicy::Propagate) as u8];
    put_u64(&mut b, s.ddof);
    put_u32(&mut b, need_bits(s.need));
    put_u32(&mut b, s.stats.len() as u32);
    for st in &s.stats {
        b.extend_from_slice(&crate::stats::def(*st).id.to_le_bytes());
    }
    section(tag::RUN, b);

    let mut b = Vec::new();
    put_u64(&mut b, s.job.inputs);
    put_u64(&mut b, s.job.fingerprint);
    section(tag::JOB, b);

    let mut b = Vec::new();
    put_u32(&mut b, s.inputs.len() as u32);
    for i in &s.inputs {
        use std::os::unix::ffi::OsStrExt;
        put_u64(&mut b, i.index);
        put_bytes(&mut b, i.path.as_os_str().as_bytes());
        put_u64(&mut b, i.start);
        put_u64(&mut b, i.rows);
        put_u64(&mut b, i.size);
        put_u64(&mut b, i.mtime_ns as u64);
        put_u32(&mut b, i.header_crc);
        put_opt_str(&mut b, i.dataset.as_deref());
    }
    section(tag::INPUTS, b);

    let mut b = Vec::new();
    put_u64(&mut b, s.columns.len() as u64);
    s.columns.iter().for_each(|&c| put_u64(&mut b, c));
    s.shift.iter().for_each(|&c| put_u64(&mut b, c));
    put_u64(&mut b, s.output.len() as u64);
    s.output.iter().for_each(|&c| put_u64(&mut b, c));
    section(tag::COLUMNS, b);

    let mut b = Vec::new();
    put_u32(&mut b, s.rows.len() as u32);
    for r in &s.rows {
        put_u64(&mut b, r.start);
        put_u64(&mut b, r.end);
    }
    section(tag::ROWS, b);

    let mut b = Vec::new();
    put_u32(&mut b, FIELDS.len() as u32);
    FIELDS
        .iter()
        .for_each(|(id, _)| b.extend_from_slice(&id.to_le_bytes()));
    section(tag::ACCS, b);

    if let Some(h) = &s.head {
        let mut b = Vec::new();
        put_u64(&mut b, h.rows.start);
        put_u64(&mut b, h.rows.end);
        h.accs.iter().for_each(|a| put_acc(&mut b, a));
        section(tag::HEAD, b);
    }

    let mut b = Vec::new();
    put_u32(&mut b, s.domains.len() as u32);
    s.domains.iter().for_each(|d| put_tree(&mut b, d));
    section(tag::DOMAINS, b);

    if let Some(per) = &s.per_input {
        let mut b = Vec::new();
        put_u32(&mut b, per.len() as u32);
        for i in per {
            put_u64(&mut b, i.input);
            b.push((i.order == Order::F) as u8);
            put_tree(&mut b, &i.tree);
        }
        section(tag::PER_INPUT, b);
    }
    frame(VERSION, &p)
}

fn frame(version: u32, p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + p.len() + 4);
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, version);
    put_u32(&mut out, 0);
    put_u64(&mut out, p.len() as u64);
    out.extend_from_slice(p);
    put_u32(&mut out, crc32fast::hash(p));
    out
}

fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::Bool => 0,
        Kind::Int => 1,
        Kind::UInt => 2,
        Kind::Float => 3,
    }
}

fn need_bits(n: Need) -> u32 {
    n.moments as u32 | (n.minmax as u32) << 1
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
fn put_opt_str(p: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(d) => {
            p.push(1);
            put_bytes(p, d.as_bytes());
        }
        None => p.push(0),
    }
}
/// An accumulator, every field of [`FIELDS`] in order.
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
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
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

    /// Nothing may follow a section's last field.
    fn end(&self) -> Result<()> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(bad("corrupt state: bytes left after the last field"))
        }
    }

    /// An accumulator of the fields `layout` lists, in that order (the others empty).
    fn acc_of(&mut self, layout: &[u16]) -> Result<Acc> {
        if layout.len() == FIELDS.len() && layout.iter().zip(&FIELDS).all(|(a, b)| *a == b.0) {
            // Every field, in the order this version writes them.
            return Ok(Acc {
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
            });
        }
        let mut a = Acc::EMPTY;
        for id in layout {
            match id {
                1 => a.n = self.u64()?,
                2 => a.nan = self.u64()?,
                3 => a.mean = self.f64()?,
                4 => a.m2 = self.f64()?,
                5 => a.sum_hi = self.f64()?,
                6 => a.sum_lo = self.f64()?,
                7 => a.min = self.f64()?,
                8 => a.max = self.f64()?,
                9 => a.isum = self.i128()?,
                10 => a.imin = self.i128()?,
                11 => a.imax = self.i128()?,
                _ => unreachable!("checked against FIELDS"),
            }
        }
        Ok(a)
    }

    /// An input's identity after its index: path, first row, rows, size, mtime, header CRC,
    /// dataset.
    fn input(&mut self, index: u64) -> Result<InputId> {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(self.bytes()?));
        Ok(InputId {
            index,
            path,
            start: self.u64()?,
            rows: self.u64()?,
            size: self.u64()?,
            mtime_ns: self.u64()? as i64,
            header_crc: self.u32()?,
            dataset: self.opt_str()?,
        })
    }

    /// Selected columns, their shifts, the output order.
    #[allow(clippy::type_complexity)]
    fn columns(&mut self) -> Result<(Vec<u64>, Vec<u64>, Vec<u64>)> {
        let n = self.u64()?;
        let n = self.count(n, 16)?;
        let columns = (0..n).map(|_| self.u64()).collect::<Result<Vec<_>>>()?;
        let shift = (0..n).map(|_| self.u64()).collect::<Result<Vec<_>>>()?;
        let n = self.u64()?;
        let n = self.count(n, 8)?;
        let output = (0..n).map(|_| self.u64()).collect::<Result<Vec<_>>>()?;
        Ok((columns, shift, output))
    }

    /// Row ranges: a count, then (start, end) each.
    fn rows(&mut self) -> Result<Vec<std::ops::Range<u64>>> {
        let n = self.u32()? as u64;
        let n = self.count(n, 16)?;
        (0..n).map(|_| Ok(self.u64()?..self.u64()?)).collect()
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<State> {
    let (version, payload) = unframe(bytes)?;
    let s = if version == 1 {
        parse_v1(&mut Rd { b: payload })?
    } else {
        parse_v2(payload)?
    };
    validate(&s)?;
    Ok(s)
}

/// The row ranges a state covers and the first row of the first input it names, without
/// decoding its accumulators (for ordering a merge of many files); the file is checked as
/// [`decode`] checks it, but for its fields.
pub(super) fn rows_of(bytes: &[u8]) -> Result<(Vec<std::ops::Range<u64>>, u64)> {
    let (version, payload) = unframe(bytes)?;
    if version == 1 {
        return decode(bytes).map(|s| (s.rows, 0));
    }
    let mut r = Rd { b: payload };
    let (mut rows, mut at) = (None, None);
    while !r.b.is_empty() {
        let t: [u8; 4] = r.take(4)?.try_into().expect("4 bytes");
        let n = r.u64()?;
        let n = r.count(n, 1)?;
        let mut b = Rd { b: r.take(n)? };
        if t == tag::ROWS {
            let v = b.rows()?;
            b.end()?;
            rows = Some(v);
        } else if t == tag::INPUTS {
            // The first input's index, then its identity: its first row.
            at = Some(if b.u32()? == 0 {
                0
            } else {
                let index = b.u64()?;
                b.input(index)?.start
            });
        }
    }
    match (rows, at) {
        (Some(rows), Some(at)) => Ok((rows, at)),
        _ => Err(bad("corrupt state: a required section is missing")),
    }
}

/// Checks the frame (signature, version, flags, length, checksum) and returns the version
/// and the payload.
fn unframe(bytes: &[u8]) -> Result<(u32, &[u8])> {
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
            "state format version {version}, but this colstats reads versions 1 to {VERSION} \
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
    Ok((version, payload))
}

fn dtype_of(kind: u8, size: u8, big: u8) -> Result<DType> {
    let kind = match kind {
        0 => Kind::Bool,
        1 => Kind::Int,
        2 => Kind::UInt,
        3 => Kind::Float,
        k => return Err(bad(format!("corrupt state: unknown dtype kind {k}"))),
    };
    let order = match big {
        0 => ByteOrder::Little,
        1 => ByteOrder::Big,
        _ => return Err(bad("corrupt state: bad byte order")),
    };
    DType::new(kind, size as usize, order)
        .ok_or_else(|| bad(format!("corrupt state: no {size}-byte type of that kind")))
}

fn memory_order(b: u8) -> Result<Order> {
    match b {
        0 => Ok(Order::C),
        1 => Ok(Order::F),
        _ => Err(bad("corrupt state: bad memory order")),
    }
}

fn nan_policy(b: u8) -> Result<NanPolicy> {
    match b {
        0 => Ok(NanPolicy::Skip),
        1 => Ok(NanPolicy::Propagate),
        _ => Err(bad("corrupt state: bad NaN policy")),
    }
}

fn need_of(bits: u32) -> Result<Need> {
    if bits & !3 != 0 {
        return Err(bad(format!(
            "the state holds accumulators ({bits:#x}) this colstats does not know (written by \
             a newer one?)"
        )));
    }
    Ok(Need {
        moments: bits & 1 != 0,
        minmax: bits & 2 != 0,
    })
}

/// Version 2: tagged sections, each at most once.
fn parse_v2(payload: &[u8]) -> Result<State> {
    let mut r = Rd { b: payload };
    let mut sections: Vec<([u8; 4], &[u8])> = Vec::new();
    while !r.b.is_empty() {
        let t: [u8; 4] = r.take(4)?.try_into().expect("4 bytes");
        let n = r.u64()?;
        let n = r.count(n, 1)?;
        let body = r.take(n)?;
        if sections.iter().any(|(x, _)| *x == t) {
            return Err(bad("corrupt state: a section appears twice"));
        }
        let known = [
            tag::ARRAY,
            tag::RUN,
            tag::JOB,
            tag::INPUTS,
            tag::COLUMNS,
            tag::ROWS,
            tag::ACCS,
            tag::HEAD,
            tag::DOMAINS,
            tag::PER_INPUT,
        ];
        if !known.contains(&t) {
            if t[0].is_ascii_uppercase() {
                return Err(bad(format!(
                    "the state has a section '{}' this colstats does not know (written by a \
                     newer one?)",
                    String::from_utf8_lossy(&t).escape_default()
                )));
            }
            continue;
        }
        sections.push((t, body));
    }
    let get = |t: [u8; 4]| {
        sections
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, b)| Rd { b })
    };
    let need_section = |t: [u8; 4]| {
        get(t).ok_or_else(|| {
            bad(format!(
                "corrupt state: the section '{}' is missing",
                String::from_utf8_lossy(&t)
            ))
        })
    };
    let mut r = need_section(tag::ARRAY)?;
    let dtype = dtype_of(r.u8()?, r.u8()?, r.u8()?)?;
    let order = memory_order(r.u8()?)?;
    let n = r.u32()? as u64;
    let n = r.count(n, 8)?;
    let shape = (0..n).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
    let dataset = r.opt_str()?;
    r.end()?;

    let mut r = need_section(tag::RUN)?;
    let nan = nan_policy(r.u8()?)?;
    let ddof = r.u64()?;
    let need = need_of(r.u32()?)?;
    let n = r.u32()? as u64;
    let n = r.count(n, 2)?;
    let mut stats = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u16()?;
        stats.push(crate::stats::by_id(id).ok_or_else(|| {
            bad(format!(
                "the state holds statistic number {id}, which this colstats does not know \
                 (written by a newer one?)"
            ))
        })?);
    }
    r.end()?;

    let mut r = need_section(tag::JOB)?;
    let job = Job {
        inputs: r.u64()?,
        fingerprint: r.u64()?,
    };
    r.end()?;

    let mut r = need_section(tag::INPUTS)?;
    let n = r.u32()? as u64;
    let n = r.count(n, 8 + 4 + 8 * 4 + 4 + 1)?;
    let mut inputs = Vec::with_capacity(n);
    for _ in 0..n {
        let index = r.u64()?;
        inputs.push(r.input(index)?);
    }
    r.end()?;

    let mut r = need_section(tag::COLUMNS)?;
    let (columns, shift, output) = r.columns()?;
    r.end()?;

    let mut r = need_section(tag::ROWS)?;
    let rows = r.rows()?;
    r.end()?;

    // The accumulator layout: which fields, in order.
    let mut r = need_section(tag::ACCS)?;
    let n = r.u32()? as u64;
    let n = r.count(n, 2)?;
    let mut layout = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u16()?;
        if !FIELDS.iter().any(|(f, _)| *f == id) {
            return Err(bad(format!(
                "the state holds accumulator field number {id}, which this colstats does not \
                 know (written by a newer one?)"
            )));
        }
        if layout.contains(&id) {
            return Err(bad("corrupt state: an accumulator field is listed twice"));
        }
        layout.push(id);
    }
    r.end()?;
    // Every field this version knows: what a future writer leaves out, this reader cannot
    // make up (and an empty layout would let a tiny file decode into huge accumulators).
    if let Some((id, _)) = FIELDS.iter().find(|(f, _)| !layout.contains(f)) {
        return Err(bad(format!(
            "the state's accumulators lack field number {id}, which this colstats needs"
        )));
    }
    let acc_bytes: usize = layout
        .iter()
        .map(|id| FIELDS.iter().find(|(f, _)| f == id).expect("known").1)
        .sum();
    let c = columns.len();

    let head = match get(tag::HEAD) {
        None => None,
        Some(mut r) => {
            let rows = r.u64()?..r.u64()?;
            r.count(c as u64, acc_bytes)?;
            let accs = (0..c)
                .map(|_| r.acc_of(&layout))
                .collect::<Result<Vec<_>>>()?;
            r.end()?;
            Some(Head { rows, accs })
        }
    };

    let mut r = need_section(tag::DOMAINS)?;
    let n = r.u32()? as u64;
    let n = r.count(n, 32)?;
    let mut domains = Vec::with_capacity(n);
    for _ in 0..n {
        domains.push(tree(&mut r, c, &layout, acc_bytes)?);
    }
    r.end()?;

    let per_input = match get(tag::PER_INPUT) {
        None => None,
        Some(mut r) => {
            let n = r.u32()? as u64;
            let n = r.count(n, 41)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let input = r.u64()?;
                let order = memory_order(r.u8()?)?;
                v.push(InputNodes {
                    input,
                    order,
                    tree: tree(&mut r, c, &layout, acc_bytes)?,
                });
            }
            r.end()?;
            Some(v)
        }
    };
    Ok(State {
        dtype,
        shape,
        order,
        dataset,
        nan,
        ddof,
        stats,
        need,
        job,
        inputs,
        columns,
        output,
        shift,
        rows,
        head,
        domains,
        per_input,
    })
}

/// Version 1 (colstats 0.1): one fixed layout, every input of the job listed, statistics
/// by their place in `count, nan_count, sum, mean, var, std, min, max`.
fn parse_v1(r: &mut Rd<'_>) -> Result<State> {
    const V1_STATS: [Stat; 8] = [
        Stat::Count,
        Stat::NanCount,
        Stat::Sum,
        Stat::Mean,
        Stat::Var,
        Stat::Std,
        Stat::Min,
        Stat::Max,
    ];
    let (kind, size, big, order_f, prop, need) =
        (r.u8()?, r.u8()?, r.u8()?, r.u8()?, r.u8()?, r.u8()?);
    let dtype = dtype_of(kind, size, (big == 1) as u8)?;
    let order = if order_f == 1 { Order::F } else { Order::C };
    let nan = if prop == 1 {
        NanPolicy::Propagate
    } else {
        NanPolicy::Skip
    };
    let need = need_of(need as u32)?;
    let ddof = r.u64()?;
    let n = r.u32()? as u64;
    let n = r.count(n, 1)?;
    let mut stats = Vec::with_capacity(n);
    for _ in 0..n {
        let i = r.u8()? as usize;
        stats.push(
            *V1_STATS
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
    for k in 0..n {
        inputs.push(r.input(k as u64)?);
    }
    let (columns, shift, output) = r.columns()?;
    let rows = r.rows()?;
    let n = r.u32()? as u64;
    let n = r.count(n, 32)?;
    let layout: Vec<u16> = FIELDS.iter().map(|(f, _)| *f).collect();
    let mut domains = Vec::with_capacity(n);
    for _ in 0..n {
        domains.push(tree(r, columns.len(), &layout, ACC_BYTES)?);
    }
    let per_input = match r.u8()? {
        0 => None,
        1 => {
            let n = r.u32()? as u64;
            let n = r.count(n, 37)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let input = r.u32()? as u64;
                let order = memory_order(r.u8()?)?;
                v.push(InputNodes {
                    input,
                    order,
                    tree: tree(r, columns.len(), &layout, ACC_BYTES)?,
                });
            }
            v.sort_by_key(|i| i.input);
            Some(v)
        }
        _ => return Err(bad("corrupt state: bad per-input flag")),
    };
    r.end()?;
    let job = Job::of(
        inputs
            .iter()
            .map(|i| (i.path.as_path(), i.start, i.rows, i.dataset.as_deref())),
    );
    // Version 1 recorded the first input's dataset (none for a `.npy` one); this version
    // records the HDF5 inputs'.
    let dataset = inputs.iter().find_map(|i| i.dataset.clone()).or(dataset);
    // Version 1 listed every input: a full list must add up to the array.
    let total = inputs
        .iter()
        .map(|i| i.rows)
        .try_fold(0u64, u64::checked_add);
    if !inputs.is_empty() && total != shape.first().copied() {
        return Err(bad(
            "corrupt state: the inputs' rows do not add up to the array's",
        ));
    }
    Ok(State {
        dtype,
        shape,
        order,
        dataset,
        nan,
        ddof,
        stats,
        need,
        job,
        inputs,
        columns,
        output,
        shift,
        rows,
        head: None,
        domains,
        per_input,
    })
}

/// One tree's nodes: its rows, leaf rows, then each node.
fn tree(r: &mut Rd<'_>, columns: usize, layout: &[u16], acc_bytes: usize) -> Result<DomainNodes> {
    let (a, b, leaf_rows) = (r.u64()?, r.u64()?, r.u64()?);
    let k = r.u64()?;
    let k = r.count(k, 12 + acc_bytes * columns)?;
    let mut nodes = Vec::with_capacity(k);
    for _ in 0..k {
        let first_leaf = r.u64()?;
        let level = match r.u32()? {
            u32::MAX => None,
            l if l < 64 => Some(l),
            l => return Err(bad(format!("corrupt state: tree level {l}"))),
        };
        let accs = (0..columns)
            .map(|_| r.acc_of(layout))
            .collect::<Result<Vec<_>>>()?;
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
/// output columns among them, rows, the head and domains inside the array and in order,
/// inputs sorted, inside the job and lined up.
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
    let needs = crate::stats::needs(&s.stats);
    if (needs.moments && !s.need.moments) || (needs.minmax && !s.need.minmax) {
        return fail("statistics without the accumulators they need");
    }
    if s.rows.iter().any(|r| r.start >= r.end || r.end > nrows)
        || s.rows.windows(2).any(|w| w[0].end > w[1].start)
    {
        return fail("row ranges out of order or out of range");
    }
    let mut at = 0;
    if let Some(h) = &s.head {
        let first = s.rows.first();
        if h.rows.start != 0
            || h.rows.start >= h.rows.end
            || h.rows.end > nrows
            || first.is_none_or(|r| r.start != h.rows.start || r.end < h.rows.end)
            || h.accs.len() != s.columns.len()
        {
            return fail("a folded head out of place");
        }
        at = h.rows.end;
    }
    for d in &s.domains {
        if d.rows.start < at {
            return fail("domains out of order");
        }
        at = d.rows.end;
        check_tree(d, nrows, s.columns.len())?;
    }
    if s.inputs.len() as u64 > s.job.inputs {
        return fail("more inputs than the job has");
    }
    for (k, i) in s.inputs.iter().enumerate() {
        if i.index >= s.job.inputs || i.start.checked_add(i.rows).is_none_or(|e| e > nrows) {
            return fail("an input outside the job");
        }
        if let Some(p) = k.checked_sub(1).map(|j| &s.inputs[j]) {
            let follows = p.index + 1 == i.index && p.start + p.rows != i.start;
            if p.index >= i.index || p.start + p.rows > i.start || follows {
                return fail("inputs out of order");
            }
        }
    }
    if let Some(per) = &s.per_input {
        for (k, i) in per.iter().enumerate() {
            let known = s.inputs.binary_search_by_key(&i.input, |x| x.index).is_ok();
            if !known || (k > 0 && per[k - 1].input >= i.input) {
                return fail("per-input trees of unknown or repeated inputs");
            }
            check_tree(&i.tree, nrows, s.columns.len())?;
        }
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
