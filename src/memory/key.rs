//! Cache keys: a function's identity and a hash of its arguments, both the
//! same in every process and every run of one build.
//!
//! Hashes are XXH3 (64-bit for functions, 128-bit for arguments) over
//! bytes we choose: the arguments' postcard encoding and type names. No
//! `RandomState`, no `Hash` impl of the argument types (whose output may
//! differ between versions of a library), nothing that depends on the
//! process.

use std::any::TypeId;
use std::hash::Hasher;

use serde::Serialize;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The arguments of a cached call: a tuple of up to 8 `Serialize` values,
/// each hashed separately so that [`Cached::ignore`](super::Cached::ignore)
/// can leave some out.
///
/// Implemented for `()`, `(A,)`, `(A, B)`, … up to 8 elements.
///
/// # Examples
///
/// ```
/// use crew::memory::Args;
/// assert_eq!(<(u8, String)>::ARITY, 2);
/// ```
pub trait Args {
    /// The number of arguments.
    const ARITY: usize;

    /// Feeds each argument whose position is not in `ignore` to `out`, as
    /// its postcard encoding prefixed by its position and length; false if
    /// an argument cannot be serialized.
    #[doc(hidden)]
    fn hash_into(&self, ignore: &[usize], out: &mut Xxh3) -> bool;
}

fn feed<T: Serialize + ?Sized>(index: usize, value: &T, ignore: &[usize], out: &mut Xxh3) -> bool {
    if ignore.contains(&index) {
        return true;
    }
    match postcard::to_allocvec(value) {
        Ok(bytes) => {
            out.update(&(index as u64).to_le_bytes());
            out.update(&(bytes.len() as u64).to_le_bytes());
            out.update(&bytes);
            true
        }
        Err(_) => false,
    }
}

macro_rules! args_tuple {
    ($n:expr; $($t:ident $i:tt),*) => {
        impl<$($t: Serialize),*> Args for ($($t,)*) {
            const ARITY: usize = $n;
            #[allow(unused_variables)]
            fn hash_into(&self, ignore: &[usize], out: &mut Xxh3) -> bool {
                true $(&& feed($i, &self.$i, ignore, out))*
            }
        }
    };
}

args_tuple!(0;);
args_tuple!(1; A 0);
args_tuple!(2; A 0, B 1);
args_tuple!(3; A 0, B 1, C 2);
args_tuple!(4; A 0, B 1, C 2, D 3);
args_tuple!(5; A 0, B 1, C 2, D 3, E 4);
args_tuple!(6; A 0, B 1, C 2, D 3, E 4, G 5);
args_tuple!(7; A 0, B 1, C 2, D 3, E 4, G 5, H 6);
args_tuple!(8; A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7);

/// The 128-bit hash of `args` without the positions in `ignore`, or `None`
/// if an argument cannot be serialized.
pub(crate) fn args_hash<A: Args>(args: &A, ignore: &[usize]) -> Option<u128> {
    let mut h = Xxh3::new();
    h.update(&(A::ARITY as u64).to_le_bytes());
    args.hash_into(ignore, &mut h).then(|| h.digest128())
}

/// Collects what `TypeId`'s `Hash` writes, to hash it with XXH3 instead
/// of the process-seeded default hasher.
struct Bytes(Vec<u8>);

impl Hasher for Bytes {
    fn finish(&self) -> u64 {
        xxh3_64(&self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
}

/// What names a cached function: its path, what tells two closures of one
/// function apart, and the code version its results belong to.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    /// `std::any::type_name` of the function, or the name the user gave.
    pub(crate) name: String,
    /// XXH3 of the name, the closure discriminator and the version.
    pub(crate) base: u64,
    /// The folder of this function's entries (made once: every call
    /// needs it).
    folder: String,
}

impl Identity {
    /// `name`: the user's or the type's; `version`: the user's, or else the
    /// build fingerprint, so that a rebuilt program never reads results of
    /// the old code.
    pub(crate) fn of<F: 'static>(name: Option<&str>, version: Option<&str>) -> Identity {
        let type_name = std::any::type_name::<F>();
        let mut h = Xxh3::new();
        let name = match name {
            Some(n) => {
                h.update(b"named\0");
                n.to_owned()
            }
            None => {
                h.update(b"type\0");
                // Every closure of one function has the same type name; its
                // `TypeId` tells them apart (and is fixed for one build).
                if type_name.contains("{{closure}}") {
                    let mut id = Bytes(Vec::new());
                    std::hash::Hash::hash(&TypeId::of::<F>(), &mut id);
                    h.update(&id.0);
                }
                type_name.to_owned()
            }
        };
        h.update(name.as_bytes());
        h.update(b"\0");
        match version {
            Some(v) => {
                h.update(b"version\0");
                h.update(v.as_bytes());
            }
            None => {
                h.update(b"build\0");
                h.update(&crew_process::build_fingerprint().to_le_bytes());
            }
        }
        Identity::new(name, h.digest())
    }

    /// The identity named `name` with key base `base`, as a handle carries
    /// it to a worker.
    pub(crate) fn new(name: String, base: u64) -> Identity {
        let mut readable: String = name
            .replace("::", ".")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        readable.truncate(80);
        let folder = format!("{readable}-{base:016x}");
        Identity { name, base, folder }
    }

    /// The key of this function called with argument tuple `A` returning
    /// `R`: the base and the signature's fingerprint from the task registry.
    pub(crate) fn key<A, R>(&self) -> u64 {
        let sig = crate::registry::Signature::of::<A, R>().fingerprint();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.base.to_le_bytes());
        bytes[8..].copy_from_slice(&sig.to_le_bytes());
        xxh3_64(&bytes)
    }

    /// The folder of this function's entries: a readable form of the name
    /// and the base (entries of every signature share it).
    pub(crate) fn folder(&self) -> &str {
        &self.folder
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn argument_hash_is_fixed_across_processes_and_versions() {
        // A golden value: the hash depends on postcard's encoding and XXH3
        // alone, never on the process (no RandomState) or the host.
        assert_eq!(
            args_hash(&(1u32, "two".to_string()), &[]),
            args_hash(&(1u32, "two".to_string()), &[])
        );
        assert_eq!(
            format!(
                "{:032x}",
                args_hash(&(1u32, "two".to_string()), &[]).unwrap()
            ),
            GOLDEN
        );
        // The layout hashed: arity, then per argument its position, its
        // length and its postcard bytes.
        let mut bytes = Vec::new();
        for word in [2u64, 0, 1] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.push(1);
        for word in [1u64, 4] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(b"\x03two");
        assert_eq!(
            args_hash(&(1u32, "two".to_string()), &[]),
            Some(xxhash_rust::xxh3::xxh3_128(&bytes))
        );
    }

    const GOLDEN: &str = "c20630a58ab72d680c2ffb4228556398";

    #[test]
    fn ignored_positions_do_not_count() {
        let a = args_hash(&(1u32, 2u32), &[1]).unwrap();
        assert_eq!(a, args_hash(&(1u32, 99u32), &[1]).unwrap());
        assert_ne!(a, args_hash(&(2u32, 2u32), &[1]).unwrap());
        assert_ne!(args_hash(&(1u32, 2u32), &[]), args_hash(&(1u32, 3u32), &[]));
        // Moving a value to another position changes the key.
        assert_ne!(args_hash(&(1u8, 2u8), &[]), args_hash(&(2u8, 1u8), &[]));
    }

    #[test]
    fn closures_of_one_function_differ() {
        let a = |x: u8| x;
        let b = |x: u8| x + 1;
        fn id_of<F: 'static>(_: &F) -> Identity {
            Identity::of::<F>(None, None)
        }
        let (ia, ib) = (id_of(&a), id_of(&b));
        assert_eq!(ia.name, ib.name);
        assert_ne!(ia.base, ib.base);
        assert_eq!(ia.base, id_of(&a).base);
        // A version given by the user replaces the build fingerprint.
        assert_ne!(
            Identity::of::<fn()>(Some("f"), None).base,
            Identity::of::<fn()>(Some("f"), Some("1")).base
        );
        assert_eq!(
            Identity::of::<fn()>(Some("f"), Some("1")).base,
            Identity::of::<u8>(Some("f"), Some("1")).base
        );
        assert_ne!(ia.key::<(u8,), u8>(), ia.key::<(u8,), u16>());
    }
}
