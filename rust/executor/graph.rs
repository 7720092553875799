//! The pipeline graph the executor runs: nodes with named ports and the connections
//! between them, validated before anything is spawned. Every error names the field it
//! is about with a JSON path (`connections[1].to`).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
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
}

fn manifest(path: String, message: impl Into<String>) -> Error {
    Error::Manifest {
        path,
        message: message.into(),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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
            if !valid_id(&node.id) {
                return Err(manifest(
                    format!("nodes[{i}].id"),
                    format!(
                        "'{}' is not a valid node id (letters, digits, '_' and '-')",
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
            if let Some(first) = index.insert(node.id.as_str(), i) {
                return Err(manifest(
                    format!("nodes[{i}].id"),
                    format!("duplicate node id '{}' (also nodes[{first}])", node.id),
                ));
            }
            for (what, ports) in [("inputs", &node.inputs), ("outputs", &node.outputs)] {
                let mut seen = HashSet::new();
                for port in ports.iter() {
                    if !valid_id(port) || !seen.insert(port) {
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
        })
    }

    /// Parses a graph definition from JSON and validates it.
    pub fn from_json(text: &str) -> Result<Graph> {
        let def: GraphDef =
            serde_json::from_str(text).map_err(|e| manifest("$".into(), e.to_string()))?;
        Graph::new(def)
    }

    pub fn node_id(&self, port: &PortRef) -> &str {
        &self.nodes[port.node].id
    }

    /// `node` or `node.port` when the node has several ports on that side.
    pub fn port_label(&self, port: &PortRef, outputs: bool) -> String {
        let node = &self.nodes[port.node];
        let count = if outputs {
            node.outputs.len()
        } else {
            node.inputs.len()
        };
        if count == 1 {
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
        ];
        for (def, expected) in cases {
            let err = graph(def).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }
}
