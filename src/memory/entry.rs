//! One cache entry on disk: a checked header, then the result's postcard
//! bytes. Written to a temporary file and renamed into place, so a reader
//! sees a whole entry or none; read back only if every check passes.
//! The layout is in `README.md` beside this file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use memmap2::{Mmap, MmapOptions};
use xxhash_rust::xxh3::xxh3_64;

/// The first bytes of every entry.
pub(crate) const MAGIC: [u8; 8] = *b"crewmem\0";
/// The format this code writes and reads; any other is reported and
/// recomputed.
pub(crate) const VERSION: u32 = 1;
/// Header bytes before the padding.
pub(crate) const HEADER: usize = 64;
/// Entries at least this large are read through a memory map rather than
/// into a buffer: below it `read` is cheaper than setting up a mapping.
const MAP_FROM: u64 = 1 << 20;
/// How stale an entry's "last used" time may get before a hit refreshes
/// it: eviction order is exact to this much.
const TOUCH_EVERY: Duration = Duration::from_secs(10);
/// The name every entry file ends with.
pub(crate) const SUFFIX: &str = ".entry";
/// Temporary files start with this; they are never read as entries.
pub(crate) const TEMP_PREFIX: &str = ".tmp.";

/// What a read found.
#[derive(Debug)]
pub(crate) enum Found {
    /// No entry under that name.
    Missing,
    /// An entry that fails a check: why.
    Corrupt(String),
    /// A whole entry.
    Whole(Entry),
}

/// The bytes of a whole entry, in a buffer or a read-only map.
#[derive(Debug)]
pub(crate) struct Entry {
    bytes: Bytes,
    payload_at: usize,
    /// How long the result took to compute.
    pub(crate) compute: Duration,
}

#[derive(Debug)]
enum Bytes {
    Read(Vec<u8>),
    Mapped(Mmap),
}

impl Entry {
    /// The result's postcard bytes.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.all()[self.payload_at..]
    }

    fn all(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Read(v) => v,
            Bytes::Mapped(m) => m,
        }
    }

    /// The map and the payload's offset in it, when the entry is mapped.
    pub(crate) fn into_map(self) -> Result<(Mmap, usize), Entry> {
        match self.bytes {
            Bytes::Mapped(m) => Ok((m, self.payload_at)),
            bytes => Err(Entry { bytes, ..self }),
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

/// Checks the header and payload of `all` (the whole file) for function
/// `func`; the payload's offset if it passes.
fn check(all: &[u8], func: u64) -> Result<(usize, Duration), String> {
    if all.len() < HEADER {
        return Err(format!(
            "truncated: {} bytes, shorter than a header",
            all.len()
        ));
    }
    if all[..8] != MAGIC {
        return Err("not a crew cache entry (bad magic)".into());
    }
    let version = u32_at(all, 8);
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads version {VERSION}"
        ));
    }
    if xxh3_64(&all[..56]) != u64_at(all, 56) {
        return Err("header checksum mismatch".into());
    }
    let payload_at = u32_at(all, 12) as usize;
    let payload_len = u64_at(all, 16);
    if payload_at < HEADER || payload_at as u64 + payload_len != all.len() as u64 {
        return Err(format!(
            "truncated or padded: {} bytes, the header announces {}",
            all.len(),
            payload_at as u64 + payload_len
        ));
    }
    if u64_at(all, 32) != func {
        return Err("written for another function".into());
    }
    if xxh3_64(&all[payload_at..]) != u64_at(all, 24) {
        return Err("payload checksum mismatch".into());
    }
    Ok((payload_at, Duration::from_nanos(u64_at(all, 40))))
}

/// Reads the entry at `path` for function `func`.
pub(crate) fn read(path: &Path, func: u64) -> io::Result<Found> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let len = meta.len();
    let bytes = if len >= MAP_FROM {
        // SAFETY: entries are only ever replaced by rename, never written in
        // place, so the mapped file does not change while the map lives
        // (a file altered in place by another program is outside this
        // guarantee, as with every memory map). `populate` reads it in
        // one go; the checks below then touch every byte anyway.
        let map = unsafe { MmapOptions::new().populate().map(&file)? };
        Bytes::Mapped(map)
    } else {
        // One `read` of the known length; a file that shrank meanwhile
        // (replaced by rename: this handle still reads the old one, so
        // this means damage) fails `read_exact` and is reported.
        let mut v = vec![0u8; len as usize];
        if let Err(e) = file.read_exact(&mut v) {
            return Ok(Found::Corrupt(format!("cannot read {len} bytes: {e}")));
        }
        Bytes::Read(v)
    };
    let all = match &bytes {
        Bytes::Read(v) => &v[..],
        Bytes::Mapped(m) => &m[..],
    };
    Ok(match check(all, func) {
        Ok((payload_at, compute)) => {
            // The access time, for least-recently-used eviction: `atime` is
            // unreliable (`relatime`, `noatime`), the modification time is
            // ours to set. At most once per `TOUCH_EVERY`, which saves a
            // system call on most hits of a busy entry. A read-only cache
            // cannot, and need not.
            let now = SystemTime::now();
            let stale = meta.modified().map_or(true, |m| {
                now.duration_since(m).unwrap_or_default() > TOUCH_EVERY
            });
            if stale {
                let _ = file.set_modified(now);
            }
            Found::Whole(Entry {
                bytes,
                payload_at,
                compute,
            })
        }
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
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut head = [0u8; HEADER];
    if file.read_exact(&mut head).is_err() {
        return false;
    }
    head[..8] == MAGIC
        && u32_at(&head, 8) == VERSION
        && xxh3_64(&head[..56]) == u64_at(&head, 56)
        && u64_at(&head, 32) == func
        && u64::from(u32_at(&head, 12)) + u64_at(&head, 16) == len
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip_and_every_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f").join("a.entry");
        let payload = postcard::to_allocvec(&vec![1.5f64; 300]).unwrap();
        write(&path, 7, &payload, Duration::from_millis(3)).unwrap();
        let Found::Whole(e) = read(&path, 7).unwrap() else {
            panic!("a whole entry")
        };
        assert_eq!(e.payload(), &payload[..]);
        assert_eq!(e.compute, Duration::from_millis(3));
        // The f64s start 8-aligned in the file.
        assert_eq!((e.payload_at + 2) % 8, 0);
        assert!(looks_whole(&path, 7));
        assert!(!looks_whole(&path, 8));
        assert!(
            matches!(read(&path, 8).unwrap(), Found::Corrupt(w) if w.contains("another function"))
        );
        assert!(matches!(
            read(&dir.path().join("none"), 7).unwrap(),
            Found::Missing
        ));

        let whole = std::fs::read(&path).unwrap();
        let corrupt = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            match read(&path, 7).unwrap() {
                Found::Corrupt(why) => why,
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
}
