//! Who works on which partition: leases in Postgres (`carrier_store::leases`), renewed by this
//! member, taken only when free, handed over only after the work drained. See `design.md`.
//!
//! One tokio task runs the loop below. Every commit interval it stores committable offsets;
//! every quarter of the lease it refreshes the member's heartbeat, renews its leases, and moves
//! towards the assignment the live members imply: releasing what is no longer its share (after
//! a drain) and taking what is (once free); a glance between ticks brings the tick forward when
//! the group changed. A watchdog per lease fires the tracker's `lost`
//! token when the lease was not renewed in time, so work stops before another member may start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carrier_store::leases::{Leases, Member};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::assignment;
use super::fetcher::Fetcher;
use super::instances::Duplicates;
use super::metrics::metrics;
use super::stream::{self, ANCHOR_REFRESH};
use super::OffsetTracker;
use crate::admin::RecordReader;

/// How often the partition count is looked up again (partitions can be added to a topic).
const PARTITIONS_REFRESH: Duration = Duration::from_secs(30);

struct Held {
    epoch: i64,
    tracker: Arc<OffsetTracker>,
    /// This member's own deadline for the lease; the watchdog loses the lease when it passes.
    deadline: watch::Sender<Instant>,
    /// The offset last stored in the lease row.
    stored: Option<i64>,
    /// When a new anchor of the stream was last asked for (see `stream.rs`).
    anchor_asked: Instant,
    state: HeldState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldState {
    /// Being started (start offset looked up, processor created): not handed over until it
    /// has started, so a release cannot overtake the assignment.
    Starting,
    /// Worked on.
    Working,
    /// Revoked from the fetcher; its work is draining. The lease is still renewed.
    Releasing,
    /// Its work did not drain in time: no longer renewed, lost when its deadline passes (which
    /// abandons the requests still in flight) so the next owner starts after them.
    Expiring,
}

enum Event {
    /// A partition started (its records are being dispatched); `fresh` when it started a new
    /// stream generation, which has no stored offset yet.
    Started { partition: i32, epoch: i64, fresh: bool },
    /// A release finished; `drained` when all work ended and the lease was given up.
    Released {
        partition: i32,
        epoch: i64,
        drained: bool,
    },
    /// A partition could not be started (its start offset unknown); the lease was given up.
    NotStarted { partition: i32, epoch: i64 },
}

pub(crate) struct Coordinator {
    fetcher: Arc<Fetcher>,
    /// Reads a partition's anchor record when a new owner checks its stream.
    reader: Arc<RecordReader>,
    leases: Leases,
    topic: String,
    lease: Duration,
    held: HashMap<i32, Held>,
    partitions: Option<i32>,
    partitions_checked: Option<Instant>,
    events: mpsc::UnboundedSender<Event>,
    incoming: mpsc::UnboundedReceiver<Event>,
    last_error_log: HashMap<&'static str, Instant>,
    /// How long the last heartbeat took: about what a commit costs now.
    last_call: Duration,
    /// Other live members naming this member's instance.
    duplicates: Duplicates,
    /// What the last heartbeat saw: the live members' IDs (sorted) and the partitions this
    /// member's share holds. A glance that differs moves the next lease tick to now.
    seen_members: Vec<String>,
    wanted: Vec<i32>,
}

impl Coordinator {
    pub fn new(fetcher: Arc<Fetcher>, reader: RecordReader, leases: Leases, lease: Duration) -> Self {
        let (events, incoming) = mpsc::unbounded_channel();
        Self {
            topic: fetcher.options.topic.clone(),
            fetcher,
            reader: Arc::new(reader),
            leases,
            lease,
            held: HashMap::new(),
            partitions: None,
            partitions_checked: None,
            events,
            incoming,
            last_error_log: HashMap::new(),
            last_call: Duration::ZERO,
            duplicates: Duplicates::new(lease),
            seen_members: Vec::new(),
            wanted: Vec::new(),
        }
    }

    /// How long before the lease's expiry in Postgres this member stops working on it: covers
    /// the time a receiver takes to notice an abandoned request, and clock rate differences.
    fn margin(&self) -> Duration {
        (self.lease / 5).max(Duration::from_millis(200))
    }

    /// A bound on each Postgres call, so a hung connection cannot stall renewals of the others.
    fn call_timeout(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(500))
    }

    /// How often the group is glanced at between lease ticks (see `glance`).
    fn glance_interval(&self) -> Duration {
        (self.lease / 20).max(Duration::from_millis(100))
    }

    /// Runs until `shutdown`, then releases every partition (drained) and leaves the group.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let tick = (self.lease / 4).max(Duration::from_millis(100));
        let mut commits = tokio::time::interval(self.fetcher.options.commit_interval);
        commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut glances = tokio::time::interval(self.glance_interval());
        glances.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_lease_tick = Instant::now();
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    let partitions: Vec<i32> = self.held.keys().copied().collect();
                    tracing::info!(topic = %self.topic, ?partitions, "consumer stopping, draining partitions");
                    next_lease_tick = Instant::now();
                }
                _ = commits.tick() => {}
                _ = glances.tick(), if !stopping => {
                    if self.group_changed(next_lease_tick).await {
                        next_lease_tick = Instant::now();
                    }
                }
                Some(event) = self.incoming.recv() => self.on_event(event),
            }
            self.reap_lost();
            // Renewals first: under a slow Postgres, commits queued ahead of them would make
            // them late. A commit is skipped when it could delay the next renewal.
            let now = Instant::now();
            if now >= next_lease_tick {
                next_lease_tick = now + tick;
                self.lease_tick(stopping).await;
            }
            if Instant::now() + self.last_call < next_lease_tick {
                self.commit().await;
                self.store_anchors().await;
            }
            if stopping && self.held.is_empty() {
                break;
            }
        }
        if let Err(error) = self.leases.leave().await {
            tracing::warn!(%error, topic = %self.topic, "could not leave the consumer group; the others see it gone when its heartbeat expires");
        }
        metrics().owned.with_label_values(&[&self.topic]).set(0);
    }

    fn warn_rate_limited(&mut self, step: &'static str, error: &dyn std::fmt::Display) {
        metrics().errors.with_label_values(&[&self.topic, step]).inc();
        let now = Instant::now();
        if self
            .last_error_log
            .get(step)
            .is_none_or(|at| now.duration_since(*at) > Duration::from_secs(10))
        {
            tracing::warn!(topic = %self.topic, step, %error, "partition lease bookkeeping failed; leases not renewed in time are given up");
            self.last_error_log.insert(step, now);
        }
    }

    /// Between lease ticks: whether a member joined or left, or a partition of this member's
    /// share was freed, since the last heartbeat. Without it a hand-over waits for the leaving
    /// owner's tick and then the taker's (up to half a lease, every destination of the
    /// partition stalled); with it, for the drain and about one glance. Skipped when it could
    /// delay the next renewal; bounded by the time left until then.
    async fn group_changed(&mut self, next_lease_tick: Instant) -> bool {
        let Some(left) = next_lease_tick.checked_duration_since(Instant::now() + self.last_call) else {
            return false;
        };
        let timeout = left.min(self.call_timeout());
        match tokio::time::timeout(timeout, self.leases.glance()).await {
            Ok(Ok(glance)) => {
                glance.members != self.seen_members
                    || self
                        .wanted
                        .iter()
                        .any(|p| !self.held.contains_key(p) && glance.free.contains(p))
            }
            Ok(Err(error)) => {
                self.warn_rate_limited("glance", &error);
                false
            }
            Err(_) => false,
        }
    }

    async fn lease_tick(&mut self, stopping: bool) {
        self.refresh_partition_count().await;
        let Some(members) = self.heartbeat_and_renew().await else {
            return;
        };
        let Some(partitions) = self.partitions else {
            return;
        };
        metrics()
            .members
            .with_label_values(&[&self.topic])
            .set(members.len() as i64);
        let me = Member {
            id: self.leases.member().to_owned(),
            instance: Some(self.leases.instance().to_owned()),
        };
        self.watch_duplicates(&me, &members);
        let wanted = if stopping {
            Vec::new()
        } else {
            assignment::owned_by(&me, &members, partitions)
        };
        self.seen_members = members.iter().map(|member| member.id.clone()).collect();
        self.wanted = wanted.clone();
        let to_release: Vec<i32> = self
            .held
            .iter()
            .filter(|(p, h)| h.state == HeldState::Working && !wanted.contains(p))
            .map(|(p, _)| *p)
            .collect();
        for partition in to_release {
            self.start_release(partition);
        }
        for partition in wanted {
            if !self.held.contains_key(&partition) {
                let asked = Instant::now();
                self.acquire(partition, asked).await;
            }
        }
        metrics()
            .owned
            .with_label_values(&[&self.topic])
            .set(self.held.len() as i64);
    }

    async fn refresh_partition_count(&mut self) {
        if self
            .partitions_checked
            .is_some_and(|at| at.elapsed() < PARTITIONS_REFRESH && self.partitions.is_some())
        {
            return;
        }
        let fetcher = self.fetcher.clone();
        match tokio::task::spawn_blocking(move || fetcher.partition_count()).await {
            Ok(Ok(count)) if count > 0 => {
                metrics()
                    .partitions
                    .with_label_values(&[&self.topic])
                    .set(i64::from(count));
                self.partitions = Some(count);
                self.partitions_checked = Some(Instant::now());
            }
            Ok(Ok(_)) => self.warn_rate_limited("metadata", &"the topic has no partitions (does it exist?)"),
            Ok(Err(error)) => self.warn_rate_limited("metadata", &error),
            Err(error) => self.warn_rate_limited("metadata", &error),
        }
    }

    /// Reports other live members naming this member's instance (see `instances.rs`).
    fn watch_duplicates(&mut self, me: &Member, members: &[Member]) {
        let observed = self.duplicates.observe(me, members, Instant::now());
        let instance = self.leases.instance();
        for other in &observed.appeared {
            tracing::info!(topic = %self.topic, %instance, %other, "another member names this member's instance (a predecessor whose heartbeat has not expired yet?); each partition still has one owner");
        }
        for other in &observed.persisting {
            tracing::warn!(topic = %self.topic, %instance, %other, "two live processes claim one instance id (a replacement started before its predecessor stopped, or kafka.instance_id given to two pods); they split the instance's partitions, one owner each by lease, and the other members' shares do not grow");
        }
        metrics()
            .instance_duplicates
            .with_label_values(&[&self.topic])
            .set(observed.duplicates as i64);
    }

    /// Refreshes the heartbeat and renews the leases (one round trip); the live members, or
    /// `None` when Postgres did not answer in time.
    async fn heartbeat_and_renew(&mut self) -> Option<Vec<Member>> {
        let asked = Instant::now();
        let held: Vec<(i32, i64)> = self
            .held
            .iter()
            .filter(|(_, h)| h.state != HeldState::Expiring)
            .map(|(p, h)| (*p, h.epoch))
            .collect();
        let call = self.leases.heartbeat_and_renew(&held, self.lease);
        let answer = tokio::time::timeout(self.call_timeout(), call).await;
        self.last_call = asked.elapsed();
        let (members, renewed) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                self.warn_rate_limited("heartbeat", &error);
                return None;
            }
            Err(_) => {
                self.warn_rate_limited("heartbeat", &"timed out");
                return None;
            }
        };
        let deadline = asked + self.lease - self.margin();
        for (partition, _) in held {
            if renewed.contains(&partition) {
                if let Some(h) = self.held.get(&partition) {
                    h.tracker.set_deadline(deadline);
                    h.deadline.send_replace(deadline);
                }
            } else {
                self.lose(partition, "the lease expired or another member holds it");
            }
        }
        Some(members)
    }

    async fn acquire(&mut self, partition: i32, asked: Instant) {
        let acquired =
            match tokio::time::timeout(self.call_timeout(), self.leases.acquire(partition, self.lease)).await
            {
                Ok(Ok(Some(acquired))) => acquired,
                Ok(Ok(None)) => return,
                Ok(Err(error)) => return self.warn_rate_limited("acquire", &error),
                Err(_) => return self.warn_rate_limited("acquire", &"timed out"),
            };
        let tracker = Arc::new(OffsetTracker::with_fence(
            partition,
            Some(self.leases.fence(partition, acquired.epoch)),
        ));
        let until = asked + self.lease - self.margin();
        tracker.set_deadline(until);
        let (deadline, watched) = watch::channel(until);
        tokio::spawn(watchdog(tracker.clone(), watched));
        // The first record this owner reads anchors the stream for the next one.
        tracker.want_anchor();
        self.held.insert(
            partition,
            Held {
                epoch: acquired.epoch,
                tracker: tracker.clone(),
                deadline,
                stored: acquired.committed_offset,
                anchor_asked: Instant::now(),
                state: HeldState::Starting,
            },
        );
        // Started in the background: the stream check reads from the broker, the processor may
        // wait for its own state (delivery reads its parked destinations), and renewals must go
        // on meanwhile.
        let fetcher = self.fetcher.clone();
        let reader = self.reader.clone();
        let leases = self.leases.clone();
        let events = self.events.clone();
        let topic = self.topic.clone();
        let epoch = acquired.epoch;
        tokio::spawn(async move {
            let result = async {
                let start = stream::resolve(&fetcher, &reader, &leases, partition, &acquired).await?;
                let fresh = start.generation != acquired.generation;
                tracker.set_generation(start.generation);
                if let rdkafka::Offset::Offset(offset) = start.offset {
                    tracker.set_start(offset);
                }
                tracing::info!(%topic, partitions = ?[partition], epoch, generation = start.generation, start = ?start.offset, "partitions assigned");
                tokio::task::spawn_blocking(move || fetcher.assign(tracker, start.offset)).await??;
                Ok::<bool, stream::StartError>(fresh)
            }
            .await;
            match result {
                Ok(fresh) => {
                    let _ = events.send(Event::Started {
                        partition,
                        epoch,
                        fresh,
                    });
                }
                Err(error) => {
                    tracing::warn!(%topic, partition, %error, "could not start a partition; its lease is given up and taken again later");
                    let _ = events.send(Event::NotStarted { partition, epoch });
                }
            }
        });
    }

    /// Hands `partition` over: stop dispatching, let its work drain, store its offset, and give
    /// the lease up (or, if work is still in flight, let it expire so that work is abandoned
    /// before the next owner starts).
    fn start_release(&mut self, partition: i32) {
        let Some(held) = self.held.get_mut(&partition) else {
            return;
        };
        held.state = HeldState::Releasing;
        let tracker = held.tracker.clone();
        let epoch = held.epoch;
        tracing::info!(topic = %self.topic, partitions = ?[partition], epoch, "partitions revoked, draining");
        let slot = self.fetcher.revoke(partition);
        let handover = self.fetcher.options.handover_timeout;
        let drain = self.fetcher.options.drain_timeout;
        let leases = self.leases.clone();
        let events = self.events.clone();
        let topic = self.topic.clone();
        let call_timeout = self.call_timeout();
        tokio::spawn(async move {
            let drained = {
                let tracker = tracker.clone();
                tokio::task::spawn_blocking(move || {
                    let drained = drain_partition(&tracker, &topic, handover, drain);
                    drop(slot);
                    drained
                })
                .await
                .unwrap_or(false)
            };
            let mut given_up = false;
            if drained && !tracker.lost_token().is_cancelled() {
                let stored = match tracker.committable() {
                    Some(offset) => matches!(
                        tokio::time::timeout(call_timeout, leases.commit(&[(partition, epoch, offset)])).await,
                        Ok(Ok(stored)) if stored.contains(&partition)
                    ),
                    None => true,
                };
                given_up = stored
                    && matches!(
                        tokio::time::timeout(call_timeout, leases.release(partition, epoch)).await,
                        Ok(Ok(true))
                    );
            }
            let _ = events.send(Event::Released {
                partition,
                epoch,
                drained: given_up,
            });
        });
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Started {
                partition,
                epoch,
                fresh,
            } => {
                if let Some(held) = self.held.get_mut(&partition).filter(|h| h.epoch == epoch) {
                    if held.state == HeldState::Starting {
                        held.state = HeldState::Working;
                    }
                    if fresh {
                        held.stored = None;
                    }
                }
            }
            Event::Released {
                partition,
                epoch,
                drained,
            } => {
                let Some(held) = self.held.get_mut(&partition).filter(|h| h.epoch == epoch) else {
                    return;
                };
                if drained {
                    self.held.remove(&partition);
                } else {
                    tracing::warn!(
                        topic = %self.topic,
                        partition,
                        "a released partition's work did not drain (or its offset could not be stored); its lease is left to expire, abandoning what is still in flight, and the next owner redoes what was not committed"
                    );
                    held.state = HeldState::Expiring;
                }
            }
            Event::NotStarted { partition, epoch } => {
                if self.held.get(&partition).is_some_and(|h| h.epoch == epoch) {
                    if let Some(held) = self.held.remove(&partition) {
                        held.tracker.lose();
                    }
                    let leases = self.leases.clone();
                    tokio::spawn(async move {
                        let _ = leases.release(partition, epoch).await;
                    });
                }
            }
        }
        metrics()
            .owned
            .with_label_values(&[&self.topic])
            .set(self.held.len() as i64);
    }

    /// Forgets leases whose watchdog fired.
    fn reap_lost(&mut self) {
        let lost: Vec<(i32, HeldState)> = self
            .held
            .iter()
            .filter(|(_, h)| h.tracker.lost_token().is_cancelled())
            .map(|(p, h)| (*p, h.state))
            .collect();
        for (partition, state) in lost {
            if state == HeldState::Expiring {
                self.held.remove(&partition);
                self.fetcher.revoke(partition);
            } else {
                self.lose(partition, "the lease could not be renewed in time");
            }
        }
    }

    /// Stops all work on `partition` at once: its lease is not this member's any more.
    fn lose(&mut self, partition: i32, why: &str) {
        let Some(held) = self.held.remove(&partition) else {
            return;
        };
        held.tracker.lose();
        self.fetcher.revoke(partition);
        metrics().lost.with_label_values(&[&self.topic]).inc();
        metrics()
            .owned
            .with_label_values(&[&self.topic])
            .set(self.held.len() as i64);
        tracing::warn!(
            topic = %self.topic,
            partition,
            epoch = held.epoch,
            why,
            "partition lease lost; its work in flight is abandoned and the next owner redoes what was not committed"
        );
    }

    /// Stores the anchors the trackers found, and asks for a fresh one where the last is old.
    async fn store_anchors(&mut self) {
        let mut found = Vec::new();
        for (partition, held) in self.held.iter_mut() {
            if held.state != HeldState::Working {
                continue;
            }
            if let Some(anchor) = held.tracker.take_anchor() {
                found.push((*partition, held.epoch, anchor));
            } else if held.anchor_asked.elapsed() >= ANCHOR_REFRESH {
                held.anchor_asked = Instant::now();
                held.tracker.want_anchor();
            }
        }
        for (partition, epoch, anchor) in found {
            let call = self.leases.set_anchor(partition, epoch, &anchor);
            match tokio::time::timeout(self.call_timeout(), call).await {
                Ok(Ok(_)) => {}
                // Asked again at the next refresh; until then the previous anchor stands.
                Ok(Err(error)) => self.warn_rate_limited("anchor", &error),
                Err(_) => self.warn_rate_limited("anchor", &"timed out"),
            }
        }
    }

    /// Stores the committable offsets that moved.
    async fn commit(&mut self) {
        let offsets: Vec<(i32, i64, i64)> = self
            .held
            .iter()
            .filter(|(_, h)| h.state != HeldState::Expiring && !h.tracker.lost_token().is_cancelled())
            .filter_map(|(p, h)| {
                let offset = h.tracker.committable()?;
                (h.stored != Some(offset)).then_some((*p, h.epoch, offset))
            })
            .collect();
        if offsets.is_empty() {
            return;
        }
        let stored = match tokio::time::timeout(self.call_timeout(), self.leases.commit(&offsets)).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(error)) => return self.warn_rate_limited("commit", &error),
            Err(_) => return self.warn_rate_limited("commit", &"timed out"),
        };
        for (partition, _, offset) in offsets {
            if stored.contains(&partition) {
                if let Some(h) = self.held.get_mut(&partition) {
                    h.stored = Some(offset);
                }
            } else {
                self.lose(partition, "its offset commit was refused");
            }
        }
    }
}

/// Loses the lease when its deadline passes without a renewal.
async fn watchdog(tracker: Arc<OffsetTracker>, mut deadline: watch::Receiver<Instant>) {
    loop {
        let until = *deadline.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {
                if *deadline.borrow() <= Instant::now() {
                    tracker.lose();
                    return;
                }
            }
            changed = deadline.changed() => if changed.is_err() { return },
            _ = tracker.lost_token().cancelled() => return,
        }
    }
}

/// The hand-over of a revoked partition (blocking): first let the processor finish the records
/// it accepted (at most `handover`), then stop new work and wait for work in flight (at most
/// `drain`). True when nothing is left in flight.
fn drain_partition(tracker: &OffsetTracker, topic: &str, handover: Duration, drain: Duration) -> bool {
    let partition = tracker.partition();
    if !tracker.wait_drained_until(Instant::now() + handover) {
        tracing::info!(
            topic,
            partition,
            unfinished = tracker.pending(),
            "accepted records not finished within the hand-over timeout; the next owner reads them again"
        );
    }
    tracker.release();
    if !tracker.wait_idle_until(Instant::now() + drain) {
        tracing::warn!(
            topic,
            partition,
            in_flight = tracker.active(),
            "in-flight work did not finish within the drain timeout"
        );
        return false;
    }
    true
}
