//! The executor: validated pipeline graphs and the sessions that run them.
//!
//! It also re-exports the vocabulary of the layers below that its users (the gRPC
//! server, the Python glue) need to drive a session — settings, events, node status,
//! the interrupt check, received samples — so that they depend on the executor, not on
//! how it is built from channels and a supervisor.

pub mod cancel;
pub mod graph;
pub mod native;
pub mod remote;
pub mod session;

pub use crate::ipc::{ChannelConfig, Interrupt, Sample};
pub use crate::supervisor::{Event, ImportSpec, LaunchSpec, NodeStatus, SpawnMethod, Timing};
pub use graph::{Connection, Graph, GraphDef, NodeDef, Placement, PortRef};
pub use session::{Output, Session, SessionConfig};
