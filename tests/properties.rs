//! Property tests: merging is independent of how rows are split into blocks, and the
//! `.npy` header parser never panics on arbitrary bytes.

use colstats::kernel::{self, Need, Shape, Shift};
use colstats::moments::{Acc, Tree};
use colstats::source::{npy, ByteOrder, DType, Kind};
use proptest::prelude::*;

fn reduce(data: &[f64], rows: usize, width: usize, leaf: usize, shift: &Shift) -> Vec<Acc> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let dt = DType::new(Kind::Float, 8, ByteOrder::Little).unwrap();
    let shape = Shape {
        rows,
        width,
        stride: width,
        leaf_rows: leaf,
    };
    let need = Need {
        moments: true,
        minmax: true,
    };
    kernel::reduce(&bytes, dt, shape, need, shift)
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => (-1e6f64..1e6).prop_map(|x| 1e9 + x),
        4 => -1e3f64..1e3,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-0.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any split into aligned blocks of 2^k leaves, merged through the tree, gives exactly
    /// the one-block answer.
    #[test]
    fn block_splits_merge_to_the_one_block_answer(
        width in 1usize..6,
        leaf_pow in 0u32..4,
        k in 0u32..4,
        data in prop::collection::vec(value(), 1..400),
    ) {
        let leaf = 1usize << leaf_pow;
        let rows = data.len() / width;
        prop_assume!(rows > 0);
        let data = &data[..rows * width];
        let shift = Shift { float: data[..width].iter().map(|v| if v.is_finite() { *v } else { 0.0 }).collect(), int: vec![] };
        let whole = reduce(data, rows, width, leaf, &shift);
        let block_rows = leaf << k;
        let mut tree = Tree::new();
        let mut r = 0;
        while r < rows {
            let n = block_rows.min(rows - r);
            let part = reduce(&data[r * width..(r + n) * width], n, width, leaf, &shift);
            if n == block_rows { tree.push(k, part) } else { tree.push_tail(0, part) }
            r += n;
        }
        let merged = tree.finish().unwrap();
        for (a, b) in merged.iter().zip(&whole) {
            // Bitwise equality (NaN == NaN here).
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
    }

    /// The header parser returns an error, never panics, on arbitrary input.
    #[test]
    fn header_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), len in 0u64..1000) {
        let _ = npy::parse(std::path::Path::new("fuzz.npy"), &bytes, len);
    }

    /// Mutating a valid header anywhere gives a clean result or error, never a panic.
    #[test]
    fn mutated_headers_never_panic(pos in 0usize..128, byte in any::<u8>(), len_delta in -16i64..16) {
        let dict = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }";
        let mut h = dict.to_vec();
        h.extend(std::iter::repeat_n(b' ', 128 - 10 - dict.len() - 1));
        h.push(b'\n');
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        f.extend_from_slice(&(h.len() as u16).to_le_bytes());
        f.extend_from_slice(&h);
        let p = pos % f.len();
        f[p] = byte;
        let len = (f.len() as i64 + 48 + len_delta).max(0) as u64;
        let _ = npy::parse(std::path::Path::new("fuzz.npy"), &f, len);
    }
}
