//! Reclaiming what killed processes left behind in /dev/shm and /tmp/iceoryx2.

use iceoryx2::node::NodeCleanupFailure;
use iceoryx2::prelude::*;

use super::node::{self, Svc};
use crate::error::{Error, Result};

/// Removes the resources of dead iceoryx2 nodes (processes that exited without dropping
/// their channels, e.g. killed with SIGKILL) and unregisters their ports from the services
/// they used, which wakes their peers (`Closed`). Returns how many nodes were reclaimed.
///
/// Also done by iceoryx2 whenever a node is created, so calling it is only needed in
/// long-running processes that create no new channels.
pub fn reclaim_dead() -> Result<usize> {
    let config = node::config()?;
    let mut reclaimed = 0;
    let mut failure = None;
    Node::<Svc>::list(config, |state| {
        if let NodeState::Dead(dead) = state {
            match dead.try_remove_stale_resources() {
                Ok(()) => reclaimed += 1,
                // Someone else got there first: not ours to count, not an error.
                Err(NodeCleanupFailure::ResourcesAlreadyCleanedUp)
                | Err(NodeCleanupFailure::AnotherInstanceIsCleaningUpTheNode) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        CallbackProgression::Continue
    })
    .map_err(|e| Error::ipc("listing iceoryx2 nodes", e))?;
    match failure {
        // Report the failure only if nothing could be done at all.
        Some(e) if reclaimed == 0 => Err(Error::ipc("removing a dead iceoryx2 node", e)),
        _ => Ok(reclaimed),
    }
}
