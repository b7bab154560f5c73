//! What each worker did and when: a cheap, opt-in log of task spans,
//! exported as Chrome trace-event JSON (Perfetto, `chrome://tracing`).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

/// One task's run on one worker.
///
/// # Examples
///
/// ```
/// use crew_core::engine::{MapOptions, map_blocking};
/// use crew_core::{Backend, Threads, ThreadsConfig, Unary};
///
/// let threads = Threads::with_config(ThreadsConfig { workers: 2, timeline: true, ..Default::default() })?;
/// map_blocking(&threads, Unary(|x: u32| x), 0..8u32, &MapOptions::default()).unwrap();
/// let spans = threads.timeline().unwrap().spans();
/// let mut tasks: Vec<usize> = spans.iter().map(|s| s.task).collect();
/// tasks.sort();
/// assert_eq!(tasks, (0..8).collect::<Vec<_>>()); // one span per map item
/// assert!(spans.iter().all(|s| s.worker < 2 && s.start <= s.end));
/// # Ok::<(), crew_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The worker that ran the task.
    pub worker: usize,
    /// The task's position in its map, or its submission number.
    pub task: usize,
    /// When it started.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
}

/// A recorder of task spans, shared by a pool's workers.
///
/// Recording costs two clock reads and a short lock per task, so it is off
/// unless a pool is built with `.timeline(true)`.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
/// let t = crew_core::Timeline::new();
/// let now = Instant::now();
/// t.record(0, 7, now, now);
/// let json = t.to_chrome_trace();
/// assert!(json.contains("\"traceEvents\""));
/// assert_eq!(t.spans().len(), 1);
/// ```
#[derive(Debug)]
pub struct Timeline {
    origin: Instant,
    calls: std::sync::atomic::AtomicUsize,
    spans: Mutex<Vec<Span>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    /// An empty timeline whose clock starts now.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(crew_core::Timeline::new().spans().is_empty());
    /// ```
    pub fn new() -> Timeline {
        Timeline {
            origin: Instant::now(),
            calls: std::sync::atomic::AtomicUsize::new(0),
            spans: Mutex::new(Vec::new()),
        }
    }

    /// The submission number of the next single call (`apply`, `submit`):
    /// its [`Span::task`].
    ///
    /// Map items use their position in the map instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = crew_core::Timeline::new();
    /// assert_eq!(t.next_call(), 0);
    /// assert_eq!(t.next_call(), 1);
    /// ```
    pub fn next_call(&self) -> usize {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that `worker` ran `task` from `start` to `end`.
    ///
    /// Takes a short lock; safe to call from many workers at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let t = crew_core::Timeline::new();
    /// let start = Instant::now();
    /// t.record(1, 5, start, start + Duration::from_millis(2));
    /// let span = t.spans()[0];
    /// assert_eq!((span.worker, span.task), (1, 5));
    /// assert_eq!(span.end - span.start, Duration::from_millis(2));
    /// ```
    pub fn record(&self, worker: usize, task: usize, start: Instant, end: Instant) {
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Span {
                worker,
                task,
                start,
                end,
            });
    }

    /// Every span recorded so far, in recording order (a copy).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// let t = crew_core::Timeline::new();
    /// let now = Instant::now();
    /// t.record(0, 2, now, now);
    /// t.record(1, 1, now, now);
    /// let order: Vec<usize> = t.spans().iter().map(|s| s.task).collect();
    /// assert_eq!(order, [2, 1]);
    /// ```
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The spans as a Chrome trace-event document: one complete (`"ph":"X"`)
    /// event per task, one track (`tid`) per worker, times in microseconds
    /// since the pool started.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let t = crew_core::Timeline::new();
    /// let start = Instant::now();
    /// t.record(3, 0, start, start + Duration::from_micros(1500));
    /// let json = t.to_chrome_trace();
    /// assert!(json.starts_with("{\"displayTimeUnit\":\"ms\",\"traceEvents\":["));
    /// assert!(json.contains("\"ph\":\"X\""));
    /// assert!(json.contains("\"tid\":3"));
    /// assert!(json.contains("\"dur\":1500.000"));
    /// ```
    pub fn to_chrome_trace(&self) -> String {
        let spans = self.spans();
        let mut out = String::with_capacity(64 + spans.len() * 96);
        out.push_str("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[");
        let mut workers: Vec<usize> = spans.iter().map(|s| s.worker).collect();
        workers.sort_unstable();
        workers.dedup();
        let mut first = true;
        for w in &workers {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(
                out,
                "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{w},\"args\":{{\"name\":\"worker {w}\"}}}}"
            );
        }
        for s in &spans {
            if !first {
                out.push(',');
            }
            first = false;
            let ts = s.start.saturating_duration_since(self.origin).as_nanos() as f64 / 1e3;
            let dur = s.end.saturating_duration_since(s.start).as_nanos() as f64 / 1e3;
            let _ = write!(
                out,
                "{{\"name\":\"task {}\",\"cat\":\"task\",\"ph\":\"X\",\"pid\":1,\"tid\":{},\"ts\":{ts:.3},\"dur\":{dur:.3},\"args\":{{\"task\":{}}}}}",
                s.task, s.worker, s.task
            );
        }
        out.push_str("]}");
        out
    }
}
