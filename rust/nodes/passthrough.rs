//! `PassThrough`: emits every frame unchanged, of any kind. Useful as a placeholder in a
//! manifest and to measure what a native hop costs.

use serde_json::{json, Value};

use super::params::Params;
use super::{check_payload, NativeNode, NodeInfo, OutFrame};
use crate::error::Result;
use crate::frame::Header;

pub const NODE_TYPE: &str = "PassThrough";

pub fn info() -> NodeInfo {
    NodeInfo {
        node_type: NODE_TYPE,
        create: |params| Ok(Box::new(PassThrough::from_params(params)?)),
        accepts: None,
        emits: None,
        description: "Emits every frame unchanged, of any kind.",
        params_schema: json!({"type": "object", "additionalProperties": false, "properties": {}}),
    }
}

#[derive(Debug, Default)]
pub struct PassThrough;

impl PassThrough {
    pub fn from_params(params: &Value) -> Result<Self> {
        Params::new(NODE_TYPE, params, &[])?;
        Ok(PassThrough)
    }
}

impl NativeNode for PassThrough {
    fn node_type(&self) -> &'static str {
        NODE_TYPE
    }

    fn process(&mut self, header: &Header, payload: &[u8], out: &mut Vec<OutFrame>) -> Result<()> {
        check_payload(NODE_TYPE, header, payload)?;
        out.push(OutFrame {
            header: header.clone(),
            payload: payload.to_vec(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{DType, Kind, PixelFormat, FLAG_END_OF_STREAM};

    #[test]
    fn every_kind_comes_out_as_it_went_in() {
        let mut node = PassThrough;
        let mut audio = Header::audio(DType::I16, 2, 1, 8_000).unwrap();
        audio.sequence = 41;
        audio.timestamp_ns = 12;
        audio.meta.metadata.insert("k".into(), "v".into());
        audio.meta.metadata_json = Some("{}".into());
        let frames = [
            (audio, vec![1, 2, 3, 4]),
            (Header::video(PixelFormat::Gray, 2, 1).unwrap(), vec![9, 8]),
            (Header::bytes_like(Kind::Text, 2).unwrap(), b"ok".to_vec()),
            (
                Header::new(Kind::Tensor, DType::F64, &[1]).unwrap(),
                vec![0; 8],
            ),
        ];
        let mut out = Vec::new();
        for (header, payload) in &frames {
            node.process(header, payload, &mut out).unwrap();
        }
        node.flush(&mut out).unwrap();
        assert_eq!(out.len(), frames.len());
        for (got, (header, payload)) in out.iter().zip(&frames) {
            assert_eq!((&got.header, &got.payload), (header, payload));
        }
    }

    #[test]
    fn end_of_stream_is_not_data() {
        let mut eos = Header::bytes_like(Kind::Bytes, 0).unwrap();
        eos.flags = FLAG_END_OF_STREAM;
        let mut out = Vec::new();
        PassThrough.handle(&eos, &[], &mut out).unwrap();
        assert!(out.is_empty());
    }
}
