//! Frame decoder fuzz target: `Header::decode` must never panic, and whatever it
//! accepts must be self-consistent (payload inside the buffer and within the cap, shape
//! agreeing with the payload, text valid UTF-8, the metadata block parsed and the
//! payload aligned) and survive a re-encode unchanged.
#![no_main]

#[allow(dead_code)]
#[path = "../../rust/frame.rs"]
mod frame;

use frame::{payload, Control, Header, Kind, PAYLOAD_ALIGN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the payload cap, so small caps get exercised too.
    let (cap, buf) = match data.split_first() {
        Some((&c, rest)) => (
            if c & 1 == 0 {
                usize::MAX
            } else {
                (c as usize) << 4
            },
            rest,
        ),
        None => (usize::MAX, data),
    };
    let Ok(header) = Header::decode(buf, cap) else {
        return;
    };
    let body = payload(buf, &header);
    assert_eq!(body.len() as u64, header.payload_len);
    assert!(body.len() <= cap && header.header_len() + body.len() <= buf.len());
    assert_eq!(header.header_len() % PAYLOAD_ALIGN, 0);
    assert!(header.validate().is_ok());
    if matches!(header.kind, Kind::Text | Kind::Json) {
        assert!(std::str::from_utf8(body).is_ok());
    }
    if header.kind == Kind::Control {
        assert!(Control::from_json(body).is_ok());
    }
    let mut again = header.to_bytes().to_vec();
    again.extend_from_slice(body);
    let decoded = Header::decode(&again, cap).expect("a re-encoded frame decodes");
    assert_eq!(decoded.to_bytes(), header.to_bytes());
});
