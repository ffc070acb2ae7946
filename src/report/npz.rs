//! `.npz` output: a zip archive (stored, uncompressed) of one `.npy` array per statistic.

use crate::{Summary, Values};

/// An array ready to be written as `.npy`: its descr and raw little-endian bytes.
struct NpyArray {
    descr: &'static str,
    data: Vec<u8>,
    len: usize,
}

fn npy_bytes(a: &NpyArray) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({},), }}",
        a.descr, a.len
    );
    // Pad so the data starts on a 64-byte boundary, as numpy does.
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let mut header = dict.into_bytes();
    header.extend(std::iter::repeat_n(b' ', pad));
    header.push(b'\n');
    let mut out = Vec::with_capacity(10 + header.len() + a.data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&a.data);
    out
}

fn f64s(v: impl Iterator<Item = f64>) -> NpyArray {
    let mut data = Vec::new();
    let mut len = 0;
    for x in v {
        data.extend_from_slice(&x.to_le_bytes());
        len += 1;
    }
    NpyArray {
        descr: "<f8",
        data,
        len,
    }
}

fn ints(v: &[i128]) -> NpyArray {
    let mut data = Vec::new();
    let (descr, ok) = if v.iter().all(|&x| i64::try_from(x).is_ok()) {
        ("<i8", true)
    } else if v.iter().all(|&x| u64::try_from(x).is_ok()) {
        ("<u8", true)
    } else {
        ("<f8", false)
    };
    for &x in v {
        match (descr, ok) {
            ("<i8", _) => data.extend_from_slice(&(x as i64).to_le_bytes()),
            ("<u8", _) => data.extend_from_slice(&(x as u64).to_le_bytes()),
            _ => data.extend_from_slice(&(x as f64).to_le_bytes()),
        }
    }
    NpyArray {
        descr,
        data,
        len: v.len(),
    }
}

fn values(v: &Values) -> NpyArray {
    match v {
        Values::Float(a) => f64s(a.iter().copied()),
        Values::Int(a) if a.iter().all(Option::is_some) => {
            ints(&a.iter().map(|x| x.expect("some")).collect::<Vec<_>>())
        }
        // Undefined entries (empty columns) need NaN, so floats.
        Values::Int(a) => f64s(a.iter().map(|x| x.map_or(f64::NAN, |v| v as f64))),
    }
}

/// The bytes of an `.npz` archive holding every requested statistic and `column_index`.
pub fn write_npz(s: &Summary) -> Vec<u8> {
    let mut entries: Vec<(String, NpyArray)> = Vec::new();
    for &st in &s.stats {
        let arr = values(s.get(st).expect("requested"));
        entries.push((format!("{}.npy", st.name()), arr));
    }
    let idx: Vec<i128> = s.columns.iter().map(|&c| c as i128).collect();
    entries.push(("column_index.npy".into(), ints(&idx)));
    zip_stored(
        &entries
            .iter()
            .map(|(n, a)| (n.as_str(), npy_bytes(a)))
            .collect::<Vec<_>>(),
    )
}

/// A minimal zip archive with uncompressed (stored) members, as `numpy.savez` writes.
fn zip_stored(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let crc = crc32fast::hash(data);
        let off = out.len() as u32;
        let local = |buf: &mut Vec<u8>, sig: u32, central: bool| {
            buf.extend_from_slice(&sig.to_le_bytes());
            if central {
                buf.extend_from_slice(&20u16.to_le_bytes()); // version made by
            }
            buf.extend_from_slice(&20u16.to_le_bytes()); // version needed
            buf.extend_from_slice(&0u16.to_le_bytes()); // flags
            buf.extend_from_slice(&0u16.to_le_bytes()); // method: stored
            buf.extend_from_slice(&0u16.to_le_bytes()); // time
            buf.extend_from_slice(&0x21u16.to_le_bytes()); // date: 1980-01-01
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
            buf.extend_from_slice(&0u16.to_le_bytes()); // extra length
            if central {
                buf.extend_from_slice(&0u16.to_le_bytes()); // comment length
                buf.extend_from_slice(&0u16.to_le_bytes()); // disk number
                buf.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
                buf.extend_from_slice(&0u32.to_le_bytes()); // external attributes
                buf.extend_from_slice(&off.to_le_bytes());
            }
            buf.extend_from_slice(name.as_bytes());
        };
        local(&mut out, 0x0403_4b50, false);
        out.extend_from_slice(data);
        local(&mut central, 0x0201_4b50, true);
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
