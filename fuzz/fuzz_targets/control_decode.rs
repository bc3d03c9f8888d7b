//! Untrusted bytes from the control socket: `decode_request` must return a request or
//! an error reply for any line and never panic; a decoded request must survive a
//! serde round trip, and an error reply must encode as exactly one line (what the
//! daemon sends back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch_proto::{Response, decode_request, encode_response};

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(req) => {
            let line = serde_json::to_vec(&req).expect("a decoded request serialises");
            assert_eq!(decode_request(&line).ok(), Some(req));
        }
        Err((id, e)) => {
            let line = encode_response(&Response::err(id, e));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        }
    }
});
