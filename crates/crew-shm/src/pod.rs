//! [`Pod`]: the types that may live in shared memory as plain bytes.

/// Plain old data: a `Copy` type for which every bit pattern is a valid value
/// and which holds no pointers, so it means the same thing in every process
/// that maps it.
///
/// Implemented for the integer and float primitives and for arrays of `Pod`.
/// `bool`, `char`, references and anything with padding are not `Pod`.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::shm::{Pod, Value};
///
/// #[derive(Clone, Copy, Debug, Default, PartialEq)]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
/// // SAFETY: two f64s, no padding, any bits are a valid Point.
/// unsafe impl Pod for Point {}
///
/// let p = Value::new(Point { x: 1.0, y: 2.0 })?;
/// assert_eq!(p.get().y, 2.0);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Safety
///
/// Implement it only for `#[repr(C)]` (or `#[repr(transparent)]`) types with
/// no padding bytes, no pointers or references, no `UnsafeCell`, no `Drop`,
/// and for which every bit pattern (including all zeros, the initial contents
/// of shared memory, and a torn mix of two values left by a process killed
/// mid-write) is a valid value.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! impl_pod {
    ($($t:ty)*) => {
        $(
            // SAFETY: primitive integers and floats: no padding, no pointers,
            // every bit pattern valid.
            unsafe impl Pod for $t {}
        )*
    };
}

impl_pod!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize f32 f64);

// SAFETY: an array of `Pod` has no padding between elements (size is a
// multiple of alignment) and is valid for every bit pattern if `T` is.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
