//! Array<T>: a 1 GiB array is neither touched on creation nor copied when
//! other processes open it.

use crew_shm::Array;

use crate::common::{self, Child};

const GIB: usize = 1 << 30;
/// Far below 1 GiB: a copy, or touching every page, would exceed it.
const SMALL: u64 = 64 << 20;

#[test]
fn gigabyte_array_is_shared_not_copied() {
    const NAME: &str = concat!(module_path!(), "::gigabyte_array_is_shared_not_copied");
    if let Some(role) = common::role() {
        let before = common::resident_bytes();
        let (array, index): (Array<u8>, usize) = common::arg();
        let after_open = common::resident_bytes();
        assert_eq!(array.len(), GIB);
        assert_eq!(
            array.get(GIB - 1),
            Some(42),
            "sees the parent's write at the far end"
        );
        array.set(index, 1 + index as u8 % 200);
        let after_use = common::resident_bytes();
        println!(
            "child {role}: resident {before} -> {after_open} after opening -> {after_use} after use"
        );
        assert!(
            after_open.saturating_sub(before) < SMALL,
            "opening the handle copied memory"
        );
        assert!(
            after_use.saturating_sub(before) < SMALL,
            "using two elements touched the array"
        );
        return;
    }
    let before = common::resident_bytes();
    let array = Array::<u8>::new(GIB).unwrap();
    array.set(GIB - 1, 42);
    let after = common::resident_bytes();
    // Other tests run in this process meanwhile, so allow them some room.
    assert!(
        after.saturating_sub(before) < 4 * SMALL,
        "creating the array touched its pages"
    );
    let children: Vec<_> = (0..3)
        .map(|i| {
            (
                i,
                Child::spawn(NAME, &format!("{i}"), &(array.clone(), i * 4096 * 1000)),
            )
        })
        .collect();
    for (i, child) in children {
        let output = child.assert_success();
        let line = output
            .lines()
            .find_map(|l| l.split_once("child "))
            .map_or("", |(_, l)| l);
        println!("child {line}");
        assert_eq!(
            array.get(i * 4096 * 1000),
            Some(1 + (i * 4096 * 1000) as u8 % 200)
        );
    }
}

#[test]
fn guards_and_unsafe_slices_see_the_same_elements() {
    let array = Array::from_slice(&[1u32, 2, 3, 4]).unwrap();
    {
        let mut guard = array.lock().unwrap();
        guard.reverse();
    }
    // SAFETY: nothing writes the array while this slice lives.
    assert_eq!(unsafe { array.as_slice() }, [4, 3, 2, 1]);
    assert_eq!(array.get(4), None);
}
