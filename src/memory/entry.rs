//! One cache entry on disk: a checked header, then the result's postcard
//! bytes. Written to a temporary file and renamed into place, so a reader
//! sees a whole entry or none; read back only if every check passes.
//! The layout is in `README.md` beside this file.
//!
//! A read opens the entry and checks its header against the file
//! ([`open`]); the payload is then either read into memory the caller
//! chose, its checksum computed piece by piece while each piece is still
//! in the processor's cache ([`Opened::read_into`]: one pass over the
//! bytes), or mapped without reading it ([`Opened::map`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use memmap2::{Mmap, MmapOptions};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// The first bytes of every entry.
pub(crate) const MAGIC: [u8; 8] = *b"crewmem\0";
/// The format this code writes and reads; any other is reported and
/// recomputed.
pub(crate) const VERSION: u32 = 1;
/// Header bytes before the padding.
pub(crate) const HEADER: usize = 64;
/// Entries at least this large may be mapped rather than read: below it
/// `read` is cheaper than setting up a mapping.
const MAP_FROM: u64 = 1 << 20;
/// How stale an entry's "last used" time may get before a hit refreshes
/// it: eviction order is exact to this much.
const TOUCH_EVERY: Duration = Duration::from_secs(10);
/// The name every entry file ends with.
pub(crate) const SUFFIX: &str = ".entry";
/// Temporary files start with this; they are never read as entries.
pub(crate) const TEMP_PREFIX: &str = ".tmp.";
/// What [`open`] reads in its one `read`: the header and, for most
/// entries, the whole payload, so that a small hit costs one system call.
const FIRST_READ: usize = 4096;
/// The piece [`Opened::read_into`] reads and then hashes: small enough to
/// still be in the processor's cache when it is hashed.
const PIECE: usize = 256 << 10;

/// What a read found.
#[derive(Debug)]
pub(crate) enum Found {
    /// No entry under that name.
    Missing,
    /// An entry that fails a check: why.
    Corrupt(String),
    /// An entry whose header passed every check, its payload not yet read.
    Whole(Opened),
}

/// An open entry whose header, length and function key are checked; its
/// payload is read by [`read_into`](Opened::read_into) (which checks its
/// checksum) or mapped by [`map`](Opened::map) (which does not).
#[derive(Debug)]
pub(crate) struct Opened {
    file: File,
    modified: Option<SystemTime>,
    len: u64,
    payload_at: usize,
    payload_len: usize,
    sum: u64,
    /// The file's first bytes, read by `open`: the header and the start of
    /// the payload (all of it in a small entry).
    first: Vec<u8>,
    /// How long the result took to compute.
    pub(crate) compute: Duration,
}

impl Opened {
    /// The payload's length in bytes.
    pub(crate) fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The payload's first bytes, already read (all of a small payload,
    /// none past the end).
    pub(crate) fn payload_start(&self) -> &[u8] {
        self.first.get(self.payload_at..).unwrap_or_default()
    }

    /// True if the entry is large enough to be worth mapping.
    pub(crate) fn is_large(&self) -> bool {
        self.len >= MAP_FROM
    }

    /// Reads the payload into `parts`, in order (their lengths add up to
    /// the payload's), computing its checksum on the way: each piece is
    /// hashed right after it is copied, while it is still in the cache, so
    /// the payload is read once. Fails, saying why, if the file is shorter
    /// than its header says or the checksum does not match.
    pub(crate) fn read_into(&self, parts: &mut [&mut [u8]]) -> Result<(), String> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total != self.payload_len {
            return Err(format!(
                "a payload of {} bytes read as {total}",
                self.payload_len
            ));
        }
        let start = self.payload_start();
        let mut hash = Xxh3Default::new();
        let mut at = 0;
        for part in parts.iter_mut() {
            let mut done = 0;
            while done < part.len() {
                let n = if at < start.len() {
                    let n = (start.len() - at).min(part.len() - done);
                    part[done..done + n].copy_from_slice(&start[at..at + n]);
                    n
                } else {
                    let end = part.len().min(done + PIECE);
                    match self
                        .file
                        .read_at(&mut part[done..end], (self.payload_at + at) as u64)
                    {
                        // The file shrank under this handle: a rename
                        // leaves it alone, so something damaged it.
                        Ok(0) => {
                            return Err(format!(
                                "truncated: the payload ends after {at} of {} bytes",
                                self.payload_len
                            ));
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(format!("cannot read the payload: {e}")),
                    }
                };
                hash.update(&part[done..done + n]);
                done += n;
                at += n;
            }
        }
        if hash.digest() != self.sum {
            return Err("payload checksum mismatch".into());
        }
        Ok(())
    }

    /// Maps the whole entry read-only, without reading it (pages come in
    /// from the page cache as they are used), and returns the map with the
    /// payload's offset in it. The payload's checksum is not checked: only
    /// what [`open`] checked.
    pub(crate) fn map(&self) -> io::Result<(Mmap, usize)> {
        // SAFETY: entries are only ever replaced by rename, never written in
        // place, so the mapped file does not change while the map lives
        // (a file altered in place by another program is outside this
        // guarantee, as with every memory map).
        let map = unsafe { MmapOptions::new().map(&self.file)? };
        if map.len() as u64 != self.len {
            return Err(io::Error::other(format!(
                "mapped {} bytes of an entry of {}",
                map.len(),
                self.len
            )));
        }
        Ok((map, self.payload_at))
    }

    /// Records a hit in the entry's modification time, for
    /// least-recently-used eviction: `atime` is unreliable (`relatime`,
    /// `noatime`), the modification time is ours to set. At most once per
    /// `TOUCH_EVERY`, which saves a system call on most hits of a busy
    /// entry. A read-only cache cannot, and need not.
    pub(crate) fn touch(&self) {
        let now = SystemTime::now();
        let stale = self
            .modified
            .is_none_or(|m| now.duration_since(m).unwrap_or_default() > TOUCH_EVERY);
        if stale {
            let _ = self.file.set_modified(now);
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The padding after the header that puts the payload's data 8-aligned
/// after its leading varint (a sequence's length), so that a `Vec<f64>`
/// result can be used in place from a map.
fn padding(payload: &[u8]) -> usize {
    let varint = payload
        .iter()
        .take(10)
        .take_while(|&&b| b & 0x80 != 0)
        .count()
        + 1;
    (8 - (HEADER + varint) % 8) % 8
}

/// Reads from `offset` until `buf` is full or the file ends; how much.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The header's fields, once checked.
struct Head {
    payload_at: usize,
    payload_len: usize,
    sum: u64,
    compute: Duration,
}

/// Checks the header at the start of `first` (the file's first bytes) of
/// an entry of `len` bytes for function `func`.
fn check_head(first: &[u8], len: u64, func: u64) -> Result<Head, String> {
    if first.len() < HEADER {
        return Err(format!("truncated: {len} bytes, shorter than a header"));
    }
    if first[..8] != MAGIC {
        return Err("not a crew cache entry (bad magic)".into());
    }
    let version = u32_at(first, 8);
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads version {VERSION}"
        ));
    }
    if xxh3_64(&first[..56]) != u64_at(first, 56) {
        return Err("header checksum mismatch".into());
    }
    let payload_at = u32_at(first, 12) as usize;
    let payload_len = u64_at(first, 16);
    let announced = payload_at as u64 + payload_len;
    if payload_at < HEADER || announced != len {
        return Err(format!(
            "truncated or padded: {len} bytes, the header announces {announced}"
        ));
    }
    if u64_at(first, 32) != func {
        return Err("written for another function".into());
    }
    Ok(Head {
        payload_at,
        payload_len: usize::try_from(payload_len).map_err(|_| "too large to read".to_string())?,
        sum: u64_at(first, 24),
        compute: Duration::from_nanos(u64_at(first, 40)),
    })
}

/// Opens the entry at `path` for function `func` and checks its header
/// (magic, version, header checksum, length, function key), reading the
/// file's first few kilobytes in one `read`; the payload is read or
/// mapped by the caller.
pub(crate) fn open(path: &Path, func: u64) -> io::Result<Found> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let len = meta.len();
    let mut buf = [0u8; FIRST_READ];
    let want = usize::try_from(len).map_or(FIRST_READ, |l| l.min(FIRST_READ));
    let got = read_full_at(&file, &mut buf[..want], 0)?;
    let first = &buf[..got];
    Ok(match check_head(first, len, func) {
        Ok(head) => Found::Whole(Opened {
            file,
            modified: meta.modified().ok(),
            len,
            payload_at: head.payload_at,
            payload_len: head.payload_len,
            sum: head.sum,
            first: first.to_vec(),
            compute: head.compute,
        }),
        Err(why) => Found::Corrupt(why),
    })
}

/// Writes an entry holding `payload` for function `func` at `path`: to a
/// temporary file in the same folder, then renamed over `path`. Creates
/// the folder if needed.
pub(crate) fn write(path: &Path, func: u64, payload: &[u8], compute: Duration) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().expect("an entry path has a folder");
    std::fs::create_dir_all(dir)?;
    let pad = padding(payload);
    let mut head = vec![0u8; HEADER + pad];
    head[..8].copy_from_slice(&MAGIC);
    head[8..12].copy_from_slice(&VERSION.to_le_bytes());
    head[12..16].copy_from_slice(&((HEADER + pad) as u32).to_le_bytes());
    head[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    head[24..32].copy_from_slice(&xxh3_64(payload).to_le_bytes());
    head[32..40].copy_from_slice(&func.to_le_bytes());
    let nanos = u64::try_from(compute.as_nanos()).unwrap_or(u64::MAX);
    head[40..48].copy_from_slice(&nanos.to_le_bytes());
    let sum = xxh3_64(&head[..56]);
    head[56..64].copy_from_slice(&sum.to_le_bytes());

    let temp: PathBuf = dir.join(format!(
        "{TEMP_PREFIX}{}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry")
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        f.write_all(&head)?;
        f.write_all(payload)?;
        drop(f);
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// True if `path` holds an entry for `func` whose header is whole and
/// whose length matches it (the payload's checksum is not read).
pub(crate) fn looks_whole(path: &Path, func: u64) -> bool {
    matches!(open(path, func), Ok(Found::Whole(_)))
}

#[cfg(test)]
mod test {
    use super::*;

    #[derive(Debug)]
    enum Read {
        Missing,
        Corrupt(String),
        Whole(Vec<u8>, Opened),
    }

    /// Opens the entry and reads its payload: every check.
    fn read(path: &Path, func: u64) -> Read {
        match open(path, func).unwrap() {
            Found::Missing => Read::Missing,
            Found::Corrupt(why) => Read::Corrupt(why),
            Found::Whole(e) => {
                let mut v = vec![0; e.payload_len()];
                match e.read_into(&mut [&mut v]) {
                    Ok(()) => Read::Whole(v, e),
                    Err(why) => Read::Corrupt(why),
                }
            }
        }
    }

    #[test]
    fn round_trip_and_every_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f").join("a.entry");
        let payload = postcard::to_allocvec(&vec![1.5f64; 300]).unwrap();
        write(&path, 7, &payload, Duration::from_millis(3)).unwrap();
        let Read::Whole(got, e) = read(&path, 7) else {
            panic!("a whole entry")
        };
        assert_eq!(got, payload);
        assert_eq!(e.compute, Duration::from_millis(3));
        assert!(!e.is_large());
        // A small payload comes whole with the header, in one read.
        assert_eq!(e.payload_start(), &payload[..]);
        // The f64s start 8-aligned in the file.
        assert_eq!((e.payload_at + 2) % 8, 0);
        assert!(looks_whole(&path, 7));
        assert!(!looks_whole(&path, 8));
        assert!(matches!(read(&path, 8), Read::Corrupt(w) if w.contains("another function")));
        assert!(matches!(read(&dir.path().join("none"), 7), Read::Missing));

        let whole = std::fs::read(&path).unwrap();
        let corrupt = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            match read(&path, 7) {
                Read::Corrupt(why) => why,
                other => panic!("not detected: {other:?}"),
            }
        };
        assert!(corrupt(&whole[..whole.len() - 1]).contains("truncated"));
        assert!(corrupt(&whole[..10]).contains("truncated"));
        assert!(corrupt(&[]).contains("truncated"));
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(corrupt(&flipped).contains("payload checksum"));
        let mut other_version = whole.clone();
        other_version[8] = 2;
        assert!(corrupt(&other_version).contains("version 2"));
        let mut header = whole.clone();
        header[20] ^= 1;
        assert!(corrupt(&header).contains("header checksum"));
        assert!(
            corrupt(b"not an entry at all, just some text long enough for a header....")
                .contains("magic")
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.entry"]);
    }

    #[test]
    fn a_large_payload_is_read_in_pieces_and_checked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.entry");
        // Several pieces, and a tail shorter than one.
        let payload: Vec<u8> = (0..4 * PIECE + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        write(&path, 1, &payload, Duration::ZERO).unwrap();
        let Found::Whole(e) = open(&path, 1).unwrap() else {
            panic!("a whole entry")
        };
        assert!(e.is_large());
        assert_eq!(e.payload_start().len(), FIRST_READ - e.payload_at);
        // Read into two parts split at an odd place: the same bytes, and
        // the checksum computed piece by piece matches the one-shot one
        // the writer stored.
        let (mut a, mut b) = (vec![0; 5], vec![0; payload.len() - 5]);
        e.read_into(&mut [&mut a, &mut b]).unwrap();
        assert!(a[..] == payload[..5] && b[..] == payload[5..]);
        assert!(
            e.read_into(&mut [&mut a])
                .unwrap_err()
                .contains("read as 5")
        );
        let (map, at) = e.map().unwrap();
        assert!(map[at..] == payload[..]);

        // One flipped bit anywhere in the payload is found.
        let whole = std::fs::read(&path).unwrap();
        for at in [
            e.payload_at,
            FIRST_READ + 1,
            whole.len() / 2,
            whole.len() - 1,
        ] {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x40;
            std::fs::write(&path, &damaged).unwrap();
            match read(&path, 1) {
                Read::Corrupt(why) => assert!(why.contains("payload checksum"), "{at}: {why}"),
                other => panic!("byte {at} damaged, not detected: {other:?}"),
            }
        }
    }
}
