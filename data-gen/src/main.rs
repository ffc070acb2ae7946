//! data-gen: writes large test arrays for colstats (filled in by the benchmarks issue).

fn main() {
    eprintln!("data-gen: not yet implemented; see issue 4");
    std::process::exit(2);
}
