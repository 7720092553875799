//! Turning a `PipelineManifest` into something the executor can run.
//!
//! The node registry and the params models live in Python, so the server does not
//! validate manifests itself: it hands the manifest, as manifest.v1 JSON, to a
//! [`Planner`] (the Python one is in `py/serve.rs`), which validates it the way
//! `zerohop validate` does and answers with the executor's graph and session settings.

use serde_json::{json, Map, Value};

use super::proto::{NodeManifest, PipelineManifest, RuntimeHint};
use crate::error::{Error, Result};
use crate::executor::{Graph, Placement, SessionConfig};

/// A validated pipeline, ready for `Session::start`.
pub struct Plan {
    pub graph: Graph,
    pub config: SessionConfig,
    /// What the planner accepted but ignores or reinterprets, each naming its JSON path
    /// (`nodes[1].params.buffer_size: ...`): unknown params and fields, a `host` the
    /// node runs without, a runtime hint not followed. Logged by the server and sent to
    /// the client (batch calls: response metadata [`WARNINGS_METADATA`]).
    pub warnings: Vec<String>,
}

/// The gRPC response metadata key carrying a plan's warnings: a JSON list of strings,
/// ASCII only (non-ASCII escaped as `\uXXXX`).
pub const WARNINGS_METADATA: &str = "zerohop-warnings";

/// Most bytes of warnings put in response metadata (HTTP/2 header lists are commonly
/// capped at 8-16 KiB); the rest are summed up in a last entry.
const MAX_WARNINGS_BYTES: usize = 4096;

/// Plans `manifest` with `planner` and logs each warning on stderr, one line each,
/// naming the pipeline.
pub fn plan_logged(planner: &dyn Planner, manifest: &PipelineManifest) -> Result<Plan> {
    let plan = planner.plan(&manifest_json(manifest)?)?;
    for warning in &plan.warnings {
        eprintln!(
            "zerohop serve: pipeline '{}': warning: {warning}",
            plan.graph.name
        );
    }
    Ok(plan)
}

/// `warnings` as the value of [`WARNINGS_METADATA`]: a JSON list, ASCII only, at most
/// about 4 KiB; `None` when there are none.
pub fn warnings_header(warnings: &[String]) -> Option<String> {
    if warnings.is_empty() {
        return None;
    }
    let mut kept: Vec<String> = Vec::new();
    let mut size = 2;
    for (i, warning) in warnings.iter().enumerate() {
        let escaped = ascii_json(warning);
        if size + escaped.len() + 1 > MAX_WARNINGS_BYTES {
            kept.push(ascii_json(&format!(
                "... and {} more warnings (see the server log)",
                warnings.len() - i
            )));
            break;
        }
        size += escaped.len() + 1;
        kept.push(escaped);
    }
    Some(format!("[{}]", kept.join(",")))
}

/// A JSON string literal with every character outside printable ASCII escaped.
fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

impl Plan {
    /// How many node processes the session will start.
    pub fn processes(&self) -> usize {
        self.graph
            .nodes
            .iter()
            .filter(|n| n.placement == Placement::Multiprocess)
            .count()
    }
}

/// Validates manifests and lists node types. Called from blocking threads, never from
/// the async runtime (the Python planner takes the GIL).
pub trait Planner: Send + Sync + 'static {
    /// Validates `manifest_json` (a manifest.v1 document) and plans its session. Errors
    /// name the manifest field (`Error::Manifest { path: "nodes[1].params.factor" }`).
    fn plan(&self, manifest_json: &str) -> Result<Plan>;

    /// Every node type a manifest may name.
    fn node_types(&self) -> Result<Vec<String>>;
}

/// The manifest.v1 JSON document of a `PipelineManifest` (`params` parsed from its JSON
/// string; fields left at their proto defaults omitted).
pub fn manifest_json(manifest: &PipelineManifest) -> Result<String> {
    let mut metadata = Map::new();
    if let Some(meta) = &manifest.metadata {
        for (key, value) in [
            ("name", &meta.name),
            ("description", &meta.description),
            ("created_at", &meta.created_at),
        ] {
            if !value.is_empty() {
                metadata.insert(key.into(), Value::from(value.as_str()));
            }
        }
    }
    let nodes = manifest
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| node_json(i, node))
        .collect::<Result<Vec<_>>>()?;
    let connections: Vec<Value> = manifest
        .connections
        .iter()
        .map(|c| json!({"from": c.from, "to": c.to}))
        .collect();
    let doc = json!({
        "version": manifest.version,
        "metadata": metadata,
        "nodes": nodes,
        "connections": connections,
    });
    Ok(doc.to_string())
}

fn node_json(index: usize, node: &NodeManifest) -> Result<Value> {
    let params: Value = if node.params.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&node.params).map_err(|e| Error::Manifest {
            path: format!("nodes[{index}].params"),
            message: format!("not valid JSON: {e}"),
        })?
    };
    let mut out = Map::new();
    out.insert("id".into(), Value::from(node.id.as_str()));
    out.insert("node_type".into(), Value::from(node.node_type.as_str()));
    out.insert("params".into(), params);
    out.insert("is_streaming".into(), Value::from(node.is_streaming));
    if !node.host.is_empty() {
        out.insert("host".into(), Value::from(node.host.as_str()));
    }
    let hint = RuntimeHint::try_from(node.runtime_hint).unwrap_or(RuntimeHint::Unspecified);
    if hint != RuntimeHint::Unspecified {
        let name = hint.as_str_name().trim_start_matches("RUNTIME_HINT_");
        out.insert(
            "runtime_hint".into(),
            Value::from(name.to_ascii_lowercase()),
        );
    }
    if let Some(caps) = &node.capabilities {
        let mut c = Map::new();
        if let Some(gpu) = &caps.gpu {
            c.insert(
                "gpu".into(),
                json!({"type": gpu.r#type, "min_memory_gb": gpu.min_memory_gb, "required": gpu.required}),
            );
        }
        if let Some(cpu) = &caps.cpu {
            c.insert("cpu".into(), json!({"cores": cpu.cores, "arch": cpu.arch}));
        }
        if caps.memory_gb != 0.0 {
            c.insert("memory_gb".into(), Value::from(caps.memory_gb));
        }
        out.insert("capabilities".into(), Value::Object(c));
    }
    Ok(Value::Object(out))
}

/// The manifest id of the node an error is about: the node a node error names, or the
/// node at `nodes[i]` of a manifest error's path.
pub fn failing_node(err: &Error, manifest: Option<&PipelineManifest>) -> String {
    match err {
        Error::Spawn { node, .. }
        | Error::NodeInit { node, .. }
        | Error::NodeInitTimeout { node, .. }
        | Error::NodeUnresponsive { node, .. }
        | Error::NodeCrashed { node, .. }
        | Error::Node { node, .. }
        | Error::NodeMemory { node, .. }
        | Error::Remote { node, .. } => node.clone(),
        Error::Manifest { path, .. } => path
            .strip_prefix("nodes[")
            .and_then(|rest| rest.split(']').next())
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| manifest?.nodes.get(i))
            .map(|n| n.id.clone())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_header_is_ascii_json() {
        assert_eq!(warnings_header(&[]), None);
        let given = vec!["nodes[0].params.x: \"é\" \\ 🎤\n".to_string(), "b".into()];
        let header = warnings_header(&given).unwrap();
        assert!(
            header.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{header}"
        );
        let back: Vec<String> = serde_json::from_str(&header).unwrap();
        assert_eq!(back, given);
        let many: Vec<String> = (0..1000).map(|i| format!("warning {i}")).collect();
        let header = warnings_header(&many).unwrap();
        assert!(header.len() <= MAX_WARNINGS_BYTES + 100);
        let back: Vec<String> = serde_json::from_str(&header).unwrap();
        assert!(back.last().unwrap().contains("more warnings"));
    }
}
