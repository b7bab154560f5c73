//! Regions cross processes by (pid, fd): parent to child, sibling to
//! sibling, and never after every holder is gone.

use crew_shm::{Array, Event, Queue};

use crate::common::{self, Child};

#[test]
fn every_handle_is_send_sync_and_serde() {
    fn check<T: Send + Sync + Clone + serde::Serialize + serde::de::DeserializeOwned>() {}
    check::<crew_shm::Region>();
    check::<crew_shm::Value<u64>>();
    check::<Array<f64>>();
    check::<crew_shm::Lock>();
    check::<crew_shm::RLock>();
    check::<crew_shm::Semaphore>();
    check::<crew_shm::BoundedSemaphore>();
    check::<Event>();
    check::<crew_shm::Barrier>();
    check::<crew_shm::Condition>();
    check::<Queue<String>>();
    check::<crew_shm::Connection<Vec<u8>>>();
}

#[test]
fn a_handle_opens_only_as_its_own_kind_and_type() {
    let value = crew_shm::Value::new(1u32).unwrap(); // this process is the holder
    let bytes = postcard::to_allocvec(&value).unwrap();
    assert!(postcard::from_bytes::<crew_shm::Value<u32>>(&bytes).is_ok());
    assert!(
        postcard::from_bytes::<crew_shm::Value<f32>>(&bytes).is_err(),
        "another element type"
    );
    assert!(
        postcard::from_bytes::<crew_shm::Lock>(&bytes).is_err(),
        "another kind"
    );
    assert!(
        postcard::from_bytes::<Array<u32>>(&bytes).is_err(),
        "another kind"
    );
}

#[test]
fn parent_and_child_map_the_same_memory() {
    if let Some(role) = common::role() {
        assert_eq!(role, "child");
        let array: Array<u8> = common::arg();
        assert_eq!(array.get(0), Some(7), "child sees the parent's write");
        array.set(1, 8);
        return;
    }
    let array = Array::<u8>::new(4096).unwrap();
    array.set(0, 7);
    Child::spawn(
        concat!(module_path!(), "::parent_and_child_map_the_same_memory"),
        "child",
        &array,
    )
    .assert_success();
    assert_eq!(array.get(1), Some(8), "parent sees the child's write");
}

#[test]
fn siblings_share_through_a_live_sibling() {
    const NAME: &str = concat!(module_path!(), "::siblings_share_through_a_live_sibling");
    if let Some(role) = common::role() {
        match role.as_str() {
            "first" => {
                // Re-serialize the handle: it now names this process as holder.
                let (array, mailbox, done): (Array<u8>, Queue<Vec<u8>>, Event) = common::arg();
                mailbox.put(postcard::to_allocvec(&array).unwrap()).unwrap();
                assert!(done.wait_timeout(common::PATIENCE), "parent never finished");
            }
            "second" => {
                let bytes: Vec<u8> = common::arg();
                let array: Array<u8> = postcard::from_bytes(&bytes).unwrap();
                array.set(2, 9);
            }
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let array = Array::<u8>::new(16).unwrap();
    let mailbox = Queue::<Vec<u8>>::new().unwrap();
    let done = Event::new().unwrap();
    let first = Child::spawn(
        NAME,
        "first",
        &(array.clone(), mailbox.clone(), done.clone()),
    );
    let handle = mailbox.get_timeout(common::PATIENCE).unwrap();
    // The wire form starts with the holder's pid (a postcard varint).
    let (holder, _): (u32, i32) = postcard::take_from_bytes::<(u32, i32)>(&handle).unwrap().0;
    assert_eq!(
        holder,
        first.id(),
        "the handle names the first sibling as holder"
    );
    Child::spawn(NAME, "second", &handle).assert_success();
    assert_eq!(
        array.get(2),
        Some(9),
        "the second sibling wrote through the first's fd"
    );
    done.set();
    first.assert_success();
}

#[test]
fn opening_after_every_holder_exited_fails_cleanly() {
    if common::role().is_some() {
        let mailbox: Queue<Vec<u8>> = common::arg();
        let orphan = Array::<u8>::new(16).unwrap();
        mailbox
            .put(postcard::to_allocvec(&orphan).unwrap())
            .unwrap();
        return; // the only holder exits
    }
    let mailbox = Queue::<Vec<u8>>::new().unwrap();
    Child::spawn(
        concat!(
            module_path!(),
            "::opening_after_every_holder_exited_fails_cleanly"
        ),
        "child",
        &mailbox,
    )
    .assert_success();
    let handle = mailbox.try_get().unwrap();
    let error = postcard::from_bytes::<Array<u8>>(&handle).unwrap_err();
    println!("opening a handle whose holder exited: {error}");
}

#[test]
fn dropping_handles_leaves_no_fd_and_no_mapping() {
    if common::role().is_none() {
        // Run alone in a fresh process: other tests would open fds meanwhile.
        Child::spawn(
            concat!(
                module_path!(),
                "::dropping_handles_leaves_no_fd_and_no_mapping"
            ),
            "child",
            &(),
        )
        .assert_success();
        return;
    }
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let mappings = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .matches("memfd:crew")
            .count()
    };
    let (fds_before, mappings_before) = (fds(), mappings());
    {
        let array = Array::<u64>::new(1000).unwrap();
        let queue = Queue::<u8>::new().unwrap();
        let lock = crew_shm::Lock::new().unwrap();
        let again: Array<u64> =
            postcard::from_bytes(&postcard::to_allocvec(&array).unwrap()).unwrap();
        let _guard = lock.acquire().unwrap();
        // `again` reuses the mapping (and fd) of `array`: same process.
        assert_eq!(fds(), fds_before + 3);
        assert_eq!(mappings(), mappings_before + 3);
        drop((array, again, queue));
    }
    assert_eq!(fds(), fds_before, "every fd closed");
    assert_eq!(mappings(), mappings_before, "every mapping gone");
    let shm_files = std::fs::read_dir("/dev/shm")
        .map(|d| d.count())
        .unwrap_or(0);
    println!("files in /dev/shm: {shm_files} (crew-shm never creates any)");
}
