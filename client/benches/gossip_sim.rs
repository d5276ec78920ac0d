//! SWIM failure-detection simulation (issue 5).
//!
//! Runs N foca members in one process on a virtual clock: a discrete-event
//! loop delivers each packet after a sampled delay (or drops it with
//! probability `loss`) and fires foca's timers at their virtual times, so
//! 5,000 members need no real sleeping. Every member uses
//! `tribune_client::gossip::tuning::swim_config`, the same SWIM settings as
//! the agent, and foca's `PostcardCodec`, the agent's codec.
//!
//! Per cluster size it measures, for each loss rate:
//! - false positives: members declared down while alive, over a steady
//!   window and the detection trials that follow;
//! - detection: one member is killed, and the time until each live member
//!   gets `MemberDown` for it is recorded (p50/p99 over members, and of the
//!   time until all know, over trials);
//! - gossip bytes sent per member per second during the steady window.
//!
//! Then one member's incoming packets get an extra 300-800 ms delay, and
//! false downs of it and of the others are counted.
//!
//! `cargo bench -p tribune-client --bench gossip_sim -- --members 100,1000
//! --loss 0,0.01,0.05 --trials 30 --seed 1`

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{AccumulatingRuntime, Codec, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tribune_client::gossip::tuning::swim_config;
use tribune_client::gossip::{Member, Role};

// ---------------------------------------------------------------------------
// Arguments

struct Args {
    members: Vec<u32>,
    losses: Vec<f64>,
    /// Unset: 100 trials up to 1,000 members, 10 above.
    trials: Option<usize>,
    seed: u64,
    /// Unset: 300 s up to 1,000 members, 60 s above.
    steady: Option<Duration>,
    delay_ms: (u64, u64),
    slow_ms: (u64, u64),
    slow_loss: f64,
    timeout: Duration,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            members: vec![100, 1000, 5000],
            losses: vec![0.0, 0.01, 0.05],
            trials: None,
            seed: 1,
            steady: None,
            delay_ms: (1, 5),
            slow_ms: (300, 800),
            slow_loss: 0.01,
            timeout: Duration::from_secs(60),
        }
    }
}

const USAGE: &str = "gossip_sim [--members 100,1000,5000] [--loss 0,0.01,0.05] [--trials N] [--seed 1]
  [--steady-secs S] [--delay-ms 1,5] [--slow-ms 300,800] [--slow-loss 0.01] [--timeout-secs 60]
  (trials and steady-secs default to 100 and 300 up to 1,000 members, 10 and 60 above)";

impl Args {
    /// Above 1,000 members every simulated second costs far more wall
    /// time (foca scans its member list on each update), so the defaults
    /// keep the whole table to a few minutes.
    fn trials_for(&self, n: u32) -> usize {
        self.trials.unwrap_or(if n > 1000 { 10 } else { 100 })
    }

    fn steady_for(&self, n: u32) -> Duration {
        let secs = if n > 1000 { 60 } else { 300 };
        self.steady.unwrap_or(Duration::from_secs(secs))
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` passes `--bench` to every harness-less bench.
        if flag == "--bench" {
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--members" => args.members = parse_list(&value)?,
            "--loss" => args.losses = parse_list(&value)?,
            "--trials" => args.trials = Some(parse_one(&value)?),
            "--seed" => args.seed = parse_one(&value)?,
            "--steady-secs" => args.steady = Some(Duration::from_secs(parse_one(&value)?)),
            "--delay-ms" => args.delay_ms = parse_range(&value)?,
            "--slow-ms" => args.slow_ms = parse_range(&value)?,
            "--slow-loss" => args.slow_loss = parse_one(&value)?,
            "--timeout-secs" => args.timeout = Duration::from_secs(parse_one(&value)?),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    validate(&args)?;
    Ok(args)
}

fn validate(args: &Args) -> Result<(), String> {
    // A kill needs a victim, an observer and a member to restart through.
    if args.members.iter().any(|n| *n < 3) {
        return Err("--members: each size must be at least 3".into());
    }
    let mut rates = args.losses.iter().chain([&args.slow_loss]);
    if rates.any(|l| !(0.0..1.0).contains(l)) {
        return Err("loss rates must be in [0, 1)".into());
    }
    Ok(())
}

fn parse_one<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("cannot parse {s:?}"))
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>, String> {
    s.split(',').map(parse_one).collect()
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    match parse_list::<u64>(s)?.as_slice() {
        [lo, hi] if lo <= hi => Ok((*lo, *hi)),
        _ => Err(format!("{s:?} is not MIN,MAX")),
    }
}

// ---------------------------------------------------------------------------
// The simulated identity

/// Bytes of filler each identity carries on the wire, so that packets are
/// as large as with the agent's `Member` (name, addresses, version), which
/// is what the bytes-per-second figure is for.
static PAD_LEN: AtomicUsize = AtomicUsize::new(0);
static PAD: [u8; 127] = [0; 127];

/// Filler on the wire, nothing in memory: 5,000 members each holding 5,000
/// identities would not fit as real `Member`s with their strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Pad;

impl Serialize for Pad {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&PAD[..PAD_LEN.load(Ordering::Relaxed)])
    }
}

struct PadVisitor;

impl serde::de::Visitor<'_> for PadVisitor {
    type Value = Pad;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("padding bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Pad, E> {
        Ok(Pad)
    }
}

impl<'de> Deserialize<'de> for Pad {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pad, D::Error> {
        d.deserialize_bytes(PadVisitor)
    }
}

/// A member: its slot in the simulation (its "address") and a restart
/// counter, renewed like the agent's `Member::incarnation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Id {
    idx: u32,
    incarnation: u16,
    pad: Pad,
}

impl Id {
    fn new(idx: u32) -> Id {
        Id {
            idx,
            incarnation: 0,
            pad: Pad,
        }
    }
}

impl foca::Identity for Id {
    type Addr = u32;

    fn renew(&self) -> Option<Self> {
        let incarnation = self.incarnation.checked_add(1)?;
        Some(Id { incarnation, ..*self })
    }

    fn addr(&self) -> u32 {
        self.idx
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        self.incarnation > other.incarnation
    }
}

fn encoded_len<T>(member: &foca::Member<T>) -> usize
where
    PostcardCodec: Codec<T>,
{
    let mut buf = Vec::new();
    PostcardCodec
        .encode_member(member, &mut buf)
        .expect("a member always encodes");
    buf.len()
}

/// Sets the filler so that an `Id` encodes to as many bytes as a typical
/// client agent's `Member`; returns that size.
fn match_agent_identity_size() -> usize {
    let agent = Member {
        name: "web-7f9c4d-x2k8q".into(),
        gossip_addr: std::net::SocketAddr::from(([10, 20, 31, 142], 8301)),
        role: Role::Client,
        datacenter: "dc1".into(),
        server_addr: String::new(),
        grpc_addr: "10.20.31.142:8502".into(),
        wan_addr: None,
        version: env!("CARGO_PKG_VERSION").into(),
        // Milliseconds since the epoch, as the runtime sets it.
        incarnation: 1_767_225_600_000,
    };
    let target = encoded_len(&foca::Member::alive(agent));
    PAD_LEN.store(0, Ordering::Relaxed);
    let bare = encoded_len(&foca::Member::alive(Id::new(u32::MAX)));
    PAD_LEN.store(target.saturating_sub(bare).min(PAD.len()), Ordering::Relaxed);
    encoded_len(&foca::Member::alive(Id::new(u32::MAX)))
}

// ---------------------------------------------------------------------------
// The event queue on the virtual clock (microseconds)

type Micros = u64;

fn micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(us: Micros) -> f64 {
    us as f64 / 1000.0
}

enum Event {
    Deliver {
        to: u32,
        data: Bytes,
    },
    Fire {
        node: u32,
        generation: u32,
        timer: Timer<Id>,
    },
}

struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, at: Micros, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn next_at(&self) -> Option<Micros> {
        self.heap.peek().map(|Reverse(s)| s.at)
    }

    fn pop(&mut self) -> Option<Scheduled> {
        self.heap.pop().map(|Reverse(s)| s)
    }
}

// ---------------------------------------------------------------------------
// The network

struct Network {
    loss: f64,
    delay: (Micros, Micros),
    slow: Option<u32>,
    slow_delay: (Micros, Micros),
}

impl Network {
    /// When a packet sent now reaches `to`, or None if it is lost.
    fn transit(&self, to: u32, rng: &mut SmallRng) -> Option<Micros> {
        if self.loss > 0.0 && rng.random_bool(self.loss) {
            return None;
        }
        let mut delay = rng.random_range(self.delay.0..=self.delay.1);
        if self.slow == Some(to) {
            delay += rng.random_range(self.slow_delay.0..=self.slow_delay.1);
        }
        Some(delay)
    }
}

// ---------------------------------------------------------------------------
// What is counted

#[derive(Default)]
struct Counters {
    bytes: u64,
    /// `MemberDown` notifications about members that were alive.
    false_down_notes: u64,
    /// The live identities that someone declared down.
    false_downs: HashSet<Id>,
    /// Suspicion timers started about live members, by subject.
    suspicions_of: Vec<u64>,
}

impl Counters {
    fn new(n: usize) -> Counters {
        Counters {
            suspicions_of: vec![0; n],
            ..Counters::default()
        }
    }

    fn suspicions(&self) -> u64 {
        self.suspicions_of.iter().sum()
    }
}

/// One killed member and who has learned it is down.
struct Trial {
    victim: Id,
    killed_at: Micros,
    learned_at: Vec<Option<Micros>>,
    expected: Vec<bool>,
    waiting: usize,
}

impl Trial {
    fn record(&mut self, observer: u32, at: Micros) {
        let i = observer as usize;
        if self.expected[i] && self.learned_at[i].is_none() {
            self.learned_at[i] = Some(at);
            self.waiting -= 1;
        }
    }

    /// Per-member detection times, in ms since the kill.
    fn delays(&self) -> Vec<f64> {
        self.learned_at
            .iter()
            .flatten()
            .map(|t| ms(t - self.killed_at))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The simulation

type Swim = Foca<Id, PostcardCodec, SmallRng, NoCustomBroadcast>;

struct Node {
    foca: Swim,
    id: Id,
    alive: bool,
    /// Bumped on restart so that the old instance's timers are ignored.
    generation: u32,
}

struct Sim {
    now: Micros,
    nodes: Vec<Node>,
    queue: Queue,
    net: Network,
    rng: SmallRng,
    rt: AccumulatingRuntime<Id>,
    config: foca::Config,
    killed: HashSet<Id>,
    counters: Counters,
    trial: Option<Trial>,
    errors: u64,
}

impl Sim {
    fn new(n: u32, args: &Args) -> Sim {
        let config = swim_config(n);
        let mut rng = SmallRng::seed_from_u64(args.seed ^ u64::from(n).rotate_left(32));
        let nodes = (0..n)
            .map(|i| Node {
                foca: Foca::new(Id::new(i), config.clone(), node_rng(&mut rng), PostcardCodec),
                id: Id::new(i),
                alive: true,
                generation: 0,
            })
            .collect();
        Sim {
            now: 0,
            nodes,
            queue: Queue::default(),
            net: Network {
                loss: 0.0,
                delay: (args.delay_ms.0 * 1000, args.delay_ms.1 * 1000),
                slow: None,
                slow_delay: (args.slow_ms.0 * 1000, args.slow_ms.1 * 1000),
            },
            rng,
            rt: AccumulatingRuntime::new(),
            config,
            killed: HashSet::new(),
            counters: Counters::new(n as usize),
            trial: None,
            errors: 0,
        }
    }

    fn len(&self) -> usize {
        self.nodes.len()
    }

    /// What was counted since the last call.
    fn take_counters(&mut self) -> Counters {
        let fresh = Counters::new(self.len());
        std::mem::replace(&mut self.counters, fresh)
    }

    fn live(&self) -> usize {
        self.nodes.iter().filter(|n| n.alive).count()
    }

    /// Gives every member the full membership, as if the cluster had been
    /// up for a while. Each member's timers start at a random point of one
    /// probe period, as members of a real cluster do not probe in lockstep.
    fn bootstrap(&mut self) {
        let all: Vec<Id> = self.nodes.iter().map(|n| n.id).collect();
        let period = micros(self.config.probe_period);
        for i in 0..self.nodes.len() {
            let others = all
                .iter()
                .filter(|id| id.idx as usize != i)
                .map(|id| foca::Member::alive(*id));
            let mut rt = std::mem::take(&mut self.rt);
            if let Err(e) = self.nodes[i].foca.apply_many(others, false, &mut rt) {
                panic!("bootstrap of member {i}: {e}");
            }
            let offset = self.rng.random_range(0..period);
            self.drain(i as u32, &mut rt, offset);
            self.rt = rt;
        }
    }

    /// Runs every event up to virtual time `until`.
    fn run_until(&mut self, until: Micros) {
        while self.queue.next_at().is_some_and(|at| at <= until) {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs until the current trial is complete or `deadline` passes.
    fn run_trial(&mut self, deadline: Micros) {
        while self.trial.as_ref().is_some_and(|t| t.waiting > 0)
            && self.queue.next_at().is_some_and(|at| at <= deadline)
        {
            self.step();
        }
    }

    fn step(&mut self) {
        let Some(s) = self.queue.pop() else { return };
        self.now = s.at;
        match s.event {
            Event::Deliver { to, data } => self.deliver(to, &data),
            Event::Fire {
                node,
                generation,
                timer,
            } => self.fire(node, generation, timer),
        }
    }

    fn deliver(&mut self, to: u32, data: &[u8]) {
        let node = &mut self.nodes[to as usize];
        if !node.alive {
            return;
        }
        let mut rt = std::mem::take(&mut self.rt);
        // As on a real socket, a packet foca rejects is only counted.
        if node.foca.handle_data(data, &mut rt).is_err() {
            self.errors += 1;
        }
        self.drain(to, &mut rt, 0);
        self.rt = rt;
    }

    fn fire(&mut self, idx: u32, generation: u32, timer: Timer<Id>) {
        let node = &mut self.nodes[idx as usize];
        if !node.alive || node.generation != generation {
            return;
        }
        let mut rt = std::mem::take(&mut self.rt);
        if node.foca.handle_timer(timer, &mut rt).is_err() {
            self.errors += 1;
        }
        self.drain(idx, &mut rt, 0);
        self.rt = rt;
    }

    /// Puts what member `from` queued onto the network and the clock, and
    /// takes note of its notifications.
    fn drain(&mut self, from: u32, rt: &mut AccumulatingRuntime<Id>, timer_offset: Micros) {
        while let Some((to, data)) = rt.to_send() {
            self.send(to.idx, data);
        }
        let generation = self.nodes[from as usize].generation;
        while let Some((after, timer)) = rt.to_schedule() {
            if let Timer::ChangeSuspectToDown { member_id, .. } = &timer {
                self.note_suspicion(member_id);
            }
            let at = self.now + timer_offset + micros(after);
            let event = Event::Fire {
                node: from,
                generation,
                timer,
            };
            self.queue.push(at, event);
        }
        while let Some(n) = rt.to_notify() {
            self.note(from, n);
        }
    }

    fn send(&mut self, to: u32, data: Bytes) {
        self.counters.bytes += data.len() as u64;
        if let Some(delay) = self.net.transit(to, &mut self.rng) {
            self.queue.push(self.now + delay, Event::Deliver { to, data });
        }
    }

    fn note_suspicion(&mut self, subject: &Id) {
        if !self.killed.contains(subject) {
            self.counters.suspicions_of[subject.idx as usize] += 1;
        }
    }

    fn note(&mut self, observer: u32, n: OwnedNotification<Id>) {
        match n {
            OwnedNotification::MemberDown(id) if self.killed.contains(&id) => {
                if let Some(t) = self.trial.as_mut().filter(|t| t.victim == id) {
                    t.record(observer, self.now);
                }
            }
            OwnedNotification::MemberDown(id) => {
                self.counters.false_down_notes += 1;
                self.counters.false_downs.insert(id);
            }
            // foca renewed the identity after the cluster declared it down.
            OwnedNotification::Rejoin(id) => self.nodes[observer as usize].id = id,
            _ => {}
        }
    }

    /// Stops member `idx` and starts a trial that waits for every live
    /// member to learn about it.
    fn kill(&mut self, idx: u32) {
        let victim = self.nodes[idx as usize].id;
        self.nodes[idx as usize].alive = false;
        self.killed.insert(victim);
        let expected: Vec<bool> = self.nodes.iter().map(|n| n.alive).collect();
        let waiting = expected.iter().filter(|e| **e).count();
        self.trial = Some(Trial {
            victim,
            killed_at: self.now,
            learned_at: vec![None; self.len()],
            expected,
            waiting,
        });
    }

    /// Restarts member `idx` as the agent restarts: a new foca with a
    /// renewed identity. It is handed the current membership (as a join
    /// through `--retry-join` would feed it) and announces itself.
    fn restart(&mut self, idx: u32) {
        let old = self.nodes[idx as usize].id;
        let id = foca::Identity::renew(&old).expect("fewer than 65,535 restarts");
        let rng = node_rng(&mut self.rng);
        let node = &mut self.nodes[idx as usize];
        node.foca = Foca::new(id, self.config.clone(), rng, PostcardCodec);
        node.id = id;
        node.alive = true;
        node.generation += 1;
        let others: Vec<foca::Member<Id>> = self
            .nodes
            .iter()
            .filter(|n| n.alive && n.id.idx != idx)
            .map(|n| foca::Member::alive(n.id))
            .collect();
        let seed = *others[self.rng.random_range(0..others.len())].id();
        let mut rt = std::mem::take(&mut self.rt);
        let node = &mut self.nodes[idx as usize];
        if node.foca.apply_many(others.into_iter(), false, &mut rt).is_err()
            || node.foca.announce(seed, &mut rt).is_err()
        {
            self.errors += 1;
        }
        self.drain(idx, &mut rt, 0);
        self.rt = rt;
    }

    fn random_victim(&mut self) -> u32 {
        loop {
            let i = self.rng.random_range(0..self.len() as u32);
            if self.nodes[i as usize].alive && self.net.slow != Some(i) {
                return i;
            }
        }
    }
}

fn node_rng(rng: &mut SmallRng) -> SmallRng {
    SmallRng::seed_from_u64(rng.random())
}

// ---------------------------------------------------------------------------
// Scenarios

/// What one window of simulated time produced.
struct Window {
    secs: f64,
    live: usize,
    bytes: u64,
    counters: Counters,
}

impl Window {
    fn bytes_per_member_sec(&self) -> f64 {
        self.bytes as f64 / self.live as f64 / self.secs
    }
}

/// Runs `d` of simulated time with nothing failing.
fn steady(sim: &mut Sim, d: Duration) -> Window {
    let start = sim.now;
    let live = sim.live();
    sim.take_counters();
    sim.run_until(start + micros(d));
    let counters = sim.take_counters();
    Window {
        secs: ms(sim.now - start) / 1000.0,
        live,
        bytes: counters.bytes,
        counters,
    }
}

#[derive(Default)]
struct Detection {
    /// Per trial: ms from the kill until the last live member knew.
    all_know: Vec<f64>,
    /// Per member and trial: ms from the kill until it knew.
    per_member: Vec<f64>,
    /// Trials in which some member had not learned by the timeout.
    incomplete: usize,
}

const SETTLE_AFTER_DOWN: Duration = Duration::from_secs(2);
const SETTLE_AFTER_RESTART: Duration = Duration::from_secs(3);

/// Kills `trials` members one after the other; each is restarted once
/// the trial is over, so the cluster keeps its size.
fn detect(sim: &mut Sim, trials: usize, timeout: Duration) -> Detection {
    let mut out = Detection::default();
    for _ in 0..trials {
        let victim = sim.random_victim();
        sim.kill(victim);
        let deadline = sim.now + micros(timeout);
        sim.run_trial(deadline);
        let trial = sim.trial.take().expect("a trial is running");
        record_trial(&mut out, &trial);
        // Let the news of this failure finish spreading (a few gossip
        // rounds) before the restart, and the restart before the next
        // kill; the random part puts the next kill at a random point of
        // the probe cycle.
        let gap = sim.rng.random_range(0..micros(sim.config.probe_period));
        sim.run_until(sim.now + micros(SETTLE_AFTER_DOWN) + gap);
        sim.restart(victim);
        sim.run_until(sim.now + micros(SETTLE_AFTER_RESTART));
    }
    out
}

fn record_trial(out: &mut Detection, trial: &Trial) {
    let delays = trial.delays();
    if trial.waiting > 0 {
        out.incomplete += 1;
    } else if let Some(last) = delays.iter().copied().reduce(f64::max) {
        out.all_know.push(last);
    }
    out.per_member.extend(delays);
}

// ---------------------------------------------------------------------------
// Report

struct Row {
    n: u32,
    scenario: String,
    loss: f64,
    sim_secs: f64,
    detection: Option<Detection>,
    /// (slow member, others) for the slow scenario; (0, all) otherwise.
    false_downs: (usize, usize),
    false_down_notes: u64,
    suspicions: (u64, u64),
    bytes_per_sec: f64,
}

fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn secs_cell(v: Option<f64>) -> String {
    v.map_or("–".into(), |ms| format!("{:.2} s", ms / 1000.0))
}

fn print_header() {
    println!(
        "| N | scenario | loss | simulated | trials | all know p50 | all know p99 | member p50 | member p99 \
         | false downs | suspicions of live members | gossip B/s/member |"
    );
    println!("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
}

fn print_row(r: &Row) {
    let (trials, p50, p99, m50, m99) = match &r.detection {
        Some(d) => (
            format!("{}{}", d.all_know.len(), incomplete_note(d.incomplete)),
            secs_cell(percentile(&d.all_know, 50.0)),
            secs_cell(percentile(&d.all_know, 99.0)),
            secs_cell(percentile(&d.per_member, 50.0)),
            secs_cell(percentile(&d.per_member, 99.0)),
        ),
        None => ("–".into(), "–".into(), "–".into(), "–".into(), "–".into()),
    };
    let false_downs = if r.scenario == "steady" {
        format!("{} ({} notes)", r.false_downs.1, r.false_down_notes)
    } else {
        format!(
            "slow: {}, others: {} ({} notes)",
            r.false_downs.0, r.false_downs.1, r.false_down_notes
        )
    };
    let suspicions = if r.scenario == "steady" {
        r.suspicions.1.to_string()
    } else {
        format!("slow: {}, others: {}", r.suspicions.0, r.suspicions.1)
    };
    println!(
        "| {} | {} | {}% | {:.0} s | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
        r.n,
        r.scenario,
        r.loss * 100.0,
        r.sim_secs,
        trials,
        p50,
        p99,
        m50,
        m99,
        false_downs,
        suspicions,
        r.bytes_per_sec
    );
}

fn incomplete_note(incomplete: usize) -> String {
    if incomplete == 0 {
        String::new()
    } else {
        format!(" (+{incomplete} not all by the timeout)")
    }
}

// ---------------------------------------------------------------------------
// Driving it

/// Steady window then detection trials at one loss rate.
fn loss_row(sim: &mut Sim, args: &Args, loss: f64) -> Row {
    sim.net.loss = loss;
    let n = sim.len() as u32;
    let steady = steady(sim, args.steady_for(n));
    let started = sim.now;
    let detection = detect(sim, args.trials_for(n), args.timeout);
    let during = sim.take_counters();
    let false_ids: HashSet<Id> = steady
        .counters
        .false_downs
        .union(&during.false_downs)
        .copied()
        .collect();
    Row {
        n: sim.len() as u32,
        scenario: "steady".into(),
        loss,
        sim_secs: steady.secs + ms(sim.now - started) / 1000.0,
        detection: Some(detection),
        false_downs: (0, false_ids.len()),
        false_down_notes: steady.counters.false_down_notes + during.false_down_notes,
        suspicions: (0, steady.counters.suspicions() + during.suspicions()),
        bytes_per_sec: steady.bytes_per_member_sec(),
    }
}

/// A steady window with one member whose incoming packets are slow.
fn slow_row(sim: &mut Sim, args: &Args) -> Row {
    let slow = sim.random_victim();
    sim.net.loss = args.slow_loss;
    sim.net.slow = Some(slow);
    let w = steady(sim, args.steady_for(sim.len() as u32));
    sim.net.slow = None;
    let of_slow = w.counters.false_downs.iter().filter(|id| id.idx == slow).count();
    let suspicions_of_slow = w.counters.suspicions_of[slow as usize];
    Row {
        n: sim.len() as u32,
        scenario: format!("slow member ({}–{} ms in)", args.slow_ms.0, args.slow_ms.1),
        loss: args.slow_loss,
        sim_secs: w.secs,
        detection: None,
        false_downs: (of_slow, w.counters.false_downs.len() - of_slow),
        false_down_notes: w.counters.false_down_notes,
        suspicions: (suspicions_of_slow, w.counters.suspicions() - suspicions_of_slow),
        bytes_per_sec: w.bytes_per_member_sec(),
    }
}

fn describe_config(n: u32) -> String {
    let c = swim_config(n);
    format!(
        "probe_period {:?}, probe_rtt {:?}, indirect probes {}, max_transmissions {}, \
         suspect_to_down_after {:?}, periodic_gossip {:?}",
        c.probe_period,
        c.probe_rtt,
        c.num_indirect_probes,
        c.max_transmissions,
        c.suspect_to_down_after,
        c.periodic_gossip.map(|p| (p.frequency, p.num_members)),
    )
}

fn run_size(n: u32, args: &Args) -> Vec<Row> {
    let wall = Instant::now();
    println!("N={n}: {}", describe_config(n));
    let mut sim = Sim::new(n, args);
    sim.bootstrap();
    // Let the jittered start-up settle before anything is counted.
    steady(&mut sim, Duration::from_secs(10));
    eprintln!("N={n}: bootstrapped in {:.1?}", wall.elapsed());
    let mut rows = Vec::new();
    for &loss in &args.losses {
        rows.push(loss_row(&mut sim, args, loss));
        eprintln!("N={n}: loss {loss} done at {:.1?}", wall.elapsed());
    }
    rows.push(slow_row(&mut sim, args));
    eprintln!(
        "N={n}: done in {:.1?} wall ({} errors returned by foca)",
        wall.elapsed(),
        sim.errors
    );
    rows
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let id_len = match_agent_identity_size();
    println!(
        "gossip_sim: seed {}, delay {}–{} ms, identity {} B on the wire",
        args.seed, args.delay_ms.0, args.delay_ms.1, id_len
    );
    println!();
    let mut rows = Vec::new();
    for &n in &args.members {
        rows.extend(run_size(n, &args));
    }
    print_header();
    for r in &rows {
        print_row(r);
    }
}
