//! The payload format of tasks' arguments and results, with slices of
//! plain numbers copied in bulk.
//!
//! A compact, non-self-describing serde format, postcard's layout except for
//! numbers: integers and floats are fixed-width little-endian (postcard
//! writes integers as varints), lengths and enum variants are varints.
//!
//! | value | encoding |
//! |---|---|
//! | `bool`, `u8`, `i8` | 1 byte |
//! | `u16` … `u128`, `i16` … `i128`, `f32`, `f64` (and `usize` as `u64`) | fixed-width little-endian |
//! | `char` | its `u32` |
//! | `str`, bytes | varint length, then the bytes |
//! | `Option` | `0`, or `1` then the value |
//! | sequence, map | varint length, then the items (keys and values) |
//! | tuple, struct | the fields in order |
//! | enum variant | varint index, then its fields |
//! | unit, unit struct | nothing |
//!
//! Fixed-width numbers are what makes bulk copies possible: a `Vec<T>` or
//! `[T]` of `u8`, `i8`, `u16`, `i16`, `u32`, `i32`, `u64`, `i64`, `u128`,
//! `i128`, `usize`, `isize`, `f32` or `f64` encodes as its length then its
//! memory, byte for byte, so the encoder writes it with one copy instead
//! of one call per element, and the decoder allocates the `Vec` once and
//! copies into it. Serde cannot specialise, so the encoder recognises such
//! a slice by the type of what `collect_seq` is handed (`&Vec<T>` or
//! `&[T]`, which is what serde's own `Serialize` impls hand it), and the
//! decoder by the type of the visitor `deserialize_seq` is handed (the one
//! serde's `Vec<T>` uses, found once by asking serde). Both checks are made
//! wherever a sequence occurs, so they hold for nested values too: a
//! `(Vec<u8>, String)` argument tuple, a struct field, an `Option<Vec<f64>>`,
//! a `Vec<Vec<i32>>` (the outer one item by item, each inner one in bulk).
//! And since the bytes are the same either way, a custom impl that writes
//! such a slice item by item and reads it back in bulk (or the other way
//! round) still round-trips. Strings and byte buffers (`serde_bytes`) are
//! one copy in any serde format; large ones are decoded into an owned buffer
//! handed to the visitor, so that `String` and `ByteBuf` take it without a
//! second copy.
//!
//! A large encoding goes straight into a shared-memory region ([`Out`]), so
//! the bytes a worker reads are the bytes the encoder wrote.

use std::any::TypeId;
use std::fmt;
use std::mem::ManuallyDrop;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};

use crate::shm::Lease;
use crate::wire::{Payload, PayloadRef, SHM_THRESHOLD};

/// A value that cannot be encoded or decoded.
#[derive(Debug)]
pub(crate) struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error(msg.to_string())
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, Error>;

/// Where an encoding goes: a `Vec`, and, if spilling is on, a shared-memory
/// region once the encoding reaches the size that travels in one.
#[derive(Debug, Default)]
pub(crate) struct Out {
    vec: Vec<u8>,
    lease: Option<Lease>,
    spill: bool,
}

impl Out {
    /// An empty output; `spill`: large encodings go to a shared region.
    pub(crate) fn new(spill: bool) -> Out {
        Out {
            vec: Vec::new(),
            lease: None,
            spill,
        }
    }

    /// Appends `bytes`. Inline, so that the fixed-size writes of numbers
    /// and tags (most of a small encoding) copy without a `memcpy` call.
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        if self.lease.is_none() && (!self.spill || self.vec.len() + bytes.len() < SHM_THRESHOLD) {
            self.vec.extend_from_slice(bytes);
            return Ok(());
        }
        self.put_spilling(bytes)
    }

    /// [`put`](Out::put) into a region, or of the bytes that make the
    /// encoding large enough to move into one (only `put` calls it, for
    /// those two cases).
    #[inline(never)]
    fn put_spilling(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(lease) = &mut self.lease {
            return lease.put(bytes).map_err(shm_error);
        }
        let total = self.vec.len() + bytes.len();
        debug_assert!(self.spill && total >= SHM_THRESHOLD);
        let mut lease = Lease::acquire(total).map_err(shm_error)?;
        lease.put(&self.vec).map_err(shm_error)?;
        lease.put(bytes).map_err(shm_error)?;
        self.vec.clear();
        self.lease = Some(lease);
        Ok(())
    }

    /// Forgets what was written (a region goes back to its pool), keeping
    /// the `Vec`'s capacity.
    pub(crate) fn clear(&mut self) {
        self.vec.clear();
        self.lease = None;
    }

    /// What was written, to send.
    pub(crate) fn as_payload(&self) -> PayloadRef<'_> {
        match &self.lease {
            Some(lease) => PayloadRef::Shm(lease),
            None => PayloadRef::Bytes(&self.vec),
        }
    }

    /// What was written, as a payload.
    pub(crate) fn into_payload(self) -> Payload {
        match self.lease {
            Some(lease) => Payload::Shm(Box::new(lease)),
            None => Payload::Inline(self.vec),
        }
    }
}

fn shm_error(e: std::io::Error) -> Error {
    Error(format!("cannot write a payload to shared memory: {e}"))
}

/// Encodes `value` at the end of `out`.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Out) -> Result<()> {
    value.serialize(&mut Encoder {
        out,
        verbatim: false,
    })
}

/// Encodes `value` into a new `Vec`.
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Out::new(false);
    encode(value, &mut out)?;
    Ok(out.vec)
}

/// Encodes `value` into a payload: a large one straight into a region.
pub(crate) fn to_payload<T: Serialize + ?Sized>(value: &T) -> Result<Payload> {
    // A short encoding is written into this thread's scratch buffer and
    // kept inline in the payload: no allocation per task.
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // Kept only while small: a thread holds no large buffer for this.
    fn keep(scratch: Vec<u8>) {
        if scratch.capacity() <= 4096 {
            let _ = SCRATCH.try_with(|s| s.set(scratch));
        }
    }
    let mut out = Out::new(true);
    out.vec = SCRATCH.try_with(|s| s.take()).unwrap_or_default();
    out.vec.clear();
    let encoded = encode(value, &mut out);
    let small = match (&encoded, &out.lease) {
        (Ok(()), None) => crate::wire::SmallBytes::new(&out.vec),
        _ => None,
    };
    let payload = match small {
        Some(small) => {
            keep(std::mem::take(&mut out.vec));
            Payload::Small(small)
        }
        None => {
            if out.lease.is_some() {
                // Spilled to shared memory: the buffer is free again.
                keep(std::mem::take(&mut out.vec));
            }
            encoded?;
            out.into_payload()
        }
    };
    Ok(payload)
}

/// Decodes a `T` that fills `bytes` exactly.
pub(crate) fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut d = Decoder { input: bytes };
    let value = T::deserialize(&mut d)?;
    if !d.input.is_empty() {
        return Err(Error(format!(
            "{} bytes left over after the value",
            d.input.len()
        )));
    }
    Ok(value)
}

/// Encodes a varint length.
pub(crate) fn put_len(out: &mut Vec<u8>, n: usize) {
    let mut buf = [0u8; 10];
    let len = varint(n as u64, &mut buf);
    out.extend_from_slice(&buf[..len]);
}

fn varint(mut n: u64, buf: &mut [u8; 10]) -> usize {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf[i] = byte;
            return i + 1;
        }
        buf[i] = byte | 0x80;
        i += 1;
    }
}

/// Views a slice of plain numbers as its bytes.
fn bytes_of<T: Plain>(items: &[T]) -> &[u8] {
    // SAFETY: `Plain` types have no padding and no invalid bit patterns;
    // the slice's memory is `size_of_val(items)` initialised bytes.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast(), std::mem::size_of_val(items)) }
}

/// Numbers whose memory is their encoding: no padding, every bit pattern
/// valid, and (where `BULK`) laid out as the format encodes them.
///
/// # Safety
///
/// Implemented only for primitive numbers.
unsafe trait Plain: Copy + 'static {
    /// The memory is the encoding: single bytes anywhere, multi-byte
    /// numbers on little-endian targets, `usize` and `isize` (encoded as
    /// 64-bit numbers, as serde serializes them) on 64-bit ones.
    const BULK: bool;
}

/// Calls `$m!(T, bulk)` for every `Plain` type.
macro_rules! plain_types {
    ($m:ident) => {
        $m!(u8, true);
        $m!(i8, true);
        $m!(u16, LITTLE);
        $m!(i16, LITTLE);
        $m!(u32, LITTLE);
        $m!(i32, LITTLE);
        $m!(u64, LITTLE);
        $m!(i64, LITTLE);
        $m!(u128, LITTLE);
        $m!(i128, LITTLE);
        $m!(f32, LITTLE);
        $m!(f64, LITTLE);
        $m!(usize, LITTLE && cfg!(target_pointer_width = "64"));
        $m!(isize, LITTLE && cfg!(target_pointer_width = "64"));
    };
}

const LITTLE: bool = cfg!(target_endian = "little");

macro_rules! impl_plain {
    ($t:ty, $bulk:expr) => {
        // SAFETY: a primitive number: no padding, any bit pattern valid.
        unsafe impl Plain for $t {
            const BULK: bool = $bulk;
        }
    };
}
plain_types!(impl_plain);

/// The bytes of `iter` if it is a `&Vec<T>` or `&[T]` of a plain `T`, and
/// the number of items.
fn plain_slice<'a, I>(iter: &'a I) -> Option<(usize, &'a [u8])> {
    let id = typeid::of::<I>();
    macro_rules! check {
        ($t:ty, $bulk:expr) => {
            if <$t as Plain>::BULK && id == typeid::of::<&Vec<$t>>() {
                // SAFETY: `I` is `&Vec<$t>` (type ids are equal; lifetimes
                // aside, and the borrow lives at least as long as `iter`).
                let v: &'a Vec<$t> = unsafe { *(iter as *const I).cast::<&'a Vec<$t>>() };
                return Some((v.len(), bytes_of(v.as_slice())));
            }
            if <$t as Plain>::BULK && id == typeid::of::<&[$t]>() {
                // SAFETY: as above, `I` is `&[$t]`.
                let v: &'a [$t] = unsafe { *(iter as *const I).cast::<&'a [$t]>() };
                return Some((v.len(), bytes_of(v)));
            }
        };
    }
    plain_types!(check);
    None
}

struct Encoder<'o> {
    out: &'o mut Out,
    /// Set by a [`VERBATIM`] newtype: its bytes are written as they are.
    verbatim: bool,
}

/// The name of the newtype by which a value asks to be written as its
/// bytes alone, with no length, in one copy: how a value already encoded
/// (`remote::Verbatim`) travels as itself.
pub(crate) const VERBATIM: &str = "\0crew::verbatim";

impl Encoder<'_> {
    fn len(&mut self, n: usize) -> Result<()> {
        let mut buf = [0u8; 10];
        let len = varint(n as u64, &mut buf);
        self.out.put(&buf[..len])
    }
}

impl ser::Serializer for &mut Encoder<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.put(&[v as u8])
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.out.put(&[v])
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.out.put(&v.to_le_bytes())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.out.put(&(v as u32).to_le_bytes())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        if !std::mem::take(&mut self.verbatim) {
            self.len(v.len())?;
        }
        self.out.put(v)
    }
    fn serialize_none(self) -> Result<()> {
        self.out.put(&[0])
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        self.out.put(&[1])?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result<()> {
        self.len(index as usize)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<()> {
        if name == VERBATIM {
            self.verbatim = true;
            let done = value.serialize(&mut *self);
            // A value that did not write bytes leaves no flag behind.
            self.verbatim = false;
            return done;
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<()> {
        self.len(index as usize)?;
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        let len =
            len.ok_or_else(|| Error("a sequence of unknown length cannot be encoded".into()))?;
        self.len(len)?;
        Ok(self)
    }
    fn collect_seq<I>(self, iter: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        if let Some((n, bytes)) = plain_slice(&iter) {
            self.len(n)?;
            return self.out.put(bytes);
        }
        let iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let mut seq = ser::Serializer::serialize_seq(&mut *self, len)?;
        for item in iter {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        ser::SerializeSeq::end(seq)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.len(index as usize)?;
        Ok(self)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        let len = len.ok_or_else(|| Error("a map of unknown length cannot be encoded".into()))?;
        self.len(len)?;
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.len(index as usize)?;
        Ok(self)
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident $(, $key:ident)?) => {
        impl ser::$trait for &mut Encoder<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? value: &T) -> Result<()> {
                $(let _ = $key;)?
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<()> {
                Ok(())
            }
        }
    };
}
compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);
compound!(SerializeStruct, serialize_field, key);
compound!(SerializeStructVariant, serialize_field, key);

impl ser::SerializeMap for &mut Encoder<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

/// Strings and byte buffers at least this long are decoded into a buffer
/// of their own handed to the visitor (which `String` and `ByteBuf` keep
/// as is); shorter ones are lent.
const OWNED_AT: usize = 64 * 1024;

/// Byte buffers at least this large are lent from a call's arguments to
/// its result ([`take_spare`]).
const SPARE_MIN: usize = 1 << 20;

thread_local! {
    /// A byte buffer that a decode on this thread may take instead of
    /// allocating one ([`with_spare`]).
    static SPARE: std::cell::Cell<Option<Vec<u8>>> = const { std::cell::Cell::new(None) };
}

/// Takes the buffer out of a call's arguments when they are one large byte
/// buffer, `(Vec<u8>,)`, `(ByteBuf,)` or `(String,)`, once they are encoded
/// (the caller moved them into the call, and they are dropped next), so that
/// the call's result can be decoded into it ([`with_spare`]): memory the
/// caller's program already has, faulted in, instead of a fresh block the
/// allocator maps and the kernel faults in and zeroes page by page, with the
/// argument's block unmapped on the way. A tuple has no `Drop` of its own,
/// so nothing can tell that the buffer left before the rest was dropped.
pub(crate) fn take_spare<X>(args: &mut X) -> Option<Vec<u8>> {
    let t = typeid::of::<X>();
    let buf = if t == typeid::of::<(Vec<u8>,)>() {
        // SAFETY: `X` is `(Vec<u8>,)` (equal type ids; it has no lifetimes).
        let args = unsafe { &mut *(args as *mut X).cast::<(Vec<u8>,)>() };
        std::mem::take(&mut args.0)
    } else if t == typeid::of::<(serde_bytes::ByteBuf,)>() {
        // SAFETY: as above, for `(ByteBuf,)`.
        let args = unsafe { &mut *(args as *mut X).cast::<(serde_bytes::ByteBuf,)>() };
        std::mem::take(&mut args.0).into_vec()
    } else if t == typeid::of::<(String,)>() {
        // SAFETY: as above, for `(String,)`.
        let args = unsafe { &mut *(args as *mut X).cast::<(String,)>() };
        std::mem::take(&mut args.0).into_bytes()
    } else {
        return None;
    };
    (buf.capacity() >= SPARE_MIN).then_some(buf)
}

/// Runs `decode` with `spare` lent to it: the first byte sequence (a
/// `Vec<u8>`, `ByteBuf`, `String`) of at least `SPARE_MIN` bytes that fits
/// it without wasting more than a quarter is decoded into it. Dropped after
/// if unused.
pub(crate) fn with_spare<T>(spare: Option<Vec<u8>>, decode: impl FnOnce() -> T) -> T {
    /// Clears the lent buffer, even if `decode` panics.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            drop(SPARE.with(|s| s.take()));
        }
    }
    if spare.is_none() {
        return decode();
    }
    SPARE.with(|s| s.set(spare));
    let _clear = Clear;
    decode()
}

/// A `Vec<u8>` of capacity `n`, for a large string or byte buffer.
///
/// Fresh memory, which the copy into it faults in page by page. Neither
/// huge pages nor prefaulting pay for themselves here (counted with
/// `perf` on ten 100 MB echoes, `crates/crew-cli/examples/echo_counts.rs`):
/// `madvise(MADV_HUGEPAGE)` cuts the faults 500-fold but on this kind of
/// virtual machine a fresh huge page is slow to clear (its memory was
/// handed back to the host), and the kernel time of the echoes rose by a
/// half to double; `MADV_POPULATE_WRITE` alone cut the faults twelvefold
/// and left the kernel time as it was (the same pages are allocated and
/// zeroed either way). What makes a destination cheap is reuse: a worker
/// keeps freed memory in its heap (`worker.rs`), so after the first task
/// its arguments land in pages it already has, and a blocking call lends
/// its arguments' byte buffer to its result ([`take_spare`]), which this
/// takes when it fits.
fn alloc_bytes(n: usize) -> Vec<u8> {
    if n >= SPARE_MIN
        && let Some(mut spare) = SPARE.with(|s| s.take())
    {
        if spare.capacity() >= n && spare.capacity() - n <= n / 4 {
            spare.clear();
            return spare;
        }
        SPARE.with(|s| s.set(Some(spare)));
    }
    Vec::with_capacity(n)
}

/// The type of the visitor serde's `Vec<T>` hands `deserialize_seq`.
fn vec_visitor<T: DeserializeOwned>() -> TypeId {
    /// A deserializer that fails at once, saying which visitor it got.
    struct Probe;
    #[derive(Debug)]
    struct Found(Option<TypeId>);
    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<M: fmt::Display>(_: M) -> Found {
            Found(None)
        }
    }
    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Found> {
            Err(Found(None))
        }
        fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Found> {
            Err(Found(Some(typeid::of::<V>())))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct tuple
            tuple_struct map struct enum identifier ignored_any
        }
    }
    match <Vec<T> as de::Deserialize>::deserialize(Probe) {
        Err(Found(Some(id))) => id,
        // Not a sequence: no visitor will ever match this one.
        _ => TypeId::of::<Probe>(),
    }
}

/// Moves `a` into a `B` of the very same type.
///
/// # Safety
///
/// `A` and `B` must be the same type.
unsafe fn same<A, B>(a: A) -> B {
    let a = ManuallyDrop::new(a);
    // SAFETY: per the contract, reading an `A` as a `B` reads the same
    // type; `a` is not dropped, so the value moves.
    unsafe { std::ptr::read((&*a as *const A).cast::<B>()) }
}

struct Decoder<'de> {
    input: &'de [u8],
}

impl<'de> Decoder<'de> {
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if self.input.len() < n {
            return Err(Error(format!(
                "the payload ends early: needed {n} bytes, had {}",
                self.input.len()
            )));
        }
        let (a, b) = self.input.split_at(n);
        self.input = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut n = 0u64;
        for i in 0..10 {
            let byte = self.array::<1>()?[0];
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(Error("a varint overflows 64 bits".into()));
            }
            n |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Error("a varint overflows 64 bits".into()))
    }

    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.varint()?).map_err(|_| Error("a length overflows usize".into()))
    }

    fn bytes(&mut self) -> Result<&'de [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    /// A `Vec<T>` of plain numbers: its length, then its memory.
    fn plain_vec<T: Plain>(&mut self) -> Result<Vec<T>> {
        let n = self.len()?;
        let bytes = n
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error("a sequence's length overflows".into()))?;
        let src = self.take(bytes)?;
        #[cfg(test)]
        test::BULK_DECODES.with(|c| c.set(c.get() + 1));
        // Fresh memory when large (see `alloc_bytes`), unless a buffer is
        // lent for bytes.
        let mut v = if std::mem::size_of::<T>() == 1 && std::mem::align_of::<T>() == 1 {
            let mut b = ManuallyDrop::new(alloc_bytes(n));
            // SAFETY: the allocation of a `Vec<u8>` of capacity `c` has the
            // layout of a `Vec<T>` of capacity `c`, as `T` has the size and
            // alignment of `u8`; it is empty, and `b` is not dropped.
            unsafe { Vec::from_raw_parts(b.as_mut_ptr().cast::<T>(), 0, b.capacity()) }
        } else {
            Vec::<T>::with_capacity(n)
        };
        // SAFETY: `v` has room for `n` items, `bytes` bytes, which `src`
        // holds; any bytes make valid `Plain` items, so all `n` are
        // initialised after the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), v.as_mut_ptr().cast::<u8>(), bytes);
            v.set_len(n);
        }
        Ok(v)
    }

    /// Decodes a `Vec` of plain numbers in bulk if `V` is the visitor of
    /// serde's own `Vec<T>` for such a `T`.
    fn plain_seq<V: Visitor<'de>>(&mut self) -> Result<Option<V::Value>> {
        let value = typeid::of::<V::Value>();
        macro_rules! check {
            ($t:ty, $bulk:expr) => {
                if <$t as Plain>::BULK && value == typeid::of::<Vec<$t>>() {
                    static VISITOR: std::sync::OnceLock<TypeId> = std::sync::OnceLock::new();
                    if typeid::of::<V>() == *VISITOR.get_or_init(vec_visitor::<$t>) {
                        let v = self.plain_vec::<$t>()?;
                        // SAFETY: `V::Value` is `Vec<$t>` (equal type ids;
                        // `Vec<$t>` has no lifetimes to differ in).
                        return Ok(Some(unsafe { same::<Vec<$t>, V::Value>(v) }));
                    }
                }
            };
        }
        plain_types!(check);
        Ok(None)
    }
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = Error;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error(
            "this format needs the type: it cannot decode a self-describing value".into(),
        ))
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.array::<1>()?[0] {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(Error(format!("{b} is not a bool"))),
        }
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(i8::from_le_bytes(self.array()?))
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i16(i16::from_le_bytes(self.array()?))
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i32(i32::from_le_bytes(self.array()?))
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i64(i64::from_le_bytes(self.array()?))
    }
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i128(i128::from_le_bytes(self.array()?))
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.array::<1>()?[0])
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u16(u16::from_le_bytes(self.array()?))
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u32(u32::from_le_bytes(self.array()?))
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u64(u64::from_le_bytes(self.array()?))
    }
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u128(u128::from_le_bytes(self.array()?))
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f32(f32::from_le_bytes(self.array()?))
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(f64::from_le_bytes(self.array()?))
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = u32::from_le_bytes(self.array()?);
        let c = char::from_u32(n).ok_or_else(|| Error(format!("{n:#x} is not a char")))?;
        visitor.visit_char(c)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bytes = self.bytes()?;
        let s = std::str::from_utf8(bytes).map_err(|e| Error(format!("a string: {e}")))?;
        visitor.visit_borrowed_str(s)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bytes = self.bytes()?;
        let s = std::str::from_utf8(bytes).map_err(|e| Error(format!("a string: {e}")))?;
        if s.len() >= OWNED_AT {
            let mut owned = alloc_bytes(s.len());
            owned.extend_from_slice(s.as_bytes());
            // SAFETY: a copy of `s`, which is UTF-8.
            return visitor.visit_string(unsafe { String::from_utf8_unchecked(owned) });
        }
        visitor.visit_borrowed_str(s)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bytes = self.bytes()?;
        if bytes.len() >= OWNED_AT {
            let mut owned = alloc_bytes(bytes.len());
            owned.extend_from_slice(bytes);
            return visitor.visit_byte_buf(owned);
        }
        visitor.visit_borrowed_bytes(bytes)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.array::<1>()?[0] {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            b => Err(Error(format!("{b} is not an option's tag"))),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if let Some(v) = self.plain_seq::<V>()? {
            return Ok(v);
        }
        let left = self.len()?;
        visitor.visit_seq(Items { de: self, left })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Items {
            de: self,
            left: len,
        })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        visitor.visit_map(Items { de: self, left })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(self)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.varint()?;
        let n = u32::try_from(n).map_err(|_| Error(format!("variant {n} is out of range")))?;
        visitor.visit_u32(n)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(Error("this format cannot skip a value".into()))
    }
}

/// The items of a sequence, tuple or map.
struct Items<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // Never more than the bytes left: a garbled length must not make a
        // visitor reserve more than the payload could hold.
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::EnumAccess<'de> for &mut Decoder<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let n = self.varint()?;
        let n = u32::try_from(n).map_err(|_| Error(format!("variant {n} is out of range")))?;
        let v = seed.deserialize(n.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }
    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    thread_local! {
        /// Sequences this thread decoded in bulk.
        pub(super) static BULK_DECODES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn round_trip<T>(value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        // Regions are counted by the tests of `payload_tests`.
        let _one = crate::payload_tests::ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let bytes = to_vec(value).unwrap();
        let back: T = from_slice(&bytes).unwrap();
        assert_eq!(&back, value);
        // Spilled into a region past the threshold: the same bytes.
        let payload = to_payload(value).unwrap();
        assert_eq!(payload.bytes(), &bytes[..]);
        assert_eq!(
            matches!(payload, Payload::Shm(_)),
            bytes.len() >= SHM_THRESHOLD
        );
    }

    /// `n` items of every plain type, round-tripped alone, in an argument
    /// tuple, and as a result.
    fn every_plain(n: usize) {
        macro_rules! one {
            ($t:ty, $bulk:expr) => {{
                let v: Vec<$t> = (0..n).map(|i| (i % 120) as $t).collect();
                assert!($bulk, "every plain type is copied in bulk on this target");
                assert!(plain_slice(&&v).is_some() && plain_slice(&v.as_slice()).is_some());
                let before = BULK_DECODES.with(|c| c.get());
                round_trip(&v);
                assert_eq!(
                    BULK_DECODES.with(|c| c.get()),
                    before + 1,
                    "decoded in bulk"
                );
                round_trip(&(v.clone(),));
                round_trip(&(7u8, v.clone(), String::from("x")));
                let bytes = to_vec(&v).unwrap();
                let mut len = Vec::new();
                put_len(&mut len, n);
                assert_eq!(bytes.len(), len.len() + n * std::mem::size_of::<$t>());
                // Item by item gives the same bytes.
                let mut out = Out::new(false);
                ser::Serializer::collect_seq(
                    &mut Encoder {
                        out: &mut out,
                        verbatim: false,
                    },
                    v.iter().copied(),
                )
                .unwrap();
                assert_eq!(out.vec, bytes);
            }};
        }
        plain_types!(one);
        let s: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        round_trip(&s);
        round_trip(&(s.clone(),));
    }

    #[test]
    fn plain_sequences_round_trip_at_every_size() {
        for n in [0, 1, 2, 1000] {
            every_plain(n);
        }
        // Around the shared-memory threshold, in bytes.
        for n in [
            SHM_THRESHOLD - 2,
            SHM_THRESHOLD - 1,
            SHM_THRESHOLD,
            SHM_THRESHOLD + 1,
        ] {
            round_trip(&vec![3u8; n]);
            round_trip(&(vec![3u8; n],));
            round_trip(&vec![1.5f64; n / 8]);
            round_trip(&"y".repeat(n));
        }
        round_trip(&vec![9u8; 8 << 20]);
        round_trip(&(0..(1 << 20)).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum Shape {
        Unit,
        New(Vec<i64>),
        Tuple(u8, Vec<u16>),
        Struct { a: Option<Vec<f32>>, b: String },
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Nested {
        bytes: Vec<u8>,
        rows: Vec<Vec<i32>>,
        maybe: Option<Vec<f64>>,
        shapes: Vec<Shape>,
        map: BTreeMap<String, Vec<u64>>,
        boxed: Box<[u32]>,
        unit: (),
        flag: bool,
        c: char,
        wide: (u128, i128, isize, usize),
    }

    #[test]
    fn nested_values_round_trip() {
        let value = Nested {
            bytes: vec![1, 2, 3],
            rows: vec![vec![], vec![-1], (0..1000).collect()],
            maybe: Some(vec![0.5; 300]),
            shapes: vec![
                Shape::Unit,
                Shape::New(vec![i64::MIN, i64::MAX]),
                Shape::Tuple(4, vec![65535]),
                Shape::Struct {
                    a: None,
                    b: "é".into(),
                },
                Shape::Struct {
                    a: Some(vec![]),
                    b: String::new(),
                },
            ],
            map: [("k".to_string(), vec![u64::MAX])].into(),
            boxed: vec![7; 40].into_boxed_slice(),
            unit: (),
            flag: true,
            c: '✓',
            wide: (u128::MAX, i128::MIN, -3, 4),
        };
        round_trip(&value);
        round_trip(&vec![vec![5u8; 70_000]; 3]);
        round_trip(&Some((vec![1u8; 200_000], vec![2u32; 50_000])));
    }

    /// Written item by item, read back in bulk, and the other way round.
    #[test]
    fn bulk_and_item_by_item_agree() {
        struct ByItems(Vec<i32>);
        impl Serialize for ByItems {
            fn serialize<S: ser::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().copied())
            }
        }
        let bytes = to_vec(&ByItems(vec![-5, 6, 7])).unwrap();
        assert_eq!(from_slice::<Vec<i32>>(&bytes).unwrap(), [-5, 6, 7]);

        #[derive(Debug, PartialEq)]
        struct Sorted(Vec<i32>);
        impl<'de> Deserialize<'de> for Sorted {
            fn deserialize<D: de::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Sorted, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Sorted;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("numbers")
                    }
                    fn visit_seq<A: de::SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> std::result::Result<Sorted, A::Error> {
                        let mut v = Vec::new();
                        while let Some(x) = seq.next_element::<i32>()? {
                            v.push(x);
                        }
                        v.sort();
                        Ok(Sorted(v))
                    }
                }
                d.deserialize_seq(V)
            }
        }
        let bytes = to_vec(&vec![3i32, -1, 2]).unwrap();
        assert_eq!(
            from_slice::<Sorted>(&bytes).unwrap(),
            Sorted(vec![-1, 2, 3])
        );
    }

    #[test]
    fn garbage_fails_without_panicking_or_allocating_wildly() {
        // A length far beyond the bytes that follow.
        let mut huge = Vec::new();
        put_len(&mut huge, usize::MAX / 2);
        assert!(from_slice::<Vec<u64>>(&huge).is_err());
        assert!(from_slice::<Vec<String>>(&huge).is_err());
        assert!(from_slice::<Vec<u8>>(&[5, 1, 2]).is_err());
        assert!(from_slice::<bool>(&[2]).is_err());
        assert!(from_slice::<char>(&0xd800u32.to_le_bytes()).is_err());
        assert!(from_slice::<String>(&[2, 0xff, 0xfe]).is_err());
        assert!(from_slice::<Option<u8>>(&[2]).is_err());
        assert!(
            from_slice::<u32>(&[1, 2, 3, 4, 5]).is_err(),
            "trailing bytes"
        );
        assert!(from_slice::<u64>(&[0xff; 11]).is_err());
        let none: Option<Vec<u8>> = from_slice(&[0]).unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn a_lent_buffer_receives_the_first_byte_sequence_that_fits() {
        use serde_bytes::ByteBuf;
        let n = SPARE_MIN + 5;
        let data: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        let encoded = to_vec(&(data.clone(), 9u8)).unwrap();
        // Taken from arguments of one byte buffer only, and only if large.
        let mut args = (Vec::<u8>::with_capacity(n),);
        let spare = take_spare(&mut args).expect("a large Vec<u8>");
        assert_eq!(args.0.capacity(), 0, "the buffer left the arguments");
        assert!(take_spare(&mut (vec![0u8; 10],)).is_none());
        assert!(take_spare(&mut (ByteBuf::from(vec![0u8; n]),)).is_some());
        assert!(take_spare(&mut ("x".repeat(n),)).is_some());
        assert!(take_spare(&mut (vec![0u8; n], 1u8)).is_none());
        assert!(take_spare(&mut vec![0u8; n]).is_none());
        // The decoded `Vec<u8>` is the lent buffer itself.
        let at = spare.as_ptr();
        let (v, k): (Vec<u8>, u8) = with_spare(Some(spare), || from_slice(&encoded)).unwrap();
        assert!(v == data && k == 9);
        assert_eq!(v.as_ptr(), at);
        // As are a `ByteBuf`, a `String` and a `Vec<i8>`.
        let spare = vec![0u8; n + 100];
        let at = spare.as_ptr();
        let b: ByteBuf = with_spare(Some(spare), || {
            from_slice(&to_vec(&ByteBuf::from(data.clone())).unwrap())
        })
        .unwrap();
        assert!(*b == data && b.as_ptr() == at);
        let text = "abc".repeat(n / 3);
        let spare = Vec::with_capacity(text.len());
        let at = spare.as_ptr();
        let t: String = with_spare(Some(spare), || from_slice(&to_vec(&text).unwrap())).unwrap();
        assert!(t == text && t.as_ptr() == at);
        let signed: Vec<i8> = data.iter().map(|&x| x as i8).collect();
        let spare = Vec::with_capacity(n);
        let at = spare.as_ptr();
        let back: Vec<i8> =
            with_spare(Some(spare), || from_slice(&to_vec(&signed).unwrap())).unwrap();
        assert!(back == signed && back.as_ptr().cast::<u8>() == at);
        // Too small, or so large that a quarter would be wasted: not used.
        for cap in [n - 1, n * 2] {
            let spare = Vec::with_capacity(cap);
            let at = spare.as_ptr();
            let v: Vec<u8> =
                with_spare(Some(spare), || from_slice(&to_vec(&data).unwrap())).unwrap();
            assert!(v == data && v.as_ptr() != at, "capacity {cap}");
        }
        // Only the first sequence that fits takes it; none is left after.
        let spare = Vec::with_capacity(n);
        let at = spare.as_ptr();
        let (a, b): (Vec<u8>, Vec<u8>) = with_spare(Some(spare), || {
            from_slice(&to_vec(&(data.clone(), data.clone())).unwrap())
        })
        .unwrap();
        assert!(a == data && b == data && a.as_ptr() == at && b.as_ptr() != at);
        assert!(SPARE.with(|s| s.take()).is_none());
        // Nor after a decode that failed.
        let _ = with_spare(Some(vec![0u8; n]), || from_slice::<Vec<u8>>(&[5, 1]));
        assert!(SPARE.with(|s| s.take()).is_none());
    }
}
