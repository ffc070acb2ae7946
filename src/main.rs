//! The `colstats` command line: argument parsing, the progress bar and output selection.
//! All work is done by the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use colstats::report::{self, OutFormat};
use colstats::{ColumnSpec, NanPolicy, Request, RowSpec, Stat};

#[path = "cli/progress.rs"]
mod progress;

#[derive(Parser)]
#[command(
    name = "colstats",
    version,
    about = "Per-column statistics of .npy and HDF5 arrays larger than memory, in one parallel pass"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compute per-column statistics (reducing over axis 0).
    #[command(after_help = STATS_HELP)]
    Stats(StatsArgs),
    /// Show the array's shape, dtype and layout, and the plan a run would follow.
    Info(InfoArgs),
    /// Merge saved states (--save-state) and print what one run over all their rows prints.
    Merge(MergeArgs),
}

#[derive(clap::Args)]
struct MergeArgs {
    /// State files written by `colstats stats --save-state` (or in a `--state-dir`), in any
    /// order. A quoted glob ('states/*.cstate') is expanded.
    #[arg(required_unless_present = "files_from")]
    states: Vec<PathBuf>,
    /// Read state paths from LIST, one a line (`-`: standard input), after any STATEs.
    #[arg(long, value_name = "LIST")]
    files_from: Option<PathBuf>,
    /// Statistics to report (default: those the runs asked for).
    #[arg(long, value_parser = parse_stats)]
    stats: Option<StatList>,
    /// Delta degrees of freedom for var and std (default: the runs').
    #[arg(long)]
    ddof: Option<u64>,
    /// Merge even when rows between the states are missing (they are listed on stderr).
    #[arg(long)]
    allow_gaps: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Fmt::Table)]
    format: Fmt,
    /// Write the output to FILE (atomically) instead of stdout; `-` is stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

const STATS_HELP: &str = "\
Statistics: count, nan_count, sum, mean, var, std, min, max.

Exit status: 0 success; 1 an input or option was refused (one line on stderr: `error: FILE: what`);
2 usage error; 3 with --keep-going, some inputs were skipped (listed as warnings).

Examples:
  colstats stats big.npy --stats mean,std --format json
  colstats stats 'shards/*.npy' --per-file --format csv -o stats.csv
  colstats stats data.h5 --dataset /x --rows 0:1000000 --save-state part-0.cstate
  colstats merge part-*.cstate --format json
  colstats stats --files-from list.txt --state-dir job.d --resume --keep-going";

#[derive(Clone, Copy, ValueEnum)]
enum Fmt {
    Table,
    Json,
    Csv,
    Npz,
}

#[derive(Clone, Copy, ValueEnum)]
enum Nan {
    Skip,
    Propagate,
}

#[derive(Clone, Copy, ValueEnum)]
enum Io {
    Auto,
    Mmap,
    Read,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressMode {
    Auto,
    Always,
    Never,
}

/// A comma-separated list of statistics.
#[derive(Clone)]
struct StatList(Vec<Stat>);

fn parse_stats(s: &str) -> Result<StatList, String> {
    s.split(',')
        .map(|t| {
            Stat::from_name(t.trim()).ok_or_else(|| {
                let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
                format!("unknown statistic '{t}' (choose from {})", names.join(","))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(StatList)
}

#[derive(clap::Args)]
struct StatsArgs {
    /// .npy or HDF5 files, read as one array (rows concatenated in this order). A quoted
    /// glob ('shards/*.npy') is expanded, sorted by name.
    #[arg(required_unless_present = "files_from")]
    files: Vec<PathBuf>,
    /// Read input paths from LIST, one a line (`-`: standard input), after any FILEs.
    #[arg(long, value_name = "LIST")]
    files_from: Option<PathBuf>,
    /// Also report each input's own statistics (JSON: a `files` array; CSV: a leading
    /// `file` column; table: a section per file), from the same read.
    #[arg(long)]
    per_file: bool,
    /// HDF5 dataset path, e.g. /group/name.
    #[arg(long)]
    dataset: Option<String>,
    /// Statistics to compute, comma-separated (default: all).
    #[arg(long, value_parser = parse_stats)]
    stats: Option<StatList>,
    /// Delta degrees of freedom for var and std.
    #[arg(long, default_value_t = 0)]
    ddof: u64,
    /// NaN handling: skip (like nanmean) or propagate (like mean).
    #[arg(long, value_enum, default_value_t = Nan::Skip)]
    nan: Nan,
    /// Columns to report, e.g. 0:10,42,100: (Python slices; negative counts from the end).
    #[arg(long, allow_hyphen_values = true)]
    columns: Option<ColumnSpec>,
    /// Half-open row range A:B.
    #[arg(long, allow_hyphen_values = true)]
    rows: Option<RowSpec>,
    /// Memory budget, e.g. 64MiB, 2GiB, 512M.
    #[arg(long, value_parser = parse_memory, default_value = "1GiB")]
    memory: u64,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    threads: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Fmt::Table)]
    format: Fmt,
    /// Write the output to FILE (atomically) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Progress bar on stderr.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// How contiguous data is read: per-block memory maps, pread into buffers, or auto
    /// (maps on local disks, reads on network filesystems).
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Also save the run's mergeable state to FILE (atomically), for `colstats merge`.
    #[arg(long, value_name = "FILE")]
    save_state: Option<PathBuf>,
    /// Batch mode: keep one state per input in DIR as each completes (atomically); inputs
    /// are reduced one after another. The result is the same as without.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// With --state-dir: reuse every state in DIR whose input is unchanged, read the rest.
    #[arg(long, requires = "state_dir")]
    resume: bool,
    /// Run across the ranks of an MPI job (also chosen when started by mpirun/srun): each
    /// rank reduces a leaf-aligned share of the rows, rank 0 merges and writes the output.
    #[cfg(feature = "mpi")]
    #[arg(long)]
    mpi: bool,
    /// Reduce every readable input, skip the others (each listed on stderr as
    /// `warning: FILE: reason`, and under `skipped` in JSON); exit status 3 if any was.
    #[arg(long)]
    keep_going: bool,
    /// Testing aid: cap the bytes per block below what the budget allows.
    #[arg(long, hide = true, value_parser = colstats::parse_size)]
    block_limit: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum InfoFmt {
    Text,
    Json,
}

#[derive(clap::Args)]
struct InfoArgs {
    /// .npy or HDF5 files (several: their concatenation, as `stats` reads them).
    #[arg(required_unless_present = "files_from")]
    files: Vec<PathBuf>,
    /// Read input paths from LIST, one a line (`-`: standard input), after any FILEs.
    #[arg(long, value_name = "LIST")]
    files_from: Option<PathBuf>,
    /// Print N leaf-aligned `--rows` ranges of about equal bytes, one a line (A:B), for job
    /// arrays: their saved states merge to the bits of one run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    shards: Option<u64>,
    /// Only these rows (with --shards).
    #[arg(long, allow_hyphen_values = true)]
    rows: Option<RowSpec>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = InfoFmt::Text)]
    format: InfoFmt,
    /// HDF5 dataset path, e.g. /group/name.
    #[arg(long)]
    dataset: Option<String>,
    /// Memory budget the plan is made for.
    #[arg(long, value_parser = parse_memory, default_value = "1GiB")]
    memory: u64,
    /// Worker threads the plan is made for.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    threads: Option<u64>,
}

/// `--memory`: a size of at least 1 MiB.
fn parse_memory(s: &str) -> Result<u64, String> {
    let v = colstats::parse_size(s)?;
    if v < colstats::MIN_BUDGET {
        return Err(format!("'{s}' is below the minimum budget of 1MiB"));
    }
    Ok(v)
}

/// Whether this process should print what goes wrong before MPI starts: not an MPI rank
/// other than 0 (every rank parses the same arguments; rank 0 speaks for all).
fn speaks() -> bool {
    #[cfg(feature = "mpi")]
    {
        colstats::cluster::launcher_rank().unwrap_or(0) == 0
    }
    #[cfg(not(feature = "mpi"))]
    {
        true
    }
}

/// Ends the process with a usage error (status 2), printed by the rank that speaks.
fn usage_exit(e: clap::Error) -> ! {
    if speaks() {
        e.exit()
    }
    // Before MPI starts there is no barrier: give rank 0's message time to reach mpirun,
    // which drops the output of a job it tears down once one rank has failed.
    std::thread::sleep(std::time::Duration::from_secs(1));
    std::process::exit(e.exit_code())
}

/// Keeps glibc from returning freed heap memory to the system after every block: the
/// workers' arenas otherwise shrink and grow again around each block's partial results
/// (1000 columns: 112 KB a leaf), and the `madvise` calls and page faults that follow cost
/// 40 % of the system time of a run over wide `uint8` rows (0.58 s against 0.42 s for 2 GiB
/// here). Peak memory is unchanged: what is kept is reused.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_exit(e));
    let res = match cli.cmd {
        Cmd::Stats(a) => stats(a),
        Cmd::Info(a) => info(a),
        Cmd::Merge(a) => merge(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) if msg == SKIPPED => ExitCode::from(3),
        #[cfg(feature = "mpi")]
        Err(msg) if msg == QUIET => ExitCode::from(1),
        Err(msg) => {
            let _ = writeln!(std::io::stderr(), "error: {}", one_line(&msg));
            ExitCode::from(1)
        }
    }
}

/// `msg` with control characters escaped: messages quote bytes of the input (header keys,
/// dataset names), and an error must stay one line.
fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn stats(a: StatsArgs) -> Result<(), String> {
    let fmt = out_format(a.format);
    if fmt == OutFormat::Npz && a.output.is_none() {
        usage_exit(clap::Error::raw(
            clap::error::ErrorKind::MissingRequiredArgument,
            "--format npz needs -o FILE.npz\n",
        ));
    }
    #[cfg(feature = "mpi")]
    if a.mpi || colstats::cluster::under_launcher() {
        return stats_cluster(&a, fmt);
    }
    let files = input_list(&a.files, a.files_from.as_deref())?;
    raise_open_file_limit(files.len());
    let req = build_request(&a, &files);
    // Outputs that cannot be written are found before any data is read.
    for p in a.output.iter().chain(&a.save_state) {
        check_writable(p)?;
    }
    let reporter = progress::Reporter::new(a.progress);
    let res = req.run_job(|p| reporter.update(p), a.save_state.is_some());
    reporter.finish();
    let (summary, state) = res.map_err(|e| e.cli_message())?;
    if let (Some(path), Some(state)) = (&a.save_state, state) {
        state.save(path).map_err(|e| e.cli_message())?;
    }
    for w in &summary.warnings {
        eprintln!("warning: {}", one_line(w));
    }
    for (f, why) in &summary.skipped {
        eprintln!("warning: {}: {}", f.display(), one_line(why));
    }
    emit(&summary, fmt, a.output.as_deref(), a.threads)?;
    if summary.skipped.is_empty() {
        Ok(())
    } else {
        Err(SKIPPED.to_string())
    }
}

/// The request the options describe, over `files`.
fn build_request(a: &StatsArgs, files: &[PathBuf]) -> Request {
    let mut req = Request::inputs(files)
        .per_input(a.per_file)
        .keep_going(a.keep_going)
        .ddof(a.ddof)
        .memory(a.memory)
        .nan(match a.nan {
            Nan::Skip => NanPolicy::Skip,
            Nan::Propagate => NanPolicy::Propagate,
        });
    if let Some(d) = &a.dataset {
        req = req.dataset(d.clone());
    }
    if let Some(s) = &a.stats {
        req = req.stats(&s.0);
    }
    if let Some(c) = &a.columns {
        req = req.columns(c.clone());
    }
    if let Some(r) = a.rows {
        req = req.rows(r);
    }
    if let Some(t) = a.threads {
        req = req.threads(t as usize);
    }
    if let Some(b) = a.block_limit {
        req = req.block_limit(b);
    }
    req = req.io(match a.io {
        Io::Auto => colstats::IoMode::Auto,
        Io::Mmap => colstats::IoMode::Mmap,
        Io::Read => colstats::IoMode::Read,
    });
    if let Some(dir) = &a.state_dir {
        req = req.state_dir(dir, a.resume);
    }
    req
}

/// The error text that makes `main` exit with status 3 (some inputs skipped) silently.
const SKIPPED: &str = "\u{0}skipped";
/// The error text that makes `main` exit with status 1 silently (an MPI rank other than 0:
/// rank 0 prints the job's one error line).
#[cfg(feature = "mpi")]
const QUIET: &str = "\u{0}quiet";

/// `stats` across MPI ranks: every rank plans, reduces its share and agrees on each phase's
/// outcome; rank 0 alone checks and writes the outputs, prints errors and shows progress.
#[cfg(feature = "mpi")]
fn stats_cluster(a: &StatsArgs, fmt: OutFormat) -> Result<(), String> {
    use colstats::{Error, ErrorKind};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let cluster = colstats::cluster::Cluster::init().map_err(|e| e.cli_message())?;
    let root = cluster.rank() == 0;
    let as_err = |m: String| Error::new(ErrorKind::Request, None, m);
    // Rank 0 prints the job's one error line, then every rank exits 1 together.
    let quiet = |e: Error| {
        if root {
            let _ = writeln!(std::io::stderr(), "error: {}", one_line(&e.message()));
        }
        cluster.barrier();
        QUIET.to_string()
    };
    // Rank 0 alone resolves the inputs (globs, --files-from, standard input, which only it
    // receives) and checks the outputs; every rank gets its list.
    let listed = if root {
        input_list(&a.files, a.files_from.as_deref()).and_then(|files| {
            for p in a.output.iter().chain(&a.save_state) {
                check_writable(p)?;
            }
            Ok(files)
        })
    } else {
        Ok(Vec::new())
    };
    let bytes = match &listed {
        Ok(files) => files
            .iter()
            .map(|f| f.as_os_str().as_bytes())
            .collect::<Vec<_>>()
            .join(&0u8),
        Err(_) => Vec::new(),
    };
    cluster
        .agree(listed.map(|_| ()).map_err(as_err))
        .map_err(quiet)?;
    let shared = cluster.share(bytes);
    let files: Vec<PathBuf> = shared
        .split(|&b| b == 0)
        .map(|f| PathBuf::from(std::ffi::OsString::from_vec(f.to_vec())))
        .collect();
    raise_open_file_limit(files.len());
    let req = build_request(a, &files);
    let reporter = progress::Reporter::new(if root {
        a.progress
    } else {
        ProgressMode::Never
    });
    let out = cluster.run(&req, a.save_state.is_some(), |p| reporter.update(p));
    reporter.finish();
    // Every rank reaches the final agreement, whatever happened (an error in the gather is
    // known to one rank only).
    let written = match out {
        Err(e) => Err(e.cli_message()),
        Ok(None) => Ok(()),
        Ok(Some((summary, state))) => {
            let write = || {
                if let (Some(path), Some(st)) = (&a.save_state, state) {
                    st.save(path).map_err(|e| e.cli_message())?;
                }
                emit(&summary, fmt, a.output.as_deref(), a.threads)
            };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(write))
                .unwrap_or_else(|_| Err("internal error (a panic) while writing the output".into()))
        }
    };
    let all = cluster.agree(written.map_err(as_err)).map_err(quiet);
    drop(cluster);
    all
}

/// Every input stays open for the run: lift the soft limit on open files (often 1024)
/// towards the hard one when the inputs need it.
fn raise_open_file_limit(inputs: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = (inputs as libc::rlim_t).saturating_mul(3) + 256;
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// An output path that cannot be written (a missing or read-only directory) is an error
/// before the run: a file is created beside it and removed.
fn check_writable(path: &std::path::Path) -> Result<(), String> {
    if path == std::path::Path::new("-") {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if path.is_dir() {
        return Err(format!(
            "{}: cannot write output: is a directory",
            path.display()
        ));
    }
    // A device or a pipe is written in place when the time comes (opening a FIFO now would
    // wait for its reader).
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Ok(());
    }
    // A name of our own, so that the OS error alone is reported (no temporary name).
    let probe = dir.join(format!(".colstats-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("{}: cannot write output: {e}", path.display())),
    }
}

fn merge(a: MergeArgs) -> Result<(), String> {
    let fmt = out_format(a.format);
    if fmt == OutFormat::Npz && a.output.is_none() {
        clap::Error::raw(
            clap::error::ErrorKind::MissingRequiredArgument,
            "--format npz needs -o FILE.npz\n",
        )
        .exit();
    }
    if let Some(p) = &a.output {
        check_writable(p)?;
    }
    let states = input_list(&a.states, a.files_from.as_deref())?;
    let state = colstats::State::merge_files(&states, a.allow_gaps).map_err(|e| {
        let m = e.cli_message();
        if e.kind() == colstats::ErrorKind::Gap {
            format!("{m} (merge anyway with --allow-gaps)")
        } else {
            m
        }
    })?;
    for g in state.gaps() {
        eprintln!(
            "warning: rows {}:{} are missing from the merged result",
            g.start, g.end
        );
    }
    // Rows before the first state or after the last: perhaps wanted (`--rows` runs), perhaps
    // a lost state; said either way.
    let all = state.array_rows();
    if let (Some(a), Some(b)) = (state.rows().first(), state.rows().last()) {
        if a.start > 0 || b.end < all {
            eprintln!(
                "warning: the states cover rows {}:{} of the array's {all}",
                a.start, b.end
            );
        }
    }
    let summary = match &a.stats {
        // Every state holds the same accumulators: the first one names them.
        Some(s) => state
            .finish_with(&s.0, a.ddof)
            .map_err(|e| format!("{}: {}", states[0].display(), e.cli_message()))?,
        None => state.finish(a.ddof),
    };
    emit(&summary, fmt, a.output.as_deref(), None)
}

fn out_format(f: Fmt) -> OutFormat {
    match f {
        Fmt::Table => OutFormat::Table,
        Fmt::Json => OutFormat::Json,
        Fmt::Csv => OutFormat::Csv,
        Fmt::Npz => OutFormat::Npz,
    }
}

/// Formats `summary` and writes it to `output` (atomically) or stdout (`None` or `-`).
fn emit(
    summary: &colstats::Summary,
    fmt: OutFormat,
    output: Option<&std::path::Path>,
    threads: Option<u64>,
) -> Result<(), String> {
    if let Some(t) = threads {
        // Large outputs are formatted on rayon's global pool: it too keeps to --threads.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t as usize)
            .build_global();
    }
    let bytes = match fmt {
        OutFormat::Table => report::to_table(summary).into_bytes(),
        OutFormat::Json => report::to_json(summary).into_bytes(),
        OutFormat::Csv => report::to_csv(summary).into_bytes(),
        OutFormat::Npz => report::write_npz(summary),
    };
    match output.filter(|p| *p != std::path::Path::new("-")) {
        Some(path) => report::write_atomic(path, &bytes)
            .map_err(|e| format!("{}: cannot write output: {e}", path.display())),
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&bytes).and_then(|_| out.flush()) {
                Ok(()) => Ok(()),
                // A closed pipe (`| head`) is the reader's choice, not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(format!("-: cannot write output: {e}")),
            }
        }
    }
}

/// The inputs: each FILE (a pattern with `*`, `?` or `[` that names no file is expanded,
/// sorted), then the lines of `--files-from`.
fn input_list(files: &[PathBuf], from: Option<&std::path::Path>) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for f in files {
        let text = f.to_string_lossy();
        if !f.exists() && text.contains(['*', '?', '[']) {
            let paths = glob::glob(&text).map_err(|e| format!("{text}: bad pattern: {e}"))?;
            let mut found: Vec<PathBuf> = paths.filter_map(|p| p.ok()).collect();
            if found.is_empty() {
                return Err(format!("{text}: no file matches the pattern"));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(f.clone());
        }
    }
    if let Some(list) = from {
        let more = colstats::read_list(list).map_err(|e| e.cli_message())?;
        if more.is_empty() && out.is_empty() {
            return Err(format!("{}: the list names no file", list.display()));
        }
        out.extend(more);
    }
    Ok(out)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn info(a: InfoArgs) -> Result<(), String> {
    let files = input_list(&a.files, a.files_from.as_deref())?;
    let mut req = Request::inputs(&files).memory(a.memory);
    if let Some(d) = a.dataset {
        req = req.dataset(d);
    }
    if let Some(t) = a.threads {
        req = req.threads(t as usize);
    }
    if let Some(r) = a.rows {
        req = req.rows(r);
    }
    if let Some(n) = a.shards {
        let ranges = req.shards(n).map_err(|e| e.cli_message())?;
        let o: String = match a.format {
            InfoFmt::Text => ranges
                .iter()
                .map(|r| format!("{}:{}\n", r.start, r.end))
                .collect(),
            InfoFmt::Json => {
                let v: Vec<[u64; 2]> = ranges.iter().map(|r| [r.start, r.end]).collect();
                format!("{}\n", serde_json::to_string(&v).expect("serialisable"))
            }
        };
        return write_stdout(o.as_bytes());
    }
    let info = req.info().map_err(|e| e.cli_message())?;
    if let InfoFmt::Json = a.format {
        return write_stdout(report::info_json(&info).as_bytes());
    }
    let mut o = String::new();
    if files.len() > 1 {
        o.push_str(&format!("inputs:    {} (read as one array)\n", files.len()));
        for f in &files {
            o.push_str(&format!("  {}\n", f.display()));
        }
        o.push_str(&format!(
            "domains:   {} (merge trees; see the README)\n",
            info.domains
        ));
    } else {
        o.push_str(&format!("file:      {}\n", files[0].display()));
    }
    o.push_str(&format!(
        "format:    {}\n",
        match info.format {
            colstats::Format::Npy => "npy",
            colstats::Format::Hdf5 => "HDF5",
        }
    ));
    #[cfg(feature = "hdf5")]
    if info.format == colstats::Format::Hdf5 {
        o.push_str(&format!("datasets:  {}\n", info.datasets.len()));
        for d in &info.datasets {
            let dtype = match &d.dtype {
                Ok(t) => t.to_string(),
                Err(why) => format!("unsupported ({why})"),
            };
            let chunk = d
                .chunk
                .as_ref()
                .map(|c| format!(" chunks {}", colstats::shape_str(c)))
                .unwrap_or_default();
            let filters = if d.filters.is_empty() {
                String::new()
            } else {
                let f: Vec<&str> = d.filters.iter().map(|f| f.name.as_str()).collect();
                format!(" filters {}", f.join("+"))
            };
            o.push_str(&format!(
                "  {}  {} {}  {}{}{}  stored {} / logical {}\n",
                d.path,
                colstats::shape_str(&d.shape),
                dtype,
                d.layout.name(),
                chunk,
                filters,
                human(d.stored_bytes),
                human(d.logical_bytes)
            ));
            if let Some(h) = &d.holder {
                o.push_str(&format!("      stored in {h} (external link)\n"));
            }
            if !d.links.is_empty() {
                o.push_str(&format!("      also linked as {}\n", d.links.join(", ")));
            }
        }
        if info.array.is_none() {
            o.push_str("(choose a dataset with --dataset to see its plan)\n");
        }
    }
    if let Some((m, p)) = &info.array {
        if let Some(d) = &info.dataset {
            o.push_str(&format!("dataset:   {d}\n"));
            o.push_str(&format!("access:    {}\n", info.access));
        }
        o.push_str(&format!("shape:     {}\n", colstats::shape_str(&m.shape)));
        o.push_str(&format!("dtype:     {} ({})\n", m.dtype, m.dtype.descr()));
        o.push_str(&format!(
            "order:     {}\n",
            if m.order == colstats::Order::C {
                "C (row-major)"
            } else {
                "F (column-major)"
            }
        ));
        o.push_str(&format!(
            "rows:      {}\ncolumns:   {}\n",
            m.rows, m.columns
        ));
        o.push_str(&format!(
            "bytes:     {} ({})\n",
            m.data_bytes,
            human(m.data_bytes)
        ));
        if m.mapped && files.len() == 1 {
            o.push_str(&format!("offset:    {}\n", m.data_offset));
        }
        o.push_str("plan:\n");
        o.push_str(&format!("  memory budget:    {}\n", human(p.budget)));
        o.push_str(&format!("  threads:          {}\n", info.threads));
        o.push_str(&format!("  blocks:           {}\n", p.blocks));
        if let Some((rows, cols)) = p.block_shape {
            let what = if m.order == colstats::Order::F {
                format!(
                    "{rows} rows x {cols} column{}",
                    if cols == 1 { "" } else { "s" }
                )
            } else {
                format!("{rows} rows x {cols} columns")
            };
            o.push_str(&format!("  block shape:      {what}\n"));
            o.push_str(&format!(
                "  bytes per block:  {} ({})\n",
                p.block_bytes,
                human(p.block_bytes)
            ));
            o.push_str(&format!("  groups:           {}\n", p.groups));
        }
        o.push_str(&format!("  blocks in flight: {}\n", p.in_flight));
        o.push_str(&format!("  leaf rows:        {}\n", p.leaf_rows));
        o.push_str(&format!("  est. peak memory: {}\n", human(p.est_memory)));
    }
    write_stdout(o.as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("-: cannot write output: {e}"))
        }
        _ => Ok(()),
    }
}
