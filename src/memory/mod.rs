//! `Memory`: joblib's on-disk result cache. A cached function's results are
//! kept in a folder, keyed by the function's identity and a hash of its
//! arguments, so a re-run computes only what changed. Entries are written
//! whole or not at all and checked when read (format in `README.md`).

mod entry;
mod key;

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crew_core::{Backend, Call, Error, MapError, Result, Runs, Star};
use memmap2::Mmap;

use crate::{Delayed, Pool};
use entry::{Found, Opened};
pub use key::Args;
use key::Identity;

/// The sub-folder of the cache folder that crew owns: [`Memory::clear`]
/// removes it and nothing else, so a cache pointed at a busy folder never
/// deletes the user's files.
const OWN: &str = "crew-memory";

/// Temporary files older than this are leftovers of a writer that died;
/// [`Memory::reduce_size`] removes them.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// A result cache on disk, as joblib's `Memory`: wraps functions so that a
/// call with arguments seen before returns the stored result instead of
/// running again.
///
/// An entry's key is the function's identity and a hash of its arguments:
///
/// * the identity is the function's path (`std::any::type_name`, or the
///   name given to [`Cached::name`]), the fingerprint of its signature (as
///   the task registry computes it), and the fingerprint of the build that
///   defines it, so that a rebuilt program never reads results of other
///   code ([`Cached::version`] replaces the build fingerprint by a version
///   you bump yourself, to keep results across rebuilds);
/// * the arguments are hashed from their postcard encoding with XXH3: the
///   same in every process and every run, never seeded per process.
///
/// Any number of processes and threads may use one folder at once (worker
/// processes of a pool read and write it too): an entry is written to a
/// temporary file and renamed into place, so a reader sees a whole entry or
/// none. Every entry carries a versioned header and checksums: a truncated,
/// half-written, damaged or foreign-version entry is reported once (on
/// standard error) and computed again, never returned (a large entry used
/// in place through [`Cached::call_mapped`] is checked by its header only:
/// see there). A folder that cannot
/// be written (read-only, full) is reported once; calls still compute and
/// return their values.
///
/// Cloning gives another handle to the same cache and counters.
///
/// # Examples
///
/// ```
/// fn slow_square(x: u64) -> u64 { x * x }
///
/// let dir = std::env::temp_dir().join(format!("my-cache-{}", std::process::id()));
/// let mem = crew::Memory::new(&dir)?;
/// let square = mem.cache(slow_square);
/// assert_eq!(square.call((12,)), 144); // computed and stored
/// assert_eq!(square.call((12,)), 144); // read back
/// assert_eq!(mem.stats().hits, 1);
/// assert!(square.check_call_in_cache(&(12,)));
/// mem.clear()?; // removes what the cache stored
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Memory {
    location: Arc<PathBuf>,
    bytes_limit: Option<u64>,
    verbose: u32,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    write_errors: AtomicU64,
    saved_ns: AtomicU64,
}

/// What a [`Memory`] did in this process: [`Memory::stats`].
///
/// Calls run by worker processes count in those processes; the calls of a
/// map that were found in the cache before dispatch count here.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let mem = crew::Memory::new(dir.path())?;
/// mem.call(|x: u8| x + 1, (1,));
/// let stats = mem.stats();
/// assert_eq!((stats.hits, stats.misses), (0, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that ran the function (including forced calls).
    pub misses: u64,
    /// Entries found damaged, truncated or of another format version (each
    /// was computed again).
    pub corrupt: u64,
    /// Results that could not be stored (read-only or full folder, …).
    pub write_errors: u64,
    /// The time the cached results had taken to compute, summed over the
    /// hits: what the cache saved.
    pub saved: Duration,
}

/// Prints `message` on standard error unless a warning about `what` was
/// printed before in this process: each damaged entry, and each folder
/// that cannot be written, is reported once however often it is met (a
/// read-only cache cannot replace a damaged entry; a worker process sees a
/// fresh handle per task).
fn warn_once(what: &Path, message: impl FnOnce() -> String) {
    static SEEN: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(what.to_path_buf())
    {
        eprintln!("crew::Memory: warning: {}", message());
    }
}

impl Memory {
    /// Opens (creating it if needed) a cache in the folder `location`.
    ///
    /// Entries go to `location/crew-memory/`. A folder that exists but
    /// cannot be written is accepted: its entries are read, and each call
    /// that misses computes its value and reports, once, that it could not
    /// store it.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path().join("cache"))?;
    /// assert!(mem.location().ends_with("cache"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_io` if the folder does not exist and cannot be created;
    /// `is_invalid_input` if `location` is a file.
    pub fn new(location: impl AsRef<Path>) -> Result<Memory> {
        let location = location.as_ref().to_path_buf();
        if location.exists() && !location.is_dir() {
            return Err(Error::invalid_input(format!(
                "the cache location {} is not a folder",
                location.display()
            )));
        }
        if let Err(e) = std::fs::create_dir_all(&location)
            && !location.is_dir()
        {
            return Err(Error::io(
                format!("cannot create the cache folder {}", location.display()),
                e,
            ));
        }
        Ok(Memory {
            location: Arc::new(location),
            bytes_limit: None,
            verbose: 0,
            shared: Arc::default(),
        })
    }

    /// Keeps the cache under `bytes` (joblib's `bytes_limit`): after each
    /// store, the least recently used entries are removed until the cache
    /// fits ([`reduce_size`](Memory::reduce_size)).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?.bytes_limit(1 << 30);
    /// assert_eq!(mem.limit(), Some(1 << 30));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bytes_limit(mut self, bytes: u64) -> Memory {
        self.bytes_limit = Some(bytes);
        self
    }

    /// The limit set by [`bytes_limit`](Memory::bytes_limit).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// assert_eq!(crew::Memory::new(dir.path())?.limit(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn limit(&self) -> Option<u64> {
        self.bytes_limit
    }

    /// Logs to standard error, as joblib's `verbose`: at 1 each computed
    /// and stored result (with how long it took), at 2 each hit too.
    /// Warnings are printed at every level.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?.verbose(1);
    /// mem.call(|x: u8| x, (1,)); // prints "[Memory] …: computed in …"
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verbose(mut self, level: u32) -> Memory {
        self.verbose = level;
        self
    }

    /// The folder given to [`new`](Memory::new).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// assert_eq!(crew::Memory::new(dir.path())?.location(), dir.path());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn location(&self) -> &Path {
        &self.location
    }

    fn root(&self) -> PathBuf {
        self.location.join(OWN)
    }

    /// Wraps `f` so that its calls go through the cache (joblib's
    /// `memory.cache(f)`).
    ///
    /// `f` is a function of up to 8 arguments whose arguments and result
    /// are serde types. To run the cached function on a process pool it
    /// must be a fn item or a closure that captures nothing, as every
    /// process task.
    ///
    /// # Examples
    ///
    /// ```
    /// fn area(w: u32, h: u32) -> u32 { w * h }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let area = mem.cache(area);
    /// assert_eq!(area.call((3, 4)), 12);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cache<F: 'static>(&self, f: F) -> Cached<F> {
        Cached {
            memory: self.clone(),
            f: Star(f),
            name: None,
            version: None,
            id: Identity::of::<F>(None, None),
            ignore: Vec::new(),
        }
    }

    /// Calls `f(args…)` through the cache: `mem.cache(f).call(args)`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// assert_eq!(mem.call(|a: u8, b: u8| a * b, (6, 7)), 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call<F, A, R>(&self, f: F, args: A) -> R
    where
        F: 'static,
        Star<F>: Call<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.cache(f).call(args)
    }

    /// Removes every entry (joblib's `memory.clear()`): the folder's
    /// `crew-memory/` sub-folder, nothing else.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let double = mem.cache(|x: i32| 2 * x);
    /// double.call((1,));
    /// mem.clear()?;
    /// assert!(!double.check_call_in_cache(&(1,)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_io` if something could not be removed.
    pub fn clear(&self) -> Result<()> {
        remove_tree(&self.root())
    }

    /// The bytes the entries take on disk.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// assert_eq!(mem.size(), 0);
    /// mem.call(|n: usize| vec![0u8; n], (1000,));
    /// assert!(mem.size() > 1000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn size(&self) -> u64 {
        self.entries().iter().map(|e| e.size).sum()
    }

    fn entries(&self) -> Vec<OnDisk> {
        let mut out = Vec::new();
        let Ok(folders) = std::fs::read_dir(self.root()) else {
            return out;
        };
        for folder in folders.flatten() {
            let Ok(files) = std::fs::read_dir(folder.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let name = name.to_string_lossy();
                let Ok(meta) = file.metadata() else { continue };
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(OnDisk {
                    path: file.path(),
                    size: meta.len(),
                    used,
                    temp: name.starts_with(entry::TEMP_PREFIX),
                });
            }
        }
        out
    }

    /// Removes the least recently used entries until the cache is within
    /// its [`bytes_limit`](Memory::bytes_limit) (joblib's
    /// `reduce_size()`), and temporary files left by writers that died;
    /// returns the bytes freed. Without a limit only the leftovers go.
    ///
    /// "Used" is the last read or write: a hit refreshes the entry's
    /// modification time (when it is more than 10 s old, to save a system
    /// call on most hits).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let block = mem.cache(|n: usize| vec![1u8; n]);
    /// block.call((4000,));
    /// block.call((4001,));
    /// let limited = mem.clone().bytes_limit(5000);
    /// assert!(limited.reduce_size()? > 0);
    /// assert!(mem.size() <= 5000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_io` if an entry could not be removed.
    pub fn reduce_size(&self) -> Result<u64> {
        let mut entries = self.entries();
        let now = SystemTime::now();
        let mut freed = 0;
        let mut remove = |e: &OnDisk| -> Result<()> {
            match std::fs::remove_file(&e.path) {
                Ok(()) => {
                    freed += e.size;
                    Ok(())
                }
                // Another process removed or replaced it first.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(err) => Err(Error::io(
                    format!("cannot remove cache entry {}", e.path.display()),
                    err,
                )),
            }
        };
        for e in entries.iter().filter(|e| e.temp) {
            if now.duration_since(e.used).unwrap_or_default() > STALE_TEMP {
                remove(e)?;
            }
        }
        entries.retain(|e| !e.temp);
        if let Some(limit) = self.bytes_limit {
            entries.sort_by_key(|e| e.used);
            let mut total: u64 = entries.iter().map(|e| e.size).sum();
            for e in &entries {
                if total <= limit {
                    break;
                }
                remove(e)?;
                total -= e.size;
            }
        }
        Ok(freed)
    }

    /// What this handle and its clones did so far in this process.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let inc = mem.cache(|x: u32| x + 1);
    /// inc.call((1,));
    /// inc.call((1,));
    /// assert_eq!((mem.stats().hits, mem.stats().misses), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> CacheStats {
        let s = &self.shared;
        CacheStats {
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            corrupt: s.corrupt.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            saved: Duration::from_nanos(s.saved_ns.load(Ordering::Relaxed)),
        }
    }

    fn log(&self, level: u32, message: impl FnOnce() -> String) {
        if self.verbose >= level {
            eprintln!("[Memory] {}", message());
        }
    }

    fn hit(&self, id: &Identity, path: &Path, compute: Duration) {
        self.shared.hits.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(compute.as_nanos()).unwrap_or(u64::MAX);
        self.shared.saved_ns.fetch_add(ns, Ordering::Relaxed);
        self.log(2, || {
            format!(
                "{}: loaded {} (computing it took {compute:.1?})",
                id.name,
                short(path)
            )
        });
    }

    /// Stores `value`; a failure is counted and reported once per cache.
    fn store<R: Serialize>(&self, id: &Identity, slot: &Slot, value: &R, compute: Duration) {
        let written = postcard::to_allocvec(value)
            .map_err(|e| format!("cannot serialize the result: {e}"))
            .and_then(|bytes| {
                entry::write(&slot.path, slot.func, &bytes, compute)
                    .map_err(|e| format!("cannot write {}: {e}", slot.path.display()))
            });
        match written {
            Ok(()) => {
                self.log(1, || {
                    format!(
                        "{}: computed in {compute:.1?}, stored as {}",
                        id.name,
                        short(&slot.path)
                    )
                });
                if self.bytes_limit.is_some()
                    && let Err(e) = self.reduce_size()
                {
                    self.log(1, || format!("reduce_size: {e}"));
                }
            }
            Err(why) => {
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                warn_once(&self.location, || {
                    format!(
                        "results are computed but not cached in {}: {why}",
                        self.location.display()
                    )
                });
            }
        }
    }

    /// The entry at `slot`, opened and its header checked, if it is
    /// there; a damaged one is reported and counted.
    fn open(&self, slot: &Slot) -> Option<Opened> {
        match entry::open(&slot.path, slot.func) {
            Ok(Found::Whole(e)) => Some(e),
            Ok(Found::Missing) => None,
            Ok(Found::Corrupt(why)) => {
                self.corrupt(&slot.path, &why);
                None
            }
            Err(e) => {
                self.corrupt(&slot.path, &format!("cannot read it: {e}"));
                None
            }
        }
    }

    /// Counts a hit on `e` if `got` is a value, else reports the entry.
    fn take<V>(&self, id: &Identity, slot: &Slot, e: &Opened, got: Result<V, String>) -> Option<V> {
        match got {
            Ok(v) => {
                e.touch();
                self.hit(id, &slot.path, e.compute);
                Some(v)
            }
            Err(why) => {
                self.corrupt(&slot.path, &why);
                None
            }
        }
    }

    /// The entry at `slot`, read, checked and decoded, if it is there and
    /// whole; a damaged one is reported and counted.
    fn load<R: DeserializeOwned + 'static>(&self, id: &Identity, slot: &Slot) -> Option<R> {
        let e = self.open(slot)?;
        self.take(id, slot, &e, read_value::<R>(&e))
    }

    /// As [`load`](Memory::load), for a `Vec<T>` result used in place
    /// from a map of its entry where it can be. A mapped entry is checked
    /// by its header (magic, version, header checksum, length, function
    /// key), not by its payload's checksum, which would read every page
    /// the map is there to leave unread (see [`Cached::call_mapped`]).
    fn load_mapped<T: MapElement>(&self, id: &Identity, slot: &Slot) -> Option<Mapped<T>> {
        let e = self.open(slot)?;
        let got = match map_values::<T>(&e) {
            Some(mapped) => mapped,
            None => read_value::<Vec<T>>(&e).map(Mapped::owned),
        };
        self.take(id, slot, &e, got)
    }

    fn corrupt(&self, path: &Path, why: &str) {
        self.shared.corrupt.fetch_add(1, Ordering::Relaxed);
        warn_once(path, || {
            format!(
                "ignoring cache entry {}: {why}; computing it again",
                path.display()
            )
        });
    }

    /// The whole call: look up, else compute and store.
    fn run<F, A, R>(&self, id: &Identity, ignore: &[usize], f: &Star<F>, args: A, force: bool) -> R
    where
        Star<F>: Call<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned + 'static,
    {
        let slot = self.slot::<A, R>(id, ignore, &args);
        if !force && let Some(v) = slot.as_ref().and_then(|s| self.load(id, s)) {
            return v;
        }
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let value = f.call(args);
        if let Some(slot) = &slot {
            self.store(id, slot, &value, start.elapsed());
        }
        value
    }

    /// Where the entry of `f(args)` lives; `None` (reported once) if an
    /// argument cannot be serialized, in which case the call is not cached.
    fn slot<A: Args, R>(&self, id: &Identity, ignore: &[usize], args: &A) -> Option<Slot> {
        if let Some(&bad) = ignore.iter().find(|&&i| i >= A::ARITY) {
            panic!(
                "crew::Memory: cannot ignore argument {bad} of {}, which takes {} arguments",
                id.name,
                A::ARITY
            );
        }
        let result = std::any::type_name::<R>();
        if result.contains("crew_shm::") {
            // A handle serializes as (process, fd): storing it would store
            // a pointer to memory that dies with this run, not the data.
            warn_once(Path::new(result), || {
                format!(
                    "results of type {result} are handles to shared memory, not cached \
                     (Cached::call_array stores an Array's contents)"
                )
            });
            return None;
        }
        let Some(hash) = key::args_hash(args, ignore) else {
            warn_once(Path::new(&id.name), || {
                format!(
                    "the arguments of {} cannot be serialized; its calls are not cached",
                    id.name
                )
            });
            return None;
        };
        let func = id.key::<A, R>();
        let path = self
            .root()
            .join(id.folder())
            .join(format!("{func:016x}-{hash:032x}{}", entry::SUFFIX));
        Some(Slot { path, func })
    }
}

/// An entry's file and the function key its header must hold.
#[derive(Debug)]
struct Slot {
    path: PathBuf,
    func: u64,
}

struct OnDisk {
    path: PathBuf,
    size: u64,
    used: SystemTime,
    temp: bool,
}

fn short(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().chars().take(24).collect())
        .unwrap_or_default()
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
    }
}

/// A function whose calls go through a [`Memory`]: made by
/// [`Memory::cache`].
///
/// Call it with a tuple of arguments: [`call`](Cached::call). Run it over
/// many inputs on a pool with [`map`](Cached::map),
/// [`starmap`](Cached::starmap) and the lazy [`imap`](Cached::imap) and
/// [`imap_unordered`](Cached::imap_unordered) (the inputs are looked up in
/// the cache by the calling process; only those not in it are computed by
/// the workers, which store their results in the same folder), or with
/// [`Parallel`](crate::Parallel) through [`delayed`](Cached::delayed).
///
/// # Examples
///
/// ```
/// fn cube(x: i64) -> i64 { x * x * x }
///
/// # let dir = tempfile::tempdir()?;
/// let mem = crew::Memory::new(dir.path())?;
/// let cube = mem.cache(cube);
/// let pool = crew::Pool::processes(2)?;
/// assert_eq!(cube.map(&pool, 0..4)?, [0, 1, 8, 27]);
/// // A second map finds every result in the cache.
/// assert_eq!(cube.map(&pool, 0..4)?, [0, 1, 8, 27]);
/// assert_eq!(mem.stats().hits, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Cached<F> {
    memory: Memory,
    f: Star<F>,
    name: Option<String>,
    version: Option<String>,
    id: Identity,
    ignore: Vec<usize>,
}

impl<F> std::fmt::Debug for Cached<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("function", &self.id.name)
            .field("ignore", &self.ignore)
            .field("location", &self.memory.location)
            .finish()
    }
}

impl<F: 'static> Cached<F> {
    /// Leaves the arguments at these positions (0-based) out of the key,
    /// as joblib's `ignore=[…]`: for arguments that do not change the
    /// result, such as a verbosity flag.
    ///
    /// # Examples
    ///
    /// ```
    /// fn scaled(x: f64, log: bool) -> f64 {
    ///     if log { eprintln!("scaling {x}"); }
    ///     2.0 * x
    /// }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let scaled = mem.cache(scaled).ignore([1]);
    /// scaled.call((1.5, true));
    /// assert!(scaled.check_call_in_cache(&(1.5, false)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    ///
    /// A call panics if a position is not below the number of arguments.
    pub fn ignore(mut self, positions: impl IntoIterator<Item = usize>) -> Cached<F> {
        self.ignore.extend(positions);
        self.ignore.sort_unstable();
        self.ignore.dedup();
        self
    }

    /// Names the function in its key in place of its path: results stay
    /// found if the function moves to another module, and closures get a
    /// name a person can read in the cache folder.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// mem.cache(|x: u8| x + 1).name("inc").version("1").call((1,));
    /// // Another closure under the same name, signature and version shares
    /// // the entries: the name is a promise that it computes the same.
    /// assert!(mem.cache(|y: u8| 1 + y).name("inc").version("1").check_call_in_cache(&(1,)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Cached<F> {
        self.name = Some(name.into());
        self.id = Identity::of::<F>(self.name.as_deref(), self.version.as_deref());
        self
    }

    /// Keys results by `version` in place of the build's fingerprint, so
    /// that they survive rebuilds of the program: change the version when
    /// the function's code changes what it computes.
    ///
    /// # Examples
    ///
    /// ```
    /// fn model(x: f64) -> f64 { x.sin() }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// mem.cache(model).version("2024-06").call((1.0,));
    /// assert!(mem.cache(model).version("2024-06").check_call_in_cache(&(1.0,)));
    /// assert!(!mem.cache(model).version("2024-07").check_call_in_cache(&(1.0,)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn version(mut self, version: impl Into<String>) -> Cached<F> {
        self.version = Some(version.into());
        self.id = Identity::of::<F>(self.name.as_deref(), self.version.as_deref());
        self
    }

    /// Returns the stored result of `f(args…)`, or computes, stores and
    /// returns it.
    ///
    /// Never fails because of the cache: a damaged entry is reported and
    /// computed again, and a result that cannot be stored is still
    /// returned.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let words = mem.cache(|s: String| s.split(' ').count());
    /// assert_eq!(words.call(("a b c".to_string(),)), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If the function panics (nothing is stored), or if an
    /// [`ignore`](Cached::ignore)d position is out of range.
    pub fn call<A, R>(&self, args: A) -> R
    where
        Star<F>: Call<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.memory
            .run(&self.id, &self.ignore, &self.f, args, false)
    }

    /// Computes `f(args…)` even if it is cached, and stores the result
    /// (joblib's `func.call(…)`): per-call `force`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let pid = mem.cache(|_: u8| std::process::id());
    /// pid.call((0,));
    /// pid.call_forced((0,));
    /// assert_eq!(mem.stats().misses, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    ///
    /// As [`call`](Cached::call).
    pub fn call_forced<A, R>(&self, args: A) -> R
    where
        Star<F>: Call<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.memory.run(&self.id, &self.ignore, &self.f, args, true)
    }

    /// As [`call`](Cached::call) for a function returning `Vec<f64>` (or
    /// `Vec<f32>`): a stored result is used in place from a read-only
    /// memory map of its entry, without copying it (joblib's
    /// `mmap_mode="r"`). A computed one is returned as it is.
    ///
    /// A map reads nothing up front: pages come from the page cache (or
    /// the disk) as the values are used, so a hit costs the same for 1 MB
    /// as for 10 GB. The price is that a mapped entry is checked by its
    /// header (magic, format version, header checksum, length, function
    /// key) and not by its payload's checksum, which would read every
    /// page: a truncated, half-written, foreign or mislabelled entry is
    /// still found and computed again, but bytes damaged inside the
    /// payload by the disk or by another program are handed out as they
    /// are (they are `f64`/`f32` values, so this is never undefined
    /// behaviour). [`call`](Cached::call) and
    /// [`call_array`](Cached::call_array) check every byte; entries
    /// smaller than 1 MiB are read, not mapped, and checked whole here too.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let ramp = mem.cache(|n: usize| (0..n).map(|i| i as f64).collect::<Vec<f64>>());
    /// let first = ramp.call_mapped((1 << 18,));
    /// let again = ramp.call_mapped((1 << 18,));
    /// assert!(!first.is_mapped() && again.is_mapped());
    /// assert_eq!(again[12345], 12345.0);
    /// assert_eq!(&*first, &*again);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    ///
    /// As [`call`](Cached::call).
    pub fn call_mapped<A, T>(&self, args: A) -> Mapped<T>
    where
        Star<F>: Call<A, Vec<T>>,
        A: Args,
        T: MapElement,
    {
        let m = &self.memory;
        let slot = m.slot::<A, Vec<T>>(&self.id, &self.ignore, &args);
        if let Some(hit) = slot.as_ref().and_then(|s| m.load_mapped(&self.id, s)) {
            return hit;
        }
        m.shared.misses.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let value = self.f.call(args);
        if let Some(slot) = &slot {
            m.store(&self.id, slot, &value, start.elapsed());
        }
        Mapped::owned(value)
    }

    /// As [`call`](Cached::call) for a function returning a shared-memory
    /// [`shm::Array`](crate::shm::Array) of `f64` or `f32`: the array's
    /// contents are stored, and a hit fills a fresh `Array` from the entry
    /// (one copy, from the page cache into the shared memory: an `Array` is
    /// memory that worker processes can map, which a cache file is not).
    ///
    /// [`call`](Cached::call) does not cache such results: an `Array`
    /// serializes as a handle to memory of this run, not as its values.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::shm::Array;
    /// fn ramp(n: usize) -> Array<f64> {
    ///     let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
    ///     Array::from_slice(&values).unwrap()
    /// }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let ramp = mem.cache(ramp);
    /// let first = ramp.call_array((1000,))?;
    /// let again = ramp.call_array((1000,))?; // read back into a new Array
    /// assert_eq!(again.to_vec(), first.to_vec());
    /// assert_eq!(mem.stats().hits, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_io` if a stored result is found but no shared memory can be
    /// made for it.
    ///
    /// # Panics
    ///
    /// As [`call`](Cached::call).
    pub fn call_array<A, T>(&self, args: A) -> Result<crate::shm::Array<T>>
    where
        Star<F>: Call<A, crate::shm::Array<T>>,
        A: Args,
        T: MapElement + crate::shm::Pod,
    {
        let m = &self.memory;
        // Keyed as the `Vec<T>` it is stored as.
        let slot = m.slot::<A, Vec<T>>(&self.id, &self.ignore, &args);
        if let Some(slot) = &slot
            && let Some(e) = m.open(slot)
        {
            let read = read_array::<T>(&e)
                .map_err(|e| Error::io("cannot make a shared array for a cached result", e))?;
            if let Some(hit) = m.take(&self.id, slot, &e, read) {
                return Ok(hit);
            }
        }
        m.shared.misses.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let array = self.f.call(args);
        if let Some(slot) = &slot {
            let took = start.elapsed();
            m.store(&self.id, slot, &array.to_vec(), took);
        }
        Ok(array)
    }

    /// True if `f(args…)` has an entry, without running anything (joblib's
    /// `check_call_in_cache`).
    ///
    /// Reads the entry's header, not its whole payload: an entry damaged
    /// past its header is found out by the call that reads it, which then
    /// computes it again.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let neg = mem.cache(|x: i8| -x);
    /// assert!(!neg.check_call_in_cache(&(3,)));
    /// neg.call((3,));
    /// assert!(neg.check_call_in_cache(&(3,)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_call_in_cache<A, R>(&self, args: &A) -> bool
    where
        Star<F>: Call<A, R>,
        A: Args,
    {
        self.memory
            .slot::<A, R>(&self.id, &self.ignore, args)
            .is_some_and(|s| entry::looks_whole(&s.path, s.func))
    }

    /// Removes this function's entries (every signature, this version).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let (a, b) = (mem.cache(|x: u8| x), mem.cache(|x: u8| x + 1));
    /// a.call((1,));
    /// b.call((1,));
    /// a.clear()?;
    /// assert!(!a.check_call_in_cache(&(1,)) && b.check_call_in_cache(&(1,)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `is_io` if something could not be removed.
    pub fn clear(&self) -> Result<()> {
        remove_tree(&self.memory.root().join(self.id.folder()))
    }

    /// The cache this function stores in.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// assert_eq!(mem.cache(|| 1).memory().location(), dir.path());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// What a worker needs to reach this cache: the folder, the function's
    /// identity and options. Travels with every call of
    /// [`map`](Cached::map) and [`delayed`](Cached::delayed).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let h = crew::Memory::new(dir.path())?.cache(|| 1).handle();
    /// assert!(format!("{h:?}").contains("CacheHandle"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle(&self) -> CacheHandle {
        CacheHandle {
            location: self.memory.location.to_path_buf(),
            bytes_limit: self.memory.bytes_limit,
            verbose: self.memory.verbose,
            name: self.id.name.clone(),
            base: self.id.base,
            ignore: self.ignore.clone(),
        }
    }

    /// Looks up many calls at once: the stored results, by position, and
    /// the calls that are missing.
    fn split<A, R>(&self, items: impl IntoIterator<Item = A>) -> (Vec<Option<R>>, Vec<(usize, A)>)
    where
        Star<F>: Call<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned + 'static,
    {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (i, args) in items.into_iter().enumerate() {
            let hit = self
                .memory
                .slot::<A, R>(&self.id, &self.ignore, &args)
                .and_then(|s| self.memory.load(&self.id, &s));
            if hit.is_none() {
                missing.push((i, args));
            }
            found.push(hit);
        }
        (found, missing)
    }

    /// Runs `f(x)` for every item on `pool`, as `pool.map`, through the
    /// cache: the items whose results are stored are read here, only the
    /// others go to the workers, which store what they compute (worker
    /// processes write the same folder).
    ///
    /// # Examples
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let square = mem.cache(square);
    /// square.call((3,));
    /// let pool = crew::Pool::threads(2)?;
    /// assert_eq!(square.map(&pool, [1, 2, 3])?, [1, 4, 9]);
    /// assert_eq!((mem.stats().hits, mem.stats().misses), (1, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As `Pool::map`: a [`MapError`] with every item's outcome if a
    /// computed item failed.
    pub fn map<'s, B, X, R>(
        &self,
        pool: &Pool<B>,
        items: impl IntoIterator<Item = X>,
    ) -> std::result::Result<Vec<R>, MapError<R>>
    where
        B: Backend + Runs<'s, CachedTask<F>, (CacheHandle, (X,)), R>,
        F: Clone + 's,
        Star<F>: Call<(X,), R>,
        (X,): Args,
        X: 's,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap(pool, items.into_iter().map(|x| (x,)))
    }

    /// Runs `f(a, b, …)` for every tuple of arguments on `pool`, as
    /// `pool.starmap`, through the cache (see [`map`](Cached::map)).
    ///
    /// # Examples
    ///
    /// ```
    /// fn power(x: u64, e: u32) -> u64 { x.pow(e) }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let pool = crew::Pool::processes(2)?;
    /// assert_eq!(mem.cache(power).starmap(&pool, [(2, 10), (3, 2)])?, [1024, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`map`](Cached::map).
    pub fn starmap<'s, B, A, R>(
        &self,
        pool: &Pool<B>,
        items: impl IntoIterator<Item = A>,
    ) -> std::result::Result<Vec<R>, MapError<R>>
    where
        B: Backend + Runs<'s, CachedTask<F>, (CacheHandle, A), R>,
        F: Clone + 's,
        Star<F>: Call<A, R>,
        A: Args + 's,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (mut found, missing) = self.split::<A, R>(items);
        if missing.is_empty() {
            return Ok(found
                .into_iter()
                .map(|r| r.expect("every item found"))
                .collect());
        }
        let handle = self.handle();
        let positions: Vec<usize> = missing.iter().map(|(i, _)| *i).collect();
        let task = CachedTask {
            f: self.f.clone(),
            _call: PhantomData,
        };
        // Counted here: the workers' counters are their own.
        self.memory
            .shared
            .misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        let computed = pool.run_map(task, missing.into_iter().map(|(_, a)| (handle.clone(), a)));
        match computed {
            Ok(values) => {
                for (i, v) in positions.into_iter().zip(values) {
                    found[i] = Some(v);
                }
                Ok(found
                    .into_iter()
                    .map(|r| r.expect("every item filled"))
                    .collect())
            }
            Err(e) => {
                let mut results: Vec<Result<R>> = found
                    .into_iter()
                    .map(|r| r.ok_or_else(Error::cancelled))
                    .collect();
                for (i, r) in positions.into_iter().zip(e.into_results()) {
                    results[i] = r.map_err(|e| e.with_index(i));
                }
                Err(MapError::new(results))
            }
        }
    }

    /// A lazy [`map`](Cached::map) whose results come in input order, as
    /// [`Pool::imap`], through the cache: each input is looked up here as
    /// the iterator reads it; a stored result stays here (its worker only
    /// hands back its place in the order, a few bytes), the others are
    /// computed and stored by the workers. As `Pool::imap`, the input is
    /// read only as results are consumed, so an endless input works, and
    /// dropping the iterator cancels the work not started.
    ///
    /// # Examples
    ///
    /// ```
    /// fn cube(x: u64) -> u64 { x * x * x }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let cube = mem.cache(cube);
    /// cube.call((2,));
    /// let pool = crew::Pool::processes(2)?;
    /// let first: Vec<u64> = cube.imap(&pool, 0..).take(4).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 8, 27]);
    /// assert_eq!(mem.stats().hits, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Each item's outcome is a `Result`: an error carries the item's input
    /// position ([`Error::index`]).
    pub fn imap<B, I, X, R>(
        &self,
        pool: &Pool<B>,
        items: I,
    ) -> CachedImap<B, F, Tupled<I::IntoIter>, R>
    where
        I: IntoIterator<Item = X>,
        B: Backend + Runs<'static, CachedTask<F>, ImapJob<(X,)>, ImapOut<R>>,
        F: Clone + Send + Sync,
        Star<F>: Call<(X,), R>,
        (X,): Args,
        X: 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let tupled: fn(X) -> (X,) = |x| (x,);
        self.run_imap(pool, items.into_iter().map(tupled), true)
    }

    /// As [`imap`](Cached::imap), with the results in the order they are
    /// ready (Python's `imap_unordered`): a result found in the cache comes
    /// as soon as a worker has handed back its place, ahead of the calls
    /// still computing.
    ///
    /// # Examples
    ///
    /// ```
    /// fn double(x: u32) -> u32 { 2 * x }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let double = mem.cache(double);
    /// let pool = crew::Pool::threads(2)?;
    /// let mut got: Vec<u32> = double.imap_unordered(&pool, 0..5).collect::<Result<_, _>>()?;
    /// got.sort();
    /// assert_eq!(got, [0, 2, 4, 6, 8]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap_unordered<B, I, X, R>(
        &self,
        pool: &Pool<B>,
        items: I,
    ) -> CachedImap<B, F, Tupled<I::IntoIter>, R>
    where
        I: IntoIterator<Item = X>,
        B: Backend + Runs<'static, CachedTask<F>, ImapJob<(X,)>, ImapOut<R>>,
        F: Clone + Send + Sync,
        Star<F>: Call<(X,), R>,
        (X,): Args,
        X: 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let tupled: fn(X) -> (X,) = |x| (x,);
        self.run_imap(pool, items.into_iter().map(tupled), false)
    }

    fn run_imap<B, I, A, R>(
        &self,
        pool: &Pool<B>,
        items: I,
        ordered: bool,
    ) -> CachedImap<B, F, I, R>
    where
        I: Iterator<Item = A>,
        B: Backend + Runs<'static, CachedTask<F>, ImapJob<A>, ImapOut<R>>,
        F: Clone + Send + Sync,
        Star<F>: Call<A, R>,
        A: Args + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let feed = Feed {
            items: items.enumerate(),
            memory: self.memory.clone(),
            id: self.id.clone(),
            ignore: self.ignore.clone(),
            handle: self.handle(),
            hits: hits.clone(),
        };
        let task = CachedTask {
            f: self.f.clone(),
            _call: PhantomData,
        };
        CachedImap {
            inner: pool.run_imap(task, feed, ordered),
            hits,
        }
    }
}

impl<F: Copy + Send + Sync + 'static> Cached<F> {
    /// A call of the cached function for [`Parallel`](crate::Parallel), as
    /// joblib's `delayed(cached_f)(a, b)`: the worker that runs it looks in
    /// the cache first and stores what it computes.
    ///
    /// The function must capture nothing (a compile-time check), as every
    /// task of `Parallel`.
    ///
    /// # Examples
    ///
    /// ```
    /// fn root(x: f64) -> f64 { x.sqrt() }
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// let root = mem.cache(root);
    /// let calls = || (1..=3).map(|i| root.delayed(((i * i) as f64,)));
    /// let first = crew::Parallel::new().n_jobs(2).run(calls())?;
    /// assert_eq!(first, [1.0, 2.0, 3.0]);
    /// assert!(root.check_call_in_cache(&(4.0,)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delayed<A, R>(
        &self,
        args: A,
    ) -> Delayed<impl Fn(CacheHandle, A) -> R + Copy + Send + Sync + 'static, (CacheHandle, A)>
    where
        Star<F>: Call<A, R>,
        A: Args + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        crate::delayed(run_delayed::<F, A, R>, (self.handle(), args))
    }
}

mod sealed {
    /// A type postcard writes as its raw little-endian bytes, so that a
    /// `Vec` of it is a varint length then the values' bytes: `u8`, `f32`,
    /// `f64`. Every bit pattern is a value and there is no padding, so such
    /// a vector can be filled as bytes.
    pub trait Sealed: Copy + 'static {
        /// Zero, whose bits are all zero.
        const ZERO: Self;
    }
    impl Sealed for u8 {
        const ZERO: u8 = 0;
    }
    impl Sealed for f32 {
        const ZERO: f32 = 0.0;
    }
    impl Sealed for f64 {
        const ZERO: f64 = 0.0;
    }
}
use sealed::Sealed as Raw;

/// An element type that postcard stores as raw little-endian bytes, so
/// that a stored `Vec` of it can be used in place: `f32` and `f64`.
///
/// # Examples
///
/// ```
/// fn takes<T: crew::memory::MapElement>() {}
/// takes::<f64>();
/// ```
pub trait MapElement: Copy + Serialize + DeserializeOwned + sealed::Sealed + 'static {}
impl MapElement for f32 {}
impl MapElement for f64 {}

/// A `Vec<T>` result of [`Cached::call_mapped`]: a read-only view of the
/// cache entry's memory map when it was found in the cache (no copy; pages
/// are read from the page cache as they are used), or the computed vector.
///
/// The cache never writes an entry in place (it replaces entries by
/// renaming), so the mapped values never change under the view. A mapped
/// entry's header is checked, its payload's checksum is not (see
/// [`Cached::call_mapped`]).
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let mem = crew::Memory::new(dir.path())?;
/// let zeros = mem.cache(|n: usize| vec![0f32; n]);
/// let v: crew::memory::Mapped<f32> = zeros.call_mapped((10,));
/// assert_eq!(v.len(), 10);
/// assert_eq!(v.into_vec(), vec![0f32; 10]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Mapped<T> {
    inner: MappedInner<T>,
}

enum MappedInner<T> {
    /// `len` values at byte `at` of `map`, checked aligned and in bounds.
    Map {
        map: Mmap,
        at: usize,
        len: usize,
    },
    Owned(Vec<T>),
}

impl<T> Mapped<T> {
    fn owned(v: Vec<T>) -> Mapped<T> {
        Mapped {
            inner: MappedInner::Owned(v),
        }
    }

    /// True if the values are read in place from the cache's file.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// assert!(!mem.cache(|| vec![1.0f64]).call_mapped(()).is_mapped());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_mapped(&self) -> bool {
        matches!(self.inner, MappedInner::Map { .. })
    }
}

impl<T: MapElement> Mapped<T> {
    /// The values as a `Vec` (a copy if they were mapped).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let mem = crew::Memory::new(dir.path())?;
    /// assert_eq!(mem.cache(|| vec![2.5f64]).call_mapped(()).into_vec(), [2.5]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_vec(self) -> Vec<T> {
        match self.inner {
            MappedInner::Owned(v) => v,
            MappedInner::Map { .. } => self.to_vec(),
        }
    }
}

impl<T: MapElement> std::ops::Deref for Mapped<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.inner {
            MappedInner::Owned(v) => v,
            MappedInner::Map { map, at, len } => {
                // SAFETY: `map_values` checked that `len` values of `T` fit
                // from byte `at` to the end of the map and that the address
                // is aligned for `T`; `T` is `f32` or `f64` (sealed), for
                // which every bit pattern is a value; the map is read-only
                // and lives as long as `self`, and its file is never
                // written in place.
                unsafe { std::slice::from_raw_parts(map.as_ptr().add(*at).cast::<T>(), *len) }
            }
        }
    }
}

impl<T: MapElement + std::fmt::Debug> std::fmt::Debug for Mapped<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapped")
            .field("mapped", &self.is_mapped())
            .field("len", &self.len())
            .finish()
    }
}

/// A zero-filled vector for `n` values about to be overwritten: fresh
/// pages from the kernel (no `memset`), which a large vector gets as
/// transparent huge pages where the system allows it, so filling it takes a
/// page fault per 2 MiB rather than per 4 KiB (what numpy does for its
/// arrays).
fn fresh<T: Raw>(n: usize) -> Vec<T> {
    let v = vec![T::ZERO; n];
    advise_huge_pages(v.as_ptr().cast(), std::mem::size_of_val(&v[..]));
    v
}

/// Asks for transparent huge pages for the 2 MiB-aligned part of the
/// untouched memory at `ptr`; nothing for less than two huge pages.
fn advise_huge_pages(ptr: *const u8, len: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        const HUGE: usize = 2 << 20;
        if len < 2 * HUGE {
            return;
        }
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside one live allocation of ours;
            // the advice changes how its pages are backed, never what they
            // hold. A refusal (no transparent huge pages) costs nothing.
            let _ = unsafe {
                rustix::mm::madvise(
                    start as *mut std::ffi::c_void,
                    end - start,
                    rustix::mm::Advice::LinuxHugepage,
                )
            };
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (ptr, len);
}

/// The bytes of `values`, to be filled.
fn bytes_mut<T: Raw>(values: &mut [T]) -> &mut [u8] {
    // SAFETY: `Raw` types (`u8`, `f32`, `f64`, sealed) have no padding and
    // every bit pattern is a value of them, so any bytes written through
    // the slice leave valid values; the slice borrows `values` exclusively
    // and covers exactly its bytes.
    unsafe {
        std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), std::mem::size_of_val(values))
    }
}

/// Reads the values of a postcard `Vec<T>` entry straight into a fresh
/// vector, checking the checksum on the way (one pass over the bytes):
/// `None` if the entry is not laid out as one or the host is big-endian.
fn read_seq<T: Raw>(e: &Opened) -> Option<Result<Vec<T>, String>> {
    if cfg!(target_endian = "big") {
        return None;
    }
    let (used, n) = seq_head::<T>(e.payload_start(), e.payload_len())?;
    let mut values = fresh::<T>(n);
    let mut varint = [0u8; 10];
    let read = e.read_into(&mut [&mut varint[..used], bytes_mut(&mut values)]);
    Some(read.map(|()| values))
}

/// Reads, checks and decodes a result. A `Vec<f64>`, `Vec<f32>` or
/// `Vec<u8>` (a large array, most of the time) is read straight into its
/// vector, the values being stored raw: serde's generic path would push
/// them one by one into a vector it may not size in advance (it caps its
/// preallocation), several times slower. Anything else is read into a
/// buffer and decoded from it.
fn read_value<R: DeserializeOwned + 'static>(e: &Opened) -> Result<R, String> {
    use std::any::{Any, TypeId};
    fn raw<T: Raw, R: 'static>(e: &Opened) -> Option<Result<R, String>> {
        if TypeId::of::<R>() != TypeId::of::<Vec<T>>() {
            return None;
        }
        let got = read_seq::<T>(e)?;
        Some(got.map(|v| {
            let mut v = Some(v);
            (&mut v as &mut dyn Any)
                .downcast_mut::<Option<R>>()
                .and_then(Option::take)
                .expect("R is Vec<T>")
        }))
    }
    if let Some(got) = raw::<f64, R>(e)
        .or_else(|| raw::<f32, R>(e))
        .or_else(|| raw::<u8, R>(e))
    {
        return got;
    }
    let mut buf = fresh::<u8>(e.payload_len());
    e.read_into(&mut [&mut buf])?;
    postcard::from_bytes(&buf).map_err(|err| format!("cannot decode the result: {err}"))
}

/// The values of a large `Vec<T>` entry used in place from a read-only
/// map of it, checked by the header only: `None` where that cannot be (a
/// small entry, a big-endian host, values not aligned), for the caller to
/// read it instead.
fn map_values<T: MapElement>(e: &Opened) -> Option<Result<Mapped<T>, String>> {
    if !e.is_large() || cfg!(target_endian = "big") {
        return None;
    }
    let (map, payload) = match e.map() {
        Ok(m) => m,
        Err(err) => return Some(Err(format!("cannot map it: {err}"))),
    };
    let (used, len) = seq_head::<T>(map.get(payload..)?, e.payload_len())?;
    let at = payload + used;
    let aligned = (map.as_ptr() as usize + at).is_multiple_of(std::mem::align_of::<T>());
    aligned.then_some(Ok(Mapped {
        inner: MappedInner::Map { map, at, len },
    }))
}

/// Reads a stored `Vec<T>` into a fresh shared-memory array: straight into
/// it, checking the checksum on the way, where the entry is laid out as
/// one; else through a vector. The outer error is the array's creation.
fn read_array<T: MapElement + crate::shm::Pod>(
    e: &Opened,
) -> std::io::Result<Result<crate::shm::Array<T>, String>> {
    let Some((used, n)) = seq_head::<T>(e.payload_start(), e.payload_len())
        .filter(|_| cfg!(target_endian = "little"))
    else {
        return match read_value::<Vec<T>>(e) {
            Ok(v) => crate::shm::Array::from_slice(&v).map(Ok),
            Err(why) => Ok(Err(why)),
        };
    };
    let array = crate::shm::Array::<T>::new(n)?;
    let read = match array.lock() {
        Ok(mut values) => {
            let mut varint = [0u8; 10];
            e.read_into(&mut [&mut varint[..used], bytes_mut(&mut values)])
        }
        Err(err) => Err(format!("cannot fill a shared array: {err}")),
    };
    Ok(read.map(|()| array))
}

/// The length of the varint at the start of a postcard sequence of `T`
/// whose encoding is `total` bytes and starts with `start`, and how many
/// values it holds, if the encoding is exactly that many raw values.
fn seq_head<T>(start: &[u8], total: usize) -> Option<(usize, usize)> {
    let mut n: u64 = 0;
    for (i, &b) in start.iter().take(10).enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let used = i + 1;
            let len = usize::try_from(n).ok()?;
            let size = len.checked_mul(std::mem::size_of::<T>())?;
            return (total.checked_sub(used)? == size).then_some((used, len));
        }
    }
    None
}

/// The task of [`Cached::delayed`]: conjures the zero-sized function and
/// runs the cached call.
fn run_delayed<F, A, R>(handle: CacheHandle, args: A) -> R
where
    F: Copy + 'static,
    Star<F>: Call<A, R>,
    A: Args,
    R: Serialize + DeserializeOwned + 'static,
{
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a cached function given to `delayed` cannot capture its environment: use a fn item or a closure that captures nothing"
        )
    };
    // SAFETY: `F` is zero-sized (checked above), so it has no bytes to be
    // invalid; it is a `Copy` fn item or closure, and a value of it existed
    // in the `Cached` that made this call (the only way to reach here).
    let f = unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() };
    handle.run(&Star(f), args)
}

/// The task of [`Cached::map`], [`Cached::starmap`] and [`Cached::imap`]
/// on a pool: the cached call of `F`, run by a worker with the
/// [`CacheHandle`] that comes with each item.
///
/// # Examples
///
/// Made and used by `Cached::map`; back-ends see it as any task.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let cached = crew::Memory::new(dir.path())?.cache(|x: u8| x * 2);
/// assert_eq!(cached.map(&crew::Pool::threads(1)?, [4])?, [8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CachedTask<F> {
    f: Star<F>,
    _call: PhantomData<fn()>,
}

impl<F: Copy> Clone for CachedTask<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Copy> Copy for CachedTask<F> {}

impl<F> std::fmt::Debug for CachedTask<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachedTask")
    }
}

impl<F, A, R> Call<(CacheHandle, A), R> for CachedTask<F>
where
    Star<F>: Call<A, R>,
    A: Args,
    R: Serialize + DeserializeOwned + 'static,
{
    fn call(&self, (handle, args): (CacheHandle, A)) -> R {
        handle.run(&self.f, args)
    }
}

impl<F, A, R> Call<ImapJob<A>, ImapOut<R>> for CachedTask<F>
where
    Star<F>: Call<A, R>,
    A: Args,
    R: Serialize + DeserializeOwned + 'static,
{
    fn call(&self, job: ImapJob<A>) -> ImapOut<R> {
        ImapOut(match job.0 {
            Job::Hit(at) => Out::Hit(at),
            Job::Compute(handle, args) => Out::Value(handle.run(&self.f, args)),
        })
    }
}

/// An item of [`Cached::imap`] on its way to a worker: the call to compute
/// (the worker looks in the cache first, and stores what it computes), or,
/// for an input whose result was found in the cache, only its position,
/// which the worker hands back so that the result takes its place in the
/// order.
///
/// # Examples
///
/// Made and used by `Cached::imap`; back-ends see it as any task input.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let cached = crew::Memory::new(dir.path())?.cache(|x: u8| x + 1);
/// let got: Vec<u8> = cached.imap(&crew::Pool::threads(1)?, [1, 2]).collect::<Result<_, _>>()?;
/// assert_eq!(got, [2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct ImapJob<A>(Job<A>);

#[derive(Debug, Serialize, Deserialize)]
enum Job<A> {
    Hit(usize),
    Compute(CacheHandle, A),
}

/// A worker's answer to an [`ImapJob`]: the computed result, or the
/// position of a result found in the cache, which the calling process
/// holds.
///
/// # Examples
///
/// Made and used by `Cached::imap_unordered`, as [`ImapJob`].
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let cached = crew::Memory::new(dir.path())?.cache(|x: u8| x + 1);
/// let got: Vec<u8> = cached.imap_unordered(&crew::Pool::threads(1)?, [1]).collect::<Result<_, _>>()?;
/// assert_eq!(got, [2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct ImapOut<R>(Out<R>);

#[derive(Debug, Serialize, Deserialize)]
enum Out<R> {
    Hit(usize),
    Value(R),
}

/// The input of [`Cached::imap`]: each item made a one-argument tuple.
pub type Tupled<I> = std::iter::Map<I, fn(<I as Iterator>::Item) -> (<I as Iterator>::Item,)>;

/// What the pool's lazy map reads: the caller's items, each looked up in
/// the cache as it is read. A hit's value is kept in `hits` under its
/// position, and the item goes on as that position only.
struct Feed<I, R> {
    items: std::iter::Enumerate<I>,
    memory: Memory,
    id: Identity,
    ignore: Vec<usize>,
    handle: CacheHandle,
    hits: Arc<Mutex<HashMap<usize, R>>>,
}

impl<I, R> Iterator for Feed<I, R>
where
    I: Iterator,
    I::Item: Args,
    R: Serialize + DeserializeOwned + 'static,
{
    type Item = ImapJob<I::Item>;

    fn next(&mut self) -> Option<ImapJob<I::Item>> {
        let (at, args) = self.items.next()?;
        let m = &self.memory;
        let hit = m
            .slot::<I::Item, R>(&self.id, &self.ignore, &args)
            .and_then(|s| m.load(&self.id, &s));
        Some(ImapJob(match hit {
            Some(v) => {
                self.hits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(at, v);
                Job::Hit(at)
            }
            None => {
                // Counted here: the workers' counters are their own.
                m.shared.misses.fetch_add(1, Ordering::Relaxed);
                Job::Compute(self.handle.clone(), args)
            }
        }))
    }
}

/// The iterator of [`Cached::imap`] and [`Cached::imap_unordered`]: the
/// pool's lazy map of the calls, with the results found in the cache put
/// in their places.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let cached = crew::Memory::new(dir.path())?.cache(|x: u64| x * 10);
/// let pool = crew::Pool::threads(2)?;
/// let mut it = cached.imap(&pool, 1..);
/// assert_eq!(it.next().transpose()?, Some(10));
/// let later = it.next_timeout(std::time::Duration::from_secs(60));
/// assert_eq!(later.transpose()?, Some(20));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CachedImap<B, F, I, R>
where
    B: Backend,
    I: Iterator,
    I::Item: Args,
    R: Serialize + DeserializeOwned + 'static,
{
    inner: crate::Imap<B, CachedTask<F>, Feed<I, R>, ImapOut<R>>,
    hits: Arc<Mutex<HashMap<usize, R>>>,
}

impl<B, F, I, R> std::fmt::Debug for CachedImap<B, F, I, R>
where
    B: Backend,
    I: Iterator,
    I::Item: Args,
    R: Serialize + DeserializeOwned + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedImap")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<B, F, I, R> CachedImap<B, F, I, R>
where
    B: Backend + Runs<'static, CachedTask<F>, ImapJob<I::Item>, ImapOut<R>>,
    F: Send + Sync + 'static,
    I: Iterator,
    I::Item: Args + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// The next result, waiting at most `timeout` for it, as
    /// [`Imap::next_timeout`](crate::Imap::next_timeout): `Some(Err(e))`
    /// with `e.is_timeout()` if it is not ready in time.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let cached = crew::Memory::new(dir.path())?.cache(|x: u8| x);
    /// let mut it = cached.imap(&crew::Pool::threads(1)?, [7]);
    /// let first = it.next_timeout(std::time::Duration::from_secs(60));
    /// assert_eq!(first.transpose()?, Some(7));
    /// assert!(it.next().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        let got = self.inner.next_timeout(timeout)?;
        Some(self.place(got))
    }

    /// The value of a worker's answer: a hit's is the one kept here.
    fn place(&self, got: Result<ImapOut<R>>) -> Result<R> {
        match got?.0 {
            Out::Value(v) => Ok(v),
            Out::Hit(at) => Ok(self
                .hits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&at)
                .expect("a hit's value is kept until its place comes back, once")),
        }
    }
}

impl<B, F, I, R> Iterator for CachedImap<B, F, I, R>
where
    B: Backend + Runs<'static, CachedTask<F>, ImapJob<I::Item>, ImapOut<R>>,
    F: Send + Sync + 'static,
    I: Iterator,
    I::Item: Args + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        let got = self.inner.next()?;
        Some(self.place(got))
    }
}

/// What a worker needs to use a cache: the folder, the cached function's
/// identity, and the options; made by [`Cached::handle`].
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let h = crew::Memory::new(dir.path())?.cache(|x: u8| x).handle();
/// let copy = h.clone();
/// assert_eq!(format!("{h:?}"), format!("{copy:?}"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheHandle {
    location: PathBuf,
    bytes_limit: Option<u64>,
    verbose: u32,
    name: String,
    base: u64,
    ignore: Vec<usize>,
}

impl CacheHandle {
    fn run<F, A, R>(&self, f: &Star<F>, args: A) -> R
    where
        Star<F>: Call<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned + 'static,
    {
        let memory = Memory {
            location: Arc::new(self.location.clone()),
            bytes_limit: self.bytes_limit,
            verbose: self.verbose,
            shared: Arc::default(),
        };
        let id = Identity::new(self.name.clone(), self.base);
        memory.run(&id, &self.ignore, f, args, false)
    }
}
