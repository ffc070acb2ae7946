//! Output writers: table, JSON, CSV and npz renderings of a [`Summary`], and atomic files.

mod info;
mod npz;

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use crate::{Stat, Summary, Values};

pub use info::info_json;
pub use npz::write_npz;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    /// Aligned text table, one row per column.
    Table,
    /// One strict JSON object.
    Json,
    /// CSV with a header row.
    Csv,
    /// A numpy `.npz` archive, one array per statistic.
    Npz,
}

/// One cell of output.
enum Cell {
    Int(i128),
    Float(f64),
    Missing,
}

fn cell(s: &Summary, stat: Stat, i: usize) -> Cell {
    match s.get(stat).expect("requested") {
        Values::Float(a) => Cell::Float(a[i]),
        Values::Int(a) => a[i].map_or(Cell::Missing, Cell::Int),
    }
}

/// Shortest text that reads back as the same f64; non-finite as `nan`, `inf`, `-inf`.
pub fn float_repr(x: f64) -> String {
    let mut o = String::new();
    push_repr(&mut o, x);
    o
}

/// Appends [`float_repr`]'s text for `x`.
fn push_repr(o: &mut String, x: f64) {
    if x.is_nan() {
        o.push_str("nan");
    } else if x.is_infinite() {
        o.push_str(if x > 0.0 { "inf" } else { "-inf" });
    } else {
        push_finite(o, x);
    }
}

/// Appends finite `x` in the form `format!("{x:?}")` uses (shortest round-trip digits;
/// positional for 1e-4 <= |x| < 1e16, else exponent), several times faster: wide outputs
/// have millions of numbers. Where two shortest forms are equally close to `x`, the last
/// digit may differ from Rust's; both read back as `x`.
pub fn push_finite(o: &mut String, x: f64) {
    let mut buf = zmij::Buffer::new();
    let s = buf.format_finite(x);
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (mant, exp) = match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().expect("an exponent")),
        None => (s, 0),
    };
    let (ip, fp) = mant.split_once('.').unwrap_or((mant, ""));
    // Value = 0.DIGITS x 10^point. (zmij writes at most 24 bytes.)
    let mut point = ip.len() as i32 + exp;
    let mut joined = [0u8; 32];
    let all = &mut joined[..ip.len() + fp.len()];
    all[..ip.len()].copy_from_slice(ip.as_bytes());
    all[ip.len()..].copy_from_slice(fp.as_bytes());
    let lead = all.iter().take_while(|&&b| b == b'0').count();
    point -= lead as i32;
    let digits = &all[lead..];
    let digits = &digits[..digits.len() - digits.iter().rev().take_while(|&&b| b == b'0').count()];
    if neg {
        o.push('-');
    }
    let d = std::str::from_utf8(digits).expect("ASCII digits");
    if d.is_empty() {
        o.push_str("0.0");
    } else if (-3..=16).contains(&point) {
        let len = d.len() as i32;
        if point <= 0 {
            o.push_str("0.");
            o.extend(std::iter::repeat_n('0', (-point) as usize));
            o.push_str(d);
        } else if point >= len {
            o.push_str(d);
            o.extend(std::iter::repeat_n('0', (point - len) as usize));
            o.push_str(".0");
        } else {
            o.push_str(&d[..point as usize]);
            o.push('.');
            o.push_str(&d[point as usize..]);
        }
    } else {
        o.push_str(&d[..1]);
        if d.len() > 1 {
            o.push('.');
            o.push_str(&d[1..]);
        }
        o.push('e');
        o.push_str(&(point - 1).to_string());
    }
}

/// Whether the output is large enough to format in parallel (on rayon's global pool, which
/// small outputs then never start).
fn big(s: &Summary) -> bool {
    s.columns.len() * s.stats.len() >= 1 << 16
}

/// Appends a cell's JSON text (written in place: wide outputs have millions of cells).
fn json_cell(o: &mut String, c: Cell) {
    use std::fmt::Write;
    let _ = match c {
        Cell::Int(v) => write!(o, "{v}"),
        Cell::Float(x) if x.is_finite() => {
            push_finite(o, x);
            Ok(())
        }
        Cell::Float(x) => write!(o, "\"{}\"", float_repr(x)),
        Cell::Missing => write!(o, "\"nan\""),
    };
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// The JSON object of the command-line contract. With several inputs `file` is the list of
/// their paths, and with per-input results a `files` array holds one object per input, with
/// the same keys.
pub fn to_json(s: &Summary) -> String {
    let mut o = json_object(s);
    if !s.skipped.is_empty() {
        o.pop();
        o.pop();
        o.push_str(", \"skipped\": [");
        for (i, (f, e)) in s.skipped.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            o.push_str(&format!(
                "{{\"file\": {}, \"error\": {}}}",
                json_str(&f.to_string_lossy()),
                json_str(e)
            ));
        }
        o.push_str("]}\n");
    }
    if !s.per_input.is_empty() {
        o.pop(); // the newline
        o.pop(); // the closing brace
        o.push_str(", \"files\": [");
        for (i, f) in s.per_input.iter().enumerate() {
            if i > 0 {
                o.push_str(", ");
            }
            o.push_str(json_object(f).trim_end());
        }
        o.push_str("]}\n");
    }
    o
}

fn json_object(s: &Summary) -> String {
    let mut o = String::with_capacity(256 + s.columns.len() * 24 * s.stats.len());
    let n = s.columns.len();
    o.push('{');
    if s.inputs.len() > 1 {
        let files: Vec<String> = s
            .inputs
            .iter()
            .map(|p| json_str(&p.to_string_lossy()))
            .collect();
        o.push_str(&format!("\"file\": [{}], ", files.join(", ")));
    } else {
        o.push_str(&format!(
            "\"file\": {}, ",
            json_str(&s.path.to_string_lossy())
        ));
    }
    match &s.dataset {
        Some(d) => o.push_str(&format!("\"dataset\": {}, ", json_str(d))),
        None => o.push_str("\"dataset\": null, "),
    }
    o.push_str(&format!("\"dtype\": {}, ", json_str(s.dtype.name())));
    let shape: Vec<String> = s.shape.iter().map(u64::to_string).collect();
    o.push_str(&format!("\"shape\": [{}], ", shape.join(", ")));
    o.push_str(&format!("\"rows\": {}, \"columns\": {n}, ", s.rows));
    o.push_str(&format!(
        "\"ddof\": {}, \"nan\": \"{}\", ",
        s.ddof,
        s.nan.name()
    ));
    o.push_str("\"stats\": {");
    let array = |&stat: &Stat| {
        let mut a = String::with_capacity(n * 24);
        for i in 0..n {
            if i > 0 {
                a.push_str(", ");
            }
            json_cell(&mut a, cell(s, stat, i));
        }
        a
    };
    // Wide outputs have millions of numbers: each statistic is formatted on its own thread.
    let arrays: Vec<String> = if big(s) {
        s.stats.par_iter().map(array).collect()
    } else {
        s.stats.iter().map(array).collect()
    };
    for (k, (stat, a)) in s.stats.iter().zip(&arrays).enumerate() {
        if k > 0 {
            o.push_str(", ");
        }
        o.push_str(&format!("\"{}\": [", stat.name()));
        o.push_str(a);
        o.push(']');
    }
    o.push_str("}, \"column_index\": [");
    let idx: Vec<String> = s.columns.iter().map(u64::to_string).collect();
    o.push_str(&idx.join(", "));
    o.push_str("]}\n");
    o
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// CSV: a header `column,<stats...>` and one row per column. With per-input results, a
/// leading `file` column: each input's rows, then the combined rows with an empty `file`.
pub fn to_csv(s: &Summary) -> String {
    if s.per_input.is_empty() {
        return csv_rows(s, None);
    }
    let mut o = String::new();
    for f in &s.per_input {
        let mut t = csv_rows(f, Some(&csv_field(&f.path.to_string_lossy())));
        if !o.is_empty() {
            t = t
                .split_once('\n')
                .map_or(String::new(), |(_, rest)| rest.to_string());
        }
        o.push_str(&t);
    }
    let t = csv_rows(s, Some(""));
    o.push_str(t.split_once('\n').map_or("", |(_, rest)| rest));
    o
}

fn csv_rows(s: &Summary, file: Option<&str>) -> String {
    let mut o = String::from(if file.is_some() {
        "file,column"
    } else {
        "column"
    });
    for st in &s.stats {
        o.push(',');
        o.push_str(st.name());
    }
    o.push('\n');
    let piece = |rows: &[usize]| {
        let mut p = String::new();
        for &i in rows {
            if let Some(f) = file {
                p.push_str(f);
                p.push(',');
            }
            p.push_str(&s.columns[i].to_string());
            for &st in &s.stats {
                p.push(',');
                match cell(s, st, i) {
                    Cell::Int(v) => p.push_str(&v.to_string()),
                    Cell::Float(x) => push_repr(&mut p, x),
                    Cell::Missing => p.push_str("nan"),
                }
            }
            p.push('\n');
        }
        p
    };
    // Rows are formatted in parallel pieces, as for JSON.
    let idx: Vec<usize> = (0..s.columns.len()).collect();
    let pieces: Vec<String> = if big(s) {
        idx.par_chunks(4096).map(piece).collect()
    } else {
        idx.chunks(4096).map(piece).collect()
    };
    o.extend(pieces);
    o
}

/// `%.12g`-style rendering for the table.
fn short(x: f64) -> String {
    if !x.is_finite() {
        return float_repr(x);
    }
    if x == 0.0 {
        return "0".into();
    }
    let e = x.abs().log10().floor() as i32;
    if (-5..12).contains(&e) {
        let dec = (11 - e).max(0) as usize;
        let t = format!("{x:.dec$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    } else {
        let t = format!("{x:.11e}");
        let (m, ex) = t.split_once('e').expect("exponent");
        let m = if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.')
        } else {
            m
        };
        format!("{m}e{ex}")
    }
}

/// Columns shown in full before the table is abbreviated.
const TABLE_MAX_ROWS: usize = 40;

/// A human-readable table; wide inputs show the first and last 20 columns. With per-input
/// results, one section per input, then the combined one.
pub fn to_table(s: &Summary) -> String {
    let mut o = String::new();
    for f in &s.per_input {
        o.push_str(&table(f));
        o.push('\n');
    }
    o.push_str(&table(s));
    o
}

fn table(s: &Summary) -> String {
    let n = s.columns.len();
    let mut header = vec!["column".to_string()];
    header.extend(s.stats.iter().map(|x| x.name().to_string()));
    let shown: Vec<usize> = if n > TABLE_MAX_ROWS {
        (0..TABLE_MAX_ROWS / 2)
            .chain(n - TABLE_MAX_ROWS / 2..n)
            .collect()
    } else {
        (0..n).collect()
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for &i in &shown {
        let mut r = vec![s.columns[i].to_string()];
        for &st in &s.stats {
            r.push(match cell(s, st, i) {
                Cell::Int(v) => v.to_string(),
                Cell::Float(x) => short(x),
                Cell::Missing => "nan".into(),
            });
        }
        rows.push(r);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|k| {
            rows.iter()
                .map(|r| r[k].len())
                .chain([header[k].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String]| -> String {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        cells.join("  ").trim_end().to_string() + "\n"
    };
    let what = if s.inputs.len() > 1 {
        format!("{} inputs ({} ...)", s.inputs.len(), s.path.display())
    } else {
        s.path.display().to_string()
    };
    let mut o = format!(
        "{}: {} {} ({} order), {} rows reduced, {} column{}, nan={}, ddof={}\n",
        what,
        s.dtype.name(),
        crate::source::shape_str(&s.shape),
        s.order.name(),
        s.rows,
        n,
        if n == 1 { "" } else { "s" },
        s.nan.name(),
        s.ddof
    );
    o.push_str(&line(&header));
    for (k, r) in rows.iter().enumerate() {
        if n > TABLE_MAX_ROWS && k == TABLE_MAX_ROWS / 2 {
            o.push_str(&format!(
                "... {} more columns; use --format csv or json, or --columns, to see them all\n",
                n - TABLE_MAX_ROWS
            ));
        }
        o.push_str(&line(r));
    }
    o
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over `path`. On error nothing is left behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_renamed(path, bytes, true)
}

/// The OS error inside one of tempfile's (which adds the temporary file's name, a detail
/// of ours that means nothing to the reader).
fn os_error(e: std::io::Error) -> std::io::Error {
    let code = e
        .get_ref()
        .and_then(|inner| inner.source())
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(|io| io.raw_os_error());
    match code {
        Some(c) => std::io::Error::from_raw_os_error(c),
        None => e,
    }
}

/// [`write_atomic`] with the data synced to disk before the rename only when `sync`: a
/// reader never sees half a file either way, but without the sync a power failure soon
/// after may leave the file missing or its content lost (fine for what a checksum guards
/// and can be computed again: a batch's states).
pub fn write_renamed(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    // A device or a pipe (`-o /dev/null`, `-o /dev/stdout`, a FIFO) is written as it is: a
    // rename would replace it with a regular file (as root, /dev/null itself).
    if let Ok(md) = std::fs::metadata(path) {
        if !md.is_file() && !md.is_dir() {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            return f.write_all(bytes);
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".colstats-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(os_error)?;
    tmp.write_all(bytes)?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_float_text_equals_debug_formatting() {
        let mut z = 0x9E37_79B9_7F4A_7C15u64;
        let check = |x: f64| {
            if x.is_finite() {
                let mut o = String::new();
                super::push_finite(&mut o, x);
                // The same form and length as Rust's; the last digit may differ only where
                // two shortest forms are equally close (both read back as `x`).
                let want = format!("{x:?}");
                let shape = |t: &str| t.replace(|c: char| c.is_ascii_digit(), "d");
                assert_eq!(shape(&o), shape(&want), "{:#x}: {o} vs {want}", x.to_bits());
                assert_eq!(o.parse::<f64>().unwrap().to_bits(), x.to_bits(), "{o}");
            }
        };
        for x in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1e-4,
            9.999e-5,
            1e-5,
            1e15,
            1e16,
            9.999e15,
            1.5e300,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::MIN,
            123456.0,
            0.000123,
            1e22,
            2.5e-7,
        ] {
            check(x);
        }
        for _ in 0..2_000_000 {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut v = z;
            v = (v ^ (v >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            v = (v ^ (v >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            v ^= v >> 31;
            check(f64::from_bits(v));
            // Values of everyday size and few digits, where the positional form is used.
            check((v % 2_000_001) as f64 / 1000.0 - 1000.0);
            check(((v >> 20) % 100_000) as f64 * 10f64.powi((v % 40) as i32 - 20));
        }
    }
}
