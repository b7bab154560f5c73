//! The one error type of crew: an opaque `Error` answering questions
//! (`is_panic`, `is_timeout`, …), and `MapError`, which keeps every result of
//! a map in which some tasks failed.

use std::fmt;
use std::sync::Arc;

/// A specialised `Result` whose error is [`crew::Error`](Error).
///
/// The error type can be swapped, as for a map's `Result<Vec<R>, MapError<R>>`.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// fn halve(x: u32) -> crew::Result<u32> {
///     if x % 2 == 0 {
///         Ok(x / 2)
///     } else {
///         Err(crew::Error::invalid_input(format!("{x} is odd")))
///     }
/// }
/// assert_eq!(halve(4).unwrap(), 2);
/// assert!(halve(3).unwrap_err().is_invalid_input());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a task or with a pool.
///
/// The type is opaque: ask it questions. A task's failure never affects
/// another task, so an `Error` always describes one task (or one call).
///
/// Its `Display` is one line and does not repeat its cause: an I/O
/// error's operating-system error is its
/// [`source`](std::error::Error::source), as a [`MapError`]'s first failed
/// task is the map error's. To log everything, walk the chain (as
/// `anyhow`'s `{:#}` does) or print `{:?}`.
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use crew::Error;
///
/// let e = Error::timeout();
/// assert!(e.is_timeout());
/// assert!(!e.is_panic());
/// assert_eq!(e.to_string(), "task timed out");
///
/// // The whole chain, one cause after the other.
/// fn chain(e: &dyn std::error::Error) -> String {
///     let mut text = e.to_string();
///     let mut cause = e.source();
///     while let Some(c) = cause {
///         text += &format!(": {c}");
///         cause = c.source();
///     }
///     text
/// }
/// let io = Error::io("starting a worker process", std::io::Error::other("no memfd"));
/// assert_eq!(chain(&io), "i/o error while starting a worker process: no memfd");
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    worker: Option<usize>,
    index: Option<usize>,
}

#[derive(Debug)]
enum Kind {
    Panicked {
        message: String,
        backtrace: Option<String>,
    },
    TimedOut,
    Cancelled,
    WorkerLost {
        cause: String,
    },
    Shutdown,
    InvalidInput {
        message: String,
    },
    Io {
        context: String,
        source: std::io::Error,
    },
    Protocol {
        message: String,
    },
}

impl Error {
    fn new(kind: Kind) -> Error {
        Error {
            inner: Arc::new(Inner {
                kind,
                worker: None,
                index: None,
            }),
        }
    }

    /// The error of a task that panicked with `message`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let e = crew::Error::panic("boom");
    /// assert!(e.is_panic());
    /// assert_eq!(e.panic_message(), Some("boom"));
    /// ```
    pub fn panic(message: impl Into<String>) -> Error {
        Error::new(Kind::Panicked {
            message: message.into(),
            backtrace: None,
        })
    }

    /// The error of a task that panicked with `message`, with the backtrace
    /// captured where it panicked (worker processes capture one when
    /// `RUST_BACKTRACE` is set).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let e = crew::Error::panic_with_backtrace("boom", "0: main".into());
    /// assert_eq!(e.backtrace(), Some("0: main"));
    /// ```
    pub fn panic_with_backtrace(message: impl Into<String>, backtrace: String) -> Error {
        Error::new(Kind::Panicked {
            message: message.into(),
            backtrace: Some(backtrace),
        })
    }

    /// Turns the payload caught by [`std::panic::catch_unwind`] into an error.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let payload = std::panic::catch_unwind(|| panic!("bad row {}", 7)).unwrap_err();
    /// let e = crew::Error::from_panic(payload);
    /// assert_eq!(e.panic_message(), Some("bad row 7"));
    /// ```
    pub fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Error {
        let message = Error::panic_payload_message(&*payload);
        // Dropping a panic payload can itself panic; never let that escape.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)));
        Error::panic(message)
    }

    /// The message a panic payload carries: the `&str` or `String` given to
    /// `panic!`, or `"a non-string panic payload"` for anything else (a
    /// `panic_any(42)`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::Error;
    /// let odd = std::panic::catch_unwind(|| std::panic::panic_any(42u32)).unwrap_err();
    /// assert_eq!(Error::panic_payload_message(&*odd), "a non-string panic payload");
    /// let text = std::panic::catch_unwind(|| panic!("at {}", 3)).unwrap_err();
    /// assert_eq!(Error::panic_payload_message(&*text), "at 3");
    /// ```
    pub fn panic_payload_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a non-string panic payload".to_owned()
        }
    }

    /// The error of a task that did not finish within its time limit, or of a
    /// wait that gave up.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert!(crew::Error::timeout().is_timeout());
    /// ```
    pub fn timeout() -> Error {
        Error::new(Kind::TimedOut)
    }

    /// The error of a task that was cancelled before it produced a result.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert!(crew::Error::cancelled().is_cancelled());
    /// ```
    pub fn cancelled() -> Error {
        Error::new(Kind::Cancelled)
    }

    /// The error of a task whose worker died while running it; `cause`
    /// says how (`"killed by signal 9 (SIGKILL)"`, `"exited with code 3"`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let e = crew::Error::worker_lost("killed by signal 9 (SIGKILL)").with_worker(3);
    /// assert!(e.is_worker_lost());
    /// assert_eq!(e.worker(), Some(3));
    /// assert_eq!(e.to_string(), "worker 3 lost: killed by signal 9 (SIGKILL)");
    /// ```
    pub fn worker_lost(cause: impl Into<String>) -> Error {
        Error::new(Kind::WorkerLost {
            cause: cause.into(),
        })
    }

    /// The error of a task given to a pool that was closed or shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert!(crew::Error::shutdown().is_shutdown());
    /// ```
    pub fn shutdown() -> Error {
        Error::new(Kind::Shutdown)
    }

    /// The error of a call given an argument it cannot accept.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let e = crew::Error::invalid_input("a pool needs at least one worker");
    /// assert!(e.is_invalid_input());
    /// ```
    pub fn invalid_input(message: impl Into<String>) -> Error {
        Error::new(Kind::InvalidInput {
            message: message.into(),
        })
    }

    /// An operating-system error met while `context` (for example
    /// `"spawning worker thread"`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let io = std::io::Error::from(std::io::ErrorKind::OutOfMemory);
    /// let e = crew::Error::io("spawning worker thread", io);
    /// assert!(e.is_io());
    /// ```
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::new(Kind::Io {
            context: context.into(),
            source,
        })
    }

    /// A broken conversation between the parent and a worker: a garbage or
    /// truncated frame, a version mismatch, a value that failed to decode.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let e = crew::Error::protocol("truncated frame");
    /// assert!(e.is_protocol());
    /// ```
    pub fn protocol(message: impl Into<String>) -> Error {
        Error::new(Kind::Protocol {
            message: message.into(),
        })
    }

    fn with(self, f: impl FnOnce(&mut Inner)) -> Error {
        let Inner {
            kind,
            worker,
            index,
        } = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                kind: shared.kind.clone_kind(),
                worker: shared.worker,
                index: shared.index,
            },
        };
        let mut inner = Inner {
            kind,
            worker,
            index,
        };
        f(&mut inner);
        Error {
            inner: Arc::new(inner),
        }
    }

    /// Records which worker ran the task.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert_eq!(crew::Error::timeout().with_worker(1).worker(), Some(1));
    /// ```
    pub fn with_worker(self, worker: usize) -> Error {
        self.with(|i| i.worker = Some(worker))
    }

    /// Records the position of the task in its map (0-based).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// assert_eq!(crew::Error::panic("x").with_index(4).index(), Some(4));
    /// ```
    pub fn with_index(self, index: usize) -> Error {
        self.with(|i| i.index = Some(index))
    }

    /// True if the task panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use crew::core::{Star, Threads, engine::call_blocking};
    /// let threads = Threads::new(1)?;
    /// let e = call_blocking(&threads, Star(|| -> u8 { panic!("oops") }), ()).unwrap_err();
    /// assert!(e.is_panic());
    /// assert_eq!(e.panic_message(), Some("oops"));
    /// // The worker survives its task's panic.
    /// assert_eq!(call_blocking(&threads, Star(|| 1u8), ())?, 1);
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self.inner.kind, Kind::Panicked { .. })
    }

    /// True if the task, or the wait for it, ran out of time.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::time::Duration;
    /// let (_promise, future) = crew::Future::<u8>::pending();
    /// assert!(future.result_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::TimedOut)
    }

    /// True if the task was cancelled before it produced a result.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let (promise, future) = crew::Future::<u8>::pending();
    /// drop(promise); // the job was discarded without running
    /// assert!(future.result().unwrap_err().is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self.inner.kind, Kind::Cancelled)
    }

    /// True if the worker running the task died (crash, signal, exit).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let e = crew::Error::worker_lost("exited with code 3");
    /// assert!(e.is_worker_lost());
    /// assert!(!e.is_panic());
    /// ```
    pub fn is_worker_lost(&self) -> bool {
        matches!(self.inner.kind, Kind::WorkerLost { .. })
    }

    /// True if the task was refused because its pool was closed.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use crew::core::{Backend, Future, Star, Threads, engine::spawn_call};
    /// let threads = Threads::new(1)?;
    /// threads.close();
    /// let (promise, future) = Future::pending();
    /// spawn_call(&threads, Star(|| 1), (), promise);
    /// assert!(future.result().unwrap_err().is_shutdown());
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn is_shutdown(&self) -> bool {
        matches!(self.inner.kind, Kind::Shutdown)
    }

    /// True if a call was given an argument it cannot accept.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// assert!(crew::core::Threads::new(0).unwrap_err().is_invalid_input());
    /// assert!(crew::core::resolve_n_jobs(0).unwrap_err().is_invalid_input());
    /// ```
    pub fn is_invalid_input(&self) -> bool {
        matches!(self.inner.kind, Kind::InvalidInput { .. })
    }

    /// True if an operating-system call failed.
    ///
    /// The operating system's error is the [`source`](std::error::Error::source).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use std::error::Error as _;
    /// let e = crew::Error::io("spawning a worker thread", std::io::ErrorKind::OutOfMemory.into());
    /// assert!(e.is_io());
    /// assert_eq!(e.to_string(), "i/o error while spawning a worker thread");
    /// assert!(e.source().is_some());
    /// ```
    pub fn is_io(&self) -> bool {
        matches!(self.inner.kind, Kind::Io { .. })
    }

    /// True if the parent and a worker could not understand each other.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let e = crew::Error::protocol("truncated frame");
    /// assert!(e.is_protocol());
    /// assert_eq!(e.to_string(), "protocol error: truncated frame");
    /// ```
    pub fn is_protocol(&self) -> bool {
        matches!(self.inner.kind, Kind::Protocol { .. })
    }

    /// The panic message, if the task panicked.
    ///
    /// A payload that is neither a `&str` nor a `String` gives
    /// `"a non-string panic payload"`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::Error;
    /// assert_eq!(Error::panic("boom").panic_message(), Some("boom"));
    /// assert_eq!(Error::timeout().panic_message(), None);
    /// let odd = std::panic::catch_unwind(|| std::panic::panic_any(7)).unwrap_err();
    /// assert_eq!(Error::from_panic(odd).panic_message(), Some("a non-string panic payload"));
    /// ```
    pub fn panic_message(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Panicked { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The backtrace of a panic, when one was captured.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::Error;
    /// assert_eq!(Error::panic("x").backtrace(), None);
    /// let e = Error::panic_with_backtrace("x", "0: my_task\n1: main".into());
    /// assert!(e.backtrace().unwrap().starts_with("0: my_task"));
    /// ```
    pub fn backtrace(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Panicked { backtrace, .. } => backtrace.as_deref(),
            _ => None,
        }
    }

    /// The error's detail without its kind: the panic message, the cause of
    /// a lost worker, the protocol or input complaint (empty for kinds
    /// without detail).
    ///
    /// With [`kind_code`](Error::kind_code) and [`from_code`](Error::from_code)
    /// it lets an error cross a process boundary.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::Error;
    /// assert_eq!(Error::worker_lost("exited with code 3").detail(), "exited with code 3");
    /// assert_eq!(Error::timeout().detail(), "");
    /// ```
    pub fn detail(&self) -> String {
        match &self.inner.kind {
            Kind::Panicked { message, .. } => message.clone(),
            Kind::WorkerLost { cause } => cause.clone(),
            Kind::InvalidInput { message } | Kind::Protocol { message } => message.clone(),
            Kind::Io { context, source } => format!("{context}: {source}"),
            Kind::TimedOut | Kind::Cancelled | Kind::Shutdown => String::new(),
        }
    }

    /// A number naming the error's kind, stable across processes of one
    /// build; see [`detail`](Error::detail).
    ///
    /// The worker and the index do not travel with it: set them again with
    /// [`with_worker`](Error::with_worker) and [`with_index`](Error::with_index).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::Error;
    /// for e in [Error::timeout(), Error::shutdown(), Error::protocol("bad frame")] {
    ///     let back = Error::from_code(e.kind_code(), e.detail(), None);
    ///     assert_eq!(back.kind_code(), e.kind_code());
    ///     assert_eq!(back.to_string(), e.to_string());
    /// }
    /// ```
    pub fn kind_code(&self) -> u8 {
        match &self.inner.kind {
            Kind::Panicked { .. } => 0,
            Kind::TimedOut => 1,
            Kind::Cancelled => 2,
            Kind::WorkerLost { .. } => 3,
            Kind::Shutdown => 4,
            Kind::InvalidInput { .. } => 5,
            Kind::Io { .. } => 6,
            Kind::Protocol { .. } => 7,
        }
    }

    /// Rebuilds an error from [`kind_code`](Error::kind_code),
    /// [`detail`](Error::detail) and [`backtrace`](Error::backtrace).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let e = crew::Error::panic("x");
    /// let back = crew::Error::from_code(e.kind_code(), e.detail(), None);
    /// assert!(back.is_panic());
    /// assert_eq!(back.panic_message(), Some("x"));
    /// ```
    pub fn from_code(code: u8, detail: String, backtrace: Option<String>) -> Error {
        match code {
            0 => Error::new(Kind::Panicked {
                message: detail,
                backtrace,
            }),
            1 => Error::timeout(),
            2 => Error::cancelled(),
            3 => Error::worker_lost(detail),
            4 => Error::shutdown(),
            5 => Error::invalid_input(detail),
            6 => Error::io(detail, std::io::Error::other("error in a worker process")),
            _ => Error::protocol(detail),
        }
    }

    /// How the worker was lost (`"killed by signal 9 (SIGKILL)"`), if it was.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::Error;
    /// let e = Error::worker_lost("killed by signal 9 (SIGKILL)");
    /// assert_eq!(e.worker_lost_cause(), Some("killed by signal 9 (SIGKILL)"));
    /// assert_eq!(Error::panic("x").worker_lost_cause(), None);
    /// ```
    pub fn worker_lost_cause(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::WorkerLost { cause } => Some(cause),
            _ => None,
        }
    }

    /// The worker that ran the task, when known.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use crew::core::{Star, Threads, engine::call_blocking};
    /// let threads = Threads::new(1)?;
    /// let e = call_blocking(&threads, Star(|| -> () { panic!("oops") }), ()).unwrap_err();
    /// assert_eq!(e.worker(), Some(0));
    /// assert_eq!(e.to_string(), "task panicked: oops (worker 0)");
    /// assert_eq!(crew::core::Error::timeout().worker(), None);
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn worker(&self) -> Option<usize> {
        self.inner.worker
    }

    /// The task's position in its map, when the task was part of one.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
    /// use crew::core::engine::{MapOptions, map_blocking};
    /// use crew::core::{Threads, Unary};
    /// let threads = Threads::new(2)?;
    /// let task = Unary(|x: u32| if x == 3 { panic!("three") } else { x });
    /// let err = map_blocking(&threads, task, 0..8, &MapOptions::default()).unwrap_err();
    /// assert_eq!(err.first().index(), Some(3));
    /// assert_eq!(crew::core::Error::panic("x").index(), None);
    /// # Ok::<(), crew::core::Error>(())
    /// ```
    pub fn index(&self) -> Option<usize> {
        self.inner.index
    }
}

impl Kind {
    fn clone_kind(&self) -> Kind {
        match self {
            Kind::Panicked { message, backtrace } => Kind::Panicked {
                message: message.clone(),
                backtrace: backtrace.clone(),
            },
            Kind::TimedOut => Kind::TimedOut,
            Kind::Cancelled => Kind::Cancelled,
            Kind::WorkerLost { cause } => Kind::WorkerLost {
                cause: cause.clone(),
            },
            Kind::Shutdown => Kind::Shutdown,
            Kind::InvalidInput { message } => Kind::InvalidInput {
                message: message.clone(),
            },
            Kind::Io { context, source } => Kind::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Kind::Protocol { message } => Kind::Protocol {
                message: message.clone(),
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.inner.index {
            write!(f, "task {index}: ")?;
        }
        match &self.inner.kind {
            Kind::Panicked { message, .. } => write!(f, "task panicked: {message}")?,
            Kind::TimedOut => f.write_str("task timed out")?,
            Kind::Cancelled => f.write_str("task cancelled")?,
            Kind::WorkerLost { cause } => match self.inner.worker {
                Some(w) => write!(f, "worker {w} lost: {cause}")?,
                None => write!(f, "worker lost: {cause}")?,
            },
            Kind::Shutdown => f.write_str("pool is shut down")?,
            Kind::InvalidInput { message } => write!(f, "invalid input: {message}")?,
            Kind::Io { context, .. } => write!(f, "i/o error while {context}")?,
            Kind::Protocol { message } => write!(f, "protocol error: {message}")?,
        }
        if let (Some(w), false) = (self.inner.worker, self.is_worker_lost()) {
            write!(f, " (worker {w})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("worker", &self.inner.worker)
            .field("index", &self.inner.index)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.kind {
            Kind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The error of a `map` in which at least one task failed.
///
/// Every task of the map still ran: the error keeps each task's outcome, in
/// input order, so the results that did arrive are not lost. It derefs to
/// nothing; ask [`first`](MapError::first) for the earliest failure (by input
/// position) or take [`into_results`](MapError::into_results).
///
/// # Examples
///
/// ```
/// # use crew_core as crew;
/// use crew::{Error, MapError};
///
/// let err = MapError::new(vec![Ok(1), Err(Error::panic("boom").with_index(1)), Ok(9)]);
/// assert_eq!(err.failed(), 1);
/// assert!(err.first().is_panic());
/// assert_eq!(err.to_string(), "1 of 3 tasks failed, the first at position 1");
/// use std::error::Error as _;
/// assert_eq!(err.source().unwrap().to_string(), "task 1: task panicked: boom");
/// let values: Vec<i32> = err.into_results().into_iter().flatten().collect();
/// assert_eq!(values, [1, 9]);
/// ```
pub struct MapError<R> {
    results: Vec<Result<R>>,
    first: usize,
    failed: usize,
    /// The map failed as a whole (no task ran): it shows as that error.
    whole: bool,
}

impl<R> MapError<R> {
    /// Wraps the per-task outcomes of a map.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Error, MapError};
    /// let err = MapError::new(vec![Ok('a'), Err(Error::timeout())]);
    /// assert_eq!((err.len(), err.failed()), (2, 1));
    /// ```
    ///
    /// # Panics
    ///
    /// If no outcome is an error: a map without failures is not an error.
    pub fn new(results: Vec<Result<R>>) -> MapError<R> {
        let first = results
            .iter()
            .position(|r| r.is_err())
            .expect("MapError::new needs at least one failed task");
        let failed = results.iter().filter(|r| r.is_err()).count();
        MapError {
            results,
            first,
            failed,
            whole: false,
        }
    }

    /// The first failure in input order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Error, MapError};
    /// let err = MapError::new(vec![Ok(0), Err(Error::timeout()), Err(Error::panic("later"))]);
    /// assert!(err.first().is_timeout());
    /// ```
    pub fn first(&self) -> &Error {
        match &self.results[self.first] {
            Err(e) => e,
            Ok(_) => unreachable!("`first` indexes a failed task"),
        }
    }

    /// The number of tasks that failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Error, MapError};
    /// let err = MapError::new(vec![Err(Error::cancelled()), Ok(1), Err(Error::cancelled())]);
    /// assert_eq!(err.failed(), 2);
    /// ```
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// The number of tasks in the map.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Error, MapError};
    /// let err = MapError::new(vec![Ok(1), Ok(2), Err(Error::timeout())]);
    /// assert_eq!(err.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// Always false: a map error has at least one task.
    ///
    /// Present for symmetry with [`len`](MapError::len).
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let err: crew::MapError<u8> = crew::Error::shutdown().into();
    /// assert!(!err.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// Every failure, with its position in the input.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Error, MapError};
    /// let err = MapError::new(vec![Ok(1), Err(Error::panic("a")), Ok(3), Err(Error::panic("b"))]);
    /// let at: Vec<usize> = err.errors().map(|(i, _)| i).collect();
    /// assert_eq!(at, [1, 3]);
    /// ```
    pub fn errors(&self) -> impl Iterator<Item = (usize, &Error)> {
        self.results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
    }

    /// Every task's outcome, in input order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Error, MapError};
    /// let err = MapError::new(vec![Ok(10), Err(Error::timeout())]);
    /// assert_eq!(*err.results()[0].as_ref().unwrap(), 10);
    /// assert!(err.results()[1].is_err());
    /// ```
    pub fn results(&self) -> &[Result<R>] {
        &self.results
    }

    /// Every task's outcome, in input order, by value.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Error, MapError};
    /// let err = MapError::new(vec![Ok(1), Err(Error::timeout()), Ok(3)]);
    /// let retried: Vec<i32> = err.into_results().into_iter().map(|r| r.unwrap_or(0)).collect();
    /// assert_eq!(retried, [1, 0, 3]);
    /// ```
    pub fn into_results(self) -> Vec<Result<R>> {
        self.results
    }

    /// The first failure, dropping the results.
    ///
    /// `?` does the same when it turns a `MapError` into an [`Error`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// use crew::{Error, MapError};
    /// let err = MapError::new(vec![Ok(1), Err(Error::panic("first")), Err(Error::timeout())]);
    /// assert_eq!(err.into_first().panic_message(), Some("first"));
    /// ```
    pub fn into_first(mut self) -> Error {
        match self.results.swap_remove(self.first) {
            Err(e) => e,
            Ok(_) => unreachable!("`first` indexes a failed task"),
        }
    }
}

impl<R> From<Error> for MapError<R> {
    /// A map that failed as a whole (for example, refused by a closed pool):
    /// a single failed outcome with no results. It displays as that error
    /// (no task failed), whose source is its own.
    ///
    /// # Examples
    ///
    /// ```
    /// # use crew_core as crew;
    /// let err: crew::MapError<u8> = crew::Error::shutdown().into();
    /// assert_eq!(err.to_string(), "pool is shut down");
    /// assert!(err.first().is_shutdown());
    /// ```
    fn from(e: Error) -> MapError<R> {
        MapError {
            results: vec![Err(e)],
            first: 0,
            failed: 1,
            whole: true,
        }
    }
}

impl<R> From<MapError<R>> for Error {
    fn from(e: MapError<R>) -> Error {
        e.into_first()
    }
}

impl<R> fmt::Display for MapError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.whole {
            // Not a task's failure: "1 of 1 tasks failed" would mislead.
            return fmt::Display::fmt(self.first(), f);
        }
        // The first failure itself is the `source()`; not repeated here.
        write!(
            f,
            "{} of {} tasks failed, the first at position {}",
            self.failed,
            self.results.len(),
            self.first
        )
    }
}

impl<R> fmt::Debug for MapError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapError")
            .field("tasks", &self.results.len())
            .field("failed", &self.failed)
            .field("first", self.first())
            .finish()
    }
}

impl<R> std::error::Error for MapError<R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if self.whole {
            // Displayed as the error itself: its source comes next.
            return std::error::Error::source(self.first());
        }
        Some(self.first())
    }
}

/// Converts a failure into a value of the error type a result slot holds;
/// lets one slot type serve `Future` (error [`Error`]) and map results
/// (error [`MapError`]).
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Error, FromError, MapError};
/// let one = crew::core::Result::<u8>::from_error(Error::cancelled());
/// assert!(one.unwrap_err().is_cancelled());
/// let map = Result::<Vec<u8>, MapError<u8>>::from_error(Error::shutdown());
/// assert!(map.unwrap_err().first().is_shutdown());
/// ```
pub trait FromError: Sized {
    /// Builds the failed value.
    fn from_error(e: Error) -> Self;
}

impl<T, E: From<Error>> FromError for std::result::Result<T, E> {
    fn from_error(e: Error) -> Self {
        Err(E::from(e))
    }
}

#[cfg(test)]
mod test;
