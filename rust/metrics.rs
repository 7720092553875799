//! Prometheus metrics: what `zerohop serve --metrics-port` exposes at `/metrics`, and
//! what `Session.metrics()` gives for one Python session, in the same names.
//!
//! Most of it is read when scraped, not counted as frames pass: a live session
//! registers a [`Meter`] (a weak reference here, the session holds it) that reads what
//! the session already knows — the supervisor's node table, fed by the heartbeats that
//! carry each node's frame counts, the native nodes' relaxed counters, the host-side
//! channels' credits. The frame path pays nothing for metrics. A session that closes
//! moves its final counts into the finished totals, so the frame counters only grow.
//!
//! Labels are bounded sets, never session ids: node types (what a server was asked to
//! run), outcomes, gRPC methods and status codes. Names are `zerohop_*`; the encoder
//! is `prometheus-client`'s OpenMetrics text, which Prometheus reads as it is.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::executor::native::NativeShared;
use crate::ipc;
use crate::supervisor::Watch;

type Labels = Vec<(String, String)>;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One node as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub node_type: String,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Resident memory of its process now (None: native, or not running).
    pub rss_bytes: Option<u64>,
    /// A node process that is running now.
    pub process: bool,
}

/// How a session ended, for `zerohop_sessions_finished_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every output delivered its end of stream.
    Completed,
    /// A node failed.
    Failed,
    /// Closed before its end: cancelled, stopped, its client gone.
    Stopped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Stopped => "stopped",
        }
    }
}

/// What the metrics read of one live session.
pub struct Meter {
    /// (node id, node type, runs as a process) for every node.
    nodes: Vec<(String, String, bool)>,
    supervisor: Watch,
    native: Arc<NativeShared>,
    inputs: Vec<Weak<ipc::Sender>>,
}

impl Meter {
    pub fn new(
        nodes: Vec<(String, String, bool)>,
        supervisor: Watch,
        native: Arc<NativeShared>,
        inputs: &[Arc<ipc::Sender>],
    ) -> Meter {
        Meter {
            nodes,
            supervisor,
            native,
            inputs: inputs.iter().map(Arc::downgrade).collect(),
        }
    }

    /// Every node's counts now.
    pub fn rows(&self) -> Vec<NodeRow> {
        let counted = self.supervisor.counts();
        let type_of = |id: &str| {
            self.nodes
                .iter()
                .find(|(node, _, _)| node == id)
                .map(|(_, t, _)| t.clone())
                .unwrap_or_default()
        };
        let mut rows: Vec<NodeRow> = counted
            .into_iter()
            .map(|c| NodeRow {
                node_type: type_of(&c.node_id),
                frames_in: c.frames_in,
                frames_out: c.frames_out,
                process: c.rss_bytes.is_some(),
                rss_bytes: c.rss_bytes,
            })
            .collect();
        rows.extend(self.native.counts.iter().map(|c| NodeRow {
            node_type: type_of(&c.node_id),
            frames_in: c.frames_in.load(std::sync::atomic::Ordering::Relaxed),
            frames_out: c.frames_out.load(std::sync::atomic::Ordering::Relaxed),
            rss_bytes: None,
            process: false,
        }));
        rows
    }

    /// Credits in use and credits there are over the session's input channels.
    pub fn credits(&self) -> (u64, u64) {
        self.inputs
            .iter()
            .filter_map(Weak::upgrade)
            .map(|tx| tx.credits())
            .fold((0, 0), |(u, c), (used, cap)| (u + used, c + cap))
    }

    /// This session alone, in the names the server uses (`Session.metrics()`).
    pub fn encode(&self) -> String {
        encode_rows(&self.rows(), self.credits(), 1)
    }
}

/// The series read at scrape time (see the module docs).
#[derive(Debug, Default)]
struct Live {
    sessions: Mutex<Vec<Weak<Meter>>>,
    /// Frames in and out by node type of the sessions closed so far.
    finished: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").field("nodes", &self.nodes).finish()
    }
}

impl Live {
    fn meters(&self) -> Vec<Arc<Meter>> {
        let mut sessions = self.sessions.lock().expect("poisoned");
        sessions.retain(|m| m.strong_count() > 0);
        sessions.iter().filter_map(Weak::upgrade).collect()
    }
}

/// Rows, credits and a session count as series: what a scrape of live sessions and
/// `Session.metrics()` share.
#[derive(Debug)]
struct Snapshot {
    sessions: u64,
    processes: u64,
    frames: BTreeMap<String, (u64, u64)>,
    rss: BTreeMap<String, u64>,
    credits: (u64, u64),
}

impl Snapshot {
    fn of(rows: &[NodeRow], credits: (u64, u64), sessions: u64) -> Snapshot {
        let mut snapshot = Snapshot {
            sessions,
            processes: 0,
            frames: BTreeMap::new(),
            rss: BTreeMap::new(),
            credits,
        };
        snapshot.add(rows);
        snapshot
    }

    fn add(&mut self, rows: &[NodeRow]) {
        for row in rows {
            let frames = self.frames.entry(row.node_type.clone()).or_default();
            frames.0 += row.frames_in;
            frames.1 += row.frames_out;
            if let Some(rss) = row.rss_bytes {
                *self.rss.entry(row.node_type.clone()).or_default() += rss;
            }
            self.processes += u64::from(row.process);
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            let metric = ConstGauge::new(value as i64);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        gauge(
            encoder,
            "zerohop_sessions_active",
            "Sessions running now.",
            self.sessions,
        )?;
        gauge(
            encoder,
            "zerohop_node_processes",
            "Node processes running now.",
            self.processes,
        )?;
        for (name, help, pick) in [
            (
                "zerohop_frames_in",
                "Frames nodes took in, by node type.",
                0usize,
            ),
            (
                "zerohop_frames_out",
                "Frames nodes gave out, by node type.",
                1,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (node_type, counts) in &self.frames {
                let value = if pick == 0 { counts.0 } else { counts.1 };
                ConstCounter::new(value)
                    .encode(family.encode_family(&[("node_type", node_type.as_str())])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "zerohop_node_rss",
            "Resident memory of running node processes, by node type.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        for (node_type, bytes) in &self.rss {
            ConstGauge::new(*bytes as i64)
                .encode(family.encode_family(&[("node_type", node_type.as_str())])?)?;
        }
        gauge(
            encoder,
            "zerohop_channel_credits_used",
            "Frames sent into sessions' input channels and not yet taken.",
            self.credits.0,
        )?;
        gauge(
            encoder,
            "zerohop_channel_credits",
            "Frames sessions' input channels hold at most (their capacity).",
            self.credits.1,
        )
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        // The totals and the live list are read under the lock a closing session moves
        // itself from one to the other under: no session is counted twice. One that
        // closes after is read live now and in the totals next time: never less.
        let (totals, meters) = {
            let finished = self.finished.lock().expect("poisoned");
            (finished.clone(), self.meters())
        };
        let mut snapshot = Snapshot::of(&[], (0, 0), meters.len() as u64);
        snapshot.frames = totals;
        for meter in &meters {
            snapshot.add(&meter.rows());
            let (used, capacity) = meter.credits();
            snapshot.credits.0 += used;
            snapshot.credits.1 += capacity;
        }
        snapshot.encode(&mut encoder)
    }
}

/// `rows` of one session as series (see [`Meter::encode`]).
pub fn encode_rows(rows: &[NodeRow], credits: (u64, u64), sessions: u64) -> String {
    #[derive(Debug)]
    struct One(Snapshot);
    impl Collector for One {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            self.0.encode(&mut encoder)
        }
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(One(Snapshot::of(rows, credits, sessions))));
    text(&registry)
}

fn text(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}

/// Everything counted as it happens, and the registry.
struct Metrics {
    registry: Registry,
    live: Arc<Live>,
    sessions_finished: Family<Labels, Counter>,
    node_init: Family<Labels, Histogram>,
    frame_latency: Histogram,
    grpc_calls: Family<Labels, Counter>,
    connections_open: Gauge,
    connections_refused: Family<Labels, Counter>,
    remote_hops_active: Gauge,
    remote_hops: Family<Labels, Counter>,
    remote_round_trip: Histogram,
    limits_hit: Family<Labels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let live = Arc::new(Live::default());
    registry.register_collector(Box::new(Arc::clone(&live)));
    let sessions_finished = Family::<Labels, Counter>::default();
    registry.register(
        "zerohop_sessions_finished",
        "Sessions closed, by outcome (completed, failed, stopped).",
        sessions_finished.clone(),
    );
    // Init takes from milliseconds (echo) to tens of seconds (a model loading).
    let node_init = Family::<Labels, Histogram>::new_with_constructor(|| {
        Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
    });
    registry.register_with_unit(
        "zerohop_node_init",
        "Time a node took to initialize, by node type.",
        Unit::Seconds,
        node_init.clone(),
    );
    // A hop is tens of microseconds; a model's reply, hundreds of milliseconds.
    let frame_latency = Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]);
    registry.register_with_unit(
        "zerohop_frame_latency",
        "From the latest input frame entering a served stream to each result leaving it.",
        Unit::Seconds,
        frame_latency.clone(),
    );
    let grpc_calls = Family::<Labels, Counter>::default();
    registry.register(
        "zerohop_grpc_calls",
        "remotemedia.v1 calls answered, by method and gRPC status.",
        grpc_calls.clone(),
    );
    let connections_open = Gauge::default();
    registry.register(
        "zerohop_connections_open",
        "gRPC connections open now.",
        connections_open.clone(),
    );
    let connections_refused = Family::<Labels, Counter>::default();
    registry.register(
        "zerohop_connections_refused",
        "gRPC connections closed unserved, by reason (max_connections: past the cap; \
         handshake_timeout: silent; out_of_fds: accept failed and backed off).",
        connections_refused.clone(),
    );
    let remote_hops_active = Gauge::default();
    registry.register(
        "zerohop_remote_hops_active",
        "Streams open now to other hosts for remote nodes (one per part of a pipeline).",
        remote_hops_active.clone(),
    );
    let remote_hops = Family::<Labels, Counter>::default();
    registry.register(
        "zerohop_remote_hops",
        "Streams to other hosts for remote nodes that ended, by outcome.",
        remote_hops.clone(),
    );
    // Loopback is a few hundred microseconds; across a region, tens of milliseconds.
    let remote_round_trip = Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]);
    registry.register_with_unit(
        "zerohop_remote_round_trip",
        "From a frame leaving for a remote node's host to the next result coming back \
         (results paired with frames in order: exact for one result per frame).",
        Unit::Seconds,
        remote_round_trip.clone(),
    );
    let limits_hit = Family::<Labels, Counter>::default();
    registry.register(
        "zerohop_limits_hit",
        "Limits a session ran into, by kind (memory: a node or session past its memory \
         limit; deadline: resource_limits.max_timeout_ms; audio_samples: an input past \
         resource_limits.max_audio_samples).",
        limits_hit.clone(),
    );
    Metrics {
        registry,
        live,
        sessions_finished,
        node_init,
        frame_latency,
        grpc_calls,
        connections_open,
        connections_refused,
        remote_hops_active,
        remote_hops,
        remote_round_trip,
        limits_hit,
    }
});

/// Lists a session that just started.
pub fn session_started(meter: &Arc<Meter>) {
    METRICS
        .live
        .sessions
        .lock()
        .expect("poisoned")
        .push(Arc::downgrade(meter));
}

/// A session closed: its counts join the finished totals, its outcome is counted.
pub fn session_finished(meter: &Arc<Meter>, rows: &[NodeRow], outcome: Outcome) {
    let live = &METRICS.live;
    {
        let mut finished = live.finished.lock().expect("poisoned");
        for row in rows {
            let frames = finished.entry(row.node_type.clone()).or_default();
            frames.0 += row.frames_in;
            frames.1 += row.frames_out;
        }
        // Unlisted under the same lock a scrape reads the totals under.
        live.sessions
            .lock()
            .expect("poisoned")
            .retain(|m| !std::ptr::eq(m.as_ptr(), Arc::as_ptr(meter)));
    }
    METRICS
        .sessions_finished
        .get_or_create(&vec![("outcome".into(), outcome.label().into())])
        .inc();
}

/// A node of type `node_type` became ready after `secs` of initialization.
pub fn node_ready(node_type: &str, secs: f64) {
    METRICS
        .node_init
        .get_or_create(&vec![("node_type".into(), node_type.into())])
        .observe(secs);
}

/// A served stream's result left `secs` after the latest input entered.
pub fn frame_latency(secs: f64) {
    METRICS.frame_latency.observe(secs);
}

/// A remotemedia.v1 call ended with gRPC status `code` (`OK`, `UNAVAILABLE`, ...).
pub fn grpc_call(method: &str, code: &str) {
    METRICS
        .grpc_calls
        .get_or_create(&vec![
            ("method".into(), method.into()),
            ("status".into(), code.into()),
        ])
        .inc();
}

/// A gRPC connection opened (`1`) or closed (`-1`).
pub fn connections_open(change: i64) {
    METRICS.connections_open.inc_by(change);
}

/// A connection was closed unserved (or could not be accepted) for `reason`.
pub fn connection_refused(reason: &str) {
    METRICS
        .connections_refused
        .get_or_create(&vec![("reason".into(), reason.into())])
        .inc();
}

/// A stream to a remote node's host opened (None), or ended with `outcome`.
pub fn remote_hop(ended: Option<Outcome>) {
    match ended {
        None => {
            METRICS.remote_hops_active.inc();
        }
        Some(outcome) => {
            METRICS.remote_hops_active.dec();
            METRICS
                .remote_hops
                .get_or_create(&vec![("outcome".into(), outcome.label().into())])
                .inc();
        }
    }
}

/// A remote node's result came back `secs` after its frame left.
pub fn remote_round_trip(secs: f64) {
    METRICS.remote_round_trip.observe(secs);
}

/// A session ran into a limit of `kind` (`memory`, `deadline`, `audio_samples`).
pub fn limit_hit(kind: &str) {
    METRICS
        .limits_hit
        .get_or_create(&vec![("kind".into(), kind.into())])
        .inc();
}

/// Every series, as OpenMetrics text ([`CONTENT_TYPE`]).
pub fn encode() -> String {
    text(&METRICS.registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_series_by_node_type() {
        let rows = [
            NodeRow {
                node_type: "Echo".into(),
                frames_in: 3,
                frames_out: 2,
                rss_bytes: Some(1000),
                process: true,
            },
            NodeRow {
                node_type: "Echo".into(),
                frames_in: 4,
                frames_out: 4,
                rss_bytes: Some(24),
                process: true,
            },
            NodeRow {
                node_type: "PassThrough".into(),
                frames_in: 5,
                frames_out: 5,
                rss_bytes: None,
                process: false,
            },
        ];
        let text = encode_rows(&rows, (1, 8), 1);
        for line in [
            "zerohop_sessions_active 1",
            "zerohop_node_processes 2",
            "zerohop_frames_in_total{node_type=\"Echo\"} 7",
            "zerohop_frames_out_total{node_type=\"Echo\"} 6",
            "zerohop_frames_in_total{node_type=\"PassThrough\"} 5",
            "zerohop_node_rss_bytes{node_type=\"Echo\"} 1024",
            "zerohop_channel_credits_used 1",
            "zerohop_channel_credits 8",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn event_series_count_by_bounded_labels() {
        grpc_call("StreamPipeline", "OK");
        grpc_call("StreamPipeline", "OK");
        node_ready("Echo", 0.2);
        let text = encode();
        let calls = text
            .lines()
            .find(|l| {
                l.starts_with("zerohop_grpc_calls_total{method=\"StreamPipeline\",status=\"OK\"}")
            })
            .unwrap_or_else(|| panic!("{text}"));
        let n: f64 = calls.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 2.0, "{calls}");
        assert!(
            text.contains("zerohop_node_init_seconds_bucket{le=\"0.25\",node_type=\"Echo\"}")
                || text
                    .contains("zerohop_node_init_seconds_bucket{node_type=\"Echo\",le=\"0.25\"}"),
            "{text}"
        );
    }
}
