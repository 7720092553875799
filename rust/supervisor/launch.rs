//! Starting node processes, and the OS facts each choice rests on.
//!
//! * **One long-lived spawner thread.** `PR_SET_PDEATHSIG` fires when the *thread*
//!   that forked the child exits, not the process. Python hosts start sessions from
//!   whatever thread they like (thread pools, asyncio executors); if we forked from
//!   those, a worker thread retiring would SIGKILL healthy nodes. All forks therefore
//!   happen on one thread that lives as long as the host process.
//! * **A forked host gets its own spawner.** A `fork` of the host (Python's `os.fork`,
//!   `multiprocessing`) copies the spawner's request queue but not its thread: a request
//!   queued there would wait forever. The queue is kept per fork generation
//!   (`fork::PerProcess`), so a child starts its own spawner thread on first use, and
//!   every wait for the spawner is bounded (`SPAWNER_TIMEOUT`): a spawner that does not
//!   answer is an error that names it, never a hang.
//! * **Own process group per node** (`setpgid(0, 0)`): a terminal's Ctrl-C reaches the
//!   host only (which then stops the session in order), and SIGTERM/SIGKILL go to the
//!   node's whole group, including any helper processes a model library started.
//! * **Parent death**: `PR_SET_PDEATHSIG(SIGKILL)` plus a `getppid()` check for the race
//!   where the host died before the prctl. The runner also exits when its control socket
//!   reaches EOF, which covers hosts that die between those two moments.
//! * **Exit detection by pidfd**: the supervisor polls pidfds together with the control
//!   sockets, so an exit wakes it at once, with no SIGCHLD handler to share with Python.
//! * **Two ways to start a node** (`SpawnMethod`): `spawn` fork+execs a fresh
//!   `python -m zerohop.runner`; `spawn_zygote` asks the zygote, a pre-warmed Python
//!   process exec'ed once per host (see `launch/zygote/`), to fork one. Both give a `Process`
//!   with the same guarantees: own process group, parent-death signal, control socket as
//!   fd 3, a pidfd, and an exit status from `try_wait` (for zygote children, reported by
//!   the zygote, which is their parent).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::Duration;

use crate::fork::PerProcess;

mod zygote;

/// The fd number at which a node process finds its control socket.
pub const CONTROL_FD: RawFd = 3;

/// How to start one node process.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
}

/// How node processes are started (runtime.toml `process.spawn_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpawnMethod {
    /// fork+exec a fresh interpreter per node (`spawn`).
    #[default]
    Exec,
    /// fork a pre-warmed zygote per node (`spawn_zygote`).
    Zygote,
}

impl SpawnMethod {
    pub fn name(self) -> &'static str {
        match self {
            SpawnMethod::Exec => "exec",
            SpawnMethod::Zygote => "zygote",
        }
    }
}

impl std::str::FromStr for SpawnMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exec" => Ok(SpawnMethod::Exec),
            "zygote" => Ok(SpawnMethod::Zygote),
            other => Err(format!(
                "unknown spawn method {other:?} (expected \"zygote\" or \"exec\")"
            )),
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(sig) => write!(f, "signal {sig} ({})", signal_name(*sig)),
        }
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGINT => "SIGINT",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

/// A started node process: its pid and a pidfd that turns readable when it exits.
#[derive(Debug)]
pub struct Process {
    pub pid: i32,
    pub pidfd: OwnedFd,
    origin: Origin,
}

/// Who can tell how a process ended.
#[derive(Debug)]
enum Origin {
    /// Our child: `waitid` on its pidfd.
    Exec,
    /// The zygote's child: the zygote's exit report.
    Zygote(zygote::Ticket),
}

impl Process {
    /// The exit status if the process has ended (and reaps it), else None. For a child
    /// of the zygote this is the zygote's report; it waits up to a second for it when
    /// the pidfd has already fired, and says `Exit::Code(-1)` (unknown) if the zygote
    /// died before reporting.
    pub fn try_wait(&self) -> io::Result<Option<Exit>> {
        match &self.origin {
            Origin::Exec => self.wait_child(),
            Origin::Zygote(ticket) => ticket.try_wait(&self.pidfd),
        }
    }

    /// How this process was started.
    pub fn method(&self) -> SpawnMethod {
        match self.origin {
            Origin::Exec => SpawnMethod::Exec,
            Origin::Zygote(_) => SpawnMethod::Zygote,
        }
    }

    fn wait_child(&self) -> io::Result<Option<Exit>> {
        // SAFETY: zeroed siginfo_t is a valid out-buffer for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG;
        // SAFETY: valid idtype/id/out-pointer.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            // ECHILD: someone else reaped it; we can only say it is gone.
            return if err.raw_os_error() == Some(libc::ECHILD) {
                Ok(Some(Exit::Code(-1)))
            } else {
                Err(err)
            };
        }
        // SAFETY: waitid filled `info` for a child event, or left si_pid 0 for "none yet".
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(if code == libc::CLD_EXITED {
            Exit::Code(status)
        } else {
            Exit::Signal(status)
        }))
    }

    /// Sends `signal` to the process's whole group (it leads its own group).
    pub fn signal_group(&self, signal: i32) {
        // SAFETY: plain syscall; ESRCH (already gone) is fine.
        unsafe { libc::kill(-self.pid, signal) };
    }

    /// Resident memory in bytes, from /proc (None once the process is gone).
    pub fn rss_bytes(&self) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid)).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        Some(pages * page)
    }

    /// Peak resident memory in bytes (`VmHWM` in /proc; None once the process is gone).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the pid is our unreaped child, so it cannot be recycled.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn spawn_here(spec: &LaunchSpec, control: &OwnedFd) -> io::Result<Process> {
    let control_fd = control.as_raw_fd();
    // A pid, not a fork generation (`fork.rs`): the new child compares it with its
    // `getppid()` to learn whether the host died before the prctl took effect.
    // SAFETY: getpid has no preconditions.
    let host = unsafe { libc::getpid() };
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if control_fd == CONTROL_FD {
                let flags = libc::fcntl(CONTROL_FD, libc::F_GETFD);
                libc::fcntl(CONTROL_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(control_fd, CONTROL_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != host {
                libc::_exit(70);
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pid = child.id() as i32;
    // We reap through the pidfd; std's handle has no pipes to close.
    drop(child);
    let pidfd = pidfd_open(pid)?;
    Ok(Process {
        pid,
        pidfd,
        origin: Origin::Exec,
    })
}

type Request = (LaunchSpec, OwnedFd, mpsc::Sender<io::Result<Process>>);

/// How long a caller waits for the spawner thread's answer. A fork+exec takes
/// milliseconds; this only turns a spawner that cannot answer into an error naming it
/// instead of a hang.
const SPAWNER_TIMEOUT: Duration = Duration::from_secs(60);

/// The spawner thread's request queue, one per fork generation: a forked child starts
/// its own thread on first use instead of queueing requests for its parent's, which does
/// not exist in the child (see `fork.rs`). None until started, or after it died.
static SPAWNER: PerProcess<Mutex<Option<mpsc::Sender<Request>>>> = PerProcess::new();

/// Starts `spec` with `control` as its fd 3, on the spawner thread (see module docs).
pub fn spawn(spec: LaunchSpec, control: OwnedFd) -> io::Result<Process> {
    let (reply_tx, reply_rx) = mpsc::channel();
    {
        let mut requests = SPAWNER.get().lock().unwrap_or_else(PoisonError::into_inner);
        if requests.is_none() {
            *requests = Some(start_spawner()?);
        }
        let queue = requests.as_ref().expect("just started");
        if queue.send((spec, control, reply_tx)).is_err() {
            *requests = None; // it panicked: the next spawn starts a new one
            return Err(io::Error::other(
                "the spawner thread (zerohop-spawner) is gone",
            ));
        }
    }
    match reply_rx.recv_timeout(SPAWNER_TIMEOUT) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the spawner thread (zerohop-spawner) did not answer within {} s",
                SPAWNER_TIMEOUT.as_secs()
            ),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::other(
            "the spawner thread (zerohop-spawner) is gone",
        )),
    }
}

fn start_spawner() -> io::Result<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("zerohop-spawner".into())
        .spawn(move || {
            for (spec, control, reply) in rx {
                if let Err(mpsc::SendError(Ok(process))) = reply.send(spawn_here(&spec, &control)) {
                    // Its caller gave up waiting: nobody will stop or reap this one.
                    abandon(process);
                }
            }
        })?;
    Ok(tx)
}

/// Ends and reaps a process nobody is waiting for any more.
fn abandon(process: Process) {
    process.signal_group(libc::SIGKILL);
    // SAFETY: zeroed siginfo_t is a valid out-buffer; waiting for our own child.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid idtype/id/out-pointer.
    unsafe {
        libc::waitid(
            libc::P_PIDFD,
            process.pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED,
        )
    };
}

/// Starts `spec` as a fork of this host's zygote, with `control` as its fd 3.
///
/// The zygote is started on first use (exec'ed from the spawner thread, with `spec`'s
/// program, interpreter options, env and cwd) and replaced if it died. A spec the zygote
/// cannot reproduce exactly (not `[options] -m MODULE`; another program, interpreter
/// options or start-up variables such as `PYTHONPATH` than the zygote has, while it has
/// live children) is started by `spawn` instead. Blocks while the zygote starts (its
/// imports, once) and for one round trip per node after that.
pub fn spawn_zygote(spec: &LaunchSpec, control: OwnedFd) -> io::Result<Process> {
    zygote::spawn(spec, control)
}

/// `spawn` or `spawn_zygote`.
pub fn spawn_with(method: SpawnMethod, spec: LaunchSpec, control: OwnedFd) -> io::Result<Process> {
    match method {
        SpawnMethod::Exec => spawn(spec, control),
        SpawnMethod::Zygote => spawn_zygote(&spec, control),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> LaunchSpec {
        LaunchSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            cwd: None,
        }
    }

    fn wait(process: &Process) -> Exit {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(exit) = process.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn reports_exit_codes_and_signals() {
        let (_, child) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = spawn(sh("exit 3"), child.into()).unwrap();
        assert_eq!(wait(&p), Exit::Code(3));
        let (_, child) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = spawn(sh("kill -KILL $$"), child.into()).unwrap();
        assert_eq!(wait(&p), Exit::Signal(libc::SIGKILL));
    }

    #[test]
    fn child_gets_the_control_socket_and_its_own_group() {
        use std::io::Read;
        let (mut host, child) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = spawn(sh("ps -o pgid= -p $$ | tr -d ' ' >&3"), child.into()).unwrap();
        let mut out = String::new();
        host.read_to_string(&mut out).unwrap();
        assert_eq!(out.trim(), p.pid.to_string());
        assert_eq!(wait(&p), Exit::Code(0));
    }

    #[test]
    fn spawn_method_names_round_trip() {
        for method in [SpawnMethod::Exec, SpawnMethod::Zygote] {
            assert_eq!(method.name().parse::<SpawnMethod>(), Ok(method));
        }
        assert!("fork".parse::<SpawnMethod>().is_err());
        assert_eq!(SpawnMethod::default(), SpawnMethod::Exec);
    }

    #[test]
    fn zygote_falls_back_to_exec_for_what_it_cannot_run() {
        // /bin/sh -c ... is no `-m module`: spawn_zygote execs it.
        let (_, child) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = spawn_zygote(&sh("exit 5"), child.into()).unwrap();
        assert_eq!(p.method(), SpawnMethod::Exec);
        assert_eq!(wait(&p), Exit::Code(5));
    }

    #[test]
    fn a_forked_host_starts_its_own_spawner() {
        // The spawner thread exists before the fork, and not in the child.
        let (_, child) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = spawn(sh("exit 0"), child.into()).unwrap();
        assert_eq!(wait(&p), Exit::Code(0));
        let code = crate::fork::tests::in_forked_child(|| {
            let Ok((_, child)) = std::os::unix::net::UnixStream::pair() else {
                return 10;
            };
            let Ok(p) = spawn(sh("exit 4"), child.into()) else {
                return 11;
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match p.try_wait() {
                    Ok(Some(Exit::Code(4))) => return 0,
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    _ => return 12,
                }
            }
            13
        });
        assert_eq!(code, 0, "the forked child could not spawn");
    }

    #[test]
    fn signal_group_reaches_the_process() {
        let (_, child) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = spawn(sh("sleep 30"), child.into()).unwrap();
        assert!(p.rss_bytes().is_some());
        p.signal_group(libc::SIGTERM);
        assert_eq!(wait(&p), Exit::Signal(libc::SIGTERM));
    }
}
