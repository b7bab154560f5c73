//! Queue<T> across processes: items arrive whole and in per-producer order,
//! and producers or consumers killed mid-operation leave it usable.

use std::time::Duration;

use crew_shm::{Event, Queue, Value};
use serde::{Deserialize, Serialize};

use crate::common::{self, Child};

/// An item whose payload can be checked against its header.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Item {
    producer: u32,
    seq: u64,
    payload: Vec<u8>,
}

impl Item {
    fn new(producer: u32, seq: u64, len: usize) -> Item {
        let payload = (0..len)
            .map(|i| (seq as usize + i * 31 + producer as usize) as u8)
            .collect();
        Item {
            producer,
            seq,
            payload,
        }
    }

    fn is_intact(&self) -> bool {
        *self == Item::new(self.producer, self.seq, self.payload.len())
    }
}

const PRODUCERS: u32 = 3;
const PER_PRODUCER: u64 = 2_000;

#[test]
fn items_arrive_complete_and_in_producer_order() {
    const NAME: &str = concat!(
        module_path!(),
        "::items_arrive_complete_and_in_producer_order"
    );
    type Arg = (Queue<Item>, Queue<(u64, u64)>, u32);
    if let Some(role) = common::role() {
        let (queue, results, producer): Arg = common::arg();
        match role.as_str() {
            "producer" => {
                for seq in 0..PER_PRODUCER {
                    let item = Item::new(producer, seq, (seq as usize * 7) % 700);
                    queue.put_timeout(item, common::PATIENCE).unwrap();
                }
            }
            "consumer" => {
                let mut last = vec![None::<u64>; PRODUCERS as usize];
                let (mut count, mut sum) = (0, 0);
                loop {
                    let item = match queue.get_timeout(common::PATIENCE) {
                        Ok(item) => item,
                        Err(e) if e.is_closed() => break,
                        Err(e) => panic!("get: {e}"),
                    };
                    assert!(item.is_intact(), "item arrived damaged: {item:?}");
                    let previous = last[item.producer as usize].replace(item.seq);
                    assert!(
                        previous.is_none_or(|p| p < item.seq),
                        "out of order: {previous:?} then {}",
                        item.seq
                    );
                    count += 1;
                    sum += item.seq;
                }
                results.put((count, sum)).unwrap();
            }
            other => panic!("unknown role {other}"),
        }
        return;
    }
    // Bounded, so producers also block on a full queue.
    let queue = Queue::<Item>::bounded(64).unwrap();
    let results = Queue::<(u64, u64)>::new().unwrap();
    let consumers: Vec<_> = (0..2)
        .map(|_| Child::spawn(NAME, "consumer", &(queue.clone(), results.clone(), 0)))
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| Child::spawn(NAME, "producer", &(queue.clone(), results.clone(), p)))
        .collect();
    for producer in producers {
        producer.assert_success();
    }
    queue.close();
    for consumer in consumers {
        consumer.assert_success();
    }
    let (mut count, mut sum) = (0, 0);
    while let Ok((c, s)) = results.try_get() {
        count += c;
        sum += s;
    }
    assert_eq!(
        count,
        u64::from(PRODUCERS) * PER_PRODUCER,
        "every item arrived once"
    );
    assert_eq!(
        sum,
        u64::from(PRODUCERS) * (PER_PRODUCER * (PER_PRODUCER - 1) / 2)
    );
}

/// Large items, so a good share of each put and get is spent copying bytes
/// under the lock: that is where the kills land.
const BIG: usize = 256 * 1024;

#[test]
fn killed_producers_leave_the_queue_usable() {
    const NAME: &str = concat!(module_path!(), "::killed_producers_leave_the_queue_usable");
    if common::role().is_some() {
        let (queue, started, producer): (Queue<Item>, Event, u32) = common::arg();
        started.set();
        for seq in 0.. {
            queue
                .put_timeout(Item::new(producer, seq, BIG), common::PATIENCE)
                .unwrap();
        }
        return;
    }
    let queue = Queue::<Item>::builder()
        .capacity_bytes(64 << 20)
        .build()
        .unwrap();
    let mut seen = 0;
    for round in 0..6u32 {
        let started = Event::new().unwrap();
        let mut child = Child::spawn(NAME, "producer", &(queue.clone(), started.clone(), round));
        assert!(started.wait_timeout(common::PATIENCE));
        // Let it put a few items (how many does not matter), then kill it,
        // most likely in the middle of copying one.
        let _ = queue.get_timeout(common::PATIENCE).map(|item| {
            assert!(item.is_intact());
            seen += 1;
        });
        std::thread::sleep(Duration::from_millis(u64::from(round) * 3));
        child.kill();
        let _ = child.wait();
        // Whatever is in the queue now is whole.
        while let Ok(item) = queue.try_get() {
            assert!(item.is_intact(), "damaged item after a kill");
            assert_eq!(item.producer, round);
            seen += 1;
        }
    }
    println!("{seen} items drained intact across 6 killed producers");
    queue.put(Item::new(99, 0, 10)).unwrap();
    assert_eq!(queue.get().unwrap(), Item::new(99, 0, 10));
    assert!(queue.is_empty());
}

#[test]
fn killed_consumers_leave_the_queue_usable() {
    const NAME: &str = concat!(module_path!(), "::killed_consumers_leave_the_queue_usable");
    if common::role().is_some() {
        let (queue, taken): (Queue<Item>, Value<u64>) = common::arg();
        loop {
            let item = queue.get_timeout(common::PATIENCE).unwrap();
            assert!(item.is_intact());
            taken.update(|n| *n += 1);
        }
    }
    let queue = Queue::<Item>::builder()
        .capacity_bytes(64 << 20)
        .build()
        .unwrap();
    let taken = Value::new(0u64).unwrap();
    let mut next = 0;
    for round in 0..6u64 {
        for _ in 0..40 {
            queue.put(Item::new(0, next, BIG)).unwrap();
            next += 1;
        }
        let mut child = Child::spawn(NAME, "consumer", &(queue.clone(), taken.clone()));
        while taken.get() == 0 && !queue.is_empty() {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(round * 2));
        child.kill();
        let _ = child.wait();
    }
    // What is left is whole, in order, and usable.
    let mut previous = None;
    let mut left = 0;
    while let Ok(item) = queue.try_get() {
        assert!(item.is_intact(), "damaged item after a kill");
        assert!(previous.is_none_or(|p| p < item.seq), "order broken");
        previous = Some(item.seq);
        left += 1;
    }
    println!(
        "{} taken by killed consumers, {left} left intact of {next}",
        taken.get()
    );
    assert!(
        left + taken.get() <= next + 6,
        "items appeared from nowhere"
    );
    queue.put(Item::new(1, 1, 1)).unwrap();
    assert_eq!(queue.get().unwrap(), Item::new(1, 1, 1));
}
