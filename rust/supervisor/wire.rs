//! Framing of the control socket between the host and a node process: each message is
//! a little-endian u32 byte length followed by that many bytes of UTF-8 JSON. JSON
//! keeps the runner side (Python) trivial; the control plane carries a few messages
//! per node, never frames.

use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A message larger than this is a protocol error (a traceback is far smaller).
pub const MAX_MESSAGE: usize = 16 << 20;

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let body = serde_json::to_vec(message).expect("control messages always serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Collects bytes from a non-blocking stream and yields complete messages.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
}

/// What one `Reader::read` found.
pub struct Batch<T> {
    pub messages: Vec<T>,
    /// The peer closed its end (the process exited or closed the socket).
    pub closed: bool,
}

impl Reader {
    /// Reads everything available now and parses the complete messages in it.
    pub fn read<T: DeserializeOwned>(&mut self, stream: &mut impl Read) -> io::Result<Batch<T>> {
        let mut closed = false;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    closed = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let mut messages = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let len =
                u32::from_le_bytes(self.buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len > MAX_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("control message of {len} bytes exceeds {MAX_MESSAGE}"),
                ));
            }
            if self.buf.len() - at - 4 < len {
                break;
            }
            let body = &self.buf[at + 4..at + 4 + len];
            let message = serde_json::from_slice(body).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad control message: {e}"),
                )
            })?;
            messages.push(message);
            at += 4 + len;
        }
        self.buf.drain(..at);
        Ok(Batch { messages, closed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn messages_survive_arbitrary_chunking() {
        let messages = [
            json!({"type": "ready"}),
            json!({"type": "progress", "fraction": 0.5}),
        ];
        let bytes: Vec<u8> = messages.iter().flat_map(encode).collect();
        for split in 0..bytes.len() {
            let mut reader = Reader::default();
            let first: Batch<Value> = reader.read(&mut &bytes[..split]).unwrap();
            let second: Batch<Value> = reader.read(&mut &bytes[split..]).unwrap();
            let all: Vec<Value> = first.messages.into_iter().chain(second.messages).collect();
            assert_eq!(all, messages);
        }
    }

    #[test]
    fn oversized_and_malformed_messages_are_errors() {
        let mut reader = Reader::default();
        let huge = ((MAX_MESSAGE + 1) as u32).to_le_bytes();
        assert!(reader.read::<Value>(&mut &huge[..]).is_err());
        let mut reader = Reader::default();
        let mut bad = 3u32.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{{{");
        assert!(reader.read::<Value>(&mut &bad[..]).is_err());
    }
}
