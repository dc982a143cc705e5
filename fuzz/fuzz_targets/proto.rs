//! A hostile peer's bytes as DFS frames and messages: every decoder of dfs-proto, with its
//! size limits, and the promise that whatever decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dfs_proto::fuzzing::decode_any(data);
});
