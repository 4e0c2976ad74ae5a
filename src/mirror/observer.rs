//! A mirrored request's place in the queue ([`Ticket`]), the proxy's plan
//! for a request ([`Plan`]), and the [`PrimaryObserver`] the proxy reports
//! the serving side's answer to.
//!
//! Must never: let a request end without its outcome: an observer dropped
//! unfinished records the request as abandoned.

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

pub use crate::budget::Reservation;
use crate::exchange::{SideResult, SkipReason};
use crate::metrics::Metrics;
use crate::record::{DirectRequest, Recorder};

use super::PendingWrite;

/// A place in the mirror queue; the exchange holding it is in flight.
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    /// The queue-depth gauge alone (one shared handle, not every metric's):
    /// a ticket is made for every mirrored request.
    depth: IntGauge,
}

impl Ticket {
    /// Takes a place in the queue, counted in the queue-depth gauge until dropped.
    pub(super) fn new(permit: OwnedSemaphorePermit, metrics: &Metrics) -> Ticket {
        let depth = metrics.queue_depth().clone();
        depth.inc();
        Ticket { _permit: permit, depth }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.depth.dec();
    }
}

/// What to do with a request, decided before anything is sent.
#[derive(Debug)]
pub enum Plan {
    Mirror(Ticket),
    Skip(SkipReason),
}

/// Receives the primary's result for one request and makes sure it is
/// recorded exactly once: dropped unfinished, it records `Abandoned`.
#[derive(Debug)]
pub struct PrimaryObserver {
    pub(super) target: Option<ObserverTarget>,
}

/// Where a primary's result goes.
#[derive(Debug)]
pub(super) enum ObserverTarget {
    /// A mirrored request: the primary's result joins the shadow's. A write
    /// takes its turn in its entity's lane the moment the primary is done.
    Mirrored(oneshot::Sender<PrimaryDone>, Option<PendingWrite>),
    /// Not mirrored: the outcome is recorded as soon as the primary is done.
    Direct {
        recorder: Arc<Recorder>,
        request: DirectRequest,
        reason: SkipReason,
    },
}

impl PrimaryObserver {
    /// Reports the primary's result, with the budget its captured body holds.
    pub fn finish(mut self, result: SideResult, held: Option<Reservation>) {
        self.deliver(result, held);
    }

    fn deliver(&mut self, result: SideResult, held: Option<Reservation>) {
        match self.target.take() {
            Some(ObserverTarget::Mirrored(tx, mut pending)) => {
                if let Some(pending) = pending.as_mut() {
                    pending.take_turn();
                }
                // The receiving task only goes away at shutdown past the grace period.
                let _ = tx.send((result, held, pending));
            }
            Some(ObserverTarget::Direct {
                recorder,
                request,
                reason,
            }) => recorder.record_direct(&request, &result, reason),
            None => {}
        }
    }
}

impl Drop for PrimaryObserver {
    fn drop(&mut self) {
        self.deliver(SideResult::Abandoned, None);
    }
}

/// The primary's result, the budget its body holds, and (for a write) its pending place.
pub(super) type PrimaryDone = (SideResult, Option<Reservation>, Option<PendingWrite>);
