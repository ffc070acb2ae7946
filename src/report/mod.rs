//! Output writers: table, JSON, CSV and npz renderings of a [`Summary`], and atomic files.

mod npz;

use std::io::Write;
use std::path::Path;

use crate::{Stat, Summary, Values};

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
    let vals = |v: &Option<Values>| match v.as_ref().expect("requested") {
        Values::Float(a) => Cell::Float(a[i]),
        Values::Int(a) => a[i].map_or(Cell::Missing, Cell::Int),
    };
    let f = |v: &Option<ndarray::Array1<f64>>| Cell::Float(v.as_ref().expect("requested")[i]);
    match stat {
        Stat::Count => Cell::Int(s.count.as_ref().expect("requested")[i] as i128),
        Stat::NanCount => Cell::Int(s.nan_count.as_ref().expect("requested")[i] as i128),
        Stat::Sum => vals(&s.sum),
        Stat::Mean => f(&s.mean),
        Stat::Var => f(&s.var),
        Stat::Std => f(&s.std),
        Stat::Min => vals(&s.min),
        Stat::Max => vals(&s.max),
    }
}

/// Shortest text that reads back as the same f64; non-finite as `nan`, `inf`, `-inf`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:?}")
    }
}

/// Appends a cell's JSON text (written in place: wide outputs have millions of cells).
fn json_cell(o: &mut String, c: Cell) {
    use std::fmt::Write;
    let _ = match c {
        Cell::Int(v) => write!(o, "{v}"),
        Cell::Float(x) if x.is_finite() => write!(o, "{x:?}"),
        Cell::Float(x) => write!(o, "\"{}\"", float_repr(x)),
        Cell::Missing => write!(o, "\"nan\""),
    };
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// The JSON object of the command-line contract.
pub fn to_json(s: &Summary) -> String {
    let mut o = String::with_capacity(256 + s.columns.len() * 24 * s.stats.len());
    let n = s.columns.len();
    o.push('{');
    o.push_str(&format!(
        "\"file\": {}, ",
        json_str(&s.path.to_string_lossy())
    ));
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
    for (k, &stat) in s.stats.iter().enumerate() {
        if k > 0 {
            o.push_str(", ");
        }
        o.push_str(&format!("\"{}\": [", stat.name()));
        for i in 0..n {
            if i > 0 {
                o.push_str(", ");
            }
            json_cell(&mut o, cell(s, stat, i));
        }
        o.push(']');
    }
    o.push_str("}, \"column_index\": [");
    let idx: Vec<String> = s.columns.iter().map(u64::to_string).collect();
    o.push_str(&idx.join(", "));
    o.push_str("]}\n");
    o
}

/// CSV: a header `column,<stats...>` and one row per column.
pub fn to_csv(s: &Summary) -> String {
    let mut o = String::from("column");
    for st in &s.stats {
        o.push(',');
        o.push_str(st.name());
    }
    o.push('\n');
    for (i, col) in s.columns.iter().enumerate() {
        o.push_str(&col.to_string());
        for &st in &s.stats {
            o.push(',');
            o.push_str(&match cell(s, st, i) {
                Cell::Int(v) => v.to_string(),
                Cell::Float(x) => float_repr(x),
                Cell::Missing => "nan".into(),
            });
        }
        o.push('\n');
    }
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

/// A human-readable table; wide inputs show the first and last 20 columns.
pub fn to_table(s: &Summary) -> String {
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
    let mut o = format!(
        "{}: {} {} ({} order), {} rows reduced, {} column{}, nan={}, ddof={}\n",
        s.path.display(),
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
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".colstats-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
