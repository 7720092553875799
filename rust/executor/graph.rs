//! The pipeline graph the executor runs: nodes with named ports and the connections
//! between them, validated before anything is spawned. Every error names the field it
//! is about with a JSON path (`connections[1].to`).
//!
//! Ports and labels. remotemedia's `Connection` has only `from`/`to`, and its
//! speech nodes have two outputs (`out`, and `info` for timings), so a connection
//! that names no port out of a node with several takes the node's **primary output**,
//! [`DEFAULT_OUTPUT`] (`out`); any other output port is used only where a connection
//! names it. Session outputs are labelled by node id for a primary output (or a node's
//! only one) and `node.port` otherwise, so a client that looks up its last node's id
//! finds the main result there (`tts`, not `tts.out`), and the side reports
//! (`tts.info`) cannot be mistaken for it. Inputs have no primary port: a node with
//! several needs each named. Node ids may contain dots (remotemedia's manifests use
//! them); a port label is still unambiguous, since lookups match the whole label.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::frame::Kind;
use crate::nodes;
use crate::supervisor::OnError;

pub const DEFAULT_INPUT: &str = "in";
pub const DEFAULT_OUTPUT: &str = "out";

/// Where a node runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Its own Python process (the default for Python nodes).
    #[default]
    Multiprocess,
    /// A thread of the host's interpreter (the in-process baseline).
    Inprocess,
    /// A Rust node in the host process.
    Native,
    /// On another `zerohop serve` (its `remote` says where and what), reached through
    /// `StreamPipeline`; see `executor::remote`.
    Remote,
}

/// What the registry offers for a node type: a native (Rust) implementation, a
/// registered Python class, or both (a Python class registered under a native type's
/// name overrides it unless the manifest asks for the native one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    pub native: bool,
    pub python: bool,
}

/// `runtime_hint` values a manifest may give, compared case-insensitively; the
/// remotemedia.v1 enum names (`RUNTIME_HINT_CPYTHON`) are accepted too. `auto` (or
/// none) lets the registry decide; every Python flavour runs on CPython here.
pub const RUNTIME_HINTS: &[&str] = &[
    "auto",
    "native",
    "rust",
    "python",
    "cpython",
    "rustpython",
    "cpython_wasm",
];

/// `executor` values a manifest node may give (a zerohop extension).
pub const EXECUTORS: &[&str] = &["native", "multiprocess", "inprocess"];

/// Native or Python, as a hint or an executor asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Native,
    Python,
}

fn parse_hint(index: usize, hint: &str) -> Result<Option<Wanted>> {
    let lower = hint.trim().to_ascii_lowercase();
    let name = lower.strip_prefix("runtime_hint_").unwrap_or(&lower);
    match name {
        "" | "auto" | "unspecified" => Ok(None),
        "native" | "rust" => Ok(Some(Wanted::Native)),
        "python" | "cpython" | "rustpython" | "cpython_wasm" => Ok(Some(Wanted::Python)),
        _ => Err(manifest(
            format!("nodes[{index}].runtime_hint"),
            format!(
                "unknown runtime_hint '{hint}' (accepted: {})",
                RUNTIME_HINTS.join(", ")
            ),
        )),
    }
}

fn parse_executor(index: usize, executor: &str) -> Result<Option<Placement>> {
    match executor {
        // Empty, like an empty runtime_hint (a protobuf default), means not given.
        "" => Ok(None),
        "native" => Ok(Some(Placement::Native)),
        "multiprocess" => Ok(Some(Placement::Multiprocess)),
        "inprocess" => Ok(Some(Placement::Inprocess)),
        _ => Err(manifest(
            format!("nodes[{index}].executor"),
            format!(
                "unknown executor '{executor}' (accepted: {})",
                EXECUTORS.join(", ")
            ),
        )),
    }
}

/// Decides where node `index` of type `node_type` runs. An explicit `executor` or
/// `runtime_hint` wins over the registry, which otherwise prefers the Python class
/// (a user's registration overrides a built-in) and falls back to the native node.
/// `python` is where this session runs Python nodes (`Multiprocess`, or `Inprocess`
/// when multiprocess execution is turned off): one session runs all of them one way,
/// so a node asking for the other is an error, as are a hint and an executor that
/// contradict each other or ask for an implementation the registry lacks. Errors name
/// the field (`nodes[2].runtime_hint`).
pub fn route(
    index: usize,
    node_type: &str,
    offer: Offer,
    runtime_hint: Option<&str>,
    executor: Option<&str>,
    python: Placement,
) -> Result<Placement> {
    debug_assert_ne!(python, Placement::Native);
    let hint = runtime_hint
        .map(|h| parse_hint(index, h))
        .transpose()?
        .flatten();
    let executor = executor
        .map(|e| parse_executor(index, e))
        .transpose()?
        .flatten();
    let from_executor = executor.map(|p| match p {
        Placement::Native => Wanted::Native,
        _ => Wanted::Python,
    });
    if let (Some(hint), Some(exec)) = (hint, from_executor) {
        if hint != exec {
            return Err(manifest(
                format!("nodes[{index}].runtime_hint"),
                format!(
                    "runtime_hint '{}' contradicts executor '{}'",
                    runtime_hint.unwrap_or_default(),
                    placement_name(executor.unwrap_or_default())
                ),
            ));
        }
    }
    let field = if executor.is_some() {
        "executor"
    } else {
        "runtime_hint"
    };
    let path = format!("nodes[{index}].{field}");
    let wanted = from_executor.or(hint);
    match wanted {
        Some(Wanted::Native) if !offer.native => Err(manifest(
            path,
            format!("'{node_type}' has no native (Rust) implementation"),
        )),
        Some(Wanted::Native) => Ok(Placement::Native),
        Some(Wanted::Python) if !offer.python => Err(manifest(
            path,
            format!("'{node_type}' is a native (Rust) node type; it has no Python implementation"),
        )),
        Some(Wanted::Python) => match executor {
            Some(asked) if asked != python => Err(manifest(
                path,
                format!(
                    "the node asks for the {} executor, but this pipeline runs its Python \
                     nodes {} (metadata.multiprocess.enabled, runtime.toml [process] \
                     multiprocess); one session runs all of them one way",
                    placement_name(asked),
                    placement_name(python)
                ),
            )),
            _ => Ok(python),
        },
        None if offer.python => Ok(python),
        None if offer.native => Ok(Placement::Native),
        None => Err(manifest(
            format!("nodes[{index}].node_type"),
            format!("unknown node type '{node_type}'"),
        )),
    }
}

/// The manifest spelling of a placement.
pub fn placement_name(placement: Placement) -> &'static str {
    match placement {
        Placement::Multiprocess => "multiprocess",
        Placement::Inprocess => "inprocess",
        Placement::Native => "native",
        Placement::Remote => "remote",
    }
}

/// One node as the executor sees it: what to run and its ports (resolved from the
/// registry before the graph reaches the executor).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeDef {
    pub id: String,
    pub node_type: String,
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default = "default_inputs")]
    pub inputs: Vec<String>,
    #[serde(default = "default_outputs")]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub placement: Placement,
    /// Frame kinds the node takes (`"audio"`, `"text"`, ...), if it declares them;
    /// native nodes' come from the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepts: Option<Vec<String>>,
    /// Frame kinds the node emits, if it declares them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emits: Option<Vec<String>>,
    /// The most memory the node's process may hold, in bytes (see `supervisor::memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// The node process's thread budget and the CPUs it runs on (its runner applies
    /// them before the node's imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<usize>>,
    /// Variables its runner sets before the node's imports (the GPU it is handed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// Where a `Remote` node runs (set for those only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteDef>,
}

/// A node that runs on another host: a manifest node with `host` (its type and params
/// are the remote server's to check), or remotemedia's `RemotePipelineNode`, which runs
/// a whole inline manifest there. Its ports are the ones the connections name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteDef {
    /// The address dialed (`host:port`, or with a scheme), as the manifest gives it.
    pub host: String,
    /// The JSON path errors about the host name (`nodes[2].host`,
    /// `nodes[0].params.endpoint`).
    pub path: String,
    /// More addresses of the same service, spread over by tonic's balanced channel
    /// (`RemotePipelineNode.endpoints`); empty: `host` alone.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The node's remotemedia runtime hint, passed on as given.
    #[serde(default)]
    pub runtime_hint: Option<String>,
    #[serde(default)]
    pub is_streaming: bool,
    /// A `RemotePipelineNode`'s inline manifest (manifest.v1 JSON): run as it is, its
    /// outputs all leave through this node's primary output.
    #[serde(default)]
    pub manifest: Option<serde_json::Value>,
    /// The most time connecting and opening the stream may take (None: the host's
    /// `connect_timeout_secs`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Connection attempts after the first that fails, `backoff_ms` apart.
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub backoff_ms: u64,
}

/// What a node declares it takes and emits (`None`: not known).
type PortKinds = (Option<Vec<Kind>>, Option<Vec<Kind>>);

fn port_kinds(index: usize, node: &NodeDef) -> Result<PortKinds> {
    let parse = |names: &Option<Vec<String>>, field: &str| -> Result<Option<Vec<Kind>>> {
        let Some(names) = names else { return Ok(None) };
        names
            .iter()
            .map(|name| {
                Kind::from_name(name).ok_or_else(|| {
                    manifest(
                        format!("nodes[{index}].{field}"),
                        format!("unknown frame kind '{name}'"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    };
    let (mut accepts, mut emits) = (
        parse(&node.accepts, "accepts")?,
        parse(&node.emits, "emits")?,
    );
    if node.placement == Placement::Native {
        let (native_accepts, native_emits) = nodes::port_kinds(&node.node_type);
        accepts = accepts.or_else(|| native_accepts.map(<[Kind]>::to_vec));
        emits = emits.or_else(|| native_emits.map(<[Kind]>::to_vec));
    }
    Ok((accepts, emits))
}

fn kind_names(kinds: &[Kind]) -> String {
    kinds
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(" or ")
}

fn default_inputs() -> Vec<String> {
    vec![DEFAULT_INPUT.into()]
}

fn default_outputs() -> Vec<String> {
    vec![DEFAULT_OUTPUT.into()]
}

/// A connection from one node's output port to another node's input port. Ports may be
/// omitted when the node has exactly one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connection {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub from_port: Option<String>,
    #[serde(default)]
    pub to_port: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GraphDef {
    pub name: String,
    pub nodes: Vec<NodeDef>,
    #[serde(default)]
    pub connections: Vec<Connection>,
}

/// A port of a node: (node index, port name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortRef {
    pub node: usize,
    pub port: String,
}

/// A validated graph.
#[derive(Debug, Clone)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<NodeDef>,
    /// Resolved connections: (from, to).
    pub edges: Vec<(PortRef, PortRef)>,
    /// Input ports nothing feeds: the session's inputs.
    pub inputs: Vec<PortRef>,
    /// Output ports that feed nothing: the session's outputs.
    pub outputs: Vec<PortRef>,
    /// Node indices in an order where every edge goes forward.
    pub order: Vec<usize>,
    /// What each node declares it takes and emits, parsed once here (checked again for
    /// every input buffer a gRPC client sends).
    kinds: Vec<PortKinds>,
}

fn manifest(path: String, message: impl Into<String>) -> Error {
    Error::Manifest {
        path,
        message: message.into(),
    }
}

/// Port names: letters, digits, `_` and `-`.
fn valid_port(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Node ids: as port names, plus inner dots (`audio.vad`), which remotemedia's
/// manifests use.
fn valid_node_id(id: &str) -> bool {
    !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..")
        && valid_port(&id.replace('.', "_"))
}

fn resolve_port(
    ports: &[String],
    given: &Option<String>,
    path: &str,
    node_id: &str,
    direction: &str,
) -> Result<String> {
    match given {
        Some(port) if ports.contains(port) => Ok(port.clone()),
        Some(port) => Err(manifest(
            path.to_string(),
            format!(
                "node '{node_id}' has no {direction} port '{port}' (ports: {})",
                ports.join(", ")
            ),
        )),
        None if ports.len() == 1 => Ok(ports[0].clone()),
        None if direction == "output" && ports.iter().any(|p| p == DEFAULT_OUTPUT) => {
            Ok(DEFAULT_OUTPUT.into())
        }
        None => Err(manifest(
            path.to_string(),
            format!(
                "node '{node_id}' has {} {direction} ports ({}); name one",
                ports.len(),
                ports.join(", ")
            ),
        )),
    }
}

impl Graph {
    /// Validates `def`: ids, ports, connections (dangling, self, duplicate), cycles.
    pub fn new(def: GraphDef) -> Result<Graph> {
        if def.nodes.is_empty() {
            return Err(manifest(
                "nodes".into(),
                "a pipeline needs at least one node",
            ));
        }
        let mut index = HashMap::new();
        for (i, node) in def.nodes.iter().enumerate() {
            if !valid_node_id(&node.id) {
                return Err(manifest(
                    format!("nodes[{i}].id"),
                    format!(
                        "'{}' is not a valid node id (letters, digits, '_', '-' and inner '.')",
                        node.id
                    ),
                ));
            }
            if node.node_type.is_empty() {
                return Err(manifest(
                    format!("nodes[{i}].node_type"),
                    "must not be empty",
                ));
            }
            if (node.placement == Placement::Remote) != node.remote.is_some() {
                return Err(manifest(
                    format!("nodes[{i}].remote"),
                    "a remote node needs `remote` (where it runs), and only a remote node",
                ));
            }
            if let Some(first) = index.insert(node.id.as_str(), i) {
                return Err(manifest(
                    format!("nodes[{i}].id"),
                    format!("duplicate node id '{}' (also nodes[{first}])", node.id),
                ));
            }
            for (what, ports) in [("inputs", &node.inputs), ("outputs", &node.outputs)] {
                let mut seen = HashSet::new();
                for port in ports.iter() {
                    if !valid_port(port) || !seen.insert(port) {
                        return Err(manifest(
                            format!("nodes[{i}].{what}"),
                            format!("port names must be unique ids, got '{port}'"),
                        ));
                    }
                }
            }
        }
        let mut edges = Vec::new();
        let mut seen = HashSet::new();
        for (i, c) in def.connections.iter().enumerate() {
            let lookup = |id: &str, field: &str| {
                index.get(id).copied().ok_or_else(|| {
                    manifest(
                        format!("connections[{i}].{field}"),
                        format!("unknown node '{id}'"),
                    )
                })
            };
            let from = lookup(&c.from, "from")?;
            let to = lookup(&c.to, "to")?;
            if from == to {
                return Err(manifest(
                    format!("connections[{i}]"),
                    format!("node '{}' connects to itself", c.from),
                ));
            }
            let from_port = resolve_port(
                &def.nodes[from].outputs,
                &c.from_port,
                &format!("connections[{i}].from_port"),
                &c.from,
                "output",
            )?;
            let to_port = resolve_port(
                &def.nodes[to].inputs,
                &c.to_port,
                &format!("connections[{i}].to_port"),
                &c.to,
                "input",
            )?;
            let edge = (
                PortRef {
                    node: from,
                    port: from_port,
                },
                PortRef {
                    node: to,
                    port: to_port,
                },
            );
            if !seen.insert(edge.clone()) {
                return Err(manifest(
                    format!("connections[{i}]"),
                    format!("duplicate connection {} -> {}", c.from, c.to),
                ));
            }
            edges.push(edge);
        }
        let kinds = def
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| port_kinds(i, node))
            .collect::<Result<Vec<_>>>()?;
        for (i, (from, to)) in edges.iter().enumerate() {
            if let (Some(emits), Some(accepts)) = (&kinds[from.node].1, &kinds[to.node].0) {
                if !emits.iter().any(|kind| accepts.contains(kind)) {
                    let (source, target) = (&def.nodes[from.node], &def.nodes[to.node]);
                    return Err(manifest(
                        format!("connections[{i}]"),
                        format!(
                            "node '{}' ({}) emits {} frames, but node '{}' ({}) takes {}",
                            source.id,
                            source.node_type,
                            kind_names(emits),
                            target.id,
                            target.node_type,
                            kind_names(accepts)
                        ),
                    ));
                }
            }
        }
        let order = topological_order(&def.nodes, &edges)?;
        let fed: HashSet<&PortRef> = edges.iter().map(|(_, to)| to).collect();
        let feeding: HashSet<&PortRef> = edges.iter().map(|(from, _)| from).collect();
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for &n in &order {
            for port in &def.nodes[n].inputs {
                let p = PortRef {
                    node: n,
                    port: port.clone(),
                };
                if !fed.contains(&p) {
                    inputs.push(p);
                }
            }
            for port in &def.nodes[n].outputs {
                let p = PortRef {
                    node: n,
                    port: port.clone(),
                };
                if !feeding.contains(&p) {
                    outputs.push(p);
                }
            }
        }
        Ok(Graph {
            name: def.name,
            nodes: def.nodes,
            edges,
            inputs,
            outputs,
            order,
            kinds,
        })
    }

    /// Parses a graph definition from JSON and validates it.
    pub fn from_json(text: &str) -> Result<Graph> {
        let def: GraphDef =
            serde_json::from_str(text).map_err(|e| manifest("$".into(), e.to_string()))?;
        Graph::new(def)
    }

    /// Refuses a `kind` frame for session input `index` when the node there declares
    /// what it takes and `kind` is not among it: known before any node starts, so a
    /// wrong input fails at once, naming the node and both kinds, instead of inside
    /// the node after every model has loaded. `field` names the input in the request.
    pub fn check_input(&self, index: usize, kind: Kind, field: &str) -> Result<()> {
        let port = &self.inputs[index];
        let node = &self.nodes[port.node];
        match &self.kinds[port.node].0 {
            Some(accepts) if !accepts.contains(&kind) => Err(manifest(
                field.into(),
                format!(
                    "node '{}' ({}) takes {} frames, but this input is {kind}",
                    node.id,
                    node.node_type,
                    kind_names(accepts)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `node` for a node's only port on that side or its primary output, else
    /// `node.port` (see the module docs).
    pub fn port_label(&self, port: &PortRef, outputs: bool) -> String {
        let node = &self.nodes[port.node];
        let (count, primary) = if outputs {
            (node.outputs.len(), port.port == DEFAULT_OUTPUT)
        } else {
            (node.inputs.len(), false)
        };
        if count == 1 || primary {
            node.id.clone()
        } else {
            format!("{}.{}", node.id, port.port)
        }
    }
}

/// Kahn's algorithm; a cycle is reported with the nodes on it.
fn topological_order(nodes: &[NodeDef], edges: &[(PortRef, PortRef)]) -> Result<Vec<usize>> {
    let mut indegree = vec![0usize; nodes.len()];
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (from, to) in edges {
        indegree[to.node] += 1;
        next[from.node].push(to.node);
    }
    let mut ready: Vec<usize> = (0..nodes.len())
        .filter(|&n| indegree[n] == 0)
        .rev()
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(n) = ready.pop() {
        order.push(n);
        for &m in &next[n] {
            indegree[m] -= 1;
            if indegree[m] == 0 {
                ready.push(m);
            }
        }
    }
    if order.len() < nodes.len() {
        let cyclic: Vec<&str> = (0..nodes.len())
            .filter(|&n| indegree[n] > 0)
            .map(|n| nodes[n].id.as_str())
            .collect();
        return Err(manifest(
            "connections".into(),
            format!("the graph has a cycle through {}", cyclic.join(", ")),
        ));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph(value: serde_json::Value) -> Result<Graph> {
        Graph::from_json(&value.to_string())
    }

    #[test]
    fn chain_fan_out_and_fan_in() {
        let g = graph(json!({
            "name": "t",
            "nodes": [
                {"id": "a", "node_type": "A"},
                {"id": "b", "node_type": "B"},
                {"id": "c", "node_type": "C"},
                {"id": "d", "node_type": "D", "inputs": ["left", "right"]},
            ],
            "connections": [
                {"from": "a", "to": "b"}, {"from": "a", "to": "c"},
                {"from": "b", "to": "d", "to_port": "left"}, {"from": "c", "to": "d", "to_port": "right"},
            ]
        }))
        .unwrap();
        assert_eq!(
            g.inputs,
            vec![PortRef {
                node: 0,
                port: "in".into()
            }]
        );
        assert_eq!(
            g.outputs,
            vec![PortRef {
                node: 3,
                port: "out".into()
            }]
        );
        assert_eq!(g.order.first(), Some(&0));
        assert_eq!(g.order.last(), Some(&3));
    }

    #[test]
    fn portless_connections_take_the_primary_output_and_labels_follow_it() {
        // A speech node mid-pipeline: `out` feeds the next node, `info` is left over.
        let g = graph(json!({
            "name": "t",
            "nodes": [
                {"id": "audio.vad", "node_type": "A"},
                {"id": "asr", "node_type": "W", "outputs": ["out", "info"]},
                {"id": "tts", "node_type": "T", "outputs": ["out", "info"]},
            ],
            "connections": [{"from": "audio.vad", "to": "asr"}, {"from": "asr", "to": "tts"}]
        }))
        .unwrap();
        assert_eq!(g.edges[1].0.port, "out");
        let labels: Vec<String> = g.outputs.iter().map(|p| g.port_label(p, true)).collect();
        assert_eq!(labels, ["asr.info", "tts", "tts.info"]);
        assert_eq!(g.port_label(&g.inputs[0], false), "audio.vad");
        // Without an `out` there is no primary output: the port must be named.
        let err = graph(json!({
            "name": "t",
            "nodes": [
                {"id": "split", "node_type": "S", "outputs": ["even", "odd"]},
                {"id": "b", "node_type": "B"},
            ],
            "connections": [{"from": "split", "to": "b"}]
        }))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("connections[0].from_port: node 'split' has 2 output ports"),
            "{err}"
        );
        for bad in [".a", "a.", "a..b", "a b"] {
            let err = graph(json!({"name": "t", "nodes": [{"id": bad, "node_type": "A"}]}));
            assert!(err.is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_that_overlap_or_are_unknown_pass() {
        let g = graph(json!({
            "name": "t",
            "nodes": [
                {"id": "a", "node_type": "A", "emits": ["text", "audio"]},
                {"id": "c", "node_type": "AudioChunkerNode", "placement": "native"},
                {"id": "p", "node_type": "PassThrough", "placement": "native"},
                {"id": "u", "node_type": "U"},
                {"id": "t", "node_type": "T", "accepts": ["text"]},
            ],
            "connections": [
                {"from": "a", "to": "c"}, {"from": "c", "to": "p"},
                {"from": "p", "to": "u"}, {"from": "u", "to": "t"},
            ]
        }));
        assert!(g.is_ok(), "{g:?}");
        // A Python node named like a native one declares nothing: no check.
        let g = graph(json!({
            "name": "t",
            "nodes": [
                {"id": "a", "node_type": "A", "emits": ["text"]},
                {"id": "c", "node_type": "AudioChunkerNode"},
            ],
            "connections": [{"from": "a", "to": "c"}]
        }));
        assert!(g.is_ok(), "{g:?}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"name": "t", "nodes": []}), "nodes: a pipeline needs"),
            (
                json!({"name": "t", "nodes": [{"id": "a b", "node_type": "A"}]}),
                "nodes[0].id",
            ),
            (
                json!({"name": "t", "nodes": [{"id": "a", "node_type": "A"}, {"id": "a", "node_type": "B"}]}),
                "nodes[1].id: duplicate node id 'a'",
            ),
            (
                json!({"name": "t", "nodes": [{"id": "a", "node_type": "A"}], "connections": [{"from": "a", "to": "zz"}]}),
                "connections[0].to: unknown node 'zz'",
            ),
            (
                json!({"name": "t", "nodes": [{"id": "a", "node_type": "A"}], "connections": [{"from": "a", "to": "a"}]}),
                "connects to itself",
            ),
            (
                json!({"name": "t", "nodes": [{"id": "a", "node_type": "A"}, {"id": "b", "node_type": "B", "inputs": ["x", "y"]}],
                       "connections": [{"from": "a", "to": "b"}]}),
                "connections[0].to_port: node 'b' has 2 input ports",
            ),
            (
                json!({"name": "t", "nodes": [{"id": "a", "node_type": "A"}, {"id": "b", "node_type": "B"}],
                       "connections": [{"from": "a", "to": "b", "to_port": "nope"}]}),
                "has no input port 'nope'",
            ),
            (
                json!({"name": "t", "nodes": [{"id": "a", "node_type": "A"}, {"id": "b", "node_type": "B"}],
                       "connections": [{"from": "a", "to": "b"}, {"from": "a", "to": "b"}]}),
                "connections[1]: duplicate connection",
            ),
            (
                json!({"name": "t", "nodes": [{"id": "a", "node_type": "A"}, {"id": "b", "node_type": "B"}],
                       "connections": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]}),
                "cycle through a, b",
            ),
            (
                json!({"name": "t", "nodes": [
                        {"id": "up", "node_type": "Up", "emits": ["text"]},
                        {"id": "chunk", "node_type": "AudioChunkerNode", "placement": "native"}],
                       "connections": [{"from": "up", "to": "chunk"}]}),
                "connections[0]: node 'up' (Up) emits text frames, but node 'chunk' \
                 (AudioChunkerNode) takes audio",
            ),
            (
                json!({"name": "t", "nodes": [
                        {"id": "r", "node_type": "FastResampleNode", "placement": "native"},
                        {"id": "t", "node_type": "T", "accepts": ["json", "text"]}],
                       "connections": [{"from": "r", "to": "t"}]}),
                "emits audio frames, but node 't' (T) takes json or text",
            ),
            (
                json!({"name": "t", "nodes": [{"id": "a", "node_type": "A", "accepts": ["sound"]}]}),
                "nodes[0].accepts: unknown frame kind 'sound'",
            ),
        ];
        for (def, expected) in cases {
            let err = graph(def).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    fn routed(
        offer: (bool, bool),
        hint: Option<&str>,
        executor: Option<&str>,
        python: Placement,
    ) -> std::result::Result<Placement, String> {
        let offer = Offer {
            native: offer.0,
            python: offer.1,
        };
        route(2, "T", offer, hint, executor, python).map_err(|e| e.to_string())
    }

    #[test]
    fn routing_follows_the_registry_unless_the_manifest_says_otherwise() {
        use Placement::{Inprocess, Multiprocess, Native};
        let (native, python, both) = ((true, false), (false, true), (true, true));
        let ok = [
            (native, None, None, Multiprocess, Native),
            (python, None, None, Multiprocess, Multiprocess),
            (python, None, None, Inprocess, Inprocess),
            (both, None, None, Multiprocess, Multiprocess),
            (both, Some("rust"), None, Multiprocess, Native),
            (
                both,
                Some("RUNTIME_HINT_CPYTHON"),
                None,
                Inprocess,
                Inprocess,
            ),
            (both, None, Some("native"), Inprocess, Native),
            (both, Some("Native"), Some("native"), Multiprocess, Native),
            (
                python,
                Some("python"),
                Some("inprocess"),
                Inprocess,
                Inprocess,
            ),
            (
                python,
                Some("auto"),
                Some("multiprocess"),
                Multiprocess,
                Multiprocess,
            ),
            (native, Some(""), Some(""), Inprocess, Native),
            (python, Some("rustpython"), None, Multiprocess, Multiprocess),
        ];
        for (offer, hint, executor, session, expected) in ok {
            assert_eq!(
                routed(offer, hint, executor, session),
                Ok(expected),
                "{offer:?} {hint:?} {executor:?} {session:?}"
            );
        }
    }

    #[test]
    fn contradictions_and_missing_implementations_name_the_field() {
        use Placement::{Inprocess, Multiprocess};
        let (native, python, both) = ((true, false), (false, true), (true, true));
        let bad = [
            (both, Some("wasm"), None, Multiprocess, "nodes[2].runtime_hint: unknown runtime_hint 'wasm'"),
            (both, None, Some("thread"), Multiprocess, "nodes[2].executor: unknown executor 'thread'"),
            (both, Some("python"), Some("native"), Multiprocess, "nodes[2].runtime_hint: runtime_hint 'python' contradicts executor 'native'"),
            (both, Some("rust"), Some("inprocess"), Inprocess, "nodes[2].runtime_hint: runtime_hint 'rust' contradicts"),
            (python, Some("native"), None, Multiprocess, "nodes[2].runtime_hint: 'T' has no native"),
            (python, None, Some("native"), Multiprocess, "nodes[2].executor: 'T' has no native"),
            (native, Some("cpython"), None, Multiprocess, "nodes[2].runtime_hint: 'T' is a native (Rust) node type"),
            (native, None, Some("multiprocess"), Multiprocess, "nodes[2].executor: 'T' is a native"),
            (python, None, Some("inprocess"), Multiprocess, "nodes[2].executor: the node asks for the inprocess executor, but this pipeline runs its Python nodes multiprocess"),
            (python, None, Some("multiprocess"), Inprocess, "asks for the multiprocess executor"),
            ((false, false), None, None, Multiprocess, "nodes[2].node_type: unknown node type 'T'"),
        ];
        for (offer, hint, executor, session, expected) in bad {
            let err = routed(offer, hint, executor, session).unwrap_err();
            assert!(
                err.starts_with(expected) || err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }
}
