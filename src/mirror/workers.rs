//! The comparison workers: threads that take mirrored exchanges off the
//! queue, judge and record them, and the tasks beside them that ask a
//! divergence again (`recheck`) and flush the noise learner.
//!
//! Must never: run on the runtime that serves clients, take a lock the
//! proxy's `try_send` waits on, or release a queue slot before its exchange
//! is counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::warn;

use super::{ComparePriority, Mirror, Ticket};
use crate::budget::Reservation;
use crate::compare;
use crate::exchange::Outcome;
use crate::idmap::Side;
use crate::record::{Exchange, Recorder, Resend};
use crate::route::is_safe;

/// A divergence waiting to be asked again; it keeps its place in the queue.
pub(super) struct Recheck {
    pub(super) exchange: Exchange,
    /// What each side was sent the first time, sent again.
    pub(super) resend: Box<Resend>,
    pub(super) judgement: compare::Judgement,
    pub(super) ticket: Ticket,
    pub(super) delay: Duration,
}

/// The comparison threads; joined at shutdown.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` comparison threads on the queue's receiving end.
    pub(super) fn spawn(
        count: usize,
        priority: ComparePriority,
        from_proxy: &Arc<Mutex<Receiver<(Exchange, Ticket)>>>,
        stopping: &Arc<AtomicBool>,
        recorder: &Arc<Recorder>,
        rechecks: &mpsc::UnboundedSender<Recheck>,
    ) -> std::io::Result<Workers> {
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let from_proxy = Arc::clone(from_proxy);
            let recorder = Arc::clone(recorder);
            let rechecks = rechecks.clone();
            let stopping = Arc::clone(stopping);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cutover-compare-{index}"))
                    .spawn(move || {
                        match priority {
                            ComparePriority::Idle => run_on_spare_cpu_only(),
                            ComparePriority::Normal => {}
                        }
                        compare_loop(&from_proxy, &stopping, &recorder, &rechecks)
                    })?,
            );
        }
        Ok(Workers { threads })
    }

    /// Waits for the workers to finish what they hold. Call after every
    /// [`Mirror`] handle is dropped, or this waits forever.
    pub fn join(self) {
        for thread in self.threads {
            if thread.join().is_err() {
                warn!("a comparison worker panicked");
            }
        }
    }
}

/// Persists learned noise every 30 seconds while the mirror lives.
pub(super) async fn noise_loop(mirror: std::sync::Weak<Mirror>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Some(mirror) = mirror.upgrade() else { return };
        mirror.flush_noise();
    }
}

/// Asks both sides again about divergences on routes with `recheck`: if
/// they now agree, the exchange is `transient`, else it stays `diverged`.
pub(super) async fn recheck_loop(
    mirror: std::sync::Weak<Mirror>,
    recorder: Arc<Recorder>,
    mut rechecks: mpsc::UnboundedReceiver<Recheck>,
) {
    while let Some(Recheck {
        exchange,
        resend,
        mut judgement,
        ticket,
        delay,
    }) = rechecks.recv().await
    {
        let Some(mirror) = mirror.upgrade() else { return };
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let ((primary_request, primary_headers), (shadow_request, shadow_headers)) =
                (&resend.primary, &resend.shadow);
            let ((primary, held_p), (shadow, held_s)) = tokio::join!(
                mirror.call(Side::Primary, primary_request, primary_headers.clone()),
                mirror.call(Side::Shadow, shadow_request, shadow_headers.clone()),
            );
            let mut reservation = Reservation::empty(&mirror.budget);
            reservation.absorb(held_p);
            reservation.absorb(held_s);
            let again = Exchange {
                request_id: exchange.request_id.clone(),
                route: exchange.route.clone(),
                started_at: SystemTime::now(),
                request: exchange.request.clone(),
                primary,
                shadow,
                shadow_repeat: None,
                rules: Arc::clone(&exchange.rules),
                write_epoch: exchange.write_epoch,
                reservation,
                source: exchange.source,
                unmapped: exchange.unmapped.clone(),
                racy: false,
                write: None,
                served: exchange.served,
                resend: None,
            };
            if recorder.judge(&again).outcome == Outcome::Match {
                judgement.outcome = Outcome::Transient;
            }
            recorder.record(&exchange, judgement);
            drop(ticket);
        });
    }
}

/// How long an idle comparison thread sleeps between looks at the queue.
const POLL_MIN: Duration = Duration::from_micros(500);
const POLL_MAX: Duration = Duration::from_millis(20);

/// Moves the calling thread to `SCHED_IDLE`: it runs only when no other
/// thread wants the CPU, so comparisons can never slow the proxy down.
/// Measured: with a 64 KB body at 2,000 req/s on two cores, p99 client
/// latency went from 86 ms to 2.7 ms (scripts/bench-proxy.sh).
fn run_on_spare_cpu_only() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
            ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(err) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
            warn!(error = ?err, "cannot lower the comparison thread's priority; comparisons compete with the proxy for CPU");
        }
    }
}

/// Judges an exchange; a divergence on a read of a route with `recheck` is
/// asked again before it counts, anything else is counted now. The ticket
/// is released only once the exchange is counted.
fn judge(recorder: &Recorder, rechecks: &mpsc::UnboundedSender<Recheck>, mut exchange: Exchange, ticket: Ticket) {
    let judgement = recorder.judge(&exchange);
    if let (Outcome::Diverged, Some(delay)) = (judgement.outcome, exchange.rules.recheck) {
        if let Some(resend) = exchange.resend.take().filter(|_| is_safe(&exchange.request.method)) {
            let recheck = Recheck {
                exchange,
                resend,
                judgement,
                ticket,
                delay,
            };
            if let Err(mpsc::error::SendError(recheck)) = rechecks.send(recheck) {
                // The recheck task is gone (shutting down): count what we know.
                recorder.record(&recheck.exchange, recheck.judgement);
            }
            return;
        }
    }
    recorder.record(&exchange, judgement);
    drop(ticket);
}

fn compare_loop(
    from_proxy: &Mutex<Receiver<(Exchange, Ticket)>>,
    stopping: &AtomicBool,
    recorder: &Recorder,
    rechecks: &mpsc::UnboundedSender<Recheck>,
) {
    // The thread polls instead of blocking in `recv`: a blocked receiver
    // makes every `try_send` on the hot path take the channel's waker lock,
    // and a low-priority thread preempted while holding that lock would
    // stall the proxy (priority inversion). Polling keeps the hot path
    // lock-free; the backoff keeps an idle instance quiet.
    let mut backoff = POLL_MIN;
    loop {
        let next = {
            let receiver = from_proxy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            receiver.try_recv()
        };
        match next {
            Ok((exchange, ticket)) => {
                judge(recorder, rechecks, exchange, ticket);
                backoff = POLL_MIN;
            }
            Err(TryRecvError::Empty) if stopping.load(Ordering::Acquire) => return,
            Err(TryRecvError::Empty) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(POLL_MAX);
            }
            Err(TryRecvError::Disconnected) => return,
        }
    }
}
