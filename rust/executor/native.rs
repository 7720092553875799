//! Native Rust nodes inside the host process: one thread per node, reading and writing
//! the same shared-memory channels as node processes, so a hop between a native node
//! and a Python node is one channel like any other (no serialization).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::executor::cancel::{Board, Discards, Inbox, Notice, NOTICE_WAIT};
use crate::fork::Generation;
use crate::frame::{cancel_mark, cancel_mark_id, payload, Header, FLAG_END_OF_STREAM};
use crate::ipc::{self, ChannelConfig};
use crate::nodes::{NativeNode, OutFrame};
use crate::supervisor::{wait_readable, Event, OnError};

/// What the native threads share with the session.
#[derive(Default)]
pub struct NativeShared {
    stop: AtomicBool,
    /// Signalled with `stop`, for threads with nothing left to do but wait for it.
    stopped: (Mutex<bool>, Condvar),
    failure: Mutex<Option<Error>>,
    events: Mutex<VecDeque<Event>>,
    /// Frames each node took and gave, in task order (read by `metrics`).
    pub counts: Vec<FrameCounts>,
}

/// One native node's frame counts (relaxed counters: read for metrics only).
#[derive(Default)]
pub struct FrameCounts {
    pub node_id: String,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
}

impl NativeShared {
    pub fn failure(&self) -> Option<Error> {
        self.failure.lock().expect("poisoned").clone()
    }

    pub fn next_event(&self) -> Option<Event> {
        self.events.lock().expect("poisoned").pop_front()
    }

    pub(super) fn fail(&self, err: Error) {
        self.failure.lock().expect("poisoned").get_or_insert(err);
    }

    pub(super) fn push_event(&self, event: Event) {
        self.events.lock().expect("poisoned").push_back(event);
    }

    /// Tells every thread of the session to stop (they see it within a poll).
    pub(super) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        let (lock, signal) = &self.stopped;
        *lock.lock().expect("poisoned") = true;
        signal.notify_all();
    }

    pub(super) fn wait_for_stop(&self) {
        let (lock, signal) = &self.stopped;
        let mut stopped = lock.lock().expect("poisoned");
        while !*stopped {
            stopped = signal.wait(stopped).expect("poisoned");
        }
    }

    pub(super) fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }
}

/// A session's host-side threads (native nodes, remote parts) and the stop they share.
/// Inert in a forked child (as `Supervisor`): the threads are the parent's, so `stop`
/// does nothing there and dropping leaks the handles instead of joining threads that
/// do not exist in the child.
pub(super) struct Threads {
    shared: Arc<NativeShared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    generation: Generation,
}

impl Threads {
    pub(super) fn new(shared: Arc<NativeShared>) -> Threads {
        Threads {
            shared,
            handles: Mutex::new(Vec::new()),
            generation: Generation::now(),
        }
    }

    pub(super) fn push(&self, handle: JoinHandle<()>) {
        self.handles.lock().expect("poisoned").push(handle);
    }

    /// Whether these are this process's threads (not a forked child's inherited copy).
    pub(super) fn ours(&self) -> bool {
        self.generation.is_current()
    }

    /// Tells every thread to stop and waits for it.
    pub(super) fn stop(&self) {
        if !self.ours() {
            return; // the parent's threads (see `fork.rs`)
        }
        self.shared.request_stop();
        for thread in self.handles.lock().expect("poisoned").drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        if !self.ours() {
            // Handles of threads that do not exist here; state they may have locked.
            let handles = self
                .handles
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::forget(std::mem::take(handles));
            std::mem::forget(Arc::clone(&self.shared));
            return;
        }
        self.stop();
    }
}

/// What a host thread (a native node, a remote part) reads: the frames of its input
/// channels, each in turn, until every one has ended (its end of stream, or its
/// sender gone); cancel markers are taken out and the frames they cancel dropped
/// (see `executor::cancel`).
pub(super) struct InputFrames<'a> {
    inputs: &'a [ipc::Receiver],
    open: Vec<bool>,
    /// Where the next scan starts, so that a busy input cannot starve the others.
    next: usize,
    max_payload: usize,
    discards: Discards,
}

/// What [`InputFrames::try_next`] found.
// A frame's header is large since it holds the metadata block; it is moved once per
// frame, which costs less than the allocation boxing it would (as `session::Output`).
#[allow(clippy::large_enum_variant)]
pub(super) enum Next {
    /// A frame of input `.0`.
    Frame(usize, Header, ipc::Sample),
    /// The marker of cancel `.1` on input `.0`: see [`InputFrames::mark`].
    Mark(usize, u64),
}

impl<'a> InputFrames<'a> {
    pub(super) fn new(inputs: &'a [ipc::Receiver], max_payload: usize) -> InputFrames<'a> {
        InputFrames {
            inputs,
            open: vec![true; inputs.len()],
            next: 0,
            max_payload,
            discards: Discards::new(inputs.len()),
        }
    }

    /// Whether any input may still bring a frame.
    pub(super) fn open(&self) -> bool {
        self.open.iter().any(|&o| o)
    }

    /// Whether cancel `id` was handled here (a reader that meets a marker of one it
    /// has not waits for its notice first: see `executor::cancel`).
    pub(super) fn handled(&self, id: u64) -> bool {
        self.discards.handled(id)
    }

    /// Marker `id` on input `i`: that input's frames are kept again. True if the cancel
    /// is new here (its notice never came): handle it.
    pub(super) fn mark(&mut self, i: usize, id: u64) -> bool {
        self.discards.mark(i, id)
    }

    /// A cancel's notice: its inputs discard until their marker. True if the cancel is
    /// new here (handle it).
    pub(super) fn notice(&mut self, notice: &Notice) -> bool {
        let inputs: Vec<usize> = (0..self.inputs.len())
            .filter(|&i| notice.discard.iter().any(|n| n == self.inputs[i].name()))
            .collect();
        self.discards.notice(notice.id, &inputs)
    }

    /// The next frame or marker of any open input; None when no input has anything now.
    pub(super) fn try_next(&mut self) -> Result<Option<Next>> {
        let count = self.inputs.len();
        for k in 0..count {
            let i = (self.next + k) % count;
            while self.open[i] {
                let sample = match self.inputs[i].try_recv() {
                    Ok(Some(sample)) => sample,
                    Ok(None) => break,
                    Err(Error::Closed(_)) => {
                        self.open[i] = false;
                        break;
                    }
                    Err(err) => return Err(err),
                };
                let header = Header::decode(&sample, self.max_payload)?;
                if header.flags & FLAG_END_OF_STREAM != 0 {
                    self.open[i] = false;
                    break;
                }
                if let Some(id) = cancel_mark_id(&header, payload(&sample, &header)) {
                    return Ok(Some(Next::Mark(i, id)));
                }
                if self.discards.discarding(i) {
                    continue; // sent before a cancel: dropped
                }
                self.next = (i + 1) % count;
                return Ok(Some(Next::Frame(i, header, sample)));
            }
        }
        Ok(None)
    }

    /// Waits up to `ms` milliseconds for an open input to have a frame (or `also` to
    /// turn readable).
    pub(super) fn wait(&self, ms: i32, also: Option<RawFd>) {
        let mut fds: Vec<RawFd> = self
            .inputs
            .iter()
            .zip(&self.open)
            .filter(|(_, o)| **o)
            .map(|(rx, _)| rx.wait_fd())
            .collect();
        fds.extend(also);
        wait_readable(&fds, ms);
    }
}

/// One native node with its channel ends, ready to run.
pub struct NativeTask {
    pub node_id: String,
    pub node: Box<dyn NativeNode>,
    pub on_error: OnError,
    pub inputs: Vec<String>,
    /// Every channel the node's single output feeds.
    pub outputs: Vec<String>,
}

/// The running native nodes of one session. Inert in a forked child (as `Supervisor`):
/// its threads are the parent's.
pub struct NativeHost {
    pub shared: Arc<NativeShared>,
    threads: Threads,
}

struct Ends {
    inputs: Vec<ipc::Receiver>,
    outputs: Vec<ipc::Sender>,
}

impl NativeHost {
    /// Opens every task's channels (so none is missing when the processes start) and
    /// starts one thread per task.
    pub fn start(
        tasks: Vec<NativeTask>,
        cfg: &ChannelConfig,
        cancels: &Arc<Board>,
    ) -> Result<NativeHost> {
        let counts = tasks
            .iter()
            .map(|t| FrameCounts {
                node_id: t.node_id.clone(),
                ..FrameCounts::default()
            })
            .collect();
        let shared = Arc::new(NativeShared {
            counts,
            ..NativeShared::default()
        });
        let mut opened = Vec::with_capacity(tasks.len());
        for task in tasks {
            let inputs = task
                .inputs
                .iter()
                .map(|n| ipc::Receiver::open(n, cfg))
                .collect::<Result<_>>()?;
            let outputs = task
                .outputs
                .iter()
                .map(|n| ipc::Sender::create(n, cfg))
                .collect::<Result<_>>()?;
            opened.push((task, Ends { inputs, outputs }));
        }
        let threads = Threads::new(Arc::clone(&shared));
        for (index, (task, ends)) in opened.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let cancels = Arc::clone(cancels);
            let max_payload = cfg.max_payload;
            let name = format!("zerohop-native-{}", task.node_id);
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let host = Host {
                        shared: &shared,
                        inbox: &cancels.natives[index],
                        max_payload,
                        counts: &shared.counts[index],
                    };
                    run(task, ends, &host)
                })
                .map_err(|e| Error::Spawn {
                    node: "<native>".into(),
                    detail: e.to_string(),
                })?;
            threads.push(thread);
        }
        Ok(NativeHost { shared, threads })
    }

    /// Stops every native thread and waits for it (their channels close with them).
    pub fn stop(&self) {
        self.threads.stop();
    }
}

/// What a native node's thread is given besides its node and channels.
struct Host<'a> {
    shared: &'a NativeShared,
    inbox: &'a Inbox,
    max_payload: usize,
    counts: &'a FrameCounts,
}

fn run(mut task: NativeTask, ends: Ends, host: &Host<'_>) {
    let shared = host.shared;
    match serve(&mut task, &ends, host) {
        Ok(()) | Err(Error::Interrupted) => {}
        // A closed neighbour means a node failed; the session reports that one.
        Err(Error::Closed(_)) => {}
        Err(err) => shared.fail(Error::Node {
            node: task.node_id.clone(),
            message: err.to_string(),
            traceback: String::new(),
        }),
    }
}

fn serve(task: &mut NativeTask, ends: &Ends, host: &Host<'_>) -> Result<()> {
    let (shared, counts) = (host.shared, host.counts);
    let mut frames = InputFrames::new(&ends.inputs, host.max_payload);
    let mut out = Vec::new();
    let mut sequence = 0u64;
    while frames.open() {
        shared.check_stop()?;
        while let Some(notice) = host.inbox.take() {
            if frames.notice(&notice) {
                cancel(task, &ends.outputs, notice.id, shared)?;
            }
        }
        let (header, sample) = match frames.try_next()? {
            Some(Next::Frame(_, header, sample)) => (header, sample),
            Some(Next::Mark(i, id)) => {
                if !frames.handled(id) {
                    // Met before its notice, which says what else the cancel covers.
                    for notice in host.inbox.take_until(id, NOTICE_WAIT) {
                        if frames.notice(&notice) {
                            cancel(task, &ends.outputs, notice.id, shared)?;
                        }
                    }
                }
                if frames.mark(i, id) {
                    cancel(task, &ends.outputs, id, shared)?;
                }
                continue;
            }
            None => {
                frames.wait(50, Some(host.inbox.fd()));
                continue;
            }
        };
        let payload = payload(&sample, &header);
        counts.frames_in.fetch_add(1, Ordering::Relaxed);
        match task.node.handle(&header, payload, &mut out) {
            Ok(()) => {}
            Err(err @ Error::Frame(_)) if task.on_error == OnError::Skip => {
                out.clear();
                shared.push_event(Event::FrameError {
                    node_id: task.node_id.clone(),
                    error: err.to_string(),
                    traceback: String::new(),
                    sequence: Some(header.sequence),
                });
                continue;
            }
            Err(err) => return Err(err),
        }
        counts
            .frames_out
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        send_all(&mut out, &ends.outputs, &mut sequence, shared)?;
    }
    task.node.flush(&mut out)?;
    counts
        .frames_out
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    send_all(&mut out, &ends.outputs, &mut sequence, shared)?;
    let mut eos = Header::bytes_like(crate::frame::Kind::Bytes, 0)?;
    eos.flags = FLAG_END_OF_STREAM;
    let bytes = eos.to_bytes();
    for tx in &ends.outputs {
        tx.send_copy(&[&bytes], None, &|| shared.check_stop())?;
    }
    // Nothing more to do; the channels stay open until the session closes.
    shared.wait_for_stop();
    Ok(())
}

/// Cancel `id` reached the node: it drops what it holds, and the marker goes out on
/// every output.
fn cancel(
    task: &mut NativeTask,
    outputs: &[ipc::Sender],
    id: u64,
    shared: &NativeShared,
) -> Result<()> {
    task.node.cancel();
    let (header, payload) = cancel_mark(id);
    let header = header.to_bytes();
    for tx in outputs {
        tx.send_copy(&[&header, &payload], None, &|| shared.check_stop())?;
    }
    Ok(())
}

fn send_all(
    out: &mut Vec<OutFrame>,
    outputs: &[ipc::Sender],
    sequence: &mut u64,
    shared: &NativeShared,
) -> Result<()> {
    for mut frame in out.drain(..) {
        frame.header.sequence = *sequence;
        *sequence += 1;
        let header = frame.header.to_bytes();
        for tx in outputs {
            tx.send_copy(&[&header, &frame.payload], None, &|| shared.check_stop())?;
        }
    }
    Ok(())
}
