//! The process's iceoryx2 node: created lazily, shared by all channels, fork-safe.
//!
//! Fork safety (see `fork.rs`): the weak reference to the node is kept per fork
//! generation, so a forked child creates its own node on first use; a node inherited
//! through `fork` (held by inherited channel ends) is never dropped in the child, since
//! dropping it would unregister the parent's node and delete its files.

use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use iceoryx2::prelude::*;

use super::settings::{self, Svc};
use crate::error::{Error, Result};
use crate::fork::{Generation, PerProcess};

/// The node plus the fork generation that created it.
///
/// `Node` is `Send` but not `Sync`, hence the mutex. Ports keep their own reference to the
/// node's shared state, so the lock is only taken while creating services.
pub(crate) struct ProcessNode {
    generation: Generation,
    node: ManuallyDrop<Mutex<Node<Svc>>>,
}

impl ProcessNode {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Node<Svc>> {
        self.node.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        // In a forked child this memory is a copy of the parent's node: dropping it would
        // delete the parent's node files. Leak it instead.
        if self.generation.is_current() {
            // SAFETY: dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.node) };
        }
    }
}

/// Weak so that the node (and its files under /tmp/iceoryx2/nodes) goes away with the last
/// channel instead of lingering until process exit. One per fork generation.
static CURRENT: PerProcess<Mutex<Option<Weak<ProcessNode>>>> = PerProcess::new();

/// Returns the node of this process, creating it if there is none (none yet, all its
/// channels are gone, or we are a forked child, e.g. of a zygote or of a Python host).
pub(crate) fn process_node() -> Result<Arc<ProcessNode>> {
    let mut current = CURRENT.get().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(node) = current.as_ref().and_then(Weak::upgrade) {
        return Ok(node);
    }
    let config = settings::config()?;
    let name = NodeName::new("zerohop").map_err(|e| Error::ipc("naming the iceoryx2 node", e))?;
    let node = NodeBuilder::new()
        .name(&name)
        .config(config)
        // iceoryx2 must not install SIGINT/SIGTERM handlers: Python owns signals.
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .map_err(|e| Error::ipc("creating the iceoryx2 node", e))?;
    restrict_global_segment(config);
    // iceoryx2 has just reclaimed the dead nodes it knows about; what it cannot attribute
    // to any node goes now too, so a host killed mid-close leaves nothing for long.
    super::cleanup::remove_orphaned_listener_files(config);
    let node = Arc::new(ProcessNode {
        generation: Generation::now(),
        node: ManuallyDrop::new(Mutex::new(node)),
    });
    *current = Some(Arc::downgrade(&node));
    Ok(node)
}

/// iceoryx2 creates its global management segment (a node counter, one per prefix)
/// readable and writable by every user; everything else it creates is owner-only. Other
/// users have no business with our channels, and a world-writable counter lets them
/// disturb node creation: make it owner-only too (if it is ours to change).
fn restrict_global_segment(config: &Config) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: plain syscall.
    let uid = unsafe { libc::geteuid() };
    for (path, _) in settings::shm_files(config, ".global_mgmt") {
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.uid() == uid && meta.mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}
