//! Progress on stderr for the command line: an indicatif bar on a terminal (bytes,
//! throughput, ETA, files done and the current file), plain lines elsewhere (`--progress
//! always` into a log: one line every 5 seconds or 5 %, never `\r` frames).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use colstats::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::ProgressMode;

pub enum Reporter {
    Hidden,
    /// Created at the first update, when the total is known (no `0 B/0 B` frame).
    Bar(Mutex<Option<ProgressBar>>),
    Lines(Mutex<Lines>),
}

pub struct Lines {
    start: Instant,
    last: Option<(Instant, u64)>,
    files: usize,
}

impl Reporter {
    pub fn new(mode: ProgressMode) -> Reporter {
        let tty = std::io::stderr().is_terminal();
        match mode {
            ProgressMode::Never => Reporter::Hidden,
            ProgressMode::Auto if !tty => Reporter::Hidden,
            _ if tty => Reporter::Bar(Mutex::new(None)),
            _ => Reporter::Lines(Mutex::new(Lines {
                start: Instant::now(),
                last: None,
                files: 0,
            })),
        }
    }

    pub fn update(&self, p: &Progress) {
        match self {
            Reporter::Hidden => {}
            Reporter::Bar(bar) => {
                let mut bar = bar.lock().unwrap();
                let pb = bar.get_or_insert_with(|| {
                    let pb = ProgressBar::with_draw_target(
                        Some(p.bytes_total),
                        ProgressDrawTarget::stderr(),
                    );
                    pb.set_style(
                        ProgressStyle::with_template(
                            "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                        )
                        .expect("valid template"),
                    );
                    pb.enable_steady_tick(Duration::from_millis(200));
                    pb
                });
                pb.set_length(p.bytes_total);
                pb.set_position(p.bytes_done);
                if p.files_total > 1 {
                    let name = p
                        .current
                        .as_ref()
                        .and_then(|c| c.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    pb.set_message(format!("files {}/{} {name}", p.files_done, p.files_total));
                }
            }
            Reporter::Lines(_) if p.bytes_total == 0 => {}
            Reporter::Lines(lines) => {
                let mut l = lines.lock().unwrap();
                let now = Instant::now();
                let pct = |b: u64| (b as f64 * 100.0 / p.bytes_total.max(1) as f64).min(100.0);
                let due = match l.last {
                    None => true,
                    Some((t, b)) => {
                        now - t >= Duration::from_secs(5) || pct(p.bytes_done) - pct(b) >= 5.0
                    }
                };
                if !due && p.bytes_done < p.bytes_total {
                    return;
                }
                if l.last.is_some_and(|(_, b)| b == p.bytes_done) && l.files == p.files_done {
                    return;
                }
                l.files = p.files_done;
                let el = (now - l.start).as_secs_f64();
                let rate = p.bytes_done as f64 / el.max(1e-9);
                let eta = if p.bytes_done > 0 {
                    (p.bytes_total - p.bytes_done.min(p.bytes_total)) as f64 / rate
                } else {
                    f64::NAN
                };
                let file = p
                    .current
                    .as_ref()
                    .map(|c| format!(" {}", c.display()))
                    .unwrap_or_default();
                let files = if p.files_total > 0 {
                    format!(" files {}/{}{file}", p.files_done, p.files_total)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    std::io::stderr(),
                    "progress: {:.1}% {}/{} {}/s{files} elapsed {:.0}s ETA {}",
                    pct(p.bytes_done),
                    super::human(p.bytes_done),
                    super::human(p.bytes_total),
                    super::human(rate as u64),
                    el,
                    if eta.is_finite() {
                        format!("{eta:.0}s")
                    } else {
                        "?".into()
                    }
                );
                l.last = Some((now, p.bytes_done));
            }
        }
    }

    pub fn finish(&self) {
        if let Reporter::Bar(bar) = self {
            if let Some(pb) = bar.lock().unwrap().take() {
                pb.finish_and_clear();
            }
        }
    }
}
