//! Arbitrary bytes on a store node's (and a client's) socket: the decoder must never panic, never
//! allocate beyond its frame cap, and whatever it accepts must re-encode to a frame that decodes the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use vesta_proto::frame::{Envelope, FrameCodec};
use vesta_proto::{Record, Request, Response};

fn check<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
{
    let mut codec: FrameCodec<T, T> = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if let Ok(Envelope { corr, body }) = frame {
            let mut out = BytesMut::new();
            codec.encode(Envelope { corr, body: body.clone() }, &mut out).expect("re-encode");
            let again = codec.decode(&mut out).expect("decode re-encoded").expect("a whole frame");
            assert_eq!(again, Ok(Envelope { corr, body }));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<Response>(data);
    let _ = Record::decode(data, true);
});
