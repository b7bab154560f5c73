//! Running a chunk in the calling thread, one caught panic per failed item:
//! the shared helper of in-process back-ends.

use std::time::Instant;

use super::{Chunk, ChunkOut, Dest};
use crate::call::Call;
use crate::error::Error;
use crate::timeline::Timeline;

/// Runs `task` over a chunk in the calling thread, catching each item's
/// panic so that it fails only that item: the shared helper of in-process
/// back-ends.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_core::*; pub mod core { pub use crew_core::*; } }
/// use crew::core::{Chunk, Unary, engine::run_chunk};
/// let out = run_chunk(&Unary(|x: u32| if x == 2 { panic!("two") } else { x }), Chunk::new(0, vec![1, 2, 3]), 0, None);
/// let r: Vec<_> = out.into_results(0).collect();
/// assert_eq!(*r[0].as_ref().unwrap(), 1);
/// assert!(r[1].as_ref().unwrap_err().is_panic());
/// assert_eq!(*r[2].as_ref().unwrap(), 3);
/// ```
pub fn run_chunk<T, X, R>(
    task: &T,
    chunk: Chunk<X>,
    worker: usize,
    timeline: Option<&Timeline>,
) -> ChunkOut<R>
where
    T: Call<X, R> + ?Sized,
{
    run_chunk_into(task, chunk, worker, timeline, None)
}

/// [`run_chunk`], writing the values through `dest` (the chunk's slice of
/// its map's output) when there is one.
pub(crate) fn run_chunk_into<T, X, R>(
    task: &T,
    chunk: Chunk<X>,
    worker: usize,
    timeline: Option<&Timeline>,
    mut dest: Option<Dest<R>>,
) -> ChunkOut<R>
where
    T: Call<X, R> + ?Sized,
{
    let started = Instant::now();
    let len = chunk.len();
    let offset = chunk.offset();
    if let Some(d) = &dest {
        assert_eq!(d.len, len, "a chunk's destination has its length");
    }
    let mut values = Vec::with_capacity(if dest.is_some() { 0 } else { len });
    let mut errors = Vec::new();
    let mut items = chunk.into_iter().enumerate();
    let name = match timeline {
        Some(_) => task.name().and_then(crate::task_name).unwrap_or("map"),
        None => "",
    };
    loop {
        let mut current = 0;
        let mut current_start = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match (timeline, &mut dest) {
                (None, None) => {
                    for (i, x) in &mut items {
                        current = i;
                        values.push(task.call(x));
                    }
                }
                (None, Some(d)) => {
                    for (i, x) in &mut items {
                        current = i;
                        let v = task.call(x);
                        // SAFETY: each `i` comes once from the chunk's iterator,
                        // and only after the call succeeded.
                        unsafe { d.write(i, v) };
                    }
                }
                (Some(t), _) => {
                    for (i, x) in &mut items {
                        current = i;
                        current_start = Instant::now();
                        let v = task.call(x);
                        t.record(worker, offset + i, name, current_start, Instant::now());
                        match &mut dest {
                            // SAFETY: as above.
                            Some(d) => unsafe { d.write(i, v) },
                            None => values.push(v),
                        }
                    }
                }
            }
        }));
        match run {
            Ok(()) => break,
            Err(payload) => {
                if let Some(t) = timeline {
                    t.record(
                        worker,
                        offset + current,
                        name,
                        current_start,
                        Instant::now(),
                    );
                }
                errors.push((current, Error::from_panic(payload).with_worker(worker)))
            }
        }
    }
    if dest.is_some() {
        ChunkOut::in_place(len, errors, started.elapsed())
    } else {
        ChunkOut::new(len, values, errors, started.elapsed())
    }
}
