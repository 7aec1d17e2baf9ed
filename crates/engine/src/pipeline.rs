//! The multi-core engine (DESIGN.md §1–2): the same serial core, with the work that is
//! not serial moved off its thread.
//!
//! ```text
//!  caller (gateway/driver) ──ingress ring──▶ core thread ──output ring──▶ publish
//!                           (disruptor)     sequencer: seq numbers,        (stage A: event
//!                                           groups, fed-back liquidations  stream hash,
//!                                           R (its shards) + merge         acks per group,
//!                                           M (its markets) + merge        latency)
//!                                           P settle; tick (its shards)
//!                                             │ ▲  R, M and tick fan-out (rtrb, a pair
//!                                             ▼ │  per helper)
//!                                           helper threads: R shards, markets' matchers,
//!                                           remargin shards
//! ```
//!
//! - **Stages and rings.** The ingress and output streams are `disruptor` rings: fixed
//!   slots filled in place, one producer, one polling consumer. The fan-outs use an `rtrb`
//!   queue pair per helper thread instead: a shard is *moved* to its thread and back (its
//!   `Vec` headers, not its rows), a market's matcher is *lent* (`amdahl_disjoint::scope`),
//!   and a disruptor consumer only ever sees `&E`, which can carry neither.
//! - **The Amdahl split.** The core holds a group until its cut and runs stage R over it
//!   per account shard, one segment at a time (`risk.rs`), each against the state matching
//!   has reached when it begins: a segment of `risk_fan_out` commands or more on every
//!   thread at once (the engine and the group shared through `Arc`s, read-only, the
//!   shards' reservation state moved out and back), a smaller one on the core. Then stage
//!   M: a run of the segment's commands (all but its last, up to a barrier) of
//!   `match_fan_out` commands or more goes to a matcher per market (`desk.rs`), each
//!   market's desk on its thread (`market_threads`: markets share a thread when threads
//!   are fewer), over its own market's state; the core applies the commands that name no
//!   market and merges what the desks left in sequence order (`Engine::apply_run`). A
//!   shorter run is matched on the core, in sequence order. Stage P — the fills' money —
//!   settles on the core when the segment ends, in fill order. A mark tick re-margins
//!   every open position of its market; that pass splits by account shard and runs on
//!   every engine thread at once, and the core merges the partial sums and candidates when
//!   all shards are back (the barrier that keeps group g+1's risk checks after group g's
//!   remargin). Publishing — hashing the event stream, releasing acks per group,
//!   measuring latency — overlaps with the next group on its own thread.
//! - **Determinism.** Every decision is made on the core thread, in sequence order, from
//!   state that the fan-outs merge in a canonical order; the threads only change *where*
//!   the pure per-shard and per-market work runs. `threads = 1` is the serial engine
//!   itself. The equivalence property test (`tests/pipeline.rs`) holds the pipeline to the
//!   serial engine event for event and hash for hash.
//! - **No allocation, lock or syscall in steady state.** Rings, the per-shard finding
//!   lists and the markets' lanes are allocated at start; the ledger (for a tick) and the
//!   engine and group (for R) are shared with shard threads through `Arc`s whose counts
//!   only move during a fan-out (an atomic, not a lock), and a run's desks are lent for
//!   the run, the core waiting for all (an atomic count). The only syscalls are futex
//!   wakes under the `Block` wait strategy, and only when the other side actually sleeps,
//!   and the sleeps of a producer whose ring is full (backpressure).
//! - **Limits.** The rings have fixed sizes; a full ring makes its producer wait (the
//!   gateway's admission queue, not the engine, sheds load).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle, Thread};

use amdahl_ledger::Ledger;
use amdahl_risk::Instrument;
use amdahl_types::{AccountId, Command, Currency, Event, Seq, Sequenced, Timestamp};
use disruptor::{
    BusySpin, EventPoller, Polling, Producer, SingleConsumerBarrier, SingleProducer,
    SingleProducerBarrier, build_single_producer,
};

use crate::desk::MatchJob;
use crate::remargin::{AccountShard, Tick, remargin_shard};
use crate::risk::RiskShard;
use crate::sink::{EventSink, HashSink};
use crate::{Engine, EngineConfig};
use amdahl_disjoint::Work;

/// How a stage waits when it has nothing to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wait {
    /// Spin on the ring: lowest latency, a whole core. Only where a core is dedicated.
    Spin,
    /// `sched_yield` between polls: shares the core with other runnable threads.
    Yield,
    /// Sleep until the producer wakes the thread (`park`/`unpark`), after a short spin
    /// (work that is microseconds away is not worth a sleep and a wake). The producer's wake
    /// is one atomic swap unless the thread is really asleep. The choice for tests, CI and
    /// any machine with fewer cores than busy threads.
    Block,
}

/// Polls a `Block` waiter spins before it yields, and yields before it parks.
const SPIN_POLLS: u32 = 256;
const YIELD_POLLS: u32 = 8;

impl Wait {
    /// Wait once; `idle` counts the empty polls since the last work (the caller resets it).
    #[inline]
    fn idle(self, idle: &mut u32) {
        *idle = idle.saturating_add(1);
        match self {
            Wait::Spin => std::hint::spin_loop(),
            Wait::Yield => thread::yield_now(),
            Wait::Block if *idle <= SPIN_POLLS => std::hint::spin_loop(),
            Wait::Block if *idle <= SPIN_POLLS + YIELD_POLLS => thread::yield_now(),
            Wait::Block => thread::park(),
        }
    }
}

/// Where the stages run. `threads = 1` is the serial engine; with N ≥ 2 the core thread
/// runs the sequencer, risk and matching, and the account shards are dealt round-robin over
/// all N threads (shard s on thread s mod N: the core re-margins its own share).
#[derive(Clone, Debug)]
pub struct Topology {
    pub threads: usize,
    /// Account shards of the remargin stage (default: one per thread).
    pub account_shards: usize,
    /// The thread that publishes: 0 is the core thread itself (no output ring), 1..N a
    /// helper, which then also serves its shard.
    pub publish_on: usize,
    /// Per thread (core first), the CPU core to pin it to. A core this machine lacks, or a
    /// missing entry, leaves that thread unpinned: pinning is a tuning, never a failure.
    pub pin: Vec<usize>,
    /// How the core thread waits for input and for shards to come back.
    pub core_wait: Wait,
    /// How the helper threads wait for work.
    pub helper_wait: Wait,
    /// Slots in the ingress and output rings (a power of two).
    pub ring_slots: usize,
    /// Segments of at least this many commands have their stage R fanned out over the
    /// threads by account shard; smaller ones run it on the core, where it costs less than
    /// a round trip to the helpers. The decisions are the same either way.
    pub risk_fan_out: usize,
    /// Runs of a segment's market commands (all of it but its last command, up to a
    /// barrier: see `Engine::apply_run`) of at least this many commands are matched by a
    /// matcher per market, the markets dealt over the threads; shorter runs are matched in
    /// sequence order on the core. 0: always in sequence order. The events are the same
    /// either way.
    pub match_fan_out: usize,
    /// Per market, the thread whose matcher takes it in a run (0 is the core); a market
    /// past the list's end goes to thread `market mod N`. Several markets share a thread
    /// when threads are fewer than markets.
    pub market_threads: Vec<usize>,
    /// Fault injection for tests: helper threads panic on their first tick.
    #[doc(hidden)]
    pub inject_shard_panic: bool,
    /// Fault injection for tests: at the end of the first group that reaches this sequence
    /// number, before its audit, the core breaks the books (`Engine::corrupt_for_test`: one
    /// unit into account 0's XBt wallet, with no other side), as a serial run can at the
    /// same point; the audit must then halt both at the same group with the same events.
    #[doc(hidden)]
    pub inject_corruption_after: Option<u64>,
}

impl Topology {
    /// N threads, publishing on the last helper, blocking waits, no pinning: safe on any
    /// machine, including a 2-core CI runner.
    pub fn threads(threads: usize) -> Topology {
        Topology {
            threads,
            account_shards: threads,
            publish_on: threads.saturating_sub(1),
            pin: Vec::new(),
            core_wait: Wait::Block,
            helper_wait: Wait::Block,
            ring_slots: 1 << 16,
            risk_fan_out: 256,
            match_fan_out: 64,
            market_threads: Vec::new(),
            inject_shard_panic: false,
            inject_corruption_after: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 || self.threads > 256 {
            return Err(format!("threads: need 1..=256, got {}", self.threads));
        }
        if self.publish_on >= self.threads {
            return Err(format!(
                "publish_on {} is not one of {} threads",
                self.publish_on, self.threads
            ));
        }
        if self.account_shards == 0 || self.account_shards > 4096 {
            return Err(format!("account_shards: need 1..=4096, got {}", self.account_shards));
        }
        if let Some(&t) = self.market_threads.iter().find(|&&t| t >= self.threads) {
            return Err(format!("market_threads: thread {t} is not one of {}", self.threads));
        }
        if !self.ring_slots.is_power_of_two() || self.ring_slots < 64 {
            return Err("ring_slots: need a power of two ≥ 64".into());
        }
        Ok(())
    }
}

/// What the caller wants back from the publish stage.
#[derive(Clone, Copy, Default)]
pub struct PublishOptions {
    /// Keep every event (tests); otherwise only the stream hash and counts.
    pub collect_events: bool,
    /// A clock in nanoseconds, for latency from ingress to publish. Injected by the caller
    /// (the engine crates never read a clock); `None` measures nothing.
    pub clock: Option<fn() -> u64>,
}

/// How far the stages have got, for drivers that time phases (atomics, written once per
/// group).
#[derive(Default)]
struct Progress {
    /// Groups the core has closed (audited).
    closed: AtomicU64,
    /// Groups published, and events published by then.
    published: AtomicU64,
    events: AtomicU64,
}

/// The core thread's own timings, if a clock was given: how long each mark tick took to
/// apply (remargin fan-out, merge, and what the tick triggered), and each group's audit.
#[derive(Default)]
pub struct CoreTimes {
    pub mark_ns: Vec<u64>,
    /// Open positions the timed mark ticks re-margined, all told.
    pub mark_positions: u64,
    pub audit_ns: Vec<u64>,
}

/// The publish stage's account of a run.
pub struct Published {
    pub events: Vec<Event>,
    pub event_hash: u128,
    pub event_count: u64,
    pub commands: u64,
    pub groups: u64,
    /// Ingress-to-publish latency of every command, in ns (acks are released when the
    /// command's group is published), if a clock was given. Preallocated at start.
    pub latency_ns: Vec<u64>,
}

/// Stage A's publishing half: folds events into the stream hash and releases each group's
/// acks. It runs on the core thread or on a helper, fed by the output ring.
struct Publisher {
    hash: HashSink,
    events: Vec<Event>,
    collect: bool,
    clock: Option<fn() -> u64>,
    /// Entry times of the commands of the group being published.
    group: Vec<u64>,
    latency_ns: Vec<u64>,
    commands: u64,
    groups: u64,
    progress: Arc<Progress>,
}

impl Publisher {
    fn new(options: PublishOptions, latency_capacity: usize, progress: Arc<Progress>) -> Publisher {
        Publisher {
            progress,
            hash: HashSink::default(),
            events: Vec::new(),
            collect: options.collect_events,
            clock: options.clock,
            group: Vec::with_capacity(if options.clock.is_some() { 1 << 16 } else { 0 }),
            latency_ns: Vec::with_capacity(if options.clock.is_some() {
                latency_capacity
            } else {
                0
            }),
            commands: 0,
            groups: 0,
        }
    }

    #[inline]
    fn event(&mut self, event: Event) {
        self.hash.emit(event);
        if self.collect {
            self.events.push(event);
        }
    }

    #[inline]
    fn command_done(&mut self, entered: u64) {
        if self.clock.is_some() {
            if self.group.len() == self.group.capacity() {
                self.release();
            }
            self.group.push(entered);
        }
    }

    /// A group's end, carrying how many commands of the input it held.
    fn group_end(&mut self, commands: u64) {
        self.commands += commands;
        self.groups += 1;
        self.release();
        self.progress.events.store(self.hash.count, Ordering::Relaxed);
        self.progress.published.store(self.groups, Ordering::Release);
    }

    /// The group is audited and published: its commands are acknowledged now.
    fn release(&mut self) {
        if let Some(clock) = self.clock {
            let now = clock();
            for &entered in &self.group {
                if self.latency_ns.len() < self.latency_ns.capacity() {
                    self.latency_ns.push(now.saturating_sub(entered));
                }
            }
            self.group.clear();
        }
    }

    fn finish(self) -> Published {
        Published {
            event_hash: self.hash.digest(),
            event_count: self.hash.count,
            events: self.events,
            commands: self.commands,
            groups: self.groups,
            latency_ns: self.latency_ns,
        }
    }
}

#[derive(Clone, Copy)]
enum InKind {
    Command,
    GroupEnd,
}

/// An ingress slot: a command as it enters the sequencer, or the cut after a group.
#[derive(Clone, Copy)]
struct InSlot {
    kind: InKind,
    time: Timestamp,
    command: Command,
    entered: u64,
}

#[derive(Clone, Copy)]
enum OutKind {
    Event,
    CommandDone,
    GroupEnd,
}

/// An output slot: an event, the end of one command (with its entry time; only when
/// latency is measured), or a group's end (its audit passed or halted the engine; acks are
/// released; `entered` carries the group's command count).
#[derive(Clone, Copy)]
struct OutSlot {
    kind: OutKind,
    event: Event,
    entered: u64,
}

const NO_EVENT: Event = Event::MarkChanged {
    seq: Seq(0),
    market: amdahl_types::MarketId(0),
    price: amdahl_types::Price(0),
};

type Ingress = SingleProducer<InSlot, SingleConsumerBarrier>;
type IngressPoller = EventPoller<InSlot, SingleProducerBarrier>;
type Output = SingleProducer<OutSlot, SingleConsumerBarrier>;
type OutputPoller = EventPoller<OutSlot, SingleProducerBarrier>;

/// Publish into a disruptor ring without its built-in busy-spin when full: a full ring
/// means the consumer is behind, so give it the core — yield a few times, then sleep, so a
/// producer that is far ahead (a driver with the whole workload in hand) stops competing
/// with the stages for cores. Backpressure only: a ring with room costs no syscall.
#[inline]
fn publish<E, P: Producer<E>>(producer: &mut P, dead: &AtomicBool, fill: impl Fn(&mut E)) {
    let mut tries = 0u32;
    while producer.try_publish(&fill).is_err() {
        wait_for_room(&mut tries, dead);
    }
}

/// One wait of a producer whose ring is full (see `publish`).
fn wait_for_room(tries: &mut u32, dead: &AtomicBool) {
    check_alive(dead);
    *tries += 1;
    if *tries < 4 {
        thread::yield_now();
    } else {
        thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Set when a stage thread unwinds: every wait in the pipeline checks it, so a panic in one
/// thread surfaces as a panic in the others (and in the driver) instead of a silent hang.
struct StageGuard {
    dead: Arc<AtomicBool>,
    others: Vec<Thread>,
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dead.store(true, Ordering::Release);
            for t in &self.others {
                t.unpark();
            }
        }
    }
}

#[inline]
fn check_alive(dead: &AtomicBool) {
    if dead.load(Ordering::Acquire) {
        panic!("a pipeline stage thread panicked; the engine cannot go on without it");
    }
}

/// The core thread's event sink: straight to the publisher, or into the output ring.
enum CoreSink {
    Inline(Box<Publisher>),
    /// Slots are gathered per group and published as one batch (acks are released per
    /// group anyway): one release of the ring's cursor per group instead of one per event.
    Ring {
        ring: Output,
        pending: Vec<OutSlot>,
        max_batch: usize,
        publisher: Thread,
        wake: bool,
        dead: Arc<AtomicBool>,
    },
}

/// Slots gathered before a batch publish (112 KiB); a bigger group flushes early.
const GATHER_SLOTS: usize = 1024;

/// Publish `pending` into the ring in batches of at most `max_batch` (half the ring, so a
/// batch always fits once the consumer catches up), waiting as
/// `publish` does when the ring is full.
fn flush(ring: &mut Output, pending: &mut Vec<OutSlot>, max_batch: usize, dead: &AtomicBool) {
    let mut at = 0;
    let mut tries = 0u32;
    while at < pending.len() {
        let n = (pending.len() - at).min(max_batch);
        let batch = &pending[at..at + n];
        let published = ring.try_batch_publish(n, |slots| {
            for (slot, from) in slots.zip(batch) {
                *slot = *from;
            }
        });
        if published.is_ok() {
            at += n;
        } else {
            wait_for_room(&mut tries, dead);
        }
    }
    pending.clear();
}

impl CoreSink {
    #[inline]
    fn put(&mut self, kind: OutKind, event: Event, entered: u64) {
        match self {
            CoreSink::Inline(p) => match kind {
                OutKind::Event => p.event(event),
                OutKind::CommandDone => p.command_done(entered),
                OutKind::GroupEnd => p.group_end(entered),
            },
            CoreSink::Ring { ring, pending, max_batch, dead, .. } => {
                pending.push(OutSlot { kind, event, entered });
                if matches!(kind, OutKind::GroupEnd) || pending.len() == GATHER_SLOTS {
                    flush(ring, pending, *max_batch, dead);
                }
            }
        }
    }

    /// Wake a blocked publisher: once per group, when its acks are due (a futex wake per
    /// command would cost more than the command).
    #[inline]
    fn wake(&self) {
        if let CoreSink::Ring { publisher, wake: true, .. } = self {
            publisher.unpark();
        }
    }
}

impl EventSink for CoreSink {
    #[inline]
    fn emit(&mut self, event: Event) {
        self.put(OutKind::Event, event, 0);
    }
}

/// Work for one shard thread. Shards are moved there and back; what they read is shared
/// through an `Arc` for the length of the fan-out.
enum ShardWork {
    /// A tick's remargin of one account shard: read access to the ledger, and the tick.
    Remargin { index: usize, shard: AccountShard, ledger: Arc<Ledger>, tick: Tick },
    /// Stage R for one account shard: read access to the engine and to the group, and
    /// the segment of the group to decide.
    Risk {
        index: usize,
        shard: RiskShard,
        engine: Arc<Engine>,
        group: Arc<Vec<Sequenced>>,
        segment: Range<usize>,
    },
    /// Stage M for some of a run's markets (`Engine::apply_run`): each market's desk,
    /// lent for the run (`amdahl_disjoint::scope`).
    Match(amdahl_disjoint::Job),
}

/// A shard coming home, at its index.
enum ShardDone {
    Remargin(usize, AccountShard),
    Risk(usize, RiskShard),
    /// A market's share of a run is done (its job dropped).
    Match,
}

/// The core's end of one shard thread.
struct ShardLink {
    work: rtrb::Producer<ShardWork>,
    done: rtrb::Consumer<ShardDone>,
    thread: Thread,
    /// Shards sent in this fan-out and not yet back.
    out: usize,
}

/// Fans a tick's remargin out over the account shards and gathers them back (owned by the
/// engine while it runs in a pipeline).
pub(crate) struct FanOut {
    links: Vec<ShardLink>,
    /// `Topology::market_threads`.
    market_threads: Vec<usize>,
    wait: Wait,
    wake: bool,
    dead: Arc<AtomicBool>,
}

impl FanOut {
    pub(crate) fn remargin(
        &mut self,
        shards: &mut [AccountShard],
        ledger: &Arc<Ledger>,
        inst: &Instrument,
        tick: &Tick,
    ) {
        let threads = self.deal(shards, |index, shard| ShardWork::Remargin {
            index,
            shard,
            ledger: Arc::clone(ledger),
            tick: *tick,
        });
        for shard in shards.iter_mut().step_by(threads) {
            remargin_shard(shard, ledger, inst, tick);
        }
        self.gather(|done| match done {
            ShardDone::Remargin(index, shard) => shards[index] = shard,
            _ => unreachable!("only remargin work is out during a tick"),
        });
    }

    /// Stage R of a segment of a group over the account shards, dealt as a tick's
    /// remargin is: each thread decides its shards' new orders against the shared,
    /// unchanging engine.
    pub(crate) fn risk(
        &mut self,
        engine: &Arc<Engine>,
        group: &Arc<Vec<Sequenced>>,
        segment: Range<usize>,
        risk: &mut [RiskShard],
    ) {
        let threads = self.deal(risk, |index, shard| ShardWork::Risk {
            index,
            shard,
            engine: Arc::clone(engine),
            group: Arc::clone(group),
            segment: segment.clone(),
        });
        for shard in risk.iter_mut().step_by(threads) {
            engine.risk_pass(&group[segment.clone()], shard);
        }
        self.gather(|done| match done {
            ShardDone::Risk(index, shard) => risk[index] = shard,
            _ => unreachable!("only stage R work is out during stage R"),
        });
    }

    /// Stage M of a run over the engine's threads: each market's job goes to its thread
    /// (`Topology::market_threads`), the core runs its own meanwhile, and this returns when
    /// every job is back. Each job is one market's desk over its own state, so what runs
    /// where changes nothing but the time (property 6c; `tests/pipeline.rs`).
    pub(crate) fn matching(&mut self, jobs: &mut [MatchJob<'_>]) {
        let threads = self.links.len() + 1;
        // (Out of `self` for the run, so `self` can be borrowed whole below.)
        let market_threads = std::mem::take(&mut self.market_threads);
        let thread_of = |job: &MatchJob<'_>| {
            let m = job.lane as usize;
            market_threads.get(m).copied().unwrap_or(m % threads)
        };
        // The helpers' jobs first, so all are out before the core starts on its own.
        jobs.sort_unstable_by_key(|job| thread_of(job) == 0);
        let theirs = jobs.iter().take_while(|job| thread_of(job) != 0).count();
        let (theirs, mine) = jobs.split_at_mut(theirs);
        let dead = Arc::clone(&self.dead);
        let wait = self.wait;
        let mut idle = 0;
        // A helper that died with a job in its queue never gives it back: the scope would
        // wait forever, so that is the end of the process (its panic is already printed).
        let on_idle = || {
            if dead.load(Ordering::Acquire) {
                eprintln!("amdahl: a matcher thread died holding a market's run");
                std::process::abort();
            }
            wait.idle(&mut idle);
        };
        amdahl_disjoint::scope(on_idle, |s| {
            for job in theirs.iter_mut() {
                let link = &mut self.links[thread_of(job) - 1];
                if link.work.push(ShardWork::Match(s.job(job))).is_err() {
                    unreachable!("a link's queue holds every market of its thread");
                }
                link.out += 1;
            }
            if self.wake {
                for link in self.links.iter().filter(|l| l.out > 0) {
                    link.thread.unpark();
                }
            }
            for job in mine {
                job.work();
            }
            self.gather(|done| match done {
                ShardDone::Match => {}
                _ => unreachable!("only stage M work is out during a run"),
            });
        });
        self.market_threads = market_threads;
    }

    /// Send shard s to thread s mod N (thread 0, the core, keeps its own: the others
    /// leave an empty shard in their place and come back to the same index), and wake the
    /// threads that got work. Returns N.
    fn deal<T: Default>(
        &mut self,
        shards: &mut [T],
        mut work: impl FnMut(usize, T) -> ShardWork,
    ) -> usize {
        let threads = self.links.len() + 1;
        for (index, slot) in shards.iter_mut().enumerate() {
            if index % threads == 0 {
                continue;
            }
            let link = &mut self.links[index % threads - 1];
            if link.work.push(work(index, std::mem::take(slot))).is_err() {
                unreachable!("a link's queue holds every shard of its thread");
            }
            link.out += 1;
        }
        if self.wake {
            for link in self.links.iter().filter(|l| l.out > 0) {
                link.thread.unpark();
            }
        }
        threads
    }

    /// Wait for every shard sent out to come home.
    fn gather(&mut self, mut home: impl FnMut(ShardDone)) {
        let mut idle = 0;
        for link in &mut self.links {
            while link.out > 0 {
                match link.done.pop() {
                    Ok(done) => {
                        home(done);
                        link.out -= 1;
                    }
                    Err(_) => {
                        check_alive(&self.dead);
                        self.wait.idle(&mut idle);
                    }
                }
            }
        }
    }
}

/// The helper thread's end of its shard link.
struct ShardServer {
    work: rtrb::Consumer<ShardWork>,
    done: rtrb::Producer<ShardDone>,
    core: Thread,
    wake_core: bool,
    instruments: Vec<Instrument>,
    inject_panic: bool,
}

impl ShardServer {
    /// Serve one shard if one is waiting; true if it did.
    #[inline]
    fn poll(&mut self) -> bool {
        let Ok(work) = self.work.pop() else {
            return false;
        };
        // Each arm lets go of what it read before handing the shard back: the core writes
        // to the ledger, or the engine, again as soon as every shard is home.
        let done = match work {
            ShardWork::Remargin { index, mut shard, ledger, tick } => {
                assert!(!self.inject_panic, "injected fault: a shard thread panics on its tick");
                remargin_shard(&mut shard, &ledger, &self.instruments[tick.market], &tick);
                drop(ledger);
                ShardDone::Remargin(index, shard)
            }
            ShardWork::Risk { index, mut shard, engine, group, segment } => {
                engine.risk_pass(&group[segment], &mut shard);
                drop((engine, group));
                ShardDone::Risk(index, shard)
            }
            ShardWork::Match(job) => {
                job.run();
                ShardDone::Match
            }
        };
        if self.done.push(done).is_err() {
            unreachable!("a link's queue holds every shard of its thread");
        }
        if self.wake_core {
            self.core.unpark();
        }
        true
    }
}

fn pin(topology: &Topology, thread: usize) {
    let Some(&id) = topology.pin.get(thread) else {
        return;
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(core) = cores.into_iter().find(|c| c.id == id) {
        core_affinity::set_for_current(core);
    }
}

impl Drop for Pipeline {
    /// A pipeline dropped without `finish` (its driver panicked, say) still stops its
    /// threads: the input ends, the helpers are told to stop. They are not joined here, so
    /// a stuck stage cannot hang the unwinding.
    fn drop(&mut self) {
        drop(self.ingress.take());
        self.stop.store(true, Ordering::Release);
        self.core_thread.unpark();
        for h in &self.helpers {
            h.thread().unpark();
        }
    }
}

/// What the core thread hands back when the input ends.
pub struct Finished {
    pub engine: Engine,
    pub published: Published,
    /// False if an audit failed and the engine halted.
    pub audits_passed: bool,
    pub times: CoreTimes,
}

/// A running pipeline. Feed it with `submit` and `end_group` (the sequencer's input: the
/// commands in arrival order and where the groups are cut), then `finish`.
pub struct Pipeline {
    ingress: Option<Ingress>,
    core: Option<JoinHandle<Finished>>,
    core_thread: Thread,
    wake_core: bool,
    helpers: Vec<JoinHandle<Option<Published>>>,
    stop: Arc<AtomicBool>,
    clock: Option<fn() -> u64>,
    /// Groups cut by the caller.
    cut: u64,
    progress: Arc<Progress>,
    dead: Arc<AtomicBool>,
}

impl Pipeline {
    /// Start the engine threads. `latency_capacity`: how many latency samples to keep.
    pub fn start(
        config: &EngineConfig,
        topology: &Topology,
        options: PublishOptions,
        latency_capacity: usize,
    ) -> Result<Pipeline, String> {
        topology.validate()?;
        config.validate()?;
        let n = topology.threads;
        let stop = Arc::new(AtomicBool::new(false));
        let dead = Arc::new(AtomicBool::new(false));
        let driver = thread::current();
        let (ingress, ingress_poller): (Ingress, IngressPoller) = {
            let factory = || InSlot {
                kind: InKind::GroupEnd,
                time: Timestamp(0),
                command: Command::Tick,
                entered: 0,
            };
            let (poller, builder) =
                build_single_producer(topology.ring_slots, factory, BusySpin).new_event_poller();
            (builder.build(), poller)
        };
        let (output, output_poller): (Option<Output>, Option<OutputPoller>) = if topology.publish_on
            == 0
        {
            (None, None)
        } else {
            let factory = || OutSlot { kind: OutKind::GroupEnd, event: NO_EVENT, entered: 0 };
            let (poller, builder) =
                build_single_producer(topology.ring_slots, factory, BusySpin).new_event_poller();
            (Some(builder.build()), Some(poller))
        };

        // The core thread starts first and parks until its links are handed over, so the
        // helpers know whom to wake.
        let (links_tx, links_rx) = std::sync::mpsc::sync_channel::<(Vec<ShardLink>, CoreSink)>(1);
        let progress = Arc::new(Progress::default());
        let core_progress = Arc::clone(&progress);
        let core_config = config.clone();
        let core_dead = Arc::clone(&dead);
        let core_driver = driver.clone();
        let core_topology = topology.clone();
        let core = thread::Builder::new()
            .name("amdahl-core".into())
            .spawn(move || {
                pin(&core_topology, 0);
                let (links, sink) = links_rx.recv().expect("the pipeline hands over the links");
                let mut others: Vec<Thread> = links.iter().map(|l| l.thread.clone()).collect();
                others.push(core_driver);
                let _guard = StageGuard { dead: Arc::clone(&core_dead), others };
                let input = CoreInput {
                    dead: core_dead,
                    poller: ingress_poller,
                    progress: core_progress,
                    clock: options.clock,
                    samples: latency_capacity,
                };
                run_core(&core_config, &core_topology, links, sink, input)
            })
            .map_err(|e| format!("spawning the core thread: {e}"))?;
        let core_thread = core.thread().clone();

        let mut links = Vec::with_capacity(n.saturating_sub(1));
        let mut helpers = Vec::with_capacity(n.saturating_sub(1));
        let mut output_poller = output_poller;
        let mut publisher_thread = None;
        for i in 1..n {
            // Room for every shard this thread serves in one tick, and every market it
            // may match in one run.
            let serves = topology.account_shards.div_ceil(n).max(config.markets.len()).max(1);
            let (work_tx, work_rx) = rtrb::RingBuffer::new(serves);
            let (done_tx, done_rx) = rtrb::RingBuffer::new(serves);
            let server = ShardServer {
                work: work_rx,
                done: done_tx,
                core: core_thread.clone(),
                wake_core: topology.core_wait == Wait::Block,
                instruments: config.markets.iter().map(|m| m.instrument.clone()).collect(),
                inject_panic: topology.inject_shard_panic,
            };
            let poller = if i == topology.publish_on { output_poller.take() } else { None };
            let publisher = poller.map(|p| {
                let publisher = Publisher::new(options, latency_capacity, Arc::clone(&progress));
                (p, Box::new(publisher))
            });
            let topo = topology.clone();
            let stop = Arc::clone(&stop);
            let others = vec![core_thread.clone(), driver.clone()];
            let guard = StageGuard { dead: Arc::clone(&dead), others };
            let helper_dead = Arc::clone(&dead);
            let handle = thread::Builder::new()
                .name(format!("amdahl-shard-{i}"))
                .spawn(move || {
                    let _guard = guard;
                    run_helper(&topo, i, server, publisher, &stop, &helper_dead)
                })
                .map_err(|e| format!("spawning helper thread {i}: {e}"))?;
            if i == topology.publish_on {
                publisher_thread = Some(handle.thread().clone());
            }
            let thread = handle.thread().clone();
            links.push(ShardLink { work: work_tx, done: done_rx, thread, out: 0 });
            helpers.push(handle);
        }
        let sink = match (output, publisher_thread) {
            (Some(ring), Some(publisher)) => CoreSink::Ring {
                ring,
                pending: Vec::with_capacity(GATHER_SLOTS),
                max_batch: topology.ring_slots / 2,
                publisher,
                wake: topology.helper_wait == Wait::Block,
                dead: Arc::clone(&dead),
            },
            _ => {
                let publisher = Publisher::new(options, latency_capacity, Arc::clone(&progress));
                CoreSink::Inline(Box::new(publisher))
            }
        };
        links_tx.send((links, sink)).map_err(|_| "the core thread died at start".to_string())?;
        Ok(Pipeline {
            ingress: Some(ingress),
            core: Some(core),
            core_thread,
            wake_core: topology.core_wait == Wait::Block,
            helpers,
            stop,
            clock: options.clock,
            cut: 0,
            progress,
            dead,
        })
    }

    /// A command enters the sequencer.
    #[inline]
    pub fn submit(&mut self, time: Timestamp, command: Command) {
        let entered = self.clock.map_or(0, |c| c());
        self.submit_scheduled(time, command, entered);
    }

    /// A command enters the sequencer; its latency is counted from `scheduled` (the clock's
    /// reading when an open-loop driver meant to send it, so a driver that falls behind
    /// does not hide the delay: no coordinated omission).
    #[inline]
    pub fn submit_scheduled(&mut self, time: Timestamp, command: Command, scheduled: u64) {
        let entered = scheduled;
        let ingress = self.ingress.as_mut().expect("not finished");
        publish(ingress, &self.dead, |s: &mut InSlot| {
            s.kind = InKind::Command;
            s.time = time;
            s.command = command;
            s.entered = entered;
        });
        if self.wake_core {
            self.core_thread.unpark();
        }
    }

    /// Cut the group: the commands submitted since the last cut form one group.
    #[inline]
    pub fn end_group(&mut self) {
        let ingress = self.ingress.as_mut().expect("not finished");
        publish(ingress, &self.dead, |s: &mut InSlot| s.kind = InKind::GroupEnd);
        self.cut += 1;
        if self.wake_core {
            self.core_thread.unpark();
        }
    }

    /// Wait until the core has closed every group cut so far (their events may still be
    /// on the way to the publisher). For drivers that time phases separately.
    pub fn wait_closed(&self) {
        // The driver's side: sleep between looks, so it does not take a core from the
        // stages it is waiting for.
        while self.progress.closed.load(Ordering::Acquire) < self.cut {
            check_alive(&self.dead);
            thread::sleep(std::time::Duration::from_micros(20));
        }
    }

    /// Wait until every group cut so far is published; returns the events published.
    pub fn wait_published(&self) -> u64 {
        while self.progress.published.load(Ordering::Acquire) < self.cut {
            check_alive(&self.dead);
            thread::sleep(std::time::Duration::from_micros(20));
        }
        self.progress.events.load(Ordering::Relaxed)
    }

    /// Close the input, let every stage drain, and collect the engine and the output.
    pub fn finish(mut self) -> Finished {
        // Dropping the producer marks the ring's end; the core drains and returns.
        drop(self.ingress.take());
        self.core_thread.unpark();
        let mut finished =
            self.core.take().expect("once").join().expect("the core thread panicked");
        self.stop.store(true, Ordering::Release);
        for h in &self.helpers {
            h.thread().unpark();
        }
        for h in self.helpers.drain(..) {
            if let Some(published) = h.join().expect("a helper thread panicked") {
                finished.published = published;
            }
        }
        finished
    }
}

struct CoreInput {
    dead: Arc<AtomicBool>,
    poller: IngressPoller,
    progress: Arc<Progress>,
    clock: Option<fn() -> u64>,
    samples: usize,
}

fn run_core(
    config: &EngineConfig,
    topology: &Topology,
    links: Vec<ShardLink>,
    mut sink: CoreSink,
    input: CoreInput,
) -> Finished {
    let CoreInput { dead, poller: mut input, progress, clock, samples } = input;
    let mut corrupt_at = topology.inject_corruption_after;
    let closed = &progress.closed;
    let mut times = CoreTimes::default();
    if clock.is_some() {
        times.mark_ns.reserve(samples);
        times.audit_ns.reserve(samples);
    }
    let timed = |v: &mut Vec<u64>, start: u64| {
        if let Some(clock) = clock
            && v.len() < v.capacity()
        {
            v.push(clock().saturating_sub(start));
        }
    };
    let mut engine = Engine::with_shards(config, topology.account_shards as u32);
    let helpers = !links.is_empty();
    if helpers {
        engine.match_runs_of(topology.match_fan_out);
        engine.fan_out = std::sync::Mutex::new(Some(FanOut {
            links,
            market_threads: topology.market_threads.clone(),
            wait: topology.core_wait,
            wake: topology.helper_wait == Wait::Block,
            dead: Arc::clone(&dead),
        }));
    }
    // Shared read-only with the helpers during a group's stage R, and only then; every
    // other use goes through `core` (`Arc::get_mut`: an atomic check, not a lock).
    let mut engine = Arc::new(engine);
    // The sequencer's state: the next number, and the liquidations group g found, which
    // enter group g+1 ahead of its commands (as `workload::apply_grouped` does).
    let mut seq = 1u64;
    let mut fed_back: Vec<Command> = Vec::with_capacity(config.accounts as usize + 1);
    // The open group, held until its cut: stage R decides each of its segments before
    // M matches any of that segment. `entered[k]` is the entry time of `group[fed + k]`
    // (fed-back liquidations entered with the engine, not from outside).
    let room = topology.ring_slots.max(1 << 12) + fed_back.capacity();
    let mut group: Arc<Vec<Sequenced>> = Arc::new(Vec::with_capacity(room));
    let mut entered: Vec<u64> = Vec::with_capacity(room);
    let mut fed = 0usize;
    let mut audits_passed = true;
    let mut idle = 0;
    loop {
        let mut batch = match input.poll() {
            Ok(batch) => {
                idle = 0;
                batch
            }
            Err(Polling::NoEvents) => {
                check_alive(&dead);
                topology.core_wait.idle(&mut idle);
                continue;
            }
            Err(Polling::Shutdown) => break,
        };
        for slot in &mut batch {
            match slot.kind {
                InKind::Command => {
                    let open = held(&mut group);
                    if open.is_empty() {
                        for &command in &fed_back {
                            open.push(Sequenced { seq: Seq(seq), time: slot.time, command });
                            seq += 1;
                        }
                        fed = fed_back.len();
                        fed_back.clear();
                    }
                    open.push(Sequenced { seq: Seq(seq), time: slot.time, command: slot.command });
                    seq += 1;
                    entered.push(slot.entered);
                }
                InKind::GroupEnd => {
                    if group.is_empty() {
                        // An empty cut audits nothing.
                        sink.put(OutKind::GroupEnd, NO_EVENT, 0);
                        sink.wake();
                        closed.fetch_add(1, Ordering::Release);
                        continue;
                    }
                    let last = group.last().expect("not empty").seq;
                    let mut segment = core(&mut engine).open_group(&group);
                    let mut k = 0;
                    while k < group.len() {
                        let cmd = &group[k];
                        // Stage R of each segment before M applies its first command
                        // (`Engine::apply` would decide it on this thread).
                        if let Some(s) = segment.take().or_else(|| core(&mut engine).next_segment())
                        {
                            if helpers && s.len() >= topology.risk_fan_out {
                                risk_fanned_out(&mut engine, &group, s);
                            } else {
                                core(&mut engine).risk_segment(s);
                            }
                        }
                        let e = core(&mut engine);
                        let mark = match cmd.command {
                            Command::Mark { market, .. } if clock.is_some() => Some(market),
                            _ => None,
                        };
                        let start = if mark.is_some() { clock.map_or(0, |c| c()) } else { 0 };
                        let rows = mark.map_or(0, |m| e.open_positions(m) as u64);
                        // A run of market commands goes to the matchers at once.
                        let applied = e.apply_at(&group, k, &mut sink);
                        if mark.is_some() {
                            let before = times.mark_ns.len();
                            timed(&mut times.mark_ns, start);
                            // Counted with the tick's time, so the two sums agree.
                            if times.mark_ns.len() > before {
                                times.mark_positions += rows;
                            }
                        }
                        // Entry times travel only when latency is measured.
                        if clock.is_some() {
                            for j in (k..k + applied).filter(|&j| j >= fed) {
                                sink.put(OutKind::CommandDone, NO_EVENT, entered[j - fed]);
                            }
                        }
                        k += applied;
                    }
                    let group_commands = (group.len() - fed) as u64;
                    held(&mut group).clear();
                    let e = core(&mut engine);
                    entered.clear();
                    fed = 0;
                    // Test fault injection, once per run, off the command path.
                    if corrupt_at.take_if(|at| last.0 >= *at).is_some() {
                        e.corrupt_for_test(AccountId(0), Currency::XBt, 1);
                    }
                    let start = clock.map_or(0, |c| c());
                    audits_passed &= e.end_group(last, &mut sink);
                    timed(&mut times.audit_ns, start);
                    e.take_liquidations(&mut fed_back);
                    sink.put(OutKind::GroupEnd, NO_EVENT, group_commands);
                    sink.wake();
                    closed.fetch_add(1, Ordering::Release);
                }
            }
        }
    }
    let published = match sink {
        CoreSink::Inline(p) => p.finish(),
        // The helper that publishes returns the real account when it drains.
        CoreSink::Ring { ring, publisher, .. } => {
            drop(ring);
            publisher.unpark();
            Published {
                events: Vec::new(),
                event_hash: 0,
                event_count: 0,
                commands: 0,
                groups: 0,
                latency_ns: Vec::new(),
            }
        }
    };
    // The shard threads go home with the engine's links; the shards are all here.
    let Ok(mut engine) = Arc::try_unwrap(engine) else {
        unreachable!("no helper holds the engine once the input has ended")
    };
    engine.fan_out = std::sync::Mutex::new(None);
    Finished { engine, published, audits_passed, times }
}

/// The engine's fan-out links. The `Mutex` only makes the engine `Sync`: `get_mut` needs
/// `&mut` and never locks, and no thread can have poisoned it while holding it.
pub(crate) fn links(fan_out: &mut std::sync::Mutex<Option<FanOut>>) -> &mut Option<FanOut> {
    fan_out.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The engine, for writing: helpers hold it only during a group's stage R, and the core
/// waits for all of them before it goes on.
#[inline]
fn core(engine: &mut Arc<Engine>) -> &mut Engine {
    Arc::get_mut(engine).expect("no helper holds the engine outside stage R")
}

/// The open group, for writing (helpers hold it only during its stage R).
#[inline]
fn held(group: &mut Arc<Vec<Sequenced>>) -> &mut Vec<Sequenced> {
    Arc::get_mut(group).expect("no helper holds the group outside stage R")
}

/// Stage R of a segment of `group` fanned out over the engine's threads: the account
/// shards' parts go out with the engine and the group shared read-only, and their
/// decisions merge by sequence number when all are home (the same decisions
/// `Engine::risk_segment` makes).
fn risk_fanned_out(engine: &mut Arc<Engine>, group: &Arc<Vec<Sequenced>>, segment: Range<usize>) {
    let e = core(engine);
    let mut risk = std::mem::take(&mut e.risk);
    let mut fan_out = links(&mut e.fan_out).take().expect("a pipeline with helpers has its links");
    fan_out.risk(engine, group, segment, &mut risk);
    let e = core(engine);
    *links(&mut e.fan_out) = Some(fan_out);
    e.merge_decisions(&mut risk);
    e.risk = risk;
}

fn run_helper(
    topology: &Topology,
    index: usize,
    mut server: ShardServer,
    mut publisher: Option<(OutputPoller, Box<Publisher>)>,
    stop: &AtomicBool,
    dead: &AtomicBool,
) -> Option<Published> {
    pin(topology, index);
    let mut output_done = publisher.is_none();
    let mut idle = 0;
    loop {
        // A waiting core comes first: it is blocked until its shard is back.
        let mut busy = false;
        while server.poll() {
            busy = true;
        }
        if let Some((poller, p)) = publisher.as_mut()
            && !output_done
        {
            match poller.poll() {
                Ok(mut batch) => {
                    busy = true;
                    for slot in &mut batch {
                        match slot.kind {
                            OutKind::Event => p.event(slot.event),
                            OutKind::CommandDone => p.command_done(slot.entered),
                            OutKind::GroupEnd => p.group_end(slot.entered),
                        }
                        // Between events, a tick's shard must not wait behind a long batch.
                        server.poll();
                    }
                }
                Err(Polling::NoEvents) => {}
                Err(Polling::Shutdown) => output_done = true,
            }
        }
        if !busy {
            if stop.load(Ordering::Acquire) && output_done || dead.load(Ordering::Acquire) {
                break;
            }
            topology.helper_wait.idle(&mut idle);
        } else {
            idle = 0;
        }
    }
    publisher.map(|(_, p)| p.finish())
}
