//! Reclaiming what killed processes left behind in /dev/shm and /tmp/iceoryx2.

use std::collections::HashSet;
use std::path::PathBuf;

use iceoryx2::node::{NodeCleanupFailure, NodeView};
use iceoryx2::prelude::*;

use super::settings::{self, Svc};
use crate::error::{Error, Result};

/// Removes the resources of dead iceoryx2 nodes (processes that exited without dropping
/// their channels, e.g. killed with SIGKILL) and unregisters their ports from the services
/// they used, which wakes their peers (`Closed`). Then removes the event files of listeners
/// whose process has no node left (`remove_orphaned_listener_files`). Returns how
/// many nodes were reclaimed.
///
/// Also done by iceoryx2 whenever a node is created, so calling it is only needed in
/// long-running processes that create no new channels.
pub fn reclaim_dead() -> Result<usize> {
    let config = settings::config()?;
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
    remove_orphaned_listener_files(config);
    match failure {
        // Report the failure only if nothing could be done at all.
        Some(e) if reclaimed == 0 => Err(Error::ipc("removing a dead iceoryx2 node", e)),
        _ => Ok(reclaimed),
    }
}

/// Removes the files of listeners whose process has no iceoryx2 node any more: the
/// `*.event_mgmt` segment in /dev/shm and the `*.event` socket under iceoryx2's root.
///
/// iceoryx2's dead-node cleanup finds a port through the tag its node keeps for it. A
/// process killed between creating a listener's files and tagging it (or between removing
/// the tag and the files) leaves files no node knows about. Such a file is orphaned once no
/// node, alive or dead, belongs to the pid in the listener's id: files are listed *before*
/// nodes, and a process creates its node before any listener, so a live listener's node is
/// always seen. As a second guard (an iceoryx2 program using the same prefix with another
/// root path has nodes we do not list), a file some process still maps is kept: a listener
/// and its notifiers map the segment for as long as they live. Returns how many listeners'
/// files were removed.
pub(crate) fn remove_orphaned_listener_files(config: &Config) -> usize {
    // (segment, listener id) of every `<prefix>…_<listener id>.event_mgmt`.
    let candidates: Vec<(PathBuf, u128)> = settings::shm_files(config, ".event_mgmt")
        .into_iter()
        .filter_map(|(path, stem)| Some((path, stem.rsplit('_').next()?.parse().ok()?)))
        .collect();
    if candidates.is_empty() {
        return 0;
    }
    let Some(owners) = node_pids(config) else {
        return 0;
    };
    let ownerless: Vec<_> = candidates
        .into_iter()
        .filter(|(_, listener_id)| !owners.contains(&pid_of(*listener_id)))
        .collect();
    if ownerless.is_empty() {
        return 0;
    }
    let prefix = settings::prefix(config);
    let Some(mapped) = mapped_shm_files(&prefix) else {
        return 0;
    };
    let root =
        PathBuf::from(String::from_utf8_lossy(config.global.root_path().as_bytes()).as_ref());
    let socket_suffix =
        String::from_utf8_lossy(config.global.service.event_connection_suffix.as_bytes())
            .into_owned();
    let mut removed = 0;
    for (segment, listener_id) in ownerless {
        if mapped.contains(&segment) {
            continue;
        }
        // Either may already be gone (another process reclaiming at the same time).
        let _ = std::fs::remove_file(root.join(format!("{prefix}{listener_id}{socket_suffix}")));
        if std::fs::remove_file(&segment).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The /dev/shm files of this prefix that any process we can inspect has mapped, or `None`
/// if /proc cannot be read (then nothing is removed).
fn mapped_shm_files(prefix: &str) -> Option<HashSet<PathBuf>> {
    let needle = format!("/dev/shm/{prefix}");
    let mut mapped = HashSet::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // Processes that exit meanwhile, or that we may not inspect, are skipped.
        let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) else {
            continue;
        };
        for line in maps.lines() {
            if let Some(at) = line.find(&needle) {
                let path = line[at..].trim_end_matches(" (deleted)");
                mapped.insert(PathBuf::from(path));
            }
        }
    }
    Some(mapped)
}

/// The pids of every node of this prefix, or `None` if iceoryx2's ids do not carry the pid
/// where [`pid_of`] reads it (then nothing can be told orphaned, and nothing is removed).
fn node_pids(config: &Config) -> Option<HashSet<u32>> {
    let mut pids = HashSet::new();
    let mut layout_ok = true;
    let listed = Node::<Svc>::list(config, |state| {
        let id = match &state {
            NodeState::Alive(view) => *view.id(),
            NodeState::Dead(view) => *view.id(),
            NodeState::Inaccessible(id) | NodeState::Undefined(id) => *id,
        };
        let pid = pid_of(id.value());
        match id.pid::<Svc>() {
            Ok(official) if official.value() as u32 == pid => {}
            _ => layout_ok = false,
        }
        pids.insert(pid);
        CallbackProgression::Continue
    });
    (listed.is_ok() && layout_ok).then_some(pids)
}

/// The creating pid inside an iceoryx2 unique id (node and port ids are all
/// `UniqueSystemId`s: seconds, nanoseconds, pid, counter as little-endian `u32`s).
/// [`node_pids`] checks this against iceoryx2's own `UniqueNodeId::pid` for every node.
pub(crate) fn pid_of(id: u128) -> u32 {
    (id >> 64) as u32
}
