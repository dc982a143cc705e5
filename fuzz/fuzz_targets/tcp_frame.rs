//! A hostile tcp importer: arbitrary bytes as the stream an exporter receives, both from the
//! first byte (handshake) and after a valid import (frames, payloads, fetches).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmmc_nic::fuzzing::tcp_frames(data);
    vmmc_nic::fuzzing::tcp_frames_after_import(data);
});
