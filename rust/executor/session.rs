//! A running session: the node processes of one graph, the channels between them, and
//! the host's own ends — one sender per session input, one receiver per session output.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::executor::cancel::{self, Board, Discards, Names, Notice, NOTICE_WAIT};
use crate::executor::graph::{Graph, Placement, PortRef};
use crate::executor::native::{NativeHost, NativeTask};
use crate::executor::remote::{self, RemoteHost};
use crate::frame::{cancel_mark, cancel_mark_id, payload, Header, FLAG_END_OF_STREAM};
use crate::grpc::dial::Hosts;
use crate::ipc::{self, ChannelConfig, Interrupt, Sample};
use crate::metrics::{self, Meter, Outcome};
use crate::nodes;
use crate::supervisor::{
    wait_readable, Event, ImportSpec, LaunchSpec, NodeSpec, NodeStatus, PortSpec, SpawnMethod,
    Supervisor, Timing,
};

/// Everything a session needs besides its graph.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub channel: ChannelConfig,
    pub timing: Timing,
    /// How to start a node process (the Python interpreter running `zerohop.runner`).
    pub launch: LaunchSpec,
    /// Fork+exec each node, or fork it from the pre-warmed zygote.
    pub spawn_method: SpawnMethod,
    /// At most this many node processes (None: unlimited).
    pub max_processes: Option<usize>,
    pub heartbeat_secs: f64,
    pub imports: Vec<ImportSpec>,
    pub sys_path: Vec<String>,
    /// What runtime.toml says about the hosts remote nodes run on.
    pub hosts: Hosts,
    /// The most memory all the session's node processes may hold together, in bytes.
    pub session_memory_limit: Option<u64>,
}

/// What `Session::recv` delivers.
// A frame's header is large since it holds the metadata block; it is moved once per
// frame, which costs less than the allocation boxing it would.
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// A frame from session output `output` (an index into `Graph::outputs`).
    Frame {
        output: usize,
        header: Header,
        sample: Sample,
    },
    /// Progress or a dropped frame's error.
    Event(Event),
    /// Cancel `id` reached the session's outputs: the frames it covers are dropped
    /// (see `executor::cancel`); a player stops what it is playing.
    Cancel { id: u64 },
    /// Every output has delivered its end of stream.
    End,
}

pub struct Session {
    pub id: String,
    pub graph: Graph,
    supervisor: Supervisor,
    native: NativeHost,
    remote: RemoteHost,
    inputs: Mutex<Vec<Arc<ipc::Sender>>>,
    /// Taken (dropped) by `close`, so the channels go with the session, not with the
    /// last Python reference to it.
    outputs: Mutex<Vec<ipc::Receiver>>,
    ended: Mutex<Vec<bool>>,
    /// Which outputs drop frames until a cancel's marker (see `executor::cancel`).
    discards: Mutex<Discards>,
    /// Cancels heard of and not yet reported by `recv`.
    heard: Mutex<VecDeque<u64>>,
    cancels: Arc<Board>,
    next_output: Mutex<usize>,
    inputs_closed: AtomicBool,
    /// Set by `close`: a channel that closes after it was closed by us, not by a node.
    closing: AtomicBool,
    max_payload: usize,
    /// What metrics read of this session (listed while it runs).
    meter: Arc<Meter>,
}

/// 128 random bits as hex: session ids name shared-memory services, so they must not
/// be guessable by other local users.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `bytes` from the kernel's random source.
pub fn random_bytes(bytes: &mut [u8]) {
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writing into our own buffer.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n > 0 {
            filled += n as usize;
        }
    }
}

impl Session {
    /// Validates limits, creates the host's channel ends, spawns every node at once and
    /// waits until all are ready. `on_event` sees progress while they initialize. On any
    /// failure everything started so far is stopped before the error is returned.
    pub fn start(
        graph: Graph,
        cfg: &SessionConfig,
        on_event: &mut dyn FnMut(Event) -> Result<()>,
        interrupt: Interrupt,
    ) -> Result<Session> {
        if let Some(node) = graph
            .nodes
            .iter()
            .find(|n| n.placement == Placement::Inprocess)
        {
            return Err(Error::Config(format!(
                "node '{}': in-process nodes are run by the in-process executor",
                node.id
            )));
        }
        // Native nodes are built first: their params are checked before any spawn.
        let mut natives = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            if node.placement != Placement::Native {
                continue;
            }
            let built = nodes::create(&node.node_type, &node.params).map_err(|err| match err {
                Error::Manifest { path, message } => Error::Manifest {
                    path: format!("nodes[{i}].{path}"),
                    message: format!("{message} (node '{}')", node.id),
                },
                other => other,
            })?;
            let built = built.ok_or_else(|| Error::Manifest {
                path: format!("nodes[{i}].node_type"),
                message: format!("'{}' is not a native node type", node.node_type),
            })?;
            natives.push((i, built));
        }
        let processes = graph
            .nodes
            .iter()
            .filter(|n| n.placement == Placement::Multiprocess)
            .count();
        if let Some(max) = cfg.max_processes {
            if processes > max {
                return Err(Error::ResourceLimit(format!(
                    "pipeline '{}' needs {processes} node processes, the limit is {max} \
                     (max_processes_per_session)",
                    graph.name
                )));
            }
        }
        let id = random_id();
        let edge_name = |i: usize| format!("{id}/e{i}");
        let input_name = |i: usize| format!("{id}/i{i}");
        let output_name = |i: usize| format!("{id}/o{i}");

        let inputs = (0..graph.inputs.len())
            .map(|i| ipc::Sender::create(&input_name(i), &cfg.channel).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let outputs = (0..graph.outputs.len())
            .map(|i| ipc::Receiver::open(&output_name(i), &cfg.channel))
            .collect::<Result<Vec<_>>>()?;
        let cancels = Arc::new(Board::new(
            &graph,
            &Names {
                edge: &edge_name,
                input: &input_name,
                output: &output_name,
            },
        )?);

        // Each channel of a port, with the node at its other end (None: the host's).
        let ends_of = |port: &PortRef, incoming: bool| -> Vec<(String, Option<usize>)> {
            let mut names: Vec<(String, Option<usize>)> = graph
                .edges
                .iter()
                .enumerate()
                .filter(|(_, (from, to))| if incoming { to == port } else { from == port })
                .map(|(i, (from, to))| (edge_name(i), Some(if incoming { from } else { to }.node)))
                .collect();
            let host_side = if incoming {
                &graph.inputs
            } else {
                &graph.outputs
            };
            if let Some(i) = host_side.iter().position(|p| p == port) {
                names.push((
                    if incoming {
                        input_name(i)
                    } else {
                        output_name(i)
                    },
                    None,
                ));
            }
            names
        };
        let channels_of = |port: &PortRef, incoming: bool| -> Vec<String> {
            ends_of(port, incoming)
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        let tasks = natives
            .into_iter()
            .map(|(n, node)| {
                let def = &graph.nodes[n];
                let ports = |names: &[String], incoming: bool| -> Vec<String> {
                    names
                        .iter()
                        .flat_map(|port| {
                            channels_of(
                                &PortRef {
                                    node: n,
                                    port: port.clone(),
                                },
                                incoming,
                            )
                        })
                        .collect()
                };
                NativeTask {
                    node_id: def.id.clone(),
                    node,
                    on_error: def.on_error,
                    inputs: ports(&def.inputs, true),
                    outputs: ports(&def.outputs, false),
                }
            })
            .collect();
        let native = NativeHost::start(tasks, &cfg.channel, &cancels)?;
        // Remote parts dial before any process is spawned (see `remote`).
        let remote = RemoteHost::start(
            remote::tasks(&graph, &ends_of)?,
            &cfg.channel,
            &cfg.hosts,
            Arc::clone(&native.shared),
            interrupt,
        )?;
        let specs = graph
            .order
            .iter()
            .filter(|&&n| graph.nodes[n].placement == Placement::Multiprocess)
            .map(|&n| {
                let node = &graph.nodes[n];
                let ports = |names: &[String], incoming: bool| {
                    names
                        .iter()
                        .map(|port| PortSpec {
                            port: port.clone(),
                            channels: channels_of(
                                &PortRef {
                                    node: n,
                                    port: port.clone(),
                                },
                                incoming,
                            ),
                        })
                        .collect()
                };
                NodeSpec {
                    session_id: id.clone(),
                    node_id: node.id.clone(),
                    node_type: node.node_type.clone(),
                    params: node.params.clone(),
                    inputs: ports(&node.inputs, true),
                    outputs: ports(&node.outputs, false),
                    channel: cfg.channel.clone(),
                    on_error: node.on_error,
                    heartbeat_secs: cfg.heartbeat_secs,
                    imports: cfg.imports.clone(),
                    sys_path: cfg.sys_path.clone(),
                    memory_limit: node.memory_limit,
                    threads: node.threads,
                    cpus: node.cpus.clone(),
                    env: node.env.clone(),
                }
            })
            .collect();
        let supervisor = Supervisor::start(
            specs,
            &cfg.launch,
            cfg.spawn_method,
            cfg.timing.clone(),
            cfg.session_memory_limit,
            Some(Arc::clone(&cancels)),
        )?;
        let type_of = |id: &str| {
            graph
                .nodes
                .iter()
                .find(|n| n.id == id)
                .map_or("", |n| n.node_type.as_str())
        };
        let mut on_event = |event| {
            if let Event::Ready { node_id, init_secs } = &event {
                metrics::node_ready(type_of(node_id), *init_secs);
            }
            on_event(event)
        };
        // A remote part that fails while the local nodes start stops them at once.
        let remote_failed = || match native.shared.failure() {
            Some(err) => Err(err),
            None => interrupt(),
        };
        supervisor.wait_ready(&mut on_event, &remote_failed)?;
        remote.wait_ready(&mut on_event, interrupt)?;
        let meter = Arc::new(Meter::new(
            graph
                .nodes
                .iter()
                .map(|n| {
                    let process = n.placement == Placement::Multiprocess;
                    (n.id.clone(), n.node_type.clone(), process)
                })
                .collect(),
            supervisor.watch(),
            Arc::clone(&native.shared),
            &inputs,
        ));
        metrics::session_started(&meter);
        let outputs_len = outputs.len();
        Ok(Session {
            id,
            graph,
            supervisor,
            native,
            remote,
            inputs: Mutex::new(inputs),
            outputs: Mutex::new(outputs),
            ended: Mutex::new(vec![false; outputs_len]),
            discards: Mutex::new(Discards::new(outputs_len)),
            heard: Mutex::new(VecDeque::new()),
            cancels,
            next_output: Mutex::new(0),
            inputs_closed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            max_payload: cfg.channel.max_payload,
            meter,
        })
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The sender of session input `index` (see `Graph::inputs`).
    pub fn input(&self, index: usize) -> Result<Arc<ipc::Sender>> {
        if self.inputs_closed.load(Ordering::Acquire) {
            return Err(Error::Closed(format!("session {} inputs", self.id)));
        }
        self.inputs
            .lock()
            .expect("poisoned")
            .get(index)
            .cloned()
            .ok_or_else(|| Error::Config(format!("no session input {index}")))
    }

    /// Fails with the session's failure, if any.
    pub fn check(&self) -> Result<()> {
        self.supervisor.check()?;
        match self.native.shared.failure() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Sends the end of stream on every input: nodes flush and pass it on, and `recv`
    /// returns `Output::End` once it has come out of every output.
    pub fn end_inputs(&self, timeout: Option<Duration>, interrupt: Interrupt) -> Result<()> {
        if self.inputs_closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut eos = Header::bytes_like(crate::frame::Kind::Bytes, 0)?;
        eos.flags = FLAG_END_OF_STREAM;
        self.send_to_inputs(&[&eos.to_bytes()], timeout, interrupt)
    }

    /// Sends one frame (its parts) into every input.
    fn send_to_inputs(
        &self,
        parts: &[&[u8]],
        timeout: Option<Duration>,
        interrupt: Interrupt,
    ) -> Result<()> {
        let guarded = || {
            self.check()?;
            interrupt()
        };
        let inputs = self.inputs.lock().expect("poisoned").clone();
        for input in &inputs {
            input
                .send_copy(parts, timeout, &guarded)
                .map_err(|e| match e {
                    Error::Closed(_) => self.explain_closed(e),
                    e => e,
                })?;
        }
        Ok(())
    }

    /// Cancels what is in flight: every node drops its work and the frames queued for
    /// it, the outputs drop what they hold, and frames sent after this are handled as
    /// usual (see `executor::cancel`). Returns the cancel's id.
    /// The markers are sent whatever it takes (no timeout): a marker not sent would
    /// leave its input dropping every later frame. Blocks while the first nodes are
    /// full and their outputs unread, as a send does.
    pub fn cancel(&self, interrupt: Interrupt) -> Result<u64> {
        if self.inputs_closed.load(Ordering::Acquire) {
            return Err(Error::Closed(format!("session {} inputs", self.id)));
        }
        let id = cancel::new_id();
        self.supervisor.cancel_from_inputs(id);
        let (header, marker) = cancel_mark(id);
        self.send_to_inputs(&[&header.to_bytes(), &marker], None, interrupt)?;
        Ok(id)
    }

    /// The next output frame or event. Blocks up to `timeout` (None: forever); fails
    /// with the session's failure as soon as there is one.
    pub fn recv(&self, timeout: Option<Duration>, interrupt: Interrupt) -> Result<Output> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(event) = self
                .supervisor
                .next_event()
                .or_else(|| self.native.shared.next_event())
            {
                return Ok(Output::Event(event));
            }
            self.check()?;
            match self.try_outputs() {
                Ok(Some(Output::End)) => {
                    // Error reports of the last frames travel on the control sockets and
                    // may trail the end of stream: collect them before saying "end".
                    self.supervisor.sync();
                    return Ok(match self.supervisor.next_event() {
                        Some(event) => Output::Event(event),
                        None => Output::End,
                    });
                }
                Ok(Some(output)) => return Ok(output),
                Ok(None) => {}
                // A node's output closing without an end of stream means the node
                // is gone: the supervisor is about to report why, so report that.
                Err(err @ Error::Closed(_)) => return Err(self.explain_closed(err)),
                Err(err) => return Err(err),
            }
            let now = Instant::now();
            if let Some(deadline) = deadline {
                if now >= deadline {
                    return Err(Error::Timeout {
                        what: "waiting for a session output",
                        after: timeout.unwrap_or_default(),
                    });
                }
            }
            let slice = deadline.map_or(Duration::from_millis(50), |d| {
                (d - now).min(Duration::from_millis(50))
            });
            self.wait(slice);
            interrupt()?;
        }
    }

    /// A session channel closed under us: a node is gone, and the supervisor is about
    /// to report why. Returns that failure (waiting for it briefly), else `err`. A
    /// channel of a session being closed needs no explanation: a thread still sending
    /// into it (a gRPC stream's feeder after a cancel) must not wait for one.
    pub fn explain_closed(&self, err: Error) -> Error {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !self.closing.load(Ordering::Acquire) {
            if let Err(failure) = self.check() {
                return failure;
            }
            self.wait_notify(Duration::from_millis(50));
        }
        err
    }

    fn wait_notify(&self, slice: Duration) {
        wait_readable(
            &[self.supervisor.notify_fd().as_raw_fd()],
            slice.as_millis() as i32 + 1,
        );
        self.supervisor.drain_notify();
    }

    fn try_outputs(&self) -> Result<Option<Output>> {
        let outputs = self.outputs.lock().expect("poisoned");
        if outputs.is_empty() && !self.graph.outputs.is_empty() {
            return Err(Error::Closed(format!("session {}", self.id)));
        }
        let mut discards = self.discards.lock().expect("poisoned");
        let mut heard = self.heard.lock().expect("poisoned");
        let take = |notice: Notice, discards: &mut Discards, heard: &mut VecDeque<u64>| {
            let covered: Vec<usize> = (0..outputs.len())
                .filter(|&i| notice.discard.iter().any(|n| n == outputs[i].name()))
                .collect();
            if discards.notice(notice.id, &covered) {
                heard.push_back(notice.id);
            }
        };
        while let Some(notice) = self.cancels.outputs.take() {
            take(notice, &mut discards, &mut heard);
        }
        if let Some(id) = heard.pop_front() {
            return Ok(Some(Output::Cancel { id }));
        }
        let mut ended = self.ended.lock().expect("poisoned");
        let mut next = self.next_output.lock().expect("poisoned");
        let count = outputs.len();
        for k in 0..count {
            let i = (*next + k) % count;
            while !ended[i] {
                let Some(sample) = outputs[i].try_recv()? else {
                    break;
                };
                let header = Header::decode(&sample, self.max_payload)?;
                if header.flags & FLAG_END_OF_STREAM != 0 {
                    ended[i] = true;
                    break;
                }
                if let Some(id) = cancel_mark_id(&header, payload(&sample, &header)) {
                    if !discards.handled(id) {
                        // Met before its notice, which says what else the cancel covers.
                        for notice in self.cancels.outputs.take_until(id, NOTICE_WAIT) {
                            take(notice, &mut discards, &mut heard);
                        }
                    }
                    if discards.mark(i, id) {
                        heard.push_back(id);
                    }
                    if let Some(id) = heard.pop_front() {
                        return Ok(Some(Output::Cancel { id }));
                    }
                    continue;
                }
                if discards.discarding(i) {
                    continue; // sent before a cancel: dropped
                }
                *next = (i + 1) % count;
                return Ok(Some(Output::Frame {
                    output: i,
                    header,
                    sample,
                }));
            }
        }
        if ended.iter().all(|&e| e) {
            return Ok(Some(Output::End));
        }
        Ok(None)
    }

    fn wait(&self, slice: Duration) {
        let ended = self.ended.lock().expect("poisoned").clone();
        let mut fds: Vec<RawFd> = self
            .outputs
            .lock()
            .expect("poisoned")
            .iter()
            .zip(ended)
            .filter(|(_, e)| !e)
            .map(|(rx, _)| rx.wait_fd())
            .collect();
        fds.push(self.supervisor.notify_fd().as_raw_fd());
        fds.push(self.cancels.outputs.fd());
        wait_readable(&fds, slice.as_millis() as i32 + 1);
        self.supervisor.drain_notify();
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        self.supervisor.status()
    }

    /// Stops every node and releases every channel. Idempotent; also done on drop.
    pub fn close(&self) {
        if !self.supervisor.is_ours() {
            // Inherited through `fork`: the parent's session, not ours to close. Its
            // channel ends leak when dropped (see `fork.rs`).
            return;
        }
        // How it ended, judged before the stopping below can look like a failure; the
        // first close only (later ones find it closed).
        let outcome = (!self.closing.swap(true, Ordering::AcqRel)).then(|| {
            let ended = self.ended.lock().expect("poisoned").iter().all(|e| *e);
            match (self.check(), ended) {
                (Err(_), _) => Outcome::Failed,
                (Ok(()), true) => Outcome::Completed,
                (Ok(()), false) => Outcome::Stopped,
            }
        });
        self.inputs_closed.store(true, Ordering::Release);
        // Host outputs first: a node's sender that still holds undelivered output lingers
        // until its receiver is gone, so the host must not keep it while it waits for
        // the nodes to exit.
        self.outputs.lock().expect("poisoned").clear();
        self.remote.stop();
        self.native.stop();
        self.supervisor.stop();
        // Host inputs last, once their receivers are gone (stopped, or killed and
        // reclaimed): released earlier with frames still queued, they would linger on
        // a background thread past `close`.
        self.inputs.lock().expect("poisoned").clear();
        if let Some(outcome) = outcome {
            // The nodes have stopped: their last counts came with their stop reports.
            metrics::session_finished(&self.meter, &self.meter.rows(), outcome);
        }
    }

    /// This session's metrics, in the names `zerohop serve` exposes. The node counts
    /// are asked for first (`status`), not read as the last heartbeat left them.
    pub fn metrics(&self) -> String {
        self.supervisor.status();
        self.meter.encode()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}
