//! What each worker did and when: a cheap, opt-in log of task spans (named
//! after the task's function) and of worker events (restarts, timeouts,
//! kills, crashes), exported as Chrome trace-event JSON (Perfetto,
//! `chrome://tracing`).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

/// One task's run on one worker.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::engine::{MapOptions, map_blocking};
/// use crew::core::{Backend, Threads, ThreadsConfig, Unary};
///
/// let threads = Threads::with_config(ThreadsConfig { workers: 2, timeline: true, ..Default::default() })?;
/// map_blocking(&threads, Unary(|x: u32| x), 0..8u32, &MapOptions::default()).unwrap();
/// fn square(x: u32) -> u32 {
///     x * x
/// }
///
/// let threads = Threads::with_config(ThreadsConfig { workers: 2, timeline: true, ..Default::default() })?;
/// map_blocking(&threads, Unary(square), 0..8u32, &MapOptions::default()).unwrap();
/// let spans = threads.timeline().unwrap().spans();
/// let mut tasks: Vec<usize> = spans.iter().map(|s| s.task).collect();
/// tasks.sort();
/// assert_eq!(tasks, (0..8).collect::<Vec<_>>()); // one span per map item
/// assert!(spans.iter().all(|s| s.worker < 2 && s.start <= s.end));
/// assert!(spans.iter().all(|s| s.name == "square")); // named after the function
/// # Ok::<(), crew::core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The worker that ran the task.
    pub worker: usize,
    /// The task's position in its map, or its submission number.
    pub task: usize,
    /// What ran: the task function's name (see [`task_name`]), or the kind
    /// of call (`"map"`, `"call"`) where the function has no name.
    pub name: &'static str,
    /// When it started.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
}

/// What happened to a worker at one moment: an instant event on the
/// timeline, so a crash or a kill is visible beside the task spans.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use crew::{MarkKind, Timeline};
///
/// let t = Timeline::new();
/// t.mark(1, MarkKind::Timeout, "task 7 ran past its 2s timeout");
/// let marks = t.marks();
/// assert_eq!((marks[0].worker, marks[0].kind), (1, MarkKind::Timeout));
/// assert!(marks[0].detail.contains("task 7"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The worker (its slot in the pool) it happened to.
    pub worker: usize,
    /// What happened.
    pub kind: MarkKind,
    /// When.
    pub at: Instant,
    /// A sentence for the trace viewer (the exit status, the task, …).
    pub detail: String,
}

/// The kinds of [`Mark`].
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// assert_eq!(crew::MarkKind::Restart.name(), "worker restart");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MarkKind {
    /// A new worker process took a slot whose previous process ended.
    Restart,
    /// A task ran past the pool's task timeout and its worker was killed.
    Timeout,
    /// The pool killed a worker: to cancel its running task, on
    /// `terminate`, or because it broke the protocol.
    Kill,
    /// A worker ended without being asked to (a signal, an abort, an exit).
    Crash,
}

impl MarkKind {
    /// The event's name in the trace.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert_eq!(crew::MarkKind::Crash.name(), "worker crash");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            MarkKind::Restart => "worker restart",
            MarkKind::Timeout => "task timeout",
            MarkKind::Kill => "worker killed",
            MarkKind::Crash => "worker crash",
        }
    }
}

/// The name a trace shows for a task whose function has the type name
/// `type_name` (from [`std::any::type_name`]): the function's own name
/// without its module path (`square`, `Point::norm`, `main::{{closure}}`
/// for a closure in `main`), or `None` if the type is no named function
/// (a function pointer, a trait object).
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::task_name;
///
/// assert_eq!(task_name("my_app::stats::kde_point"), Some("kde_point"));
/// assert_eq!(task_name("my_app::id<u32>"), Some("id"));
/// assert_eq!(task_name("my_app::geo::Point::norm"), Some("Point::norm"));
/// assert_eq!(task_name("<my_app::S as my_app::Tr>::run"), Some("run"));
/// assert_eq!(task_name("my_app::main::{{closure}}"), Some("main::{{closure}}"));
/// assert_eq!(task_name("fn(u32) -> u32"), None);
/// ```
pub fn task_name(type_name: &'static str) -> Option<&'static str> {
    let t = type_name.trim();
    if t.is_empty()
        || [
            "fn(", "fn (", "unsafe ", "extern ", "dyn ", "&", "*", "(", "[",
        ]
        .iter()
        .any(|p| t.starts_with(p))
    {
        return None;
    }
    // Start of each top-level path segment (`::` outside `<…>`).
    let bytes = t.as_bytes();
    let mut starts = vec![0usize];
    let mut depth = 0i32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                starts.push(i + 2);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let segment = |k: usize| {
        let end = starts.get(k + 1).map_or(t.len(), |&s| s - 2);
        &t[starts[k]..end]
    };
    // The named segment: the last one that is not a closure.
    let mut k = starts.len() - 1;
    while k > 0 && segment(k).starts_with("{{") {
        k -= 1;
    }
    let named = segment(k);
    if named.starts_with('<') || named.starts_with("{{") || named.is_empty() {
        return None;
    }
    // A method: keep its type (`Point::norm`).
    let from = if k > 0 && segment(k - 1).starts_with(|c: char| c.is_ascii_uppercase()) {
        starts[k - 1]
    } else {
        starts[k]
    };
    let mut out = &t[from..];
    // Generic arguments at the very end (`id<u32>`) say nothing about the task.
    if k == starts.len() - 1
        && out.ends_with('>')
        && let Some(open) = out.find('<')
    {
        out = &out[..open];
    }
    Some(out.trim_end_matches("::"))
}

/// A recorder of task spans and worker events, shared by a pool's workers.
///
/// Recording costs two clock reads and a short lock per task, so it is off
/// unless a pool is built with `.timeline(true)`.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use std::time::Instant;
/// let t = crew::Timeline::new();
/// let now = Instant::now();
/// t.record(0, 7, "square", now, now);
/// let json = t.to_chrome_trace();
/// assert!(json.contains("\"traceEvents\""));
/// assert!(json.contains("\"name\":\"square\""));
/// assert_eq!(t.spans().len(), 1);
/// ```
#[derive(Debug)]
pub struct Timeline {
    origin: Instant,
    calls: std::sync::atomic::AtomicUsize,
    spans: Mutex<Vec<Span>>,
    marks: Mutex<Vec<Mark>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

/// Appends `s` to `out` as the body of a JSON string.
fn json_str(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

impl Timeline {
    /// An empty timeline whose clock starts now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert!(crew::Timeline::new().spans().is_empty());
    /// ```
    pub fn new() -> Timeline {
        Timeline {
            origin: Instant::now(),
            calls: std::sync::atomic::AtomicUsize::new(0),
            spans: Mutex::new(Vec::new()),
            marks: Mutex::new(Vec::new()),
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
    /// # use crew_core as crew;
    /// let t = crew::Timeline::new();
    /// assert_eq!(t.next_call(), 0);
    /// assert_eq!(t.next_call(), 1);
    /// ```
    pub fn next_call(&self) -> usize {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that `worker` ran `task` (named `name`) from `start` to `end`.
    ///
    /// Takes a short lock; safe to call from many workers at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::{Duration, Instant};
    /// let t = crew::Timeline::new();
    /// let start = Instant::now();
    /// t.record(1, 5, "square", start, start + Duration::from_millis(2));
    /// let span = t.spans()[0];
    /// assert_eq!((span.worker, span.task, span.name), (1, 5, "square"));
    /// assert_eq!(span.end - span.start, Duration::from_millis(2));
    /// ```
    pub fn record(
        &self,
        worker: usize,
        task: usize,
        name: &'static str,
        start: Instant,
        end: Instant,
    ) {
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Span {
                worker,
                task,
                name,
                start,
                end,
            });
    }

    /// Records that `kind` happened to `worker` now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{MarkKind, Timeline};
    /// let t = Timeline::new();
    /// t.mark(0, MarkKind::Crash, "killed by signal 9 (SIGKILL)");
    /// t.mark(0, MarkKind::Restart, "pid 4242");
    /// let kinds: Vec<MarkKind> = t.marks().iter().map(|m| m.kind).collect();
    /// assert_eq!(kinds, [MarkKind::Crash, MarkKind::Restart]);
    /// ```
    pub fn mark(&self, worker: usize, kind: MarkKind, detail: impl Into<String>) {
        let mark = Mark {
            worker,
            kind,
            at: Instant::now(),
            detail: detail.into(),
        };
        self.marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mark);
    }

    /// Every span recorded so far, in recording order (a copy).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::Instant;
    /// let t = crew::Timeline::new();
    /// let now = Instant::now();
    /// t.record(0, 2, "a", now, now);
    /// t.record(1, 1, "b", now, now);
    /// let order: Vec<usize> = t.spans().iter().map(|s| s.task).collect();
    /// assert_eq!(order, [2, 1]);
    /// ```
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every worker event recorded so far, in recording order (a copy).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let t = crew::Timeline::new();
    /// assert!(t.marks().is_empty());
    /// t.mark(3, crew::MarkKind::Kill, "cancelled");
    /// assert_eq!(t.marks()[0].worker, 3);
    /// ```
    pub fn marks(&self) -> Vec<Mark> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The timeline as a Chrome trace-event document: one track (`tid`) per
    /// worker; one complete event (`"ph":"X"`) per task, named after it,
    /// with its index as the argument `task`; one instant event
    /// (`"ph":"i"`, category `worker`) per [`Mark`], with its detail as the
    /// argument `detail`. Times are in microseconds since the pool started.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::{Duration, Instant};
    /// let t = crew::Timeline::new();
    /// let start = Instant::now();
    /// t.record(3, 0, "kde_point", start, start + Duration::from_micros(1500));
    /// t.mark(3, crew::MarkKind::Timeout, "task 0");
    /// let json = t.to_chrome_trace();
    /// assert!(json.starts_with("{\"displayTimeUnit\":\"ms\",\"traceEvents\":["));
    /// assert!(json.contains("\"name\":\"kde_point\",\"cat\":\"task\",\"ph\":\"X\""));
    /// assert!(json.contains("\"tid\":3"));
    /// assert!(json.contains("\"dur\":1500.000"));
    /// assert!(json.contains("\"args\":{\"task\":0}"));
    /// assert!(json.contains("\"name\":\"task timeout\",\"cat\":\"worker\",\"ph\":\"i\""));
    /// ```
    pub fn to_chrome_trace(&self) -> String {
        let spans = self.spans();
        let marks = self.marks();
        let mut out = String::with_capacity(64 + (spans.len() + marks.len()) * 112);
        out.push_str("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[");
        let mut workers: Vec<usize> = spans
            .iter()
            .map(|s| s.worker)
            .chain(marks.iter().map(|m| m.worker))
            .collect();
        workers.sort_unstable();
        workers.dedup();
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        for w in &workers {
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{w},\"args\":{{\"name\":\"worker {w}\"}}}}"
            );
        }
        let micros =
            |at: Instant| at.saturating_duration_since(self.origin).as_nanos() as f64 / 1e3;
        for s in &spans {
            sep(&mut out);
            let dur = s.end.saturating_duration_since(s.start).as_nanos() as f64 / 1e3;
            out.push_str("{\"name\":\"");
            json_str(&mut out, s.name);
            let _ = write!(
                out,
                "\",\"cat\":\"task\",\"ph\":\"X\",\"pid\":1,\"tid\":{},\"ts\":{:.3},\"dur\":{dur:.3},\"args\":{{\"task\":{}}}}}",
                s.worker,
                micros(s.start),
                s.task
            );
        }
        for m in &marks {
            sep(&mut out);
            let _ = write!(
                out,
                "{{\"name\":\"{}\",\"cat\":\"worker\",\"ph\":\"i\",\"s\":\"t\",\"pid\":1,\"tid\":{},\"ts\":{:.3},\"args\":{{\"detail\":\"",
                m.kind.name(),
                m.worker,
                micros(m.at)
            );
            json_str(&mut out, &m.detail);
            out.push_str("\"}}");
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn name_of<F>(_: &F) -> Option<&'static str> {
        task_name(std::any::type_name::<F>())
    }

    fn square(x: u32) -> u32 {
        x * x
    }

    fn id<T>(x: T) -> T {
        x
    }

    struct Point;

    impl Point {
        fn norm(x: f64) -> f64 {
            x.abs()
        }
    }

    trait Twice {
        fn twice(x: u32) -> u32 {
            2 * x
        }
    }

    impl Twice for Point {}

    fn closure_in<T: Copy>(t: T) -> Option<&'static str> {
        let c = move |x: T| (x, t);
        name_of(&c)
    }

    #[test]
    fn span_names_are_the_functions_own_names() {
        assert_eq!(name_of(&square), Some("square"));
        assert_eq!(name_of(&id::<u32>), Some("id"));
        assert_eq!(name_of(&Point::norm), Some("Point::norm"));
        assert_eq!(name_of(&<Point as Twice>::twice), Some("twice"));
        assert_eq!(name_of(&std::process::id), Some("id"));
    }

    #[test]
    fn closures_are_named_after_the_function_around_them() {
        let c = |x: u32| x;
        assert_eq!(
            name_of(&c),
            Some("closures_are_named_after_the_function_around_them::{{closure}}")
        );
        let outer = || {
            let inner = |x: u32| x;
            name_of(&inner)
        };
        assert_eq!(
            outer(),
            Some("closures_are_named_after_the_function_around_them::{{closure}}::{{closure}}")
        );
        assert_eq!(closure_in(1u8), Some("closure_in<u8>::{{closure}}"));
    }

    #[test]
    fn what_is_no_named_function_has_no_name() {
        assert_eq!(name_of(&(square as fn(u32) -> u32)), None);
        let boxed: Box<dyn Fn(u32) -> u32> = Box::new(square);
        assert_eq!(task_name(std::any::type_name_of_val(&*boxed)), None);
        assert_eq!(name_of(&&square), None);
        assert_eq!(task_name(""), None);
    }

    #[test]
    fn the_chrome_trace_names_spans_and_marks_every_worker_event() {
        let t = Timeline::new();
        let now = Instant::now();
        t.record(0, 4, "kde_point", now, now);
        t.mark(1, MarkKind::Crash, "killed by signal 9 (SIGKILL)");
        t.mark(1, MarkKind::Restart, "pid 7");
        t.mark(0, MarkKind::Timeout, "a \"quoted\"\ndetail");
        t.mark(0, MarkKind::Kill, "cancelled");
        let json = t.to_chrome_trace();
        // Well-formed: every string closed, every brace matched.
        let mut depth = 0i32;
        let mut in_str = false;
        let mut escaped = false;
        for c in json.chars() {
            match (in_str, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_str = false,
                (true, false, '\n') => panic!("raw newline in a string: {json}"),
                (false, _, '"') => in_str = true,
                (false, _, '{') => depth += 1,
                (false, _, '}') => depth -= 1,
                _ => {}
            }
        }
        assert_eq!((depth, in_str), (0, false), "{json}");
        assert!(
            json.contains(
                "\"name\":\"kde_point\",\"cat\":\"task\",\"ph\":\"X\",\"pid\":1,\"tid\":0,"
            ),
            "{json}"
        );
        assert!(json.contains("\"args\":{\"task\":4}"), "{json}");
        for (kind, tid) in [
            ("worker crash", 1),
            ("worker restart", 1),
            ("task timeout", 0),
            ("worker killed", 0),
        ] {
            let event = format!(
                "\"name\":\"{kind}\",\"cat\":\"worker\",\"ph\":\"i\",\"s\":\"t\",\"pid\":1,\"tid\":{tid},"
            );
            assert!(json.contains(&event), "no {kind} on worker {tid}: {json}");
        }
        assert!(
            json.contains("\"detail\":\"a \\\"quoted\\\"\\ndetail\""),
            "{json}"
        );
        // Worker 1 only crashed and restarted: it still gets its track name.
        assert!(json.contains("\"args\":{\"name\":\"worker 1\"}"), "{json}");
    }
}
