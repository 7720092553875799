//! Server-wide caps (runtime.toml `[server]`) that no manifest can raise: concurrent
//! sessions, node processes over all sessions, nodes in one session, and the payload
//! size of one frame.
//!
//! Nodes per session are capped apart from processes: a native node costs no process
//! but about 1.4 file descriptors and its channels' shared memory, so one request
//! naming 4000 native nodes held 5,500 fds and 650 MB, and two of them made other
//! sessions fail to open their channels.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions (streams and batch calls) running at once.
    pub max_sessions: usize,
    /// Node processes over all sessions; 0 = unlimited.
    pub max_processes: usize,
    /// Nodes (native and Python) in one session; 0 = unlimited.
    pub max_nodes_per_session: usize,
    /// Largest payload of one frame, in bytes (also bounds a gRPC message, plus headroom).
    pub max_payload: usize,
}

#[derive(Default)]
struct Usage {
    sessions: usize,
    processes: usize,
}

/// Counts what the running sessions hold.
pub struct Admission {
    pub limits: Limits,
    usage: Mutex<Usage>,
}

/// A session's share of the caps; given back when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    processes: usize,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            usage: Mutex::new(Usage::default()),
        })
    }

    /// Admits one more session of `nodes` nodes, `processes` of them node processes,
    /// or fails with `ResourceLimit` saying which cap it would exceed.
    pub fn admit(self: &Arc<Self>, nodes: usize, processes: usize) -> Result<Ticket> {
        let most = self.limits.max_nodes_per_session;
        if most != 0 && nodes > most {
            return Err(Error::ResourceLimit(format!(
                "the pipeline has {nodes} nodes; the server allows {most} in one session \
                 (server.max_nodes_per_session)"
            )));
        }
        let mut usage = self.usage.lock().expect("poisoned");
        if usage.sessions >= self.limits.max_sessions {
            return Err(Error::ResourceLimit(format!(
                "the server already runs {} sessions (server.max_sessions = {})",
                usage.sessions, self.limits.max_sessions
            )));
        }
        let max = self.limits.max_processes;
        if max != 0 && usage.processes + processes > max {
            return Err(Error::ResourceLimit(format!(
                "the pipeline needs {processes} node processes and {} are running; \
                 the server allows {max} (server.max_processes)",
                usage.processes
            )));
        }
        usage.sessions += 1;
        usage.processes += processes;
        Ok(Ticket {
            admission: Arc::clone(self),
            processes,
        })
    }

    /// Sessions running now.
    pub fn sessions(&self) -> usize {
        self.usage.lock().expect("poisoned").sessions
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut usage = self.admission.usage.lock().expect("poisoned");
        usage.sessions -= 1;
        usage.processes -= self.processes;
    }
}
