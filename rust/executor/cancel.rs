//! Cancels that overtake queued frames: what lets a user talk over a voice agent.
//!
//! A cancel says "drop the work in flight downstream of here": the reply being spoken,
//! the sentences not yet synthesized, the audio frames already queued for the client.
//! A frame in a channel cannot say that — it would wait behind the very frames it
//! means to drop, and behind every busy node on the way. So a cancel has two parts:
//!
//! - **The notice, out of band.** The host tells every node downstream of the origin at
//!   once — a node process over its control socket, a native node and the session's
//!   outputs through an [`Inbox`] — so each hears of it ahead of the frames waiting in
//!   its channels, whatever the nodes between are doing. Each drops what it was doing
//!   (a Python node's `process` is abandoned between two outputs) and sends the marker.
//! - **The marker, in band.** The origin, and every node when it handles the notice,
//!   sends a marker frame carrying the cancel's id on each of its output channels
//!   ([`crate::frame::FLAG_CANCEL_MARK`]). A receiver discards the frames of an input
//!   from the notice until that input's marker: exactly the frames sent before the
//!   cancel. What follows the marker (the new utterance) is kept.
//!
//! The notice alone could not tell the frames sent before the cancel from those sent
//! after; the marker alone would travel behind the frames it cancels. A marker may
//! arrive before its notice (an empty channel, a fast hop: the notice goes through the
//! supervisor). Only the notice says which *other* inputs the cancel covers, so a
//! reader that meets a marker of a cancel it has not heard of waits for the notice
//! ([`Inbox::take_until`], at most [`NOTICE_WAIT`]) before it reads on: then that input
//! is known to have passed its marker, the notice discards on the others, and the order
//! of the two never matters ([`Discards`]).
//!
//! Ids are random 64-bit numbers drawn by the origin, so an origin sends its markers
//! without asking anyone first. Which inputs of which node carry a cancel's marker is
//! fixed by the graph: [`Board`] works it out once per origin when the session starts.
//! A remote part is not a target: its nodes run on another server, which the part
//! tells by sending a `CancelSpeculation` into its stream; nodes after it are not told.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::executor::graph::{Graph, Placement};
use crate::executor::session::random_bytes;
use crate::supervisor::{eventfd, signal_eventfd, wait_readable};

/// The longest a reader waits for the notice of a marker it met first (the notice is
/// on its way through the supervisor: microseconds, unless the session is stopping).
pub const NOTICE_WAIT: Duration = Duration::from_secs(5);

/// How many handled ids a reader remembers (a marker and its notice arrive together;
/// only a reader thousands of cancels behind could see one twice).
const REMEMBERED: usize = 64;

/// A cancel as a target hears of it: its id, and which of its input channels carry
/// the cancel's marker (those discard until it comes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub id: u64,
    pub discard: Vec<String>,
}

/// Where the host posts notices for one target inside the host process (a native
/// node's thread, the session's outputs); its eventfd wakes the target's wait.
pub struct Inbox {
    notices: Mutex<VecDeque<Notice>>,
    wake: OwnedFd,
}

impl Inbox {
    fn new() -> Result<Inbox> {
        Ok(Inbox {
            notices: Mutex::new(VecDeque::new()),
            wake: eventfd().map_err(|e| Error::Config(format!("cancel inbox: {e}")))?,
        })
    }

    fn post(&self, notice: Notice) {
        let mut notices = self.notices.lock().expect("poisoned");
        notices.push_back(notice);
        signal_eventfd(&self.wake);
    }

    /// The next notice, if any.
    pub fn take(&self) -> Option<Notice> {
        let mut notices = self.notices.lock().expect("poisoned");
        if notices.len() <= 1 {
            // Cleared under the lock, before the last notice goes: a post after this
            // signals again (`post` pushes under the same lock), so none is slept on.
            let mut count = 0u64;
            // SAFETY: reading 8 bytes from a non-blocking eventfd into our own u64.
            unsafe { libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        }
        notices.pop_front()
    }

    /// Every notice up to the one of cancel `id` (a reader met its marker first), in
    /// order; fewer if it has not come within `wait`.
    pub fn take_until(&self, id: u64, wait: Duration) -> Vec<Notice> {
        let deadline = Instant::now() + wait;
        let mut taken = Vec::new();
        loop {
            while let Some(notice) = self.take() {
                let found = notice.id == id;
                taken.push(notice);
                if found {
                    return taken;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return taken;
            }
            wait_readable(&[self.fd()], left.as_millis() as i32 + 1);
        }
    }

    /// Readable while a notice waits: add it to the target's wait.
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}

/// Where one origin's cancel goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Route {
    /// Node processes: (node id, input channels to discard on).
    pub processes: Vec<(String, Vec<String>)>,
    /// Native nodes: (index among the session's native nodes, input channels).
    pub natives: Vec<(usize, Vec<String>)>,
    /// The session's output channels the marker comes out of (empty: the client is
    /// not told).
    pub outputs: Vec<String>,
}

/// A session's cancel routes and the inboxes of its in-host targets.
pub struct Board {
    /// By origin: a node's id, or None for the session's inputs.
    routes: HashMap<Option<String>, Route>,
    pub natives: Vec<Inbox>,
    /// The session's outputs: `Session::recv` reads it.
    pub outputs: Inbox,
}

/// The channel names of a session's graph: (edge, session input, session output) by
/// index.
pub struct Names<'a> {
    pub edge: &'a dyn Fn(usize) -> String,
    pub input: &'a dyn Fn(usize) -> String,
    pub output: &'a dyn Fn(usize) -> String,
}

impl Board {
    pub fn new(graph: &Graph, names: &Names<'_>) -> Result<Board> {
        let natives = graph
            .nodes
            .iter()
            .filter(|n| n.placement == Placement::Native)
            .map(|_| Inbox::new())
            .collect::<Result<_>>()?;
        let mut routes = HashMap::new();
        routes.insert(None, route(graph, None, names));
        for (i, node) in graph.nodes.iter().enumerate() {
            if node.placement != Placement::Remote {
                routes.insert(Some(node.id.clone()), route(graph, Some(i), names));
            }
        }
        Ok(Board {
            routes,
            natives,
            outputs: Inbox::new()?,
        })
    }

    /// The route of a cancel from `origin` (a node id; None: the session's inputs).
    pub fn route(&self, origin: Option<&str>) -> Option<&Route> {
        self.routes.get(&origin.map(str::to_owned))
    }

    /// Posts cancel `id` to the in-host targets of `route` (the supervisor tells the
    /// processes).
    pub fn post(&self, route: &Route, id: u64) {
        for (native, discard) in &route.natives {
            self.natives[*native].post(Notice {
                id,
                discard: discard.clone(),
            });
        }
        if !route.outputs.is_empty() {
            self.outputs.post(Notice {
                id,
                discard: route.outputs.clone(),
            });
        }
    }
}

/// The targets of a cancel from node `origin` (None: the session's inputs): every node
/// reachable from it (a remote part is not followed), each with the inputs its marker
/// comes in on.
fn route(graph: &Graph, origin: Option<usize>, names: &Names<'_>) -> Route {
    let count = graph.nodes.len();
    let mut reached = vec![false; count];
    let mut todo: Vec<usize> = match origin {
        Some(o) => graph
            .edges
            .iter()
            .filter(|(from, _)| from.node == o)
            .map(|(_, to)| to.node)
            .collect(),
        None => graph.inputs.iter().map(|p| p.node).collect(),
    };
    while let Some(n) = todo.pop() {
        if reached[n] || graph.nodes[n].placement == Placement::Remote || Some(n) == origin {
            continue;
        }
        reached[n] = true;
        todo.extend(
            graph
                .edges
                .iter()
                .filter(|(from, _)| from.node == n)
                .map(|(_, to)| to.node),
        );
    }
    // Who sends the marker: the origin and every node reached.
    let marks = |n: usize| reached[n] || Some(n) == origin;
    let inputs_of = |n: usize| -> Vec<String> {
        let mut channels: Vec<String> = graph
            .edges
            .iter()
            .enumerate()
            .filter(|(_, (from, to))| to.node == n && marks(from.node))
            .map(|(e, _)| (names.edge)(e))
            .collect();
        if origin.is_none() {
            channels.extend(
                graph
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.node == n)
                    .map(|(i, _)| (names.input)(i)),
            );
        }
        channels
    };
    let mut route = Route::default();
    let mut native = 0;
    for (n, node) in graph.nodes.iter().enumerate() {
        match node.placement {
            Placement::Native => {
                if reached[n] {
                    route.natives.push((native, inputs_of(n)));
                }
                native += 1;
            }
            Placement::Multiprocess if reached[n] => {
                route.processes.push((node.id.clone(), inputs_of(n)));
            }
            _ => {}
        }
    }
    route.outputs = graph
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, p)| marks(p.node))
        .map(|(i, _)| (names.output)(i))
        .collect();
    route
}

/// Which of a reader's inputs discard frames, until which markers; which cancels the
/// reader has handled. Both orders of notice and marker end the same way (module
/// docs). The Python executors keep the same book (`zerohop.cancel`).
#[derive(Debug, Default)]
pub struct Discards {
    /// Per input: cancels whose marker has not come yet (frames are discarded).
    until: Vec<Vec<u64>>,
    /// Per input: markers that came before their notice.
    passed: Vec<VecDeque<u64>>,
    handled: VecDeque<u64>,
}

impl Discards {
    pub fn new(inputs: usize) -> Discards {
        Discards {
            until: vec![Vec::new(); inputs],
            passed: vec![VecDeque::new(); inputs],
            handled: VecDeque::new(),
        }
    }

    /// A notice for `inputs` (indices): each discards until its marker, unless that
    /// came already. True if the cancel is new here (the reader handles it).
    pub fn notice(&mut self, id: u64, inputs: &[usize]) -> bool {
        for &i in inputs {
            if let Some(at) = self.passed[i].iter().position(|&p| p == id) {
                self.passed[i].remove(at);
            } else if !self.until[i].contains(&id) {
                self.until[i].push(id);
            }
        }
        self.first(id)
    }

    /// Marker `id` on input `i`. True if the cancel is new here.
    pub fn mark(&mut self, i: usize, id: u64) -> bool {
        if let Some(at) = self.until[i].iter().position(|&u| u == id) {
            self.until[i].remove(at);
        } else {
            if self.passed[i].len() == REMEMBERED {
                self.passed[i].pop_front();
            }
            self.passed[i].push_back(id);
        }
        self.first(id)
    }

    /// Whether cancel `id` was handled here already.
    pub fn handled(&self, id: u64) -> bool {
        self.handled.contains(&id)
    }

    /// Whether input `i` drops its frames now.
    pub fn discarding(&self, i: usize) -> bool {
        !self.until[i].is_empty()
    }

    fn first(&mut self, id: u64) -> bool {
        if self.handled.contains(&id) {
            return false;
        }
        if self.handled.len() == REMEMBERED {
            self.handled.pop_front();
        }
        self.handled.push_back(id);
        true
    }
}

/// A fresh cancel id (random: see the module docs).
pub fn new_id() -> u64 {
    let mut bytes = [0u8; 8];
    random_bytes(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn notice_first_discards_until_the_marker() {
        let mut d = Discards::new(2);
        assert!(d.notice(7, &[0]));
        assert!(d.discarding(0));
        assert!(!d.discarding(1));
        assert!(!d.mark(0, 7), "already handled at the notice");
        assert!(!d.discarding(0));
    }

    #[test]
    fn marker_first_means_nothing_to_discard() {
        let mut d = Discards::new(1);
        assert!(d.mark(0, 9), "the marker starts the handling");
        assert!(!d.notice(9, &[0]));
        assert!(!d.discarding(0), "the marker passed before the notice");
    }

    #[test]
    fn two_cancels_in_flight_discard_until_both_markers() {
        let mut d = Discards::new(1);
        d.notice(1, &[0]);
        d.notice(2, &[0]);
        d.mark(0, 1);
        assert!(d.discarding(0));
        d.mark(0, 2);
        assert!(!d.discarding(0));
    }

    #[test]
    fn a_reader_that_met_a_marker_first_takes_notices_up_to_its_own() {
        let notice = |id| Notice {
            id,
            discard: vec![format!("e{id}")],
        };
        let inbox = Arc::new(Inbox::new().unwrap());
        inbox.post(notice(1));
        let posting = Arc::clone(&inbox);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            posting.post(notice(2));
            posting.post(notice(3));
        });
        // Waits for notice 2, which comes while it waits.
        let taken = inbox.take_until(2, Duration::from_secs(30));
        late.join().unwrap();
        assert_eq!(taken, vec![notice(1), notice(2)]);
        assert_eq!(inbox.take(), Some(notice(3)), "later notices stay");
        let started = Instant::now();
        assert!(inbox.take_until(9, Duration::from_millis(30)).is_empty());
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn routes_follow_the_graph() {
        let graph = Graph::from_json(
            r#"{"name": "t", "nodes": [
                {"id": "a", "node_type": "PassThrough", "placement": "native"},
                {"id": "b", "node_type": "Echo"},
                {"id": "c", "node_type": "Echo"}],
              "connections": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]}"#,
        )
        .unwrap();
        let edge = |i: usize| format!("e{i}");
        let input = |i: usize| format!("i{i}");
        let output = |i: usize| format!("o{i}");
        let names = Names {
            edge: &edge,
            input: &input,
            output: &output,
        };
        let board = Board::new(&graph, &names).unwrap();
        let from_b = board.route(Some("b")).unwrap();
        assert_eq!(from_b.processes, vec![("c".into(), vec!["e1".into()])]);
        assert!(from_b.natives.is_empty());
        assert_eq!(from_b.outputs, vec!["o0".to_string()]);
        let from_inputs = board.route(None).unwrap();
        assert_eq!(from_inputs.natives, vec![(0, vec!["i0".to_string()])]);
        assert_eq!(
            from_inputs.processes,
            vec![
                ("b".into(), vec!["e0".to_string()]),
                ("c".into(), vec!["e1".to_string()])
            ]
        );
        let from_c = board.route(Some("c")).unwrap();
        assert_eq!(
            from_c,
            &Route {
                outputs: vec!["o0".into()],
                ..Route::default()
            }
        );
    }
}
