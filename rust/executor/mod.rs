//! The executor: validated pipeline graphs and the sessions that run them.

pub mod graph;
pub mod native;
pub mod session;

pub use graph::{Connection, Graph, GraphDef, NodeDef, Placement, PortRef};
pub use session::{Output, Session, SessionConfig};
