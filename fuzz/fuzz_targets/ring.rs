//! A lying peer: arbitrary control words in a connection's header, interleaved with local
//! sends and receives, against the ring bookkeeping of vmmc-sockets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmmc_sockets::fuzzing::ring_ops(data);
});
