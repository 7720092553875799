//! iceoryx2 shared-memory channels (being written).
