//! Frozen<T>: a read-only slice that other processes read in place, and
//! that nobody, in any process, can write once it exists.

use std::os::fd::AsRawFd;

use crew_shm::{Array, Frozen};

use crate::common::{self, Child};

/// The handle's wire form, as `region.rs` serializes it: pid and fd of a
/// holder, size, kind, type tag, id.
type Wire = (u32, i32, u64, u32, u64, u64);

fn wire<T: serde::Serialize>(handle: &T) -> Wire {
    postcard::from_bytes(&postcard::to_allocvec(handle).unwrap()).unwrap()
}

fn values(n: usize) -> Vec<[f64; 3]> {
    (0..n)
        .map(|i| [i as f64, -(i as f64), 0.5 * i as f64])
        .collect()
}

/// Opens the region behind a handle through `/proc` as `flags` allow.
fn open_behind(handle: &Wire, write: bool) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(format!("/proc/{}/fd/{}", handle.0, handle.1))
}

#[test]
fn another_process_reads_the_same_pages() {
    const NAME: &str = concat!(module_path!(), "::another_process_reads_the_same_pages");
    const N: usize = 100_000;
    if common::role().is_some() {
        let before = common::resident_bytes();
        let (frozen, again): (Frozen<[f64; 3]>, Frozen<[f64; 3]>) = common::arg();
        assert_eq!(frozen.len(), N);
        assert_eq!(
            frozen[..],
            values(N)[..],
            "the child sees the parent's values"
        );
        assert_eq!(
            frozen.as_ptr(),
            again.as_ptr(),
            "a second handle to the same region reuses its mapping"
        );
        let after = common::resident_bytes();
        println!("child: resident {before} -> {after}");
        return;
    }
    let frozen = Frozen::from_slice(&values(N)).unwrap();
    let handle = postcard::to_allocvec(&frozen).unwrap();
    assert!(
        handle.len() < 64,
        "a handle is small whatever the data: {} bytes",
        handle.len()
    );
    Child::spawn(NAME, "reader", &(frozen.clone(), frozen.clone())).assert_success();
}

#[test]
fn nobody_can_write_a_frozen_region() {
    let frozen = Frozen::from_slice(&[1u64, 2, 3]).unwrap();
    let w = wire(&frozen);
    // write(2) through a writable fd of the same memory: refused.
    let mut file = open_behind(&w, true).expect("the memfd opens read-write");
    let e = std::io::Write::write(&mut file, &[0xff; 8]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    // A writable shared mapping: refused.
    // SAFETY: a fresh mapping of an fd we own; checked for failure below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_eq!(p, libc::MAP_FAILED, "a writable mapping was granted");
    // Punching a hole (it would read back as zeros): refused.
    // SAFETY: a plain system call on an fd we own.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            8192,
        )
    };
    assert_eq!(r, -1, "a hole was punched");
    // Resizing: refused.
    assert!(file.set_len(0).is_err(), "the region shrank");
    assert_eq!(frozen.as_slice(), [1, 2, 3]);
}

#[test]
fn a_handle_opens_only_as_what_it_is() {
    let frozen = Frozen::from_slice(&[1.0f64, 2.0]).unwrap();
    let bytes = postcard::to_allocvec(&frozen).unwrap();
    assert!(
        postcard::from_bytes::<Frozen<u64>>(&bytes).is_err(),
        "opened as another element type"
    );
    assert!(
        postcard::from_bytes::<Array<f64>>(&bytes).is_err(),
        "opened as a writable Array"
    );
    let array = Array::from_slice(&[1.0f64, 2.0]).unwrap();
    let bytes = postcard::to_allocvec(&array).unwrap();
    assert!(
        postcard::from_bytes::<Frozen<f64>>(&bytes).is_err(),
        "a writable Array opened as Frozen"
    );
}

#[test]
fn empty_and_single_element_slices() {
    let empty = Frozen::<[u8; 3]>::from_slice(&[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.as_slice(), [] as [[u8; 3]; 0]);
    let again: Frozen<[u8; 3]> =
        postcard::from_bytes(&postcard::to_allocvec(&empty).unwrap()).unwrap();
    assert!(again.is_empty());
    let one = Frozen::from_slice(&[u128::MAX]).unwrap();
    assert_eq!(one.as_ref(), [u128::MAX]);
    assert_eq!(format!("{one:?}").split_once(' ').unwrap().0, "Frozen");
}

#[test]
fn the_memory_outlives_the_creating_handle() {
    let frozen = Frozen::from_slice(&values(1000)).unwrap();
    let (bytes, held) = crew_shm::hold_serialized(|| postcard::to_allocvec(&frozen).unwrap());
    drop(frozen);
    assert_eq!(held.len(), 1);
    let again: Frozen<[f64; 3]> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(again[999], [999.0, -999.0, 499.5]);
}
