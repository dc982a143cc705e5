//! Entry points for the `proto` fuzz target and its corpus replay.

use crate::codec;
use crate::frame::Frame;
use crate::msg::{ClientHello, ClientProof, Reply, Request, ServerChallenge, ServerVerdict};

/// Parses `data` as a frame and its meta part as every message type; whatever decodes must
/// encode back to the same bytes' meaning. Nothing may panic, whatever the input.
pub fn decode_any(data: &[u8]) {
    let meta = match Frame::parse(data) {
        Ok(Some(f)) => f.meta,
        // Not a whole frame: try the bytes as a bare meta part.
        _ => data,
    };
    roundtrip::<Request>(meta);
    roundtrip::<Reply>(meta);
    roundtrip::<ClientHello>(meta);
    roundtrip::<ServerChallenge>(meta);
    roundtrip::<ClientProof>(meta);
    roundtrip::<ServerVerdict>(meta);
}

fn roundtrip<T>(meta: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = codec::decode::<T>(meta) {
        let again = codec::encode_to_vec(&v);
        assert!(again.is_ok(), "a decoded message must encode");
        if let Ok(bytes) = again {
            let back = codec::decode::<T>(&bytes);
            assert!(back.as_ref() == Ok(&v), "round trip changed {v:?}");
        }
    }
}
