//! Progress of a map: an indicatif bar with rate and ETA on a terminal, and
//! joblib-style lines (`[Pool(threads=2)]: Done  40 out of 100 | elapsed:
//! 1.2s remaining: 1.8s | 33.3 it/s`) when stderr is not a terminal, where
//! indicatif would print nothing. Both show the rate as tqdm does
//! ([`format_rate`]: `81.4 it/s`, `1.2k it/s`, `2.5 s/it`).
//!
//! # Examples
//!
//! ```
//! # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
//! use std::sync::{Arc, Mutex};
//! use crew::core::progress::{Progress, ProgressStyle};
//!
//! let lines = Arc::new(Mutex::new(Vec::new()));
//! let progress = Progress::start(ProgressStyle::Capture(lines.clone()), "Pool(threads=2)", Some(100));
//! progress.advance(40);
//! progress.finish();
//! let lines = lines.lock().unwrap();
//! assert!(lines[0].starts_with("[Pool(threads=2)]: Done  40 out of 100 | elapsed: "));
//! assert!(lines[0].ends_with(" it/s"));
//! assert!(lines[1].contains(" finished | "));
//! ```

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a map reports its progress.
///
/// # Examples
///
/// A map on threads whose progress lines are captured:
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::{Arc, Mutex};
/// use crew::core::engine::{MapOptions, map_blocking};
/// use crew::core::{ProgressStyle, Threads, Unary};
///
/// let lines = Arc::new(Mutex::new(Vec::new()));
/// let opts = MapOptions {
///     progress: Some(ProgressStyle::Capture(lines.clone())),
///     label: "Pool(threads=2)".into(),
///     ..MapOptions::default()
/// };
/// let threads = Threads::new(2)?;
/// map_blocking(&threads, Unary(|x: u32| x + 1), 0..100u32, &opts).unwrap();
/// let last = lines.lock().unwrap().last().unwrap().clone();
/// assert!(last.starts_with("[Pool(threads=2)]: Done 100 out of 100"), "{last}");
/// # Ok::<(), crew::core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub enum ProgressStyle {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines on stderr, as joblib's `verbose`; the number sets how
    /// often: 1–9 about every tenth of the work, 10 and more at least every
    /// second and every tenth, above 50 every task.
    Lines(u32),
    /// Plain lines written to a shared buffer (for tests and log capture).
    Capture(Arc<Mutex<Vec<String>>>),
}

struct Shared {
    label: String,
    total: Option<usize>,
    done: AtomicUsize,
    started: Instant,
    last_line: AtomicU64,
    sink: Sink,
}

enum Sink {
    Bar(indicatif::ProgressBar),
    Lines {
        every_task: bool,
        at_least_every: Option<Duration>,
    },
    Capture(Arc<Mutex<Vec<String>>>),
}

/// A progress reporter for one map; cheap to clone.
///
/// Clones share one count, so every worker (or every chunk's completion)
/// can [`advance`](Progress::advance) the same reporter.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use std::sync::{Arc, Mutex};
/// use crew::core::{Progress, ProgressStyle};
///
/// let lines = Arc::new(Mutex::new(Vec::new()));
/// let progress = Progress::start(ProgressStyle::Capture(lines.clone()), "demo", Some(10));
/// std::thread::scope(|s| {
///     for _ in 0..2 {
///         let p = progress.clone();
///         s.spawn(move || (0..5).for_each(|_| p.advance(1)));
///     }
/// });
/// progress.finish();
/// let lines = lines.lock().unwrap();
/// assert!(lines.last().unwrap().starts_with("[demo]: Done  10 out of  10"));
/// ```
#[derive(Clone)]
pub struct Progress {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("label", &self.shared.label)
            .field("done", &self.shared.done.load(Ordering::Relaxed))
            .field("total", &self.shared.total)
            .finish()
    }
}

/// A rate of `per_sec` tasks per second as tqdm and joblib print it: one
/// decimal and a k/M/G suffix (`81.4 it/s`, `1.2k it/s`, `3.0M it/s`);
/// below one task per second, seconds per task (`2.5 s/it`); `? it/s` when
/// there is no rate yet.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::progress::format_rate;
///
/// assert_eq!(format_rate(81.4384), "81.4 it/s");
/// assert_eq!(format_rate(1234.5), "1.2k it/s");
/// assert_eq!(format_rate(0.4), "2.5 s/it");
/// assert_eq!(format_rate(f64::NAN), "? it/s");
/// ```
pub fn format_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "? it/s".to_owned();
    }
    if per_sec < 1.0 {
        return format!("{} s/it", scaled(1.0 / per_sec));
    }
    format!("{} it/s", scaled(per_sec))
}

/// `x` with one decimal and a k/M/G/T suffix: `81.4`, `1.2k`, `12.3M`.
fn scaled(mut x: f64) -> String {
    for suffix in ["", "k", "M", "G"] {
        // Rounded to one decimal, 999.96 would print as 1000.0.
        if x < 999.95 {
            return format!("{x:.1}{suffix}");
        }
        x /= 1000.0;
    }
    format!("{x:.1}T")
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{:.1}min", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

impl Progress {
    /// Starts reporting a map of `total` tasks (if known) labelled `label`.
    ///
    /// With [`ProgressStyle::Auto`] on a terminal this draws an indicatif
    /// bar (a spinner without a `total`); nothing is written until the
    /// first [`advance`](Progress::advance).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::sync::{Arc, Mutex};
    /// use crew::core::{Progress, ProgressStyle};
    ///
    /// let lines = Arc::new(Mutex::new(Vec::new()));
    /// let progress = Progress::start(ProgressStyle::Capture(lines.clone()), "stream", None);
    /// progress.finish();
    /// assert!(lines.lock().unwrap()[0].starts_with("[stream]: Done   0 tasks | elapsed: "));
    /// ```
    pub fn start(style: ProgressStyle, label: &str, total: Option<usize>) -> Progress {
        let sink = match style {
            ProgressStyle::Auto if std::io::stderr().is_terminal() => {
                let bar = match total {
                    Some(n) => indicatif::ProgressBar::new(n as u64),
                    None => indicatif::ProgressBar::new_spinner(),
                };
                if let Some(style) = bar_style(total.is_some()) {
                    bar.set_style(style);
                }
                bar.set_prefix(label.to_owned());
                Sink::Bar(bar)
            }
            ProgressStyle::Auto => Sink::Lines {
                every_task: false,
                at_least_every: Some(Duration::from_secs(1)),
            },
            ProgressStyle::Lines(v) => Sink::Lines {
                every_task: v > 50,
                at_least_every: (v >= 10).then_some(Duration::from_secs(1)),
            },
            ProgressStyle::Capture(buf) => Sink::Capture(buf),
        };
        Progress {
            shared: Arc::new(Shared {
                label: label.to_owned(),
                total,
                done: AtomicUsize::new(0),
                started: Instant::now(),
                last_line: AtomicU64::new(0),
                sink,
            }),
        }
    }

    /// Records that `n` more tasks finished.
    ///
    /// Never blocks for long: a line is written (or the bar moved) only when
    /// the count crosses a tenth of `total`, or as often as the style says;
    /// the 100 % line is left to [`finish`](Progress::finish).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::sync::{Arc, Mutex};
    /// use crew::core::{Progress, ProgressStyle};
    ///
    /// let lines = Arc::new(Mutex::new(Vec::new()));
    /// let progress = Progress::start(ProgressStyle::Capture(lines.clone()), "demo", Some(100));
    /// progress.advance(5); // still within the first tenth: no line
    /// assert_eq!(lines.lock().unwrap().len(), 0);
    /// progress.advance(20); // crosses 10 % and 20 %: one line
    /// assert_eq!(lines.lock().unwrap().len(), 1);
    /// ```
    pub fn advance(&self, n: usize) {
        let s = &self.shared;
        let before = s.done.fetch_add(n, Ordering::Relaxed);
        let done = before + n;
        match &s.sink {
            Sink::Bar(bar) => bar.inc(n as u64),
            Sink::Lines {
                every_task,
                at_least_every,
            } => {
                if *every_task || self.crossed_tenth(before, done) || self.due(*at_least_every) {
                    self.emit(done);
                }
            }
            Sink::Capture(_) => {
                if self.crossed_tenth(before, done) {
                    self.emit(done);
                }
            }
        }
    }

    fn crossed_tenth(&self, before: usize, done: usize) -> bool {
        match self.shared.total {
            Some(t) if t > 0 => (before * 10 / t) != (done * 10 / t) && done < t,
            _ => false,
        }
    }

    fn due(&self, every: Option<Duration>) -> bool {
        let Some(every) = every else { return false };
        let now = self.shared.started.elapsed().as_millis() as u64;
        let last = self.shared.last_line.load(Ordering::Relaxed);
        now >= last + every.as_millis() as u64
            && self
                .shared
                .last_line
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The line describing `done` finished tasks, in joblib's words.
    fn line(&self, done: usize, finished: bool) -> String {
        let s = &self.shared;
        plain_line(&s.label, done, s.total, s.started.elapsed(), finished)
    }

    fn emit(&self, done: usize) {
        self.write(self.line(done, false));
    }

    /// Writes one plain line: to the capture buffer, else to stderr.
    fn write(&self, line: String) {
        match &self.shared.sink {
            Sink::Capture(buf) => buf.lock().unwrap_or_else(|p| p.into_inner()).push(line),
            _ => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    /// Reports the end of the map (the last line, or the bar's completion).
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use std::sync::{Arc, Mutex};
    /// use crew::core::{Progress, ProgressStyle};
    ///
    /// let lines = Arc::new(Mutex::new(Vec::new()));
    /// let progress = Progress::start(ProgressStyle::Capture(lines.clone()), "demo", Some(3));
    /// progress.advance(3);
    /// progress.finish();
    /// let lines = lines.lock().unwrap();
    /// assert_eq!(lines.len(), 1);
    /// assert!(lines[0].starts_with("[demo]: Done   3 out of   3 | elapsed: "));
    /// assert!(lines[0].contains(" finished | "), "{}", lines[0]);
    /// ```
    pub fn finish(&self) {
        let done = self.shared.done.load(Ordering::Relaxed);
        match &self.shared.sink {
            Sink::Bar(bar) => bar.finish(),
            _ => self.write(self.line(done, true)),
        }
    }
}

/// The bar's look: elapsed time, bar, count, the rate as [`format_rate`]
/// prints it (in step with the plain lines) and the ETA.
fn bar_style(known_total: bool) -> Option<indicatif::ProgressStyle> {
    let template = if known_total {
        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {rate} ETA {eta}"
    } else {
        "{prefix} [{elapsed_precise}] {spinner} {pos} {rate}"
    };
    let style = indicatif::ProgressStyle::with_template(template).ok()?;
    Some(style.with_key(
        "rate",
        |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&format_rate(s.per_sec()));
        },
    ))
}

/// One plain progress line: joblib's words, then the rate as tqdm prints it
/// (`[Pool(threads=2)]: Done  40 out of 100 | elapsed: 1.2s remaining: 1.8s
/// | 33.3 it/s`; the last line says `finished` instead of what remains).
fn plain_line(
    label: &str,
    done: usize,
    total: Option<usize>,
    elapsed: Duration,
    finished: bool,
) -> String {
    let rate = format_rate(done as f64 / elapsed.as_secs_f64());
    let what = match total {
        Some(total) => format!("Done {done:>3} out of {total:>3}"),
        None => format!("Done {done:>3} tasks"),
    };
    let tail = match (finished, total) {
        (true, _) => " finished".to_owned(),
        (false, Some(_)) if done == 0 => " remaining: ?".to_owned(),
        (false, Some(total)) => format!(
            " remaining: {}",
            secs(elapsed.mul_f64(total.saturating_sub(done) as f64 / done as f64))
        ),
        (false, None) => String::new(),
    };
    format!(
        "[{label}]: {what} | elapsed: {}{tail} | {rate}",
        secs(elapsed)
    )
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn rates_read_as_tqdm_prints_them() {
        assert_eq!(format_rate(81.4384), "81.4 it/s");
        assert_eq!(format_rate(1.0), "1.0 it/s");
        assert_eq!(format_rate(999.94), "999.9 it/s");
        assert_eq!(format_rate(999.96), "1.0k it/s");
        assert_eq!(format_rate(1234.5), "1.2k it/s");
        assert_eq!(format_rate(56_789.0), "56.8k it/s");
        assert_eq!(format_rate(3_040_000.0), "3.0M it/s");
        assert_eq!(format_rate(7.2e9), "7.2G it/s");
        assert_eq!(format_rate(4.0e13), "40.0T it/s");
        assert_eq!(format_rate(0.5), "2.0 s/it");
        assert_eq!(format_rate(0.0004), "2.5k s/it");
        for none in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(format_rate(none), "? it/s", "{none}");
        }
    }

    #[test]
    fn both_bar_templates_parse() {
        assert!(bar_style(true).is_some());
        assert!(bar_style(false).is_some());
    }

    #[test]
    fn plain_lines_end_with_the_same_rate() {
        let two_s = Duration::from_secs(2);
        assert_eq!(
            plain_line("Pool(threads=2)", 40, Some(100), two_s, false),
            "[Pool(threads=2)]: Done  40 out of 100 | elapsed: 2.0s remaining: 3.0s | 20.0 it/s"
        );
        assert_eq!(
            plain_line("Pool(threads=2)", 100, Some(100), two_s, true),
            "[Pool(threads=2)]: Done 100 out of 100 | elapsed: 2.0s finished | 50.0 it/s"
        );
        assert_eq!(
            plain_line("stream", 5000, None, two_s, false),
            "[stream]: Done 5000 tasks | elapsed: 2.0s | 2.5k it/s"
        );
        assert_eq!(
            plain_line("stream", 0, Some(10), Duration::ZERO, false),
            "[stream]: Done   0 out of  10 | elapsed: 0.0s remaining: ? | ? it/s"
        );
        assert_eq!(
            plain_line("slow", 1, Some(3), Duration::from_secs(4), false),
            "[slow]: Done   1 out of   3 | elapsed: 4.0s remaining: 8.0s | 4.0 s/it"
        );
    }
}
