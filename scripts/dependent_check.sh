#!/usr/bin/env bash
# Builds a tiny crate that depends on colstats, without optimisation (a Rust user's debug
# build: colstats's own [profile.dev] does not apply to dependents), then runs it on a real
# .npy and HDF5 file. Also checks that the library builds without the CLI's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cat > "$work/Cargo.toml" <<TOML
[package]
name = "colstats-dependent"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
colstats = { path = "$root", default-features = false, features = ["hdf5"] }

[profile.dev]
opt-level = 0

[workspace]
TOML
cat > "$work/src/main.rs" <<'RS'
use colstats::ndarray::Array1;
use colstats::{Request, Stat};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let mut req = Request::new(&pair[0]);
        if pair[1] != "-" {
            req = req.dataset(&pair[1]);
        }
        let s = req.stats(&[Stat::Mean, Stat::Var]).run().expect("run");
        let mean: Array1<f64> = s.get_f64(Stat::Mean).expect("mean").into();
        println!("{} {:?}", pair[0], mean.to_vec());
    }
}
RS
cp Cargo.lock "$work/Cargo.lock"   # the same dependency versions as the project's own build
export CARGO_TARGET_DIR="$root/target/dependent"
cargo build --quiet --manifest-path "$work/Cargo.toml"
if cargo tree --manifest-path "$work/Cargo.toml" -e normal | grep -qE "clap|indicatif"; then
    echo "dependent check: the library without the cli feature still pulls in clap/indicatif" >&2
    exit 1
fi
cargo run --quiet --release -p data-gen -- "$work/a.npy" --shape 300000,24 --dist normal:1e9,1 >/dev/null 2>&1
cargo run --quiet --release -p data-gen -- "$work/a.h5" --dataset /x --shape 300000,24 --chunks 4096,24 --gzip 1 >/dev/null 2>&1
"$CARGO_TARGET_DIR/debug/colstats-dependent" "$work/a.npy" - "$work/a.h5" /x
echo "dependent check: a debug build of a crate using colstats runs"
