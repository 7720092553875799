//! The supervisor: starts the node processes of one session, follows their lifecycle
//! and stops them.
//!
//! All nodes are spawned at once; then one thread per session waits in `poll(2)` on
//! every node's pidfd and control socket (and an eventfd for requests from the host),
//! so exits, progress and errors are handled the moment they happen and nothing
//! polls on a timer. The first fatal event — a crash, an init error or timeout, a
//! ready node silent past the liveness timeout (frozen), an error raised by `process`
//! under the `fail` policy — is recorded as the session's
//! failure and stops every node: cooperatively (a `Stop` message), then SIGTERM to
//! each process group after the grace period (at once for a node not yet ready), then
//! SIGKILL.

pub mod host_to_runner;
pub mod launch;
pub mod memory;
pub mod runner_to_host;
pub mod wire;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::executor::cancel::Board;
use crate::fork::Generation;
pub use host_to_runner::{HostMessage, ImportSpec, NodeSpec, OnError, PortSpec};
pub use launch::{Exit, LaunchSpec, Process, SpawnMethod};
pub use runner_to_host::RunnerMessage;

/// Timing of the lifecycle (from runtime.toml's `[process]`).
#[derive(Debug, Clone)]
pub struct Timing {
    /// A node that is not ready this long after its spawn fails the session.
    pub init_timeout: Duration,
    /// Time nodes get to stop after a `Stop` message, before SIGTERM.
    pub grace: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub term_grace: Duration,
    /// A live node silent this long (no heartbeat, no message) is frozen and fails the
    /// session; None disables the check.
    pub liveness_timeout: Option<Duration>,
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Idle,
    Initializing,
    Ready,
    Processing,
    Stopping,
    Stopped,
    Error,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Idle => "idle",
            NodeState::Initializing => "initializing",
            NodeState::Ready => "ready",
            NodeState::Processing => "processing",
            NodeState::Stopping => "stopping",
            NodeState::Stopped => "stopped",
            NodeState::Error => "error",
        }
    }
}

/// What `status()` reports for one node.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub node_id: String,
    pub state: NodeState,
    pub pid: Option<i32>,
    pub started_at: Option<SystemTime>,
    pub rss_bytes: Option<u64>,
    /// The most resident memory the process has held (`VmHWM`), while it runs.
    pub peak_rss_bytes: Option<u64>,
    /// Its memory limit, if it has one.
    pub memory_limit: Option<u64>,
    pub init_secs: Option<f64>,
    pub frames_in: u64,
    pub frames_out: u64,
    pub exit: Option<Exit>,
}

/// Something the host should hear about that is not fatal.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Progress {
        node_id: String,
        fraction: Option<f64>,
        message: String,
    },
    Ready {
        node_id: String,
        init_secs: f64,
    },
    /// `process` raised under the `skip` policy; the frame was dropped.
    FrameError {
        node_id: String,
        error: String,
        traceback: String,
        sequence: Option<u64>,
    },
}

struct Node {
    id: String,
    spec: NodeSpec,
    state: NodeState,
    pid: Option<i32>,
    /// Dropped (closing its pidfd) once the process is reaped.
    process: Option<Process>,
    control: Option<UnixStream>,
    reader: wire::Reader,
    spawned: Option<Instant>,
    /// When the node last said anything on its control socket (heartbeats included).
    last_heard: Instant,
    started_at: Option<SystemTime>,
    init_secs: Option<f64>,
    busy: bool,
    frames_in: u64,
    frames_out: u64,
    exit: Option<Exit>,
    status_pending: bool,
    /// Its cgroup, when its memory is limited and this machine has cgroups for us.
    cage: Option<memory::Cage>,
}

impl Node {
    fn alive(&self) -> bool {
        self.process.is_some()
    }

    /// Takes frame counts a message carried. They only grow in the node, but a
    /// heartbeat built before a status reply can arrive after it: the larger stands,
    /// so a metrics counter never goes back.
    fn count(&mut self, frames_in: Option<u64>, frames_out: Option<u64>) {
        self.frames_in = self.frames_in.max(frames_in.unwrap_or(0));
        self.frames_out = self.frames_out.max(frames_out.unwrap_or(0));
    }

    fn send(&mut self, message: &HostMessage) {
        if let Some(control) = self.control.as_mut() {
            // A node that cannot be told anything any more is stopped by signal later.
            let _ = control.write_all(&wire::encode(message));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stop messages sent at `since`.
    Cooperative {
        since: Instant,
    },
    Terminated {
        since: Instant,
    },
    Killed {
        since: Instant,
    },
    Done,
}

struct State {
    nodes: Vec<Node>,
    events: VecDeque<Event>,
    failure: Option<Error>,
    phase: Phase,
    stop_requested: bool,
    status_requested: bool,
    /// Passes of the supervisor loop so far (see `sync`).
    steps: u64,
    /// The session's memory limit, and its cgroup (after `nodes`: dropped after theirs).
    session_memory: Option<u64>,
    session_cage: Option<memory::Cage>,
    /// Where a node's cancel goes (see `executor::cancel`); None: cancels go nowhere.
    cancels: Option<Arc<Board>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// The host wakes the supervisor loop through this eventfd.
    wake: OwnedFd,
    /// The supervisor loop wakes host waiters through this eventfd.
    notify: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("supervisor state poisoned")
    }

    fn wake(&self) {
        signal_eventfd(&self.wake);
    }
}

/// The processes of one session. Dropping it stops them (blocking).
///
/// In a forked child of the host, a copy inherited through `fork` is inert (see
/// `fork.rs`): its nodes and its thread are the parent's, so `stop` does nothing there
/// and dropping it leaks the copy instead of stopping the parent's nodes or joining a
/// thread that does not exist in the child.
pub struct Supervisor {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    generation: Generation,
}

/// A node's frame counts and memory as the supervisor last heard them (heartbeats
/// carry the counts), read without asking the node: what a metrics scrape reads.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCounts {
    pub node_id: String,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Resident memory now; None once the process is gone.
    pub rss_bytes: Option<u64>,
}

/// A handle on a supervisor's node table that outlives no one: it reads what the
/// supervisor already knows (see [`NodeCounts`]).
#[derive(Clone)]
pub struct Watch {
    shared: Arc<Shared>,
}

impl Watch {
    pub fn counts(&self) -> Vec<NodeCounts> {
        self.shared
            .lock()
            .nodes
            .iter()
            .map(|n| NodeCounts {
                node_id: n.id.clone(),
                frames_in: n.frames_in,
                frames_out: n.frames_out,
                rss_bytes: n
                    .process
                    .as_ref()
                    .filter(|_| n.alive())
                    .and_then(Process::rss_bytes),
            })
            .collect()
    }
}

pub(crate) fn signal_eventfd(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Supervisor {
    /// Spawns one process per spec (all at once) and starts following them. Returns as
    /// soon as they are spawned; `wait_ready` waits for their initialization. A spawn
    /// failure stops the nodes already started and returns `Error::Spawn`.
    pub fn start(
        specs: Vec<NodeSpec>,
        launch: &LaunchSpec,
        method: SpawnMethod,
        timing: Timing,
        session_memory: Option<u64>,
        cancels: Option<Arc<Board>>,
    ) -> Result<Supervisor> {
        let mut nodes: Vec<Node> = specs
            .into_iter()
            .map(|spec| Node {
                id: spec.node_id.clone(),
                spec,
                state: NodeState::Idle,
                pid: None,
                process: None,
                control: None,
                reader: wire::Reader::default(),
                spawned: None,
                last_heard: Instant::now(),
                started_at: None,
                init_secs: None,
                busy: false,
                frames_in: 0,
                frames_out: 0,
                exit: None,
                status_pending: false,
                cage: None,
            })
            .collect();
        let session_cage = cages(&mut nodes, session_memory)?;
        let session_error = |e: io::Error| Error::Spawn {
            node: "<session>".into(),
            detail: e.to_string(),
        };
        let wake = eventfd().map_err(session_error)?;
        let notify = eventfd().map_err(session_error)?;
        let mut spawn_error = None;
        for node in &mut nodes {
            match spawn_node(node, launch, method) {
                Ok(()) => {}
                Err(err) => {
                    spawn_error = Some(Error::Spawn {
                        node: node.id.clone(),
                        detail: err.to_string(),
                    });
                    break;
                }
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                nodes,
                events: VecDeque::new(),
                failure: None,
                phase: Phase::Running,
                stop_requested: false,
                status_requested: false,
                steps: 0,
                session_memory,
                session_cage,
                cancels,
            }),
            changed: Condvar::new(),
            wake,
            notify,
        });
        let loop_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("zerohop-supervisor".into())
            .spawn(move || run_loop(&loop_shared, timing))
            .map_err(|e| Error::Spawn {
                node: "<session>".into(),
                detail: e.to_string(),
            })?;
        let supervisor = Supervisor {
            shared,
            thread: Mutex::new(Some(thread)),
            generation: Generation::now(),
        };
        if let Some(err) = spawn_error {
            supervisor.fail(err.clone());
            supervisor.stop();
            return Err(err);
        }
        Ok(supervisor)
    }

    fn fail(&self, err: Error) {
        let mut state = self.shared.lock();
        if state.failure.is_none() {
            state.failure = Some(err);
        }
        state.stop_requested = true;
        drop(state);
        self.shared.wake();
    }

    /// Waits until every node is ready, handing progress events to `on_event`.
    /// Returns the session's failure if one happens first (init error, timeout, crash).
    pub fn wait_ready(
        &self,
        on_event: &mut dyn FnMut(Event) -> Result<()>,
        interrupt: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        loop {
            let events: Vec<Event> = {
                let mut state = self.shared.lock();
                if let Some(err) = &state.failure {
                    return Err(err.clone());
                }
                if state.events.is_empty()
                    && state
                        .nodes
                        .iter()
                        .all(|n| matches!(n.state, NodeState::Ready | NodeState::Processing))
                {
                    return Ok(());
                }
                if state.events.is_empty() {
                    let (guard, _) = self
                        .shared
                        .changed
                        .wait_timeout(state, Duration::from_millis(50))
                        .expect("supervisor state poisoned");
                    state = guard;
                }
                state.events.drain(..).collect()
            };
            for event in events {
                on_event(event)?;
            }
            interrupt()?;
        }
    }

    /// Returns once the supervisor has read everything the nodes wrote to their
    /// control sockets before this call (e.g. the error report of a frame whose
    /// stream has already ended in shared memory). Bounded to one second.
    pub fn sync(&self) {
        let mut state = self.shared.lock();
        // The pass running now may have read a socket already; the one after it has not.
        let target = state.steps + 2;
        self.shared.wake();
        let deadline = Instant::now() + Duration::from_secs(1);
        while state.steps < target && state.phase != Phase::Done {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .expect("poisoned")
                .0;
            if state.steps < target {
                self.shared.wake();
            }
        }
    }

    /// The oldest non-fatal event (progress, a dropped frame's error) not taken yet.
    pub fn next_event(&self) -> Option<Event> {
        self.shared.lock().events.pop_front()
    }

    /// An fd that turns readable when an event or the session's failure arrives, for
    /// hosts that wait on channels and the supervisor at once. See `drain_notify`.
    pub fn notify_fd(&self) -> &OwnedFd {
        &self.shared.notify
    }

    /// Resets `notify_fd` after a wake-up.
    pub fn drain_notify(&self) {
        let mut drain = [0u8; 8];
        // SAFETY: reading our non-blocking eventfd into an 8-byte buffer.
        unsafe { libc::read(self.shared.notify.as_raw_fd(), drain.as_mut_ptr().cast(), 8) };
    }

    /// The error that ended the session, if any.
    pub fn failure(&self) -> Option<Error> {
        self.shared.lock().failure.as_ref().cloned()
    }

    /// Fails with the session's failure, if any (use as an interrupt check).
    pub fn check(&self) -> Result<()> {
        match self.failure() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// A snapshot of every node. Asks running nodes whether they are busy (bounded wait).
    pub fn status(&self) -> Vec<NodeStatus> {
        {
            let mut state = self.shared.lock();
            if state.phase == Phase::Running {
                state.status_requested = true;
            }
        }
        self.shared.wake();
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut state = self.shared.lock();
        while state.status_requested || state.nodes.iter().any(|n| n.status_pending && n.alive()) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .expect("poisoned")
                .0;
        }
        state
            .nodes
            .iter()
            .map(|n| NodeStatus {
                node_id: n.id.clone(),
                state: if n.state == NodeState::Ready && n.busy {
                    NodeState::Processing
                } else {
                    n.state
                },
                pid: n.pid,
                started_at: n.started_at,
                rss_bytes: n
                    .process
                    .as_ref()
                    .filter(|_| n.alive())
                    .and_then(Process::rss_bytes),
                peak_rss_bytes: n.process.as_ref().and_then(Process::peak_rss_bytes),
                memory_limit: n.spec.memory_limit,
                init_secs: n.init_secs,
                frames_in: n.frames_in,
                frames_out: n.frames_out,
                exit: n.exit,
            })
            .collect()
    }

    /// A handle for reading the node table from elsewhere (metrics).
    pub fn watch(&self) -> Watch {
        Watch {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The node processes' peak resident memory (`VmHWM`), summed; 0 without any.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.shared
            .lock()
            .nodes
            .iter()
            .filter_map(|n| n.process.as_ref().and_then(Process::peak_rss_bytes))
            .sum()
    }

    /// Tells the targets of cancel `id` from the session's inputs (see
    /// `executor::cancel`); a node's own cancels are routed as they arrive.
    pub fn cancel_from_inputs(&self, id: u64) {
        route_cancel(&mut self.shared.lock(), None, id);
    }

    /// Pids of the node processes (alive or not yet reaped).
    pub fn pids(&self) -> Vec<i32> {
        self.shared
            .lock()
            .nodes
            .iter()
            .filter_map(|n| n.process.as_ref().map(|p| p.pid))
            .collect()
    }

    /// Whether this process started it (false in a forked child holding a copy).
    pub fn is_ours(&self) -> bool {
        self.generation.is_current()
    }

    /// Stops every node (cooperative, then SIGTERM, then SIGKILL) and waits until all
    /// have exited. Idempotent. Does nothing in a forked child (see the type's docs).
    pub fn stop(&self) {
        if !self.generation.is_current() {
            return; // the parent's nodes
        }
        self.shared.lock().stop_requested = true;
        self.shared.wake();
        if let Some(thread) = self.thread.lock().expect("poisoned").take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.generation.is_current() {
            self.stop();
        } else {
            // The parent's: its thread handle names no thread here, and its state may be
            // locked by a thread that vanished with the fork. Touch neither.
            let thread = self
                .thread
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::forget(thread.take());
            std::mem::forget(Arc::clone(&self.shared));
        }
    }
}

/// The session's cgroup and one per node inside it, when a limit asks for them and this
/// machine has cgroups for us (else the RSS watch holds the limits: see `memory`).
fn cages(nodes: &mut [Node], session: Option<u64>) -> Result<Option<memory::Cage>> {
    if session.is_none() && nodes.iter().all(|n| n.spec.memory_limit.is_none()) {
        return Ok(None);
    }
    let Some(first) = nodes.first() else {
        return Ok(None);
    };
    let failed = |e: io::Error| Error::Spawn {
        node: "<session>".into(),
        detail: format!("cannot make a cgroup for the memory limits: {e}"),
    };
    let name = format!("zerohop-{}", first.spec.session_id);
    let Some(cage) = memory::Cage::new(None, &name, session).map_err(failed)? else {
        return Ok(None);
    };
    for (i, node) in nodes.iter_mut().enumerate() {
        let limit = node.spec.memory_limit;
        node.cage = memory::Cage::new(Some(&cage), &format!("n{i}"), limit).map_err(failed)?;
    }
    Ok(Some(cage))
}

fn spawn_node(node: &mut Node, launch: &LaunchSpec, method: SpawnMethod) -> io::Result<()> {
    let (host, child) = UnixStream::pair()?;
    let process = launch::spawn_with(method, launch.clone(), OwnedFd::from(child))?;
    host.set_nonblocking(true)?;
    if let Some(cage) = &node.cage {
        // Before it is told to start: its imports and model loads count.
        if let Err(err) = cage.admit(process.pid) {
            process.signal_group(libc::SIGKILL);
            return Err(err);
        }
    }
    node.pid = Some(process.pid);
    node.process = Some(process);
    node.control = Some(host);
    node.spawned = Some(Instant::now());
    node.last_heard = Instant::now();
    node.started_at = Some(SystemTime::now());
    node.state = NodeState::Initializing;
    let start = HostMessage::Start {
        spec: Box::new(node.spec.clone()),
    };
    // The socket buffer takes a spec easily; write it blocking to be sure it is whole.
    let control = node.control.as_mut().expect("just set");
    control.set_nonblocking(false)?;
    let result = control.write_all(&wire::encode(&start));
    control.set_nonblocking(true)?;
    result
}

fn run_loop(shared: &Shared, timing: Timing) {
    loop {
        let (fds, deadline, unclean, done) = {
            let mut state = shared.lock();
            let unclean = step(&mut state, &timing);
            state.steps += 1;
            shared.changed.notify_all();
            if !state.events.is_empty() || state.failure.is_some() {
                signal_eventfd(&shared.notify);
            }
            (
                poll_set(&state, shared.wake.as_raw_fd()),
                next_deadline(&state, &timing),
                unclean,
                state.phase == Phase::Done,
            )
        };
        if unclean {
            // What a node that did not exit cleanly left in shared memory (killed, or
            // `os._exit`, which skips every destructor) is reclaimed at once, after its
            // failure is announced: its peers' senders into it wake (`EV_PEER_DEAD`)
            // and can exit without waiting out their linger grace, instead of whenever
            // another process next scans for dead nodes.
            let _ = crate::ipc::reclaim_dead();
        }
        if done {
            return;
        }
        let timeout_ms = deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32
                + 1
        });
        wait_readable(&fds, timeout_ms);
        let mut drain = [0u8; 8];
        // SAFETY: reading our non-blocking eventfd into an 8-byte buffer.
        unsafe { libc::read(shared.wake.as_raw_fd(), drain.as_mut_ptr().cast(), 8) };
    }
}

/// Blocks until one of `fds` is readable or `timeout_ms` passes (-1: no limit).
pub(crate) fn wait_readable(fds: &[RawFd], timeout_ms: i32) {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: a valid pollfd array of the given length.
    unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
}

fn poll_set(state: &State, wake: RawFd) -> Vec<RawFd> {
    let mut fds = vec![wake];
    for node in &state.nodes {
        if node.alive() {
            if let Some(p) = &node.process {
                fds.push(p.pidfd.as_raw_fd());
            }
            if let Some(c) = &node.control {
                fds.push(c.as_raw_fd());
            }
        }
    }
    fds
}

fn next_deadline(state: &State, timing: &Timing) -> Option<Instant> {
    match state.phase {
        Phase::Running => {
            let init = state
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Initializing)
                .filter_map(|n| n.spawned.map(|s| s + timing.init_timeout));
            let liveness = timing.liveness_timeout.into_iter().flat_map(|timeout| {
                state
                    .nodes
                    .iter()
                    .filter(|n| watched(n))
                    .map(move |n| n.last_heard + timeout)
            });
            // Without cgroups, limited memory is looked at every WATCH_INTERVAL.
            let limited = state.session_memory.is_some()
                || state.nodes.iter().any(|n| n.spec.memory_limit.is_some());
            let watch = (limited && *memory::mechanism() == memory::Mechanism::RssWatch)
                .then(|| Instant::now() + memory::WATCH_INTERVAL);
            init.chain(liveness).chain(watch).min()
        }
        Phase::Cooperative { since } => Some(since + timing.grace),
        Phase::Terminated { since } => Some(since + timing.term_grace),
        Phase::Killed { since } => Some(since + Duration::from_secs(5)),
        Phase::Done => None,
    }
}

/// The failure of a node that died of SIGKILL when the kernel killed it for going past
/// its own memory limit or its session's (None: something else killed it).
fn oom_killed(node: &Node, session: (Option<&memory::Cage>, Option<u64>)) -> Option<Error> {
    let own = node.cage.as_ref()?;
    let (session_cage, session_limit) = session;
    if !own.oom_killed(true) && !session_cage.is_some_and(|c| c.oom_killed(true)) {
        return None;
    }
    // Its own limit if it was at it (or there is no other); else the session's.
    let at = |peak: Option<u64>, limit: u64| peak.is_some_and(|p| p + limit / 20 >= limit);
    let (scope, limit, peak) = match (own.limit, session_cage.zip(session_limit)) {
        (Some(limit), None) => ("its", limit, own.peak()),
        (Some(limit), Some(_)) if at(own.peak(), limit) => ("its", limit, own.peak()),
        (_, Some((cage, limit))) => ("the session's", limit, cage.peak()),
        (None, None) => return None,
    };
    crate::metrics::limit_hit("memory");
    Some(Error::NodeMemory {
        node: node.id.clone(),
        scope: scope.into(),
        limit,
        peak: peak.unwrap_or(limit),
        mechanism: memory::mechanism().name().into(),
    })
}

/// Without cgroups: stops a node past its own limit, or the largest node of a session
/// past its limit, by their resident memory now.
fn watch_rss(state: &mut State, failures: &mut Vec<Error>) {
    let mechanism = memory::Mechanism::RssWatch.name();
    let mut total = 0;
    let mut largest: Option<(usize, u64)> = None;
    for (i, node) in state.nodes.iter_mut().enumerate() {
        let Some(rss) = node.process.as_ref().and_then(Process::rss_bytes) else {
            continue;
        };
        total += rss;
        if largest.is_none_or(|(_, most)| rss > most) {
            largest = Some((i, rss));
        }
        if let Some(limit) = node.spec.memory_limit.filter(|&limit| rss > limit) {
            failures.push(stop_for_memory(node, "its", limit, rss, mechanism));
        }
    }
    if let (Some(limit), Some((i, _))) = (state.session_memory, largest) {
        if total > limit && state.nodes[i].state != NodeState::Error {
            let node = &mut state.nodes[i];
            failures.push(stop_for_memory(
                node,
                "the session's",
                limit,
                total,
                mechanism,
            ));
        }
    }
}

fn stop_for_memory(node: &mut Node, scope: &str, limit: u64, peak: u64, mechanism: &str) -> Error {
    if let Some(process) = &node.process {
        process.signal_group(libc::SIGKILL);
    }
    node.state = NodeState::Error;
    crate::metrics::limit_hit("memory");
    Error::NodeMemory {
        node: node.id.clone(),
        scope: scope.into(),
        limit,
        peak,
        mechanism: mechanism.into(),
    }
}

/// Whether the liveness check applies: a live, ready node (busy or idle) sends `alive`
/// every heartbeat interval. Initialization is bounded by the init timeout instead, as
/// imports and model loads may hold the GIL in native code for long stretches.
fn watched(node: &Node) -> bool {
    node.alive() && node.control.is_some() && node.state == NodeState::Ready
}

/// One pass over everything that may have changed: messages, exits, deadlines, requests.
/// Returns whether a node exited uncleanly (what it left in shared memory is then
/// reclaimed, once the lock is released and its failure announced).
fn step(state: &mut State, timing: &Timing) -> bool {
    let stopping = state.phase != Phase::Running;
    let mut failures = Vec::new();
    let mut cancels = Vec::new();
    let mut unclean = false;
    for node in &mut state.nodes {
        read_messages(
            node,
            stopping,
            &mut state.events,
            &mut failures,
            &mut cancels,
        );
        if node.alive() {
            if let Some(exit) = node
                .process
                .as_ref()
                .and_then(|p| p.try_wait().ok().flatten())
            {
                // Read what the node said last (its error report) before judging its exit.
                read_messages(
                    node,
                    stopping,
                    &mut state.events,
                    &mut failures,
                    &mut cancels,
                );
                // What the node started (a model's helper, a `subprocess.Popen`) is in its
                // process group and goes with it. The group's id stays allocated while it
                // has members, so this cannot reach another process.
                if let Some(process) = &node.process {
                    process.signal_group(libc::SIGKILL);
                }
                unclean |= exit != Exit::Code(0);
                node.exit = Some(exit);
                node.control = None;
                node.process = None;
                let expected =
                    stopping && matches!(node.state, NodeState::Stopping | NodeState::Stopped);
                if !expected && node.state != NodeState::Error {
                    node.state = NodeState::Error;
                    let (code, signal) = match exit {
                        Exit::Code(code) => (Some(code), None),
                        Exit::Signal(signal) => (None, Some(signal)),
                    };
                    let session = (state.session_cage.as_ref(), state.session_memory);
                    let sigkilled = exit == Exit::Signal(libc::SIGKILL);
                    let memory = sigkilled.then(|| oom_killed(node, session)).flatten();
                    failures.push(memory.unwrap_or(Error::NodeCrashed {
                        node: node.id.clone(),
                        exit: exit.to_string(),
                        code,
                        signal,
                    }));
                } else if node.state != NodeState::Error {
                    node.state = NodeState::Stopped;
                }
            }
        }
        if let Some(timeout) = timing.liveness_timeout {
            if !stopping && watched(node) && node.last_heard.elapsed() >= timeout {
                node.state = NodeState::Error;
                failures.push(Error::NodeUnresponsive {
                    node: node.id.clone(),
                    secs: timeout.as_secs_f64(),
                });
            }
        }
        if !stopping && node.state == NodeState::Initializing {
            if let Some(spawned) = node.spawned {
                if spawned.elapsed() >= timing.init_timeout {
                    node.state = NodeState::Error;
                    failures.push(Error::NodeInitTimeout {
                        node: node.id.clone(),
                        secs: timing.init_timeout.as_secs_f64(),
                    });
                }
            }
        }
    }
    for (origin, id) in cancels {
        route_cancel(state, Some(&origin), id);
    }
    if !stopping && *memory::mechanism() == memory::Mechanism::RssWatch {
        watch_rss(state, &mut failures);
    }
    for failure in failures {
        if state.failure.is_none() {
            state.failure = Some(failure);
        }
        state.stop_requested = true;
    }
    if state.status_requested {
        state.status_requested = false;
        for node in state
            .nodes
            .iter_mut()
            .filter(|n| n.alive() && n.state == NodeState::Ready)
        {
            node.status_pending = true;
            node.send(&HostMessage::Status);
        }
    }
    advance_stop(state, timing);
    unclean
}

/// Tells the targets of a cancel from `origin` (a node id; None: the session's
/// inputs): the node processes here, the in-host ones through the board.
fn route_cancel(state: &mut State, origin: Option<&str>, id: u64) {
    let Some(board) = state.cancels.clone() else {
        return;
    };
    let Some(route) = board.route(origin) else {
        return;
    };
    for (target, discard) in &route.processes {
        if let Some(node) = state.nodes.iter_mut().find(|n| &n.id == target) {
            node.send(&HostMessage::Cancel {
                id,
                discard: discard.clone(),
            });
        }
    }
    board.post(route, id);
}

fn read_messages(
    node: &mut Node,
    stopping: bool,
    events: &mut VecDeque<Event>,
    failures: &mut Vec<Error>,
    cancels: &mut Vec<(String, u64)>,
) {
    let Some(control) = node.control.as_mut() else {
        return;
    };
    let batch = match node.reader.read::<RunnerMessage>(control) {
        Ok(batch) => batch,
        Err(err) => {
            node.control = None;
            if !stopping {
                failures.push(Error::Node {
                    node: node.id.clone(),
                    message: format!("broken control channel: {err}"),
                    traceback: String::new(),
                });
            }
            return;
        }
    };
    if !batch.messages.is_empty() {
        node.last_heard = Instant::now();
    }
    for message in batch.messages {
        match message {
            RunnerMessage::Alive {
                frames_in,
                frames_out,
            } => node.count(frames_in, frames_out),
            RunnerMessage::Progress { fraction, message } => {
                events.push_back(Event::Progress {
                    node_id: node.id.clone(),
                    fraction,
                    message,
                });
            }
            RunnerMessage::Ready { init_secs } => {
                if node.state == NodeState::Initializing {
                    node.state = NodeState::Ready;
                    node.init_secs = Some(init_secs);
                    events.push_back(Event::Ready {
                        node_id: node.id.clone(),
                        init_secs,
                    });
                }
            }
            RunnerMessage::InitError { error, traceback } => {
                node.state = NodeState::Error;
                failures.push(Error::NodeInit {
                    node: node.id.clone(),
                    message: error,
                    traceback,
                });
            }
            RunnerMessage::NodeError {
                error, traceback, ..
            } => {
                node.state = NodeState::Error;
                failures.push(Error::Node {
                    node: node.id.clone(),
                    message: error,
                    traceback,
                });
            }
            RunnerMessage::FrameError {
                error,
                traceback,
                sequence,
            } => {
                events.push_back(Event::FrameError {
                    node_id: node.id.clone(),
                    error,
                    traceback,
                    sequence,
                });
            }
            RunnerMessage::Status {
                busy,
                frames_in,
                frames_out,
            } => {
                node.busy = busy;
                node.count(Some(frames_in), Some(frames_out));
                node.status_pending = false;
            }
            RunnerMessage::Stopped {
                frames_in,
                frames_out,
            } => {
                node.state = NodeState::Stopped;
                node.count(frames_in, frames_out);
            }
            RunnerMessage::Cancel { id } if !stopping => cancels.push((node.id.clone(), id)),
            RunnerMessage::Cancel { .. } => {}
        }
    }
    if batch.closed {
        // EOF: the process is exiting; its pidfd will tell how.
        node.control = None;
    }
}

fn advance_stop(state: &mut State, timing: &Timing) {
    let now = Instant::now();
    let any_alive = state.nodes.iter().any(Node::alive);
    state.phase = match state.phase {
        // Nothing to stop (an all-native session, or every node already gone): done now.
        // Entering `Cooperative` instead would leave the loop polling no process until the
        // grace deadline, so `stop` would take the whole grace period for nothing.
        Phase::Running if state.stop_requested && !any_alive => Phase::Done,
        Phase::Running if state.stop_requested => {
            for node in state.nodes.iter_mut().filter(|n| n.alive()) {
                // A node not yet ready has nothing to finish, and its main thread may sit
                // in a model load for seconds: no grace period, it goes at once.
                let unready = matches!(node.state, NodeState::Idle | NodeState::Initializing);
                if node.state != NodeState::Error {
                    node.state = NodeState::Stopping;
                }
                node.send(&HostMessage::Stop);
                if unready {
                    let process = node.process.as_ref().expect("alive");
                    process.signal_group(libc::SIGTERM);
                }
            }
            Phase::Cooperative { since: now }
        }
        Phase::Cooperative { .. } | Phase::Terminated { .. } | Phase::Killed { .. }
            if !any_alive =>
        {
            Phase::Done
        }
        Phase::Cooperative { since } if now >= since + timing.grace => {
            for node in state.nodes.iter().filter(|n| n.alive()) {
                node.process
                    .as_ref()
                    .expect("alive")
                    .signal_group(libc::SIGTERM);
            }
            Phase::Terminated { since: now }
        }
        Phase::Terminated { since } if now >= since + timing.term_grace => {
            for node in state.nodes.iter().filter(|n| n.alive()) {
                node.process
                    .as_ref()
                    .expect("alive")
                    .signal_group(libc::SIGKILL);
            }
            Phase::Killed { since: now }
        }
        Phase::Killed { since } if now >= since + Duration::from_secs(5) => {
            // A process that survives SIGKILL for 5 s is stuck in the kernel (D state);
            // leave it to init rather than hang the host.
            Phase::Done
        }
        phase => phase,
    };
    if state.phase != Phase::Running {
        for node in state.nodes.iter_mut().filter(|n| !n.alive()) {
            if node.state == NodeState::Stopping || node.state == NodeState::Idle {
                node.state = NodeState::Stopped;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session without node processes (all native) stops without waiting for the
    /// grace period: there is nothing to wait for. Used to take the whole grace period.
    #[test]
    fn stopping_a_supervisor_with_no_nodes_does_not_wait_for_the_grace_period() {
        let grace = Duration::from_secs(60);
        let timing = Timing {
            init_timeout: Duration::from_secs(60),
            grace,
            term_grace: grace,
            liveness_timeout: None,
        };
        let launch = LaunchSpec {
            program: "/bin/false".into(),
            args: vec![],
            env: vec![],
            cwd: None,
        };
        let supervisor =
            Supervisor::start(vec![], &launch, SpawnMethod::Exec, timing, None, None).unwrap();
        supervisor.wait_ready(&mut |_| Ok(()), &|| Ok(())).unwrap();
        let began = Instant::now();
        supervisor.stop();
        // A hang bound only: the bug waited the whole (60 s) grace period.
        assert!(began.elapsed() < grace / 2, "{:?}", began.elapsed());
    }
}
