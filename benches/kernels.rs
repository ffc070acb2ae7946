//! Reduction-kernel micro-benchmarks: bytes/s per dtype and layout, on in-memory data.
//!
//! `cargo bench --bench kernels` (add a filter such as `f64` to run a subset). Layouts: C
//! order with 1, 3, 16 and 1000 columns, and one Fortran-order column run.

use colstats::kernel::{self, Need, Shape, Shift};
use colstats::plan::leaf_rows_c;
use colstats::source::{ByteOrder, DType, Kind};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const BYTES: usize = 16 << 20;

fn data(dtype: DType) -> Vec<u8> {
    let n = BYTES / dtype.size;
    let mut out = Vec::with_capacity(BYTES);
    let mut z = 0x1234_5678_u64;
    for i in 0..n {
        z = z
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = ((z >> 33) % 1000) as f64 * 0.25 + (i % 7) as f64;
        match (dtype.kind, dtype.size) {
            (Kind::Float, 8) => out.extend_from_slice(&v.to_le_bytes()),
            (Kind::Float, 4) => out.extend_from_slice(&(v as f32).to_le_bytes()),
            (Kind::Float, _) => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            (Kind::Int, 4) => out.extend_from_slice(&(v as i32).to_le_bytes()),
            _ => out.push(v as u8),
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let types = [
        (
            "f16",
            DType::new(Kind::Float, 2, ByteOrder::Little).unwrap(),
        ),
        (
            "f32",
            DType::new(Kind::Float, 4, ByteOrder::Little).unwrap(),
        ),
        (
            "f64",
            DType::new(Kind::Float, 8, ByteOrder::Little).unwrap(),
        ),
        ("i32", DType::new(Kind::Int, 4, ByteOrder::Little).unwrap()),
        ("u8", DType::new(Kind::UInt, 1, ByteOrder::Little).unwrap()),
    ];
    let need = Need {
        moments: true,
        minmax: true,
    };
    for (name, dt) in types {
        let bytes = data(dt);
        let n = bytes.len() / dt.size;
        let mut g = c.benchmark_group(format!("kernel/{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.sample_size(10);
        g.warm_up_time(std::time::Duration::from_millis(500));
        g.measurement_time(std::time::Duration::from_secs(2));
        for cols in [1usize, 3, 16, 1000] {
            let rows = n / cols;
            let shape = Shape {
                rows,
                width: cols,
                stride: cols,
                leaf_rows: leaf_rows_c(cols as u64, dt.size as u64) as usize,
            };
            let shift = Shift {
                float: vec![0.0; cols],
                int: vec![0; cols],
            };
            g.bench_with_input(BenchmarkId::new("C", cols), &shape, |b, s| {
                b.iter(|| kernel::reduce(&bytes, dt, *s, need, &shift))
            });
        }
        let shape = Shape {
            rows: n,
            width: 1,
            stride: 1,
            leaf_rows: 16384,
        };
        let shift = Shift {
            float: vec![0.0],
            int: vec![0],
        };
        g.bench_with_input(BenchmarkId::new("F", "column"), &shape, |b, s| {
            b.iter(|| kernel::reduce(&bytes, dt, *s, need, &shift))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
