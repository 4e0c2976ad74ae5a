//! Per-entity ordering of mirrored writes, and what reads need to know
//! about writes still on their way to the shadow.
//!
//! A write counts as pending from the moment the proxy plans it until its
//! shadow call is done. When the primary has answered, the write takes a
//! turn in its entity's lane: turns are handed out in the order the primary
//! answered, and the shadow call waits for its turn, so writes to one
//! entity reach the shadow in the primary's order.
//!
//! Must never: block the proxy (taking a turn is a short lock, waiting
//! happens in the mirror's own tasks), or keep a lane once it is idle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
struct Lane {
    /// Writes planned and not yet done.
    pending: usize,
    /// The next turn to hand out.
    next_turn: u64,
    /// The turn whose shadow call may run now.
    serving: watch::Sender<u64>,
    /// Turns finished ahead of `serving` (a write dropped while it waited).
    finished_early: std::collections::BTreeSet<u64>,
}

/// All lanes, keyed by entity (`kind:ID`).
#[derive(Debug)]
pub struct Lanes {
    lanes: Mutex<HashMap<String, Lane>>,
    /// Pending writes of every entity (and of none, such as creates).
    all_pending: AtomicUsize,
    /// Bumped whenever a write stops being pending.
    settled: watch::Sender<u64>,
    /// Writes planned so far, so a read can tell whether one began while it ran.
    started: AtomicU64,
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            lanes: Mutex::new(HashMap::new()),
            all_pending: AtomicUsize::new(0),
            settled: watch::Sender::new(0),
            started: AtomicU64::new(0),
        }
    }
}

/// What a read waits on: one entity's writes, or every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Entity(String),
    Everything,
}

impl Lanes {
    pub fn new() -> Arc<Lanes> {
        Arc::new(Lanes::default())
    }

    /// Registers a write as pending (called by the proxy when it plans the write).
    pub fn begin(self: &Arc<Self>, entity: Option<String>) -> PendingWrite {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.all_pending.fetch_add(1, Ordering::AcqRel);
        if let Some(entity) = &entity {
            let mut lanes = lock(&self.lanes);
            let lane = lanes.entry(entity.clone()).or_insert_with(|| Lane {
                pending: 0,
                next_turn: 0,
                serving: watch::Sender::new(0),
                finished_early: std::collections::BTreeSet::new(),
            });
            lane.pending += 1;
        }
        PendingWrite {
            lanes: Arc::clone(self),
            entity,
            turn: None,
            order: None,
            done: false,
        }
    }

    /// How many writes have been planned so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// Writes pending in a scope.
    pub fn pending(&self, scope: &Scope) -> usize {
        match scope {
            // Read by every mirrored read without an entity: an atomic, not a lock.
            Scope::Everything => self.all_pending.load(Ordering::Acquire),
            Scope::Entity(entity) => lock(&self.lanes).get(entity).map_or(0, |lane| lane.pending),
        }
    }

    /// Waits until no write is pending in the scope, at most `bound`;
    /// returns whether the scope is clear.
    pub async fn wait_clear(&self, scope: &Scope, bound: Duration) -> bool {
        let mut settled = self.settled.subscribe();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            settled.borrow_and_update();
            if self.pending(scope) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, settled.changed()).await.is_err() {
                return self.pending(scope) == 0;
            }
        }
    }
}

/// One pending write: its place in its entity's lane, given back when dropped.
#[derive(Debug)]
pub struct PendingWrite {
    lanes: Arc<Lanes>,
    entity: Option<String>,
    turn: Option<u64>,
    /// Where this write stands in the ledger's order (set with its turn).
    order: Option<u64>,
    done: bool,
}

impl PendingWrite {
    /// Takes the next turn in the lane; call when the primary has answered
    /// (synchronously, so turns follow the order of the primary's answers).
    pub fn take_turn(&mut self) {
        if self.order.is_some() {
            return;
        }
        match &self.entity {
            Some(entity) => {
                // Under the lane's lock, so turns and ledger order agree.
                let mut lanes = lock(&self.lanes.lanes);
                if let Some(lane) = lanes.get_mut(entity) {
                    self.turn = Some(lane.next_turn);
                    lane.next_turn += 1;
                }
                self.order = Some(crate::ledger::next_order());
            }
            None => self.order = Some(crate::ledger::next_order()),
        }
    }

    /// The write's place in the ledger's order.
    pub fn order(&mut self) -> u64 {
        self.take_turn();
        self.order.unwrap_or_else(crate::ledger::next_order)
    }

    /// Waits until every earlier write to the entity has had its shadow call.
    pub async fn wait_turn(&mut self) {
        self.take_turn();
        let (Some(entity), Some(turn)) = (&self.entity, self.turn) else {
            return;
        };
        let serving = lock(&self.lanes.lanes).get(entity).map(|lane| lane.serving.subscribe());
        if let Some(mut serving) = serving {
            // The sender lives as long as the lane, and the lane as long as this write.
            let _ = serving.wait_for(|now| *now >= turn).await;
        }
    }

    pub fn entity(&self) -> Option<&str> {
        self.entity.as_deref()
    }

    /// Ends the write: the next turn may run, and reads waiting on it go on.
    pub fn finish(mut self) {
        self.settle();
    }

    fn settle(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(entity) = &self.entity {
            let mut lanes = lock(&self.lanes.lanes);
            let mut idle = false;
            if let Some(lane) = lanes.get_mut(entity) {
                // A write that never took a turn holds no place in the order.
                if let Some(turn) = self.turn {
                    lane.finished_early.insert(turn);
                    let Lane {
                        serving,
                        finished_early,
                        ..
                    } = lane;
                    serving.send_modify(|serving| {
                        while finished_early.remove(serving) {
                            *serving += 1;
                        }
                    });
                }
                lane.pending -= 1;
                idle = lane.pending == 0;
            }
            if idle {
                lanes.remove(entity);
            }
        }
        self.lanes.all_pending.fetch_sub(1, Ordering::AcqRel);
        self.lanes.settled.send_modify(|count| *count += 1);
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        self.settle();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_follow_the_order_writes_were_answered_not_planned() {
        let lanes = Lanes::new();
        let mut first_planned = lanes.begin(Some("tasks:1".into()));
        let mut second_planned = lanes.begin(Some("tasks:1".into()));
        // The primary answers the second write first.
        second_planned.take_turn();
        first_planned.take_turn();
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&order);
        let late = tokio::spawn(async move {
            first_planned.wait_turn().await;
            lock(&log).push("first");
            first_planned.finish();
        });
        tokio::task::yield_now().await;
        assert!(
            lock(&order).is_empty(),
            "the first-planned write waits for the first-answered one"
        );
        second_planned.wait_turn().await;
        lock(&order).push("second");
        second_planned.finish();
        late.await.unwrap();
        assert_eq!(*lock(&order), ["second", "first"]);
        assert_eq!(lanes.pending(&Scope::Entity("tasks:1".into())), 0);
        assert!(lock(&lanes.lanes).is_empty(), "an idle lane is removed");
    }

    #[tokio::test]
    async fn a_dropped_write_passes_its_turn_on() {
        let lanes = Lanes::new();
        let dropped = lanes.begin(Some("e".into()));
        let mut next = lanes.begin(Some("e".into()));
        next.take_turn();
        drop(dropped);
        tokio::time::timeout(Duration::from_secs(1), next.wait_turn())
            .await
            .expect("the lane moved on");
    }

    #[tokio::test]
    async fn a_turn_dropped_while_waiting_does_not_let_later_turns_overtake() {
        let lanes = Lanes::new();
        let mut running = lanes.begin(Some("e".into()));
        let mut waiting = lanes.begin(Some("e".into()));
        let mut last = lanes.begin(Some("e".into()));
        running.take_turn();
        waiting.take_turn();
        last.take_turn();
        drop(waiting);
        let blocked = tokio::time::timeout(Duration::from_millis(30), last.wait_turn()).await;
        assert!(
            blocked.is_err(),
            "turn 2 must wait for turn 0 even though turn 1 is gone"
        );
        running.finish();
        tokio::time::timeout(Duration::from_secs(1), last.wait_turn())
            .await
            .expect("turn 2 runs once turns 0 and 1 are done");
    }

    #[tokio::test]
    async fn reads_wait_for_their_scope_to_clear_up_to_a_bound() {
        let lanes = Lanes::new();
        let write = lanes.begin(Some("tasks:1".into()));
        let create = lanes.begin(None);
        assert_eq!(lanes.pending(&Scope::Everything), 2);
        assert!(lanes.wait_clear(&Scope::Entity("tasks:2".into()), Duration::ZERO).await);
        assert!(
            !lanes
                .wait_clear(&Scope::Entity("tasks:1".into()), Duration::from_millis(20))
                .await
        );
        let finisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            write.finish();
        });
        assert!(
            lanes
                .wait_clear(&Scope::Entity("tasks:1".into()), Duration::from_secs(5))
                .await
        );
        finisher.await.unwrap();
        assert!(!lanes.wait_clear(&Scope::Everything, Duration::from_millis(10)).await);
        drop(create);
        assert!(lanes.wait_clear(&Scope::Everything, Duration::ZERO).await);
        assert_eq!(lanes.started(), 2);
    }
}
