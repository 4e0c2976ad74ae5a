//! The shared byte budget for captured bodies (`mirror.max_buffered`), and
//! the reservations held against it. A leaf: the exchange carries its
//! reservation, so the bytes are given back wherever it ends.
//!
//! Must never: let the bytes held exceed the limit, or give back bytes twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A shared byte budget for captured bodies.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes held against a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    pub fn empty(budget: &Arc<MemoryBudget>) -> Reservation {
        Reservation {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    /// Holds `bytes` more, if the budget has room for them.
    pub fn grow(&mut self, bytes: usize) -> bool {
        if !self.budget.try_take(bytes) {
            return false;
        }
        self.bytes += bytes;
        true
    }

    /// Gives every byte back now; the reservation stays, holding none.
    pub fn release(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        if bytes > 0 {
            self.budget.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// The bytes held.
    pub fn held(&self) -> usize {
        self.bytes
    }

    /// Gives back what is held beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        if self.bytes > bytes {
            self.budget.used.fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }

    /// Takes over another reservation's bytes.
    pub fn absorb(&mut self, mut other: Reservation) {
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}
