//! The zygote: a pre-warmed Python process that forks node processes on request.
//!
//! * **What it is.** `python -m zerohop.zygote` (see
//!   `python/zerohop/zygote.py` for its side and the wire protocol). It imports zerohop,
//!   numpy and pydantic once; each node is then a `fork` of it that runs
//!   `zerohop.runner.main()`, which saves the interpreter start and the imports (about
//!   half a second) per node.
//! * **How it starts.** Lazily, on the first `spawn_zygote`, through the ordinary exec
//!   path (`launch::spawn`): so it is exec'ed from the long-lived spawner thread, never
//!   forked from the multi-threaded host, and gets its own process group,
//!   `PR_SET_PDEATHSIG(SIGKILL)` and its socket to the host as fd 3. Its env and cwd are
//!   those of the first `LaunchSpec`. One zygote per host process; a dead one is
//!   replaced on the next spawn. Requests are serialized by a mutex.
//! * **A forked host.** The slot is kept per fork generation (`fork::PerProcess`): a
//!   child of the host never talks to its parent's zygote (the reader thread that
//!   would deliver the replies did not survive the fork) and starts its own on first
//!   use. The inherited `Zygote` is leaked, not dropped: its `Drop` would shut the
//!   socket down for the parent too, and the mutex around it may be held by a thread
//!   that no longer exists.
//! * **What a spawn carries.** The child's control socket plus the host's current
//!   stdin/stdout/stderr (SCM_RIGHTS), its cwd, and the difference between the
//!   environment an exec'ed node would get (this process's env overlaid with
//!   `spec.env`) and the zygote's. Variables read once at interpreter or library start
//!   (`PYTHON*`, `LD_*`, BLAS/OpenMP thread settings, malloc tunables) cannot be changed
//!   after the fact: a spec that differs in one of those, in `program` or in the
//!   interpreter options is started by exec instead (or by a fresh zygote, once the old
//!   one has no live children).
//! * **Exit status.** Zygote children are not our children: `waitid` would say ECHILD.
//!   The zygote reaps them and reports `(serial, exit)` on its socket; a reader thread
//!   files the reports where `Process::try_wait` finds them. The pidfd of each child is
//!   opened by the zygote before it can reap the child and passed to us, so it names
//!   that very process even if its pid is reused later.
//! * **Lifetime.** The zygote exits at EOF on its socket and dies with the host (its
//!   pdeathsig); its children die with it (theirs). A zygote crash therefore ends every
//!   node it started, which the sessions see as node crashes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Exit, LaunchSpec, Origin, Process};
use crate::fork::PerProcess;

/// The module the zygote process runs.
pub(super) const ZYGOTE_MODULE: &str = "zerohop.zygote";
/// What its children run unless told otherwise (`--for MODULE`).
const DEFAULT_TARGET: &str = "zerohop.runner";
/// The zygote imports numpy & co. before it says hello; allow for a loaded machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// A fork and a reply; anything near this means the zygote is stuck.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `try_wait` waits for the report of a child whose pidfd fired.
const REPORT_WAIT: Duration = Duration::from_secs(1);
/// Most fds one message carries (a request: control socket + stdin/stdout/stderr).
const MAX_FDS: usize = 8;
/// A larger zygote message is a protocol error (they are a few dozen bytes).
const MAX_MESSAGE: usize = 1 << 20;

// ---------------------------------------------------------------------- SCM_RIGHTS

/// One `sendmsg` of `data` (non-empty) with `fds` attached as SCM_RIGHTS. Returns the
/// bytes sent, which may be fewer than `data.len()`; the fds go with the first byte.
pub(crate) fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    assert!(!data.is_empty(), "fds must travel with at least one byte");
    assert!(fds.len() <= MAX_FDS, "too many fds for one message");
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    // u64 cells: cmsghdr alignment.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is a valid "no name, no control" header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` zeroed, aligned bytes, room for one
        // cmsghdr carrying `payload` bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload as usize,
            );
        }
    }
    loop {
        // SAFETY: msg and everything it points to outlive the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends all of `data`, with `fds` attached to its first byte.
pub(crate) fn send_all_with_fds(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    let mut sent = send_with_fds(sock, data, fds)?;
    while sent < data.len() {
        let rest = &data[sent..];
        // SAFETY: sending from a live buffer.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        sent += n as usize;
    }
    Ok(())
}

/// One `recvmsg` into `buf`; fds that came with the bytes are appended to `fds`
/// (close-on-exec). Returns the byte count, 0 at EOF. Fails if fds were truncated.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    let mut control = vec![0u64; (space as usize).div_ceil(8)];
    // SAFETY: see send_with_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: msg points to live, writable buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: walking the control buffer the kernel filled, with the CMSG_* macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    // The kernel installed these fds for us: we own them now.
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "file descriptors were truncated in transit",
        ));
    }
    Ok(n)
}

fn pidfd_readable(pidfd: &OwnedFd) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, no waiting.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

// ---------------------------------------------------------------------- protocol

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FromZygote {
    /// Also carries `threads`, its thread count (diagnostics only).
    Hello {
        pid: i32,
    },
    Spawned {
        serial: u64,
        pid: i32,
    },
    SpawnError {
        error: String,
    },
    Exit {
        serial: u64,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[derive(Debug, Serialize)]
struct SpawnRequest {
    #[serde(rename = "type")]
    kind: &'static str,
    /// Hex of the directory bytes (paths need not be UTF-8).
    cwd: Option<String>,
    env_set: Vec<(String, String)>,
    env_unset: Vec<String>,
    /// Which of our fds 0..=2 follow the control socket in the message's SCM_RIGHTS.
    stdio: Vec<RawFd>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Removes one complete length-prefixed message from the front of `buf`.
fn take_message(buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized zygote message",
        ));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let body = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(body))
}

// ---------------------------------------------------------------------- exit reports

/// Exit reports of one zygote's children, by spawn serial.
#[derive(Debug, Default)]
pub(super) struct Reports {
    state: Mutex<ReportState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct ReportState {
    /// Children with a live `Process`: None until their report arrives.
    exits: HashMap<u64, Option<Exit>>,
    /// The zygote's socket reached EOF: no more reports will come.
    dead: bool,
}

impl Reports {
    fn lock(&self) -> MutexGuard<'_, ReportState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, serial: u64) {
        self.lock().exits.insert(serial, None);
    }

    fn record(&self, serial: u64, exit: Exit) {
        let mut state = self.lock();
        // A child whose Process is gone has nobody to tell.
        if let Some(slot) = state.exits.get_mut(&serial) {
            *slot = Some(exit);
            self.changed.notify_all();
        }
    }

    fn mark_dead(&self) {
        self.lock().dead = true;
        self.changed.notify_all();
    }

    fn dead(&self) -> bool {
        self.lock().dead
    }

    /// Children with a live `Process` and no exit report yet.
    fn live(&self) -> usize {
        self.lock().exits.values().filter(|e| e.is_none()).count()
    }
}

/// What a `Process` started by the zygote needs to learn its exit status.
#[derive(Debug)]
pub(super) struct Ticket {
    reports: Arc<Reports>,
    serial: u64,
    exit: OnceLock<Exit>,
}

impl Ticket {
    fn new(reports: Arc<Reports>, serial: u64) -> Ticket {
        Ticket {
            reports,
            serial,
            exit: OnceLock::new(),
        }
    }

    /// `Process::try_wait` for a zygote child: its reported exit, None while it runs.
    /// Once the pidfd says it has exited, waits up to `REPORT_WAIT` for the report; if
    /// none can come (the zygote died too) the status is unknown: `Exit::Code(-1)`, as
    /// for a child someone else reaped.
    pub(super) fn try_wait(&self, pidfd: &OwnedFd) -> io::Result<Option<Exit>> {
        if let Some(exit) = self.exit.get() {
            return Ok(Some(*exit));
        }
        let reported = |state: &ReportState| state.exits.get(&self.serial).copied().flatten();
        if let Some(exit) = reported(&self.reports.lock()) {
            return Ok(Some(self.settle(exit)));
        }
        if !pidfd_readable(pidfd)? {
            return Ok(None);
        }
        let deadline = Instant::now() + REPORT_WAIT;
        let mut state = self.reports.lock();
        let exit = loop {
            if let Some(exit) = reported(&state) {
                break exit;
            }
            let now = Instant::now();
            if state.dead || now >= deadline {
                break Exit::Code(-1);
            }
            state = self
                .reports
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(state);
        Ok(Some(self.settle(exit)))
    }

    fn settle(&self, exit: Exit) -> Exit {
        *self.exit.get_or_init(|| exit)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.reports.lock().exits.remove(&self.serial);
    }
}

// ---------------------------------------------------------------------- the zygote

enum Reply {
    Hello {
        pid: i32,
    },
    Spawned {
        serial: u64,
        pid: i32,
        pidfd: OwnedFd,
    },
    Error(String),
}

/// Why a request failed: worth one retry with a fresh zygote, or not.
enum RequestError {
    /// A zygote that had been working died (e.g. OOM-killed) before it answered.
    ZygoteGone(io::Error),
    Failed(io::Error),
}

struct Zygote {
    /// Our child (exec'ed), reaped by the reader thread when its socket closes.
    process: Process,
    sock: UnixStream,
    replies: mpsc::Receiver<Reply>,
    reports: Arc<Reports>,
    /// Its pid as it reported in its hello (None until then).
    hello: Option<i32>,
    program: PathBuf,
    args: Vec<OsString>,
    /// Its environment: what it applies `env_set`/`env_unset` to in each child.
    env: BTreeMap<OsString, OsString>,
}

/// This process's zygote (see module docs for a forked host).
static ZYGOTE: PerProcess<Mutex<Option<Zygote>>> = PerProcess::new();

/// `launch::spawn_zygote`.
pub(super) fn spawn(spec: &LaunchSpec, control: OwnedFd) -> io::Result<Process> {
    let Some(args) = zygote_args(&spec.args) else {
        // Not `[options] -m module`: nothing a zygote can run.
        return super::spawn(spec.clone(), control);
    };
    let env = effective_env(&spec.env);
    let mut slot = lock();
    for attempt in 0..2 {
        if let Some(zygote) = slot.as_ref() {
            if !zygote.alive() {
                *slot = None;
            } else if !zygote.fits(spec, &args, &env) {
                if zygote.reports.live() > 0 {
                    drop(slot);
                    return super::spawn(spec.clone(), control);
                }
                *slot = None; // idle: replace it with one that fits
            }
        }
        if slot.is_none() {
            *slot = Some(Zygote::start(spec, args.clone(), env.clone())?);
        }
        let zygote = slot.as_mut().expect("just set");
        match zygote.request(spec, &env, &control) {
            Ok(process) => return Ok(process),
            Err(RequestError::ZygoteGone(_)) if attempt == 0 => *slot = None,
            Err(RequestError::ZygoteGone(err) | RequestError::Failed(err)) => return Err(err),
        }
    }
    unreachable!("the second attempt returns")
}

/// The pid of this process's zygote, once it has started and said hello.
#[cfg(test)]
fn pid() -> Option<i32> {
    let slot = lock();
    slot.as_ref().filter(|z| z.alive()).and_then(|z| z.hello)
}

/// The zygote slot of this process.
fn lock() -> MutexGuard<'static, Option<Zygote>> {
    ZYGOTE.get().lock().unwrap_or_else(PoisonError::into_inner)
}

impl Zygote {
    fn start(
        spec: &LaunchSpec,
        args: Vec<OsString>,
        env: BTreeMap<OsString, OsString>,
    ) -> io::Result<Zygote> {
        let (sock, remote) = UnixStream::pair()?;
        let process = super::spawn(
            LaunchSpec {
                program: spec.program.clone(),
                args: args.clone(),
                env: spec.env.clone(),
                cwd: spec.cwd.clone(),
            },
            OwnedFd::from(remote),
        )?;
        let reports = Arc::new(Reports::default());
        let (tx, replies) = mpsc::channel();
        let reader = sock.try_clone()?;
        let pidfd = process.pidfd.try_clone()?;
        let thread_reports = Arc::clone(&reports);
        std::thread::Builder::new()
            .name("zerohop-zygote".into())
            .spawn(move || read_loop(reader, pidfd, thread_reports, tx))?;
        Ok(Zygote {
            process,
            sock,
            replies,
            reports,
            hello: None,
            program: spec.program.clone(),
            args,
            env,
        })
    }

    fn alive(&self) -> bool {
        // (The reader thread sets `dead` at EOF; the pidfd covers the moments before.)
        !self.reports.dead() && !pidfd_readable(&self.process.pidfd).unwrap_or(true)
    }

    /// Whether a child of this zygote is what exec'ing `spec` would start.
    fn fits(
        &self,
        spec: &LaunchSpec,
        args: &[OsString],
        env: &BTreeMap<OsString, OsString>,
    ) -> bool {
        let fixed = |env: &BTreeMap<OsString, OsString>| {
            env.iter()
                .filter(|(k, _)| fixed_at_startup(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        self.program == spec.program && self.args == args && fixed(&self.env) == fixed(env)
    }

    fn kill(&self) {
        // Its children follow through their pdeathsig; the reader thread reaps it.
        kill_by_pidfd(&self.process.pidfd);
    }

    fn request(
        &mut self,
        spec: &LaunchSpec,
        env: &BTreeMap<OsString, OsString>,
        control: &OwnedFd,
    ) -> Result<Process, RequestError> {
        let was_ready = self.hello.is_some();
        if !was_ready {
            match self.replies.recv_timeout(STARTUP_TIMEOUT) {
                Ok(Reply::Hello { pid }) => self.hello = Some(pid),
                Ok(_) => return Err(self.broken("a reply before its hello")),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err(RequestError::Failed(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the zygote did not start within {} s",
                            STARTUP_TIMEOUT.as_secs()
                        ),
                    )));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(RequestError::Failed(io::Error::other(
                        "the zygote exited before it was ready (its error is on the host's stderr)",
                    )));
                }
            }
        }
        let gone = |err: io::Error| {
            RequestError::ZygoteGone(io::Error::other(format!("the zygote died: {err}")))
        };
        let cwd = spec.cwd.clone().or_else(|| std::env::current_dir().ok());
        let (env_set, env_unset) = env_diff(&self.env, env);
        let stdio: Vec<RawFd> = (0..3)
            // SAFETY: F_GETFD only asks whether the fd is open.
            .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
            .collect();
        let request = SpawnRequest {
            kind: "spawn",
            cwd: cwd.map(|c| hex(c.as_os_str().as_bytes())),
            env_set,
            env_unset,
            stdio: stdio.clone(),
        };
        let body = serde_json::to_vec(&request).expect("a spawn request serializes");
        let mut fds = vec![control.as_raw_fd()];
        fds.extend(&stdio);
        send_all_with_fds(self.sock.as_fd(), &frame(&body), &fds).map_err(gone)?;
        match self.replies.recv_timeout(REPLY_TIMEOUT) {
            Ok(Reply::Spawned { serial, pid, pidfd }) => Ok(Process {
                pid,
                pidfd,
                origin: Origin::Zygote(Ticket::new(Arc::clone(&self.reports), serial)),
            }),
            Ok(Reply::Error(error)) => Err(RequestError::Failed(io::Error::other(format!(
                "the zygote could not fork: {error}"
            )))),
            Ok(Reply::Hello { .. }) => Err(self.broken("a second hello")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.kill();
                Err(RequestError::Failed(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the zygote did not answer within {} s",
                        REPLY_TIMEOUT.as_secs()
                    ),
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) if was_ready => {
                Err(gone(io::Error::from(io::ErrorKind::UnexpectedEof)))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(RequestError::Failed(
                io::Error::other("the zygote died at its first request"),
            )),
        }
    }

    fn broken(&self, what: &str) -> RequestError {
        self.kill();
        RequestError::Failed(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("zygote protocol error: {what}"),
        ))
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // EOF for the zygote (the reader thread's clone would keep the socket open), so
        // that a replaced zygote exits; its children die with it.
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// The reader thread: replies to the requester, exit reports to `reports`. At EOF
/// (the zygote is gone) it marks the reports dead and reaps the zygote.
fn read_loop(
    sock: UnixStream,
    pidfd: OwnedFd,
    reports: Arc<Reports>,
    replies: mpsc::Sender<Reply>,
) {
    let mut buf = Vec::new();
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let mut got = Vec::new();
        match recv_with_fds(sock.as_fd(), &mut chunk, &mut got) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                fds.extend(got);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        loop {
            let body = match take_message(&mut buf) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(_) => break 'read,
            };
            let Ok(message) = serde_json::from_slice::<FromZygote>(&body) else {
                break 'read;
            };
            let reply = match message {
                FromZygote::Hello { pid } => Reply::Hello { pid },
                FromZygote::Spawned { serial, pid } => {
                    let Some(pidfd) = fds.pop_front() else {
                        break 'read;
                    };
                    reports.register(serial);
                    Reply::Spawned { serial, pid, pidfd }
                }
                FromZygote::SpawnError { error } => Reply::Error(error),
                FromZygote::Exit {
                    serial,
                    code,
                    signal,
                } => {
                    let exit = match (code, signal) {
                        (_, Some(signal)) => Exit::Signal(signal),
                        (Some(code), None) => Exit::Code(code),
                        (None, None) => Exit::Code(-1),
                    };
                    reports.record(serial, exit);
                    continue;
                }
            };
            let _ = replies.send(reply);
        }
    }
    // A protocol error leaves a live zygote we cannot talk to: end it.
    kill_by_pidfd(&pidfd);
    reports.mark_dead();
    drop(replies);
    // SAFETY: zeroed siginfo_t is a valid out-buffer; waiting for our own child.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid idtype/id/out-pointer.
    unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED,
        )
    };
}

// ---------------------------------------------------------------------- helpers

/// SIGKILL through a pidfd: never hits a recycled pid (the reader thread may have reaped
/// the zygote already).
fn kill_by_pidfd(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal with a valid fd and no siginfo; ESRCH once it has exited.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// The zygote's argv for a node spec `[interpreter options] -m MODULE`: the same options,
/// then `-m zerohop.zygote`, plus `--for MODULE` unless MODULE is `zerohop.runner`. None
/// for anything else (a script, `-c`, extra arguments after the module): those are
/// exec'ed.
///
/// So the zygote's command line is `python -m zerohop.zygote`, which `pgrep -f
/// zerohop.runner` does not match; each child rewrites the argv it inherits to
/// `python -m zerohop.runner` (same length), which it does.
fn zygote_args(args: &[OsString]) -> Option<Vec<OsString>> {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_bytes();
        match arg {
            b"-m" => {
                let module = args.get(i + 1)?;
                if args.len() != i + 2 {
                    return None;
                }
                let mut out = args[..i].to_vec();
                out.extend(["-m".into(), ZYGOTE_MODULE.into()]);
                if module != DEFAULT_TARGET {
                    out.extend(["--for".into(), module.clone()]);
                }
                return Some(out);
            }
            b"-W" | b"-X" | b"--check-hash-based-pycs" => i += 2,
            _ if arg.len() > 1 && arg[0] == b'-' => {
                let attached_value = arg.starts_with(b"-X") || arg.starts_with(b"-W");
                if arg[1] != b'-' && !attached_value && arg.contains(&b'c') {
                    return None; // -c (or a cluster like -uc): a command, not a module
                }
                i += 1;
            }
            _ => return None,
        }
    }
    None
}

/// The environment an exec'ed node would get: ours, overlaid with `overrides`.
fn effective_env(overrides: &[(OsString, OsString)]) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    env.extend(overrides.iter().cloned());
    env
}

/// Variables read at interpreter or library start: a child of the zygote cannot get a
/// different value than the zygote started with.
fn fixed_at_startup(key: &OsStr) -> bool {
    const PREFIXES: [&[u8]; 7] = [
        b"PYTHON",
        b"LD_",
        b"OPENBLAS_",
        b"OMP_",
        b"MKL_",
        b"GOTO_",
        b"MALLOC_",
    ];
    let key = key.as_bytes();
    PREFIXES.iter().any(|p| key.starts_with(p)) || key == b"GLIBC_TUNABLES"
}

/// `(set, unset)`, hex-encoded, that turn environment `from` into `to`.
fn env_diff(
    from: &BTreeMap<OsString, OsString>,
    to: &BTreeMap<OsString, OsString>,
) -> (Vec<(String, String)>, Vec<String>) {
    let set = to
        .iter()
        .filter(|(k, v)| from.get(*k) != Some(*v))
        .map(|(k, v)| (hex(k.as_bytes()), hex(v.as_bytes())))
        .collect();
    let unset = from
        .keys()
        .filter(|k| !to.contains_key(*k))
        .map(|k| hex(k.as_bytes()))
        .collect();
    (set, unset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds is a 2-element out-array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds from the kernel.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn os(s: &str) -> OsString {
        s.into()
    }

    #[test]
    fn scm_rights_passes_fds_to_ourselves() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        send_all_with_fds(a.as_fd(), b"hello", &[w1.as_raw_fd(), w2.as_raw_fd()]).unwrap();
        drop((w1, w2)); // only the received copies are left
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut got).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(got.len(), 2);
        for fd in &got {
            // SAFETY: F_GETFD on an fd we own.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_ne!(
                flags & libc::FD_CLOEXEC,
                0,
                "received fds are close-on-exec"
            );
        }
        let mut w2 = std::fs::File::from(got.pop().unwrap());
        let mut w1 = std::fs::File::from(got.pop().unwrap());
        w1.write_all(b"one").unwrap();
        w2.write_all(b"two").unwrap();
        drop((w1, w2));
        let mut out = String::new();
        std::fs::File::from(r1).read_to_string(&mut out).unwrap();
        assert_eq!(out, "one");
        out.clear();
        std::fs::File::from(r2).read_to_string(&mut out).unwrap();
        assert_eq!(out, "two");
    }

    #[test]
    fn scm_rights_without_fds_and_at_eof() {
        let (a, b) = UnixStream::pair().unwrap();
        send_all_with_fds(a.as_fd(), b"x", &[]).unwrap();
        drop(a);
        let mut buf = [0u8; 8];
        let mut got = Vec::new();
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf, &mut got).unwrap(), 1);
        assert!(got.is_empty());
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf, &mut got).unwrap(), 0);
    }

    #[test]
    fn fds_stay_with_their_message() {
        // Two messages, each with its fd: the queue order pairs them up again.
        let (a, b) = UnixStream::pair().unwrap();
        let (_r1, w1) = pipe();
        let (_r2, w2) = pipe();
        send_all_with_fds(a.as_fd(), &frame(b"first"), &[w1.as_raw_fd()]).unwrap();
        send_all_with_fds(a.as_fd(), &frame(b"second"), &[w2.as_raw_fd()]).unwrap();
        drop(a);
        let (mut buf, mut fds, mut chunk) = (Vec::new(), Vec::new(), [0u8; 3]);
        let mut messages = Vec::new();
        loop {
            // A tiny buffer: messages arrive in pieces.
            let n = recv_with_fds(b.as_fd(), &mut chunk, &mut fds).unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(m) = take_message(&mut buf).unwrap() {
                messages.push(m);
            }
        }
        assert_eq!(messages, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(fds.len(), 2);
    }

    #[test]
    fn zygote_args_keep_interpreter_options() {
        let args = |v: &[&str]| v.iter().map(|s| os(s)).collect::<Vec<_>>();
        assert_eq!(
            zygote_args(&args(&["-m", "zerohop.runner"])).unwrap(),
            args(&["-m", "zerohop.zygote"])
        );
        let with_options = args(&["-u", "-X", "dev", "-m", "zerohop.zygote", "--for", "x.y"]);
        assert_eq!(
            zygote_args(&args(&["-u", "-X", "dev", "-m", "x.y"])).unwrap(),
            with_options
        );
        assert!(zygote_args(&args(&["-c", "exit 3"])).is_none());
        assert!(zygote_args(&args(&["script.py"])).is_none());
        assert!(zygote_args(&args(&["-m", "zerohop.runner", "extra"])).is_none());
        assert!(zygote_args(&args(&["-m"])).is_none());
    }

    #[test]
    fn env_diff_sets_and_unsets() {
        let map = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (os(k), os(v))).collect();
        let from = map(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let to = map(&[("A", "1"), ("B", "20"), ("D", "4")]);
        let (set, unset) = env_diff(&from, &to);
        assert_eq!(set, vec![(hex(b"B"), hex(b"20")), (hex(b"D"), hex(b"4"))]);
        assert_eq!(unset, vec![hex(b"C")]);
        assert!(fixed_at_startup(OsStr::new("PYTHONPATH")));
        assert!(fixed_at_startup(OsStr::new("OMP_NUM_THREADS")));
        assert!(!fixed_at_startup(OsStr::new("HOME")));
        assert_eq!(hex(&[0x00, 0xff, 0x41]), "00ff41");
    }

    /// A child that has exited but is not reaped yet, and its pidfd.
    fn exited_child() -> (std::process::Child, OwnedFd) {
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pidfd = super::super::pidfd_open(child.id() as i32).unwrap();
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 10_000) }, 1);
        (child, pidfd)
    }

    #[test]
    fn try_wait_waits_briefly_for_a_late_report() {
        let (mut child, pidfd) = exited_child();
        let reports = Arc::new(Reports::default());
        reports.register(7);
        let ticket = Ticket::new(Arc::clone(&reports), 7);
        let late = Arc::clone(&reports);
        let reporter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            late.record(7, Exit::Code(4));
        });
        let started = Instant::now();
        assert_eq!(ticket.try_wait(&pidfd).unwrap(), Some(Exit::Code(4)));
        assert!(started.elapsed() < REPORT_WAIT);
        reporter.join().unwrap();
        assert_eq!(ticket.try_wait(&pidfd).unwrap(), Some(Exit::Code(4)));
        drop(ticket);
        assert_eq!(reports.live(), 0);
        assert!(reports.lock().exits.is_empty());
        child.wait().unwrap();
    }

    #[test]
    fn try_wait_gives_up_when_the_zygote_is_gone() {
        let (mut child, pidfd) = exited_child();
        let reports = Arc::new(Reports::default());
        reports.register(1);
        let ticket = Ticket::new(Arc::clone(&reports), 1);
        reports.mark_dead();
        assert_eq!(ticket.try_wait(&pidfd).unwrap(), Some(Exit::Code(-1)));
        child.wait().unwrap();
    }

    #[test]
    fn try_wait_is_none_while_the_child_runs() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = super::super::pidfd_open(child.id() as i32).unwrap();
        let reports = Arc::new(Reports::default());
        reports.register(1);
        let ticket = Ticket::new(Arc::clone(&reports), 1);
        assert_eq!(ticket.try_wait(&pidfd).unwrap(), None);
        assert_eq!(reports.live(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // ------------------------------------------------------------ with a real zygote

    /// The real interpreter with zerohop importable, or None (the test is skipped).
    fn python() -> Option<PathBuf> {
        let candidate = std::env::var_os("ZEROHOP_TEST_PYTHON").unwrap_or_else(|| "python3".into());
        let out = std::process::Command::new(candidate)
            .args(["-c", "import sys, zerohop.zygote; print(sys.executable)"])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("skipped: no python with zerohop.zygote importable");
            return None;
        }
        Some(PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()))
    }

    fn runner(program: PathBuf) -> LaunchSpec {
        LaunchSpec {
            program,
            args: vec![os("-m"), os("zerohop.runner")],
            env: vec![(os("ZEROHOP_ZYGOTE_TEST"), os("1"))],
            cwd: None,
        }
    }

    fn wait(process: &Process) -> Exit {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = process.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn pgid(pid: i32) -> i32 {
        // SAFETY: plain syscall.
        unsafe { libc::getpgid(pid) }
    }

    #[test]
    fn zygote_children_run_the_runner_and_report_their_exit() {
        let Some(python) = python() else { return };
        let spec = runner(python);
        // EOF before a start message: the runner exits with code 2.
        let (host, child) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let p = super::super::spawn_zygote(&spec, child.into()).unwrap();
        eprintln!(
            "first spawn (zygote start included): {:?}",
            started.elapsed()
        );
        assert_eq!(pgid(p.pid), p.pid, "leads its own process group");
        assert!(p.rss_bytes().is_some());
        let zygote = pid().expect("the zygote said hello");
        assert_ne!(zygote, p.pid);
        drop(host);
        assert_eq!(wait(&p), Exit::Code(2));
        // A second node reuses the zygote; a signal is reported as such.
        let (mut host, child) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let q = super::super::spawn_zygote(&spec, child.into()).unwrap();
        eprintln!("second spawn: {:?}", started.elapsed());
        assert_eq!(pid(), Some(zygote));
        q.signal_group(libc::SIGKILL);
        assert_eq!(wait(&q), Exit::Signal(libc::SIGKILL));
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).unwrap();
        // The zygote dies: its children die with it, their status unknown; the next
        // spawn starts a new zygote.
        let (_host, child) = UnixStream::pair().unwrap();
        let r = super::super::spawn_zygote(&spec, child.into()).unwrap();
        // SAFETY: plain syscall.
        unsafe { libc::kill(zygote, libc::SIGKILL) };
        assert_eq!(wait(&r), Exit::Code(-1));
        let (_host, child) = UnixStream::pair().unwrap();
        let s = super::super::spawn_zygote(&spec, child.into()).unwrap();
        let replacement = pid().expect("a new zygote");
        assert_ne!(replacement, zygote);
        s.signal_group(libc::SIGKILL);
        assert_eq!(wait(&s), Exit::Signal(libc::SIGKILL));
    }
}
