//! Named tasks: functions registered with `#[crew::task]` under a stable
//! name and a fingerprint of their signature, callable by name
//! ([`Executor::submit_named`](crate::Executor::submit_named)).
//!
//! A process pool normally identifies a task by its place in this very
//! executable, which is all a local pool needs; a name does not depend on
//! where the code sits in the binary (the cluster back-end ships names).
//! Calling a name with other argument or result types than it was
//! registered with fails at once with `is_invalid_input`, never with a hang
//! or a garbled value. The signature's fingerprint is made of
//! `std::any::type_name`s, which name types by their full path and may
//! differ between compiler versions: programs that call each other's tasks
//! by name should be built by one compiler from one version of the code.

use std::any::type_name;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crew_core::{Call, Error, Result};

#[doc(hidden)]
pub use inventory::submit;

/// The signature a task was registered with.
///
/// # Examples
///
/// ```
/// use crew::registry::Signature;
///
/// #[crew::task]
/// fn area(w: u32, h: u32) -> u32 { w * h }
///
/// let entry = crew::registry::tasks().find(|t| t.name().ends_with("::area")).unwrap();
/// assert_eq!(entry.signature(), Signature::of::<(u32, u32), u32>());
/// assert_eq!(entry.signature().result, "u32");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The argument tuple's type name.
    pub args: &'static str,
    /// The result's type name.
    pub result: &'static str,
}

impl Signature {
    /// The signature of a task taking `A` (a tuple) and returning `R`.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::registry::Signature;
    /// let one_arg = Signature::of::<(u64,), bool>();
    /// assert_eq!(one_arg.result, "bool");
    /// assert_ne!(one_arg, Signature::of::<(u32,), bool>());
    /// ```
    pub fn of<A, R>() -> Signature {
        Signature {
            args: type_name::<A>(),
            result: type_name::<R>(),
        }
    }

    /// A 64-bit fingerprint of the signature (FNV-1a of the type names and
    /// the wire format's version).
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::registry::Signature;
    /// let a = Signature::of::<(u32, u32), u32>();
    /// assert_eq!(a.fingerprint(), Signature::of::<(u32, u32), u32>().fingerprint());
    /// assert_ne!(a.fingerprint(), Signature::of::<(u32, u32), u64>().fingerprint());
    /// ```
    pub fn fingerprint(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in self
            .args
            .bytes()
            .chain([0u8])
            .chain(self.result.bytes())
            .chain([0, 1])
        {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        h
    }
}

/// One registered task; made by `#[crew::task]`.
///
/// # Examples
///
/// ```
/// #[crew::task(name = "docs::task_entry::cube")]
/// fn cube(x: i64) -> i64 { x * x * x }
///
/// let entry = crew::registry::lookup("docs::task_entry::cube").unwrap();
/// assert_eq!(entry.name(), "docs::task_entry::cube");
/// assert_eq!(entry.signature().args, "(i64,)");
/// ```
#[derive(Debug)]
pub struct TaskEntry {
    name: &'static str,
    signature: fn() -> Signature,
    call: fn(&[u8]) -> Result<Vec<u8>>,
    json: JsonThunk,
}

/// How a task is called with JSON positional and keyword arguments.
type JsonThunk = fn(
    Vec<json::Value>,
    json::Map<String, json::Value>,
) -> std::result::Result<json::Value, JsonError>;

impl TaskEntry {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        signature: fn() -> Signature,
        call: fn(&[u8]) -> Result<Vec<u8>>,
        json: JsonThunk,
    ) -> TaskEntry {
        TaskEntry {
            name,
            signature,
            call,
            json,
        }
    }

    /// Calls the task here, in this thread, with JSON arguments as Celery
    /// sends them: `args` fill the parameters in order, `kwargs` fill the
    /// rest by name; each is decoded into its parameter's type with serde.
    /// The result comes back as JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::registry::json::{json, Map};
    ///
    /// #[crew::task(name = "docs::call_json::scale")]
    /// fn scale(xs: Vec<f64>, by: f64) -> Vec<f64> { xs.iter().map(|x| x * by).collect() }
    ///
    /// let entry = crew::registry::lookup("docs::call_json::scale").unwrap();
    /// let mut kwargs = Map::new();
    /// kwargs.insert("by".into(), json!(2.0));
    /// assert_eq!(entry.call_json(vec![json!([1.0, 2.5])], kwargs).unwrap(), json!([2.0, 5.0]));
    /// // A missing argument is a `TypeError`, as in Python.
    /// let e = entry.call_json(vec![json!([1.0])], Map::new()).unwrap_err();
    /// assert_eq!(e.exc_type, "TypeError");
    ///
    /// // A task returning `Result`: `Ok(v)` is `v`, `Err(e)` an exception.
    /// #[crew::task(name = "docs::call_json::parse")]
    /// fn parse(s: String) -> Result<i64, std::num::ParseIntError> { s.parse() }
    ///
    /// let entry = crew::registry::lookup("docs::call_json::parse").unwrap();
    /// assert_eq!(entry.call_json(vec![json!("42")], Map::new()).unwrap(), json!(42));
    /// let e = entry.call_json(vec![json!("x")], Map::new()).unwrap_err();
    /// assert_eq!(e.exc_type, "ParseIntError");
    /// ```
    ///
    /// # Errors
    ///
    /// A [`JsonError`] shaped like the Python exception a Python function
    /// would raise: `TypeError` for a missing, unexpected or surplus
    /// argument, or one that does not decode into its type; `ValueError`
    /// for a result JSON cannot hold; for a task returning `Result<T, E>`
    /// (`E: Display`), its `Err(e)` as [`JsonError::from_error`] makes it.
    /// A panic of the task is not caught.
    pub fn call_json(
        &self,
        args: Vec<json::Value>,
        kwargs: json::Map<String, json::Value>,
    ) -> std::result::Result<json::Value, JsonError> {
        (self.json)(args, kwargs)
    }

    /// The task's name (`my_crate::module::function` by default).
    ///
    /// # Examples
    ///
    /// ```
    /// #[crew::task]
    /// fn name_example() {}
    ///
    /// #[crew::task(name = "docs::renamed")]
    /// fn renamed_example() {}
    ///
    /// let names: Vec<&str> = crew::registry::tasks().map(|t| t.name()).collect();
    /// assert!(names.iter().any(|n| n.ends_with("::name_example")));
    /// assert!(names.contains(&"docs::renamed"));
    /// ```
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The task's signature.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::registry::Signature;
    ///
    /// #[crew::task(name = "docs::signature::greet")]
    /// fn greet(times: u8) -> Vec<u8> { vec![b'!'; times as usize] }
    ///
    /// let entry = crew::registry::lookup("docs::signature::greet").unwrap();
    /// assert_eq!(entry.signature(), Signature::of::<(u8,), Vec<u8>>());
    /// ```
    pub fn signature(&self) -> Signature {
        (self.signature)()
    }
}

inventory::collect!(TaskEntry);

/// Every registered task.
///
/// # Examples
///
/// ```
/// #[crew::task]
/// fn square(x: u64) -> u64 { x * x }
///
/// assert!(crew::registry::tasks().any(|t| t.name().ends_with("::square")));
/// ```
pub fn tasks() -> impl Iterator<Item = &'static TaskEntry> {
    inventory::iter::<TaskEntry>.into_iter()
}

/// The task registered as `name`, if any.
///
/// Looks only at the name; [`resolve`] also checks the types.
///
/// # Examples
///
/// ```
/// #[crew::task(name = "docs::lookup::inc")]
/// fn inc(x: u32) -> u32 { x + 1 }
///
/// assert!(crew::registry::lookup("docs::lookup::inc").is_some());
/// assert!(crew::registry::lookup("docs::lookup::missing").is_none());
/// ```
pub fn lookup(name: &str) -> Option<&'static TaskEntry> {
    tasks().find(|t| t.name == name)
}

/// Checks that `name` is registered with arguments `A` and result `R`.
///
/// # Examples
///
/// ```
/// use crew::registry::resolve;
///
/// #[crew::task(name = "docs::resolve::add")]
/// fn add(a: i32, b: i32) -> i32 { a + b }
///
/// assert!(resolve::<(i32, i32), i32>("docs::resolve::add").is_ok());
/// // Other types, or an unknown name, fail at once.
/// assert!(resolve::<(i64, i64), i64>("docs::resolve::add").unwrap_err().is_invalid_input());
/// assert!(resolve::<(i32, i32), i32>("docs::resolve::nope").unwrap_err().is_invalid_input());
/// ```
///
/// # Errors
///
/// `is_invalid_input` naming the problem: unknown name (with the
/// registered names), or a different signature (both shown).
pub fn resolve<A, R>(name: &str) -> Result<&'static TaskEntry> {
    let Some(entry) = lookup(name) else {
        let known: Vec<&str> = tasks().map(|t| t.name).collect();
        return Err(Error::invalid_input(format!(
            "no task is registered as `{name}` (registered: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let want = Signature::of::<A, R>();
    let have = entry.signature();
    if want.fingerprint() != have.fingerprint() {
        return Err(Error::invalid_input(format!(
            "task `{name}` takes {} and returns {}, but was called with {} for {}",
            have.args, have.result, want.args, want.result
        )));
    }
    Ok(entry)
}

/// JSON, as Celery tasks take and return it (the `serde_json` crate).
pub mod json {
    pub use serde_json::{Map, Value, json};
}

/// Why a task could not be called with JSON arguments, or its result not
/// written as JSON: the Python exception it stands for.
///
/// # Examples
///
/// ```
/// let e = crew::registry::JsonError::type_error("f() missing argument `x`");
/// assert_eq!((e.exc_type.as_str(), e.exc_module.as_str()), ("TypeError", "builtins"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonError {
    /// The exception's class name (`TypeError`).
    pub exc_type: String,
    /// The module it lives in (`builtins`).
    pub exc_module: String,
    /// Its message.
    pub message: String,
}

impl JsonError {
    /// A `builtins.TypeError`.
    pub fn type_error(message: impl Into<String>) -> JsonError {
        JsonError {
            exc_type: "TypeError".into(),
            exc_module: "builtins".into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.exc_type, self.message)
    }
}

impl std::error::Error for JsonError {}

#[doc(hidden)]
pub fn check_arity(args: &[json::Value], count: usize) -> std::result::Result<(), JsonError> {
    if args.len() > count {
        return Err(JsonError::type_error(format!(
            "the task takes {count} positional argument(s) but {} were given",
            args.len()
        )));
    }
    Ok(())
}

#[doc(hidden)]
pub fn json_arg<T: DeserializeOwned>(
    args: &mut std::vec::IntoIter<json::Value>,
    kwargs: &mut json::Map<String, json::Value>,
    position: usize,
    name: &str,
) -> std::result::Result<T, JsonError> {
    let (value, label) = match args.next() {
        Some(v) => {
            if !name.is_empty() && kwargs.contains_key(name) {
                return Err(JsonError::type_error(format!(
                    "the task got multiple values for argument `{name}`"
                )));
            }
            (v, format!("positional argument {position}"))
        }
        None => match kwargs.remove(name).filter(|_| !name.is_empty()) {
            Some(v) => (v, format!("argument `{name}`")),
            None => {
                return Err(JsonError::type_error(format!(
                    "the task is missing argument {position} (`{name}`)"
                )));
            }
        },
    };
    serde_json::from_value(value).map_err(|e| {
        JsonError::type_error(format!(
            "{label} does not fit type {}: {e}",
            type_name::<T>()
        ))
    })
}

#[doc(hidden)]
pub fn check_no_kwargs(
    kwargs: &json::Map<String, json::Value>,
) -> std::result::Result<(), JsonError> {
    match kwargs.keys().next() {
        Some(k) => Err(JsonError::type_error(format!(
            "the task got an unexpected keyword argument `{k}`"
        ))),
        None => Ok(()),
    }
}

#[doc(hidden)]
pub fn json_result<R: Serialize>(out: &R) -> std::result::Result<json::Value, JsonError> {
    serde_json::to_value(out).map_err(|e| JsonError {
        exc_type: "ValueError".into(),
        exc_module: "builtins".into(),
        message: format!("the result cannot be written as JSON: {e}"),
    })
}

impl JsonError {
    /// The Python exception a task's `Err(e)` stands for: `e` itself if it
    /// is a `JsonError`; Celery's `billiard.exceptions.SoftTimeLimitExceeded`
    /// for [`crate::celery::SoftTimeLimitExceeded`]; `builtins.RuntimeError`
    /// for a `String` or `&str`;
    /// otherwise the error type's name (`ParseIntError`, generics dropped)
    /// with its Rust module path (`core::num::error`) as `exc_module`. The
    /// message is `e`'s `Display`. Celery's Python side rebuilds an unknown
    /// exception type as a class of that name (in `celery.exceptions`),
    /// which `.get()` raises.
    ///
    /// # Examples
    ///
    /// ```
    /// use crew::registry::JsonError;
    ///
    /// let e = JsonError::from_error(&"x".parse::<i32>().unwrap_err());
    /// assert_eq!(e.exc_type, "ParseIntError");
    /// assert_eq!(e.message, "invalid digit found in string");
    /// let e = JsonError::from_error(&String::from("no luck"));
    /// assert_eq!((e.exc_type.as_str(), e.exc_module.as_str()), ("RuntimeError", "builtins"));
    /// ```
    pub fn from_error<E: std::fmt::Display + 'static>(e: &E) -> JsonError {
        let any = e as &dyn std::any::Any;
        if let Some(j) = any.downcast_ref::<JsonError>() {
            return j.clone();
        }
        if let Some(s) = any.downcast_ref::<crate::celery::SoftTimeLimitExceeded>() {
            return JsonError {
                exc_type: "SoftTimeLimitExceeded".into(),
                exc_module: "billiard.exceptions".into(),
                message: s.to_string(),
            };
        }
        if any.is::<String>() || any.is::<&str>() {
            return JsonError {
                exc_type: "RuntimeError".into(),
                exc_module: "builtins".into(),
                message: e.to_string(),
            };
        }
        let full = type_name::<E>();
        let base = full.split('<').next().unwrap_or(full);
        let (module, name) = base.rsplit_once("::").unwrap_or(("", base));
        JsonError {
            exc_type: name.to_owned(),
            exc_module: module.to_owned(),
            message: e.to_string(),
        }
    }
}

/// A task's result on its way to JSON; see [`JsonOutResult`].
#[doc(hidden)]
#[derive(Debug)]
pub struct JsonOut<'a, T>(pub &'a T);

/// A task returning `Result<T, E>`: `Ok(v)` is the value `v`, `Err(e)` the
/// exception [`JsonError::from_error`] makes of `e` (Celery's `FAILURE`).
/// Chosen over [`JsonOutPlain`] by method resolution whenever the result
/// is a `Result` whose error has `Display`.
#[doc(hidden)]
pub trait JsonOutResult {
    /// The result as JSON, or the exception it stands for.
    fn crew_json_out(&self) -> std::result::Result<json::Value, JsonError>;
}

impl<T: Serialize, E: std::fmt::Display + 'static> JsonOutResult
    for JsonOut<'_, std::result::Result<T, E>>
{
    fn crew_json_out(&self) -> std::result::Result<json::Value, JsonError> {
        match self.0 {
            Ok(v) => json_result(v),
            Err(e) => Err(JsonError::from_error(e)),
        }
    }
}

/// Any other result: its JSON.
#[doc(hidden)]
pub trait JsonOutPlain {
    /// The result as JSON.
    fn crew_json_out(&self) -> std::result::Result<json::Value, JsonError>;
}

impl<T: Serialize> JsonOutPlain for &JsonOut<'_, T> {
    fn crew_json_out(&self) -> std::result::Result<json::Value, JsonError> {
        json_result(self.0)
    }
}

/// A task's result on its way to another process of this program
/// (postcard); see [`BinOutSerialize`].
#[doc(hidden)]
#[derive(Debug)]
pub struct BinOut<'a, T>(pub &'a T);

/// A result with `Serialize`: its bytes.
#[doc(hidden)]
pub trait BinOutSerialize {
    /// The result's bytes.
    fn crew_bin_out(&self) -> Result<Vec<u8>>;
}

impl<T: Serialize> BinOutSerialize for BinOut<'_, T> {
    fn crew_bin_out(&self) -> Result<Vec<u8>> {
        encode(self.0)
    }
}

/// A result without `Serialize` (a `Result` whose error is only
/// `Display`, for a Celery task): it cannot be sent back.
#[doc(hidden)]
pub trait BinOutOther {
    /// The error saying so.
    fn crew_bin_out(&self) -> Result<Vec<u8>>;
}

impl<T> BinOutOther for &BinOut<'_, T> {
    fn crew_bin_out(&self) -> Result<Vec<u8>> {
        Err(Error::invalid_input(format!(
            "the task's result type {} has no serde::Serialize, so it can only be \
             called with JSON (as a Celery task), not by name from Rust",
            type_name::<T>()
        )))
    }
}

// Arguments and results of named tasks are in the format of every task's
// (`crew_process::remote`): a node hands a result on as the bytes the task
// wrote, and the caller decodes them as any task's result.

#[doc(hidden)]
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    crew_process::remote::decode(bytes)
        .map_err(|e| Error::protocol(format!("cannot decode a named task's arguments: {e}")))
}

#[doc(hidden)]
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    crew_process::remote::encode(value)
        .map_err(|e| Error::protocol(format!("cannot encode a named task's result: {e}")))
}

/// A call by name, as it travels to a worker.
#[doc(hidden)]
pub use crew_process::remote::NamedCall;

/// The call of `name` with `args`, checked against this program's registry.
pub(crate) fn named_call<A: Serialize, R>(name: &str, args: &A) -> Result<NamedCall> {
    resolve::<A, R>(name)?;
    let signature = Signature::of::<A, R>();
    Ok(NamedCall {
        name: name.to_owned(),
        fingerprint: signature.fingerprint(),
        signature: format!("{} -> {}", signature.args, signature.result),
        args: encode(args)?,
    })
}

/// The task that runs a [`NamedCall`] through the registry.
#[doc(hidden)]
pub struct ByName<R>(PhantomData<fn() -> R>);

impl<R> ByName<R> {
    pub(crate) fn new() -> Self {
        ByName(PhantomData)
    }
}

impl<R> std::fmt::Debug for ByName<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByName")
    }
}

impl<R> Clone for ByName<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for ByName<R> {}

impl<R: DeserializeOwned> Call<NamedCall, R> for ByName<R> {
    fn by_name(&self) -> bool {
        true
    }

    fn call(&self, call: NamedCall) -> R {
        // The caller resolved the name in its own registry; a worker of the
        // same program has the same one. Failing here means the worker is
        // another build, which the panic reports as the task's error.
        let entry = match lookup(&call.name) {
            Some(e) if e.signature().fingerprint() == call.fingerprint => e,
            Some(_) => panic!("task `{}` has another signature in this worker", call.name),
            None => panic!("task `{}` is not registered in this worker", call.name),
        };
        let out = (entry.call)(&call.args).unwrap_or_else(|e| panic!("{e}"));
        decode(&out).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The task a cluster node runs for a call by name from any build: looks
/// the name up in this program's registry, checks the signature, and
/// returns the result still encoded (the node does not know its type; the
/// caller decodes it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunNamed;

impl Call<NamedCall, crew_process::remote::Verbatim> for RunNamed {
    fn call(&self, call: NamedCall) -> crew_process::remote::Verbatim {
        // The node took the entry from the stream of this very name and
        // fingerprint; checked again here, so that nothing else ever runs.
        let entry = match lookup(&call.name) {
            Some(e) if e.signature().fingerprint() == call.fingerprint => e,
            Some(e) => panic!(
                "task `{}` takes {} and returns {} here, not {}",
                call.name,
                e.signature().args,
                e.signature().result,
                call.signature
            ),
            None => panic!("task `{}` is not registered in this program", call.name),
        };
        match (entry.call)(&call.args) {
            Ok(out) => crew_process::remote::Verbatim(out),
            Err(e) => panic!("{e}"),
        }
    }
}

/// What a cluster node of this program serves by name: every registered
/// task, and the wire name of [`RunNamed`].
pub(crate) fn cluster_named_tasks() -> crew_redis::NamedTasks {
    fn list() -> Vec<crew_redis::NamedTask> {
        tasks()
            .map(|t| {
                let s = t.signature();
                crew_redis::NamedTask {
                    name: t.name().to_owned(),
                    fingerprint: s.fingerprint(),
                    signature: format!("{} -> {}", s.args, s.result),
                }
            })
            .collect()
    }
    fn entry() -> u64 {
        crew_process::remote::call_task::<RunNamed, NamedCall, crew_process::remote::Verbatim>(
            &RunNamed,
        )
    }
    crew_redis::NamedTasks { list, entry }
}

// A cluster node (`CREW_WORKER`) starts before `main`, as worker processes
// do (crew-process), and serves this program's named tasks too. This
// crate's constructors run after those of the program that uses it, so the
// program's `#[crew::task]`s are registered by then.
#[used]
#[unsafe(link_section = ".init_array")]
static ENTER_CLUSTER_NODE: extern "C" fn() = enter_cluster_node;

extern "C" fn enter_cluster_node() {
    crew_redis::run_if_node(Some(cluster_named_tasks()));
}
