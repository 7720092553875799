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
//!   those of the first `LaunchSpec`. One zygote per host process and fork generation,
//!   replaced when it dies (`slot.rs`).
//! * **What a spawn carries.** The child's control socket plus the host's current
//!   stdin/stdout/stderr (SCM_RIGHTS), its cwd, and the difference between the
//!   environment an exec'ed node would get (this process's env overlaid with
//!   `spec.env`) and the zygote's. Variables read once at interpreter or library start
//!   (`PYTHON*`, `LD_*`, BLAS/OpenMP thread settings, malloc tunables) cannot be changed
//!   after the fact: a spec that differs in one of those, in `program` or in the
//!   interpreter options is started by exec instead (or by a fresh zygote, once the old
//!   one has no live children).
//! * **Exit status.** Zygote children are not our children: the zygote reaps them and
//!   reports how they ended (`reports.rs`).
//! * **Lifetime.** The zygote exits at EOF on its socket and dies with the host (its
//!   pdeathsig); its children die with it (theirs). A zygote crash therefore ends every
//!   node it started, which the sessions see as node crashes.
//!
//! One concern per file: `slot.rs` (which zygote serves a spawn), `host_to_zygote.rs`
//! and `zygote_to_host.rs` (the messages each way), `fd_passing.rs` (SCM_RIGHTS),
//! `reports.rs` (the children's exit status). This file is the zygote itself: starting
//! it, one request and its reply, the reader thread, and what a zygote child can be.

mod fd_passing;
mod host_to_zygote;
mod reports;
mod slot;
mod zygote_to_host;

pub(super) use reports::Ticket;
pub(super) use slot::spawn;

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::{Exit, LaunchSpec, Origin, Process};

use fd_passing::{recv_with_fds, send_all_with_fds};
use host_to_zygote::{frame, hex, SpawnRequest};
use reports::Reports;
use zygote_to_host::{take_message, FromZygote};

/// The module the zygote process runs.
pub(super) const ZYGOTE_MODULE: &str = "zerohop.zygote";
/// What its children run unless told otherwise (`--for MODULE`).
const DEFAULT_TARGET: &str = "zerohop.runner";
/// The zygote imports numpy & co. before it says hello; allow for a loaded machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// A fork and a reply; anything near this means the zygote is stuck.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Whether a pidfd says its process has exited (no waiting).
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
    use std::io::Read;
    use std::time::Instant;

    use super::slot::pid;

    fn os(s: &str) -> OsString {
        s.into()
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
