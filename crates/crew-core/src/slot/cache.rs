//! Recycled result slots, so that a warm `submit` allocates nothing.
//!
//! A slot made by [`Slot::recycled`] has two owners, its promise and its
//! handle (`Future`, `AsyncResult`), counted in `Slot::owners`. Each owner
//! releases the slot once, as its very last access to it (a promise after
//! completing it, a handle when dropped); whichever releases second resets
//! the slot and shelves it here, on its own thread. Nobody can write into a
//! shelved or reused slot: both owners are gone, and a new user gets a new
//! pair.
//!
//! Slots are made [`BLOCK`](super::BLOCK) at a time, in one allocation
//! ([`Block`](super::Block)): when the shelves have none, a new block's
//! slots are shelved here. A slot the shelves let go of (they are full, or
//! the thread is exiting) is retired ([`retire`](super::retire)); the last
//! slot of a block retired frees the block. So a burst of more live
//! futures than the shelves keep (a million submits before the first
//! result) costs one allocation and one free per block, not per slot.
//!
//! The shelves are per thread and per value type, in magazines of
//! [`MAGAZINE`] slots (Bonwick's magazine allocator): a thread keeps a
//! loaded and a spare magazine and goes to the process-wide depot only
//! when both are empty (to take) or full (to give). Whoever releases the
//! slot last is a matter of timing (the submitter usually, the worker when
//! the submitter took the result before the worker let go), so slots
//! released on workers flow back to the submitter through the depot, a
//! magazine at a time. The depot keeps at most [`DEPOT_LIMIT`] full
//! magazines per type; beyond that, slots are freed.
//!
//! Rejected: recycling into the releasing thread's cache only (a worker
//! that releases last would hoard slots while the submitter allocates);
//! one locked list per type (a lock per submit and per completion, dearer
//! than the allocation it saves).

use std::any::TypeId;
use std::cell::RefCell;
use std::ptr::NonNull;

use super::Slot;

/// Slots per magazine.
const MAGAZINE: usize = 32;
/// Full magazines the depot keeps per value type (1,024 slots).
const DEPOT_LIMIT: usize = 32;

/// A shelved slot of some value type (its shelf knows which); retired
/// when dropped.
struct Erased {
    slot: NonNull<()>,
    /// [`retire`](super::retire) for the slot's value type.
    retire: unsafe fn(NonNull<()>),
}

// SAFETY: only slots of `Send` value types are shelved (`give`), and a
// shelved slot has no owner: whoever holds the `Erased` holds the slot.
unsafe impl Send for Erased {}

impl Erased {
    fn new<V: Send + 'static>(slot: NonNull<Slot<V>>) -> Erased {
        Erased {
            slot: slot.cast(),
            retire: retire_erased::<V>,
        }
    }

    /// The slot, of the shelf's value type `V`, out of the shelf.
    ///
    /// # Safety
    ///
    /// The slot is a `Slot<V>`.
    unsafe fn into_slot<V>(self) -> NonNull<Slot<V>> {
        let slot = self.slot.cast();
        std::mem::forget(self);
        slot
    }
}

impl Drop for Erased {
    fn drop(&mut self) {
        // SAFETY: made by `Erased::new` from a reset slot nobody owns,
        // which is dropped once, here.
        unsafe { (self.retire)(self.slot) }
    }
}

/// [`retire`](super::retire) of a `Slot<V>` behind an erased pointer.
///
/// # Safety
///
/// As `retire`'s; `slot` is a `Slot<V>`.
unsafe fn retire_erased<V>(slot: NonNull<()>) {
    // SAFETY: the caller's contract.
    unsafe { super::retire::<V>(slot.cast()) }
}

/// One thread's slots of one value type.
struct Shelf {
    ty: TypeId,
    loaded: Vec<Erased>,
    spare: Vec<Erased>,
}

impl Shelf {
    fn new(ty: TypeId) -> Shelf {
        Shelf {
            ty,
            loaded: Vec::with_capacity(MAGAZINE),
            spare: Vec::with_capacity(MAGAZINE),
        }
    }
}

#[derive(Default)]
struct Shelves(Vec<Shelf>);

impl Shelves {
    fn shelf(&mut self, ty: TypeId) -> &mut Shelf {
        match self.0.iter().position(|s| s.ty == ty) {
            Some(i) => &mut self.0[i],
            None => self.add(ty),
        }
    }

    /// A shelf for a type this thread has not shelved before (once per
    /// type: kept out of the hot path).
    #[cold]
    #[inline(never)]
    fn add(&mut self, ty: TypeId) -> &mut Shelf {
        self.0.push(Shelf::new(ty));
        self.0.last_mut().expect("just pushed")
    }
}

#[cfg(not(loom))]
thread_local! {
    static LOCAL: RefCell<Shelves> = const { RefCell::new(Shelves(Vec::new())) };
}

#[cfg(loom)]
::loom::thread_local! {
    /// As above; loom's threads share one OS thread.
    static LOCAL: RefCell<Shelves> = RefCell::new(Shelves::default());
}

/// The magazines of one value type shared by all threads.
#[cfg_attr(loom, allow(dead_code))]
struct DepotShelf {
    ty: TypeId,
    full: Vec<Vec<Erased>>,
    empty: Vec<Vec<Erased>>,
}

/// Full and empty magazines, by value type. (Not under loom: a static
/// would carry one model run's slots into the next.)
#[cfg(not(loom))]
static DEPOT: std::sync::Mutex<Vec<DepotShelf>> = std::sync::Mutex::new(Vec::new());

/// Runs `f` on the depot's shelf for `ty`; `None` under loom.
fn with_depot<T>(ty: TypeId, f: impl FnOnce(&mut DepotShelf) -> T) -> Option<T> {
    #[cfg(not(loom))]
    {
        let mut depot = DEPOT.lock().unwrap_or_else(|p| p.into_inner());
        let i = match depot.iter().position(|s| s.ty == ty) {
            Some(i) => i,
            None => {
                depot.push(DepotShelf {
                    ty,
                    full: Vec::new(),
                    empty: Vec::new(),
                });
                depot.len() - 1
            }
        };
        Some(f(&mut depot[i]))
    }
    #[cfg(loom)]
    {
        let _ = (ty, f);
        None
    }
}

/// A slot from this thread's shelf (or the depot), or `None` if there is
/// none to reuse.
pub(super) fn take<V: Send + 'static>() -> Option<NonNull<Slot<V>>> {
    let ty = TypeId::of::<Slot<V>>();
    let erased = LOCAL
        .try_with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            let shelf = local.shelf(ty);
            if shelf.loaded.is_empty() {
                if shelf.spare.is_empty() {
                    let full = with_depot(ty, |d| {
                        let full = d.full.pop()?;
                        d.empty.push(std::mem::take(&mut shelf.loaded));
                        Some(full)
                    })??;
                    shelf.loaded = full;
                } else {
                    std::mem::swap(&mut shelf.loaded, &mut shelf.spare);
                }
            }
            shelf.loaded.pop()
        })
        .ok()
        .flatten()?;
    // SAFETY: the shelf of `Slot<V>`'s type holds only `Slot<V>`s.
    Some(unsafe { erased.into_slot::<V>() })
}

/// Shelves the fresh slots of a new block on this thread (taking the
/// thread's shelves once for them all), as [`give`] does one.
pub(super) fn give_all<V: Send + 'static>(slots: impl Iterator<Item = NonNull<Slot<V>>>) {
    let ty = TypeId::of::<Slot<V>>();
    let mut slots = slots;
    let _ = LOCAL.try_with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return;
        };
        let shelf = local.shelf(ty);
        while shelf.loaded.len() < MAGAZINE
            && let Some(slot) = slots.next()
        {
            shelf.loaded.push(Erased::new(slot));
        }
    });
    // What did not fit (or found no shelves), one at a time.
    slots.for_each(give);
}

/// Shelves `slot` (fresh or reset, with no owner, made by `Block::make`)
/// on this thread; retires it if the shelves are full or gone (the thread
/// is exiting).
pub(super) fn give<V: Send + 'static>(slot: NonNull<Slot<V>>) {
    let ty = TypeId::of::<Slot<V>>();
    let slot = Erased::new(slot);
    let _ = LOCAL.try_with(move |local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return;
        };
        let shelf = local.shelf(ty);
        if shelf.loaded.len() == MAGAZINE {
            if shelf.spare.len() == MAGAZINE {
                // Both full: the spare goes to the depot and an empty one
                // comes back (made only while the depot has none); a depot
                // at its limit refuses it, and its slots are freed.
                let full = std::mem::take(&mut shelf.spare);
                shelf.spare = match with_depot(ty, move |d| {
                    if d.full.len() < DEPOT_LIMIT {
                        d.full.push(full);
                        Ok(d.empty.pop())
                    } else {
                        Err(full)
                    }
                }) {
                    Some(Ok(Some(empty))) => empty,
                    Some(Ok(None)) | None => Vec::with_capacity(MAGAZINE),
                    Some(Err(mut full)) => {
                        full.clear();
                        full
                    }
                };
            }
            std::mem::swap(&mut shelf.loaded, &mut shelf.spare);
        }
        shelf.loaded.push(slot);
    });
}
