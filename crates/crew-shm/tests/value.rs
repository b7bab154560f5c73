//! Value<T>: updates under its lock are never lost across processes.

use crew_shm::{Barrier, Value};

use crate::common::{self, Child};

const PROCESSES: u64 = 4;
const INCREMENTS: u64 = 1_000;

#[test]
fn four_processes_thousand_increments_each() {
    const NAME: &str = concat!(module_path!(), "::four_processes_thousand_increments_each");
    if let Some(role) = common::role() {
        let (counter, start): (Value<u64>, Barrier) = common::arg();
        start.wait_timeout(common::PATIENCE).unwrap();
        for _ in 0..INCREMENTS {
            match role.as_str() {
                "locked" => counter.update(|n| *n += 1),
                // Read, then write, with no lock between: updates get lost.
                "unlocked" => counter.set(counter.get() + 1),
                other => panic!("unknown role {other}"),
            }
        }
        return;
    }
    for role in ["locked", "unlocked"] {
        let counter = Value::new(0u64).unwrap();
        let start = Barrier::new(PROCESSES as u32).unwrap();
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| Child::spawn(NAME, role, &(counter.clone(), start.clone())))
            .collect();
        for child in children {
            child.assert_success();
        }
        let total = counter.get();
        if role == "locked" {
            assert_eq!(total, PROCESSES * INCREMENTS);
        } else {
            println!(
                "without the lock: {total} of {} ({} lost)",
                PROCESSES * INCREMENTS,
                PROCESSES * INCREMENTS - total
            );
        }
    }
}
