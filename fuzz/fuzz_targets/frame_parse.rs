//! Untrusted bytes from a port: the frame parser must return a parsed frame or an
//! error for any input, never panic (it runs in the poll loop with `panic = abort`
//! semantics in mind).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vswitch::wire::parse(data);
});
