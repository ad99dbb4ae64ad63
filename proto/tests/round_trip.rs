//! Every protocol message survives encode → frame → decode unchanged, and no byte string makes the
//! decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use vesta_proto::frame::{decode_body, Envelope, FrameCodec};
use vesta_proto::*;

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_meta() -> impl Strategy<Value = Meta> {
    (any::<[u64; 4]>(), any::<u32>(), any::<u128>(), any::<u8>(), any::<u32>()).prop_map(
        |([version, created_at, expires_at, hlc], origin, w, flags, key_id)| Meta {
            version,
            created_at,
            expires_at,
            hlc,
            origin,
            last_writer: RequestId(w),
            flags: Flags(flags),
            key_id,
        },
    )
}

fn arb_record() -> impl Strategy<Value = Record> {
    (arb_meta(), arb_bytes(64)).prop_map(|(meta, value)| Record::new(meta, value))
}

fn arb_target() -> impl Strategy<Value = KeyRef> {
    (any::<u32>(), arb_bytes(8), arb_bytes(32)).prop_map(|(shard, namespace, key)| KeyRef { shard, namespace, key })
}

fn arb_req() -> impl Strategy<Value = RequestId> {
    any::<u128>().prop_map(RequestId)
}

fn arb_condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        Just(Condition::Absent),
        Just(Condition::Present),
        arb_bytes(16).prop_map(Condition::ValueEquals),
        any::<u64>().prop_map(Condition::VersionEquals),
    ]
}

fn arb_kind() -> impl Strategy<Value = PrepareKind> {
    prop_oneof![
        Just(PrepareKind::Create),
        Just(PrepareKind::Update),
        Just(PrepareKind::Set),
        Just(PrepareKind::Delete),
        Just(PrepareKind::ReadModifyWrite),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (arb_req(), arb_target(), arb_kind(), proptest::option::of(arb_condition()), any::<bool>()).prop_map(
            |(req, target, kind, condition, want_value)| Request::Prepare(Prepare {
                req,
                target,
                kind,
                condition,
                want_value
            })
        ),
        (arb_req(), arb_target(), arb_record(), any::<bool>()).prop_map(|(req, target, record, keep_writer)| {
            Request::Commit(Commit { req, target, record, keep_writer })
        }),
        (arb_req(), arb_target()).prop_map(|(req, target)| Request::Abort(Abort { req, target })),
        (arb_target(), any::<bool>()).prop_map(|(target, want_value)| Request::Read(Read { target, want_value })),
        (arb_req(), arb_target(), arb_record()).prop_map(|(req, target, record)| Request::Repair(Repair {
            req,
            target,
            record
        })),
        (arb_req(), arb_target(), arb_meta()).prop_map(|(req, target, meta)| Request::MarkDelete(MarkDelete {
            req,
            target,
            meta
        })),
        (
            any::<(u32, u32, u32)>(),
            proptest::option::of(arb_bytes(40)),
            proptest::option::of(arb_bytes(8)),
            any::<(bool, bool)>()
        )
            .prop_map(|((shard_from, shard_to, limit), after, namespace, (include_dead, want_values))| {
                Request::Scan(Scan { shard_from, shard_to, after, limit, namespace, include_dead, want_values })
            }),
        Just(Request::Ping),
        Just(Request::Inventory),
        (any::<u32>(), proptest::option::of(arb_bytes(12)), any::<u32>(), ".{0,20}")
            .prop_map(|(shard, after, limit, target)| Request::Transfer(Transfer { shard, after, limit, target })),
        prop_oneof![
            Just(RebuildStep::Begin),
            any::<u32>().prop_map(RebuildStep::ClearShard),
            Just(RebuildStep::Finish)
        ]
        .prop_map(Request::Rebuild),
        (any::<u32>(), proptest::option::of(arb_bytes(40)), any::<(u64, u32)>()).prop_map(
            |(shard, after, (since_hlc, limit))| Request::ReadLog(ReadLog { shard, after, since_hlc, limit })
        ),
        any::<(u32, u64)>().prop_map(|(shard, through)| Request::TrimLog(TrimLog { shard, through })),
        proptest::collection::vec((any::<u32>(), proptest::option::of(arb_bytes(40)), any::<(u64, u32)>()), 0..4)
            .prop_map(|reads| Request::ReadLogs(
                reads
                    .into_iter()
                    .map(|(shard, after, (since_hlc, limit))| ReadLog { shard, after, since_hlc, limit })
                    .collect()
            )),
        (any::<(u32, u32, u64)>(), proptest::collection::vec((arb_bytes(8), arb_bytes(16), arb_record()), 0..4))
            .prop_map(|((from_origin, shard, through), entries)| Request::Replicate(Replicate {
                from_origin,
                shard,
                through,
                entries: entries
                    .into_iter()
                    .map(|(namespace, key, record)| LogEntry { namespace, key, record })
                    .collect(),
            })),
    ]
}

fn arb_status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        Just(Status::AlreadyDone),
        Just(Status::Absent),
        Just(Status::Exists),
        Just(Status::Locked),
        Just(Status::ConditionFailed),
        Just(Status::NoLease),
        Just(Status::NotOwner),
        Just(Status::BadRequest),
        Just(Status::Overloaded),
        Just(Status::Internal),
        Just(Status::NeedsRepair),
    ]
}

// `Response::Logs` carries a `Reply` per shard that could not be read; its size is the reply's own.
#[allow(clippy::result_large_err)]
fn arb_response() -> impl Strategy<Value = Response> {
    let entry = (any::<u32>(), arb_bytes(8), arb_bytes(16), arb_record())
        .prop_map(|(shard, namespace, key, record)| ScanEntry { shard, namespace, key, record });
    prop_oneof![
        (arb_status(), proptest::option::of(arb_record()), ".{0,20}", proptest::option::of(any::<(u64, u64)>()))
            .prop_map(|(status, copy, message, lease)| Response::Reply(Reply {
                status,
                copy,
                message,
                lease_ms: lease.map_or(0, |(ms, _)| ms),
                node_wall_ms: lease.map_or(0, |(_, wall)| wall),
            })),
        (proptest::collection::vec(entry, 0..5), proptest::option::of(arb_bytes(40)))
            .prop_map(|(entries, next)| Response::Scan(ScanPage { entries, next })),
        (".{0,12}", any::<u8>(), any::<u32>()).prop_map(|(node, protocol, shards)| Response::Pong(Pong {
            node,
            protocol,
            shards,
            map_version: shards as u64 * 3,
            redistribution: 5,
            handoff: 0,
            settled: protocol % 2 == 0,
            lease_ms: 600,
            needs_repair: (protocol % 3 == 0).then(|| "away 3d".to_string()),
            away_ms: shards as u64,
            grace_ms: 86_400_000,
            fenced: protocol % 3 == 0,
        })),
        (any::<u64>(), any::<u64>(), proptest::option::of(arb_bytes(12)))
            .prop_map(|(keys, bytes, next)| Response::Transferred(Transferred { keys, bytes, next })),
        proptest::collection::vec((any::<u32>(), any::<u64>()), 0..4).prop_map(Response::Inventory),
        (
            proptest::collection::vec((arb_bytes(8), arb_bytes(16), arb_record()), 0..4),
            proptest::option::of(arb_bytes(40)),
            any::<(u64, bool)>()
        )
            .prop_map(|(entries, next, (closed_hlc, more))| Response::Log(LogPage {
                entries: entries
                    .into_iter()
                    .map(|(namespace, key, record)| LogEntry { namespace, key, record })
                    .collect(),
                next,
                more,
                closed_hlc,
            })),
        proptest::collection::vec(
            prop_oneof![
                any::<u64>().prop_map(|closed_hlc| Ok(LogPage { closed_hlc, ..LogPage::default() })),
                ".{0,20}".prop_map(|m| Err(Reply::error(Status::NotOwner, m))),
            ],
            0..4
        )
        .prop_map(Response::Logs),
    ]
}

/// A batch of key operations (no nesting: only batchable requests travel in one), and its answer.
fn arb_batch() -> impl Strategy<Value = (Request, Response)> {
    (
        proptest::collection::vec(arb_request().prop_filter("batchable", Request::batchable), 0..6),
        proptest::collection::vec(arb_response(), 0..6),
    )
        .prop_map(|(requests, responses)| (Request::Batch(requests), Response::Batch(responses)))
}

proptest! {
    #[test]
    fn batches_round_trip(corr in any::<u64>(), (request, response) in arb_batch()) {
        let mut codec: FrameCodec<Request, Request> = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(Envelope { corr, body: request.clone() }, &mut buf).unwrap();
        prop_assert_eq!(codec.decode(&mut buf).unwrap().unwrap().unwrap(), Envelope { corr, body: request });
        let mut codec: FrameCodec<Response, Response> = FrameCodec::default();
        codec.encode(Envelope { corr, body: response.clone() }, &mut buf).unwrap();
        prop_assert_eq!(codec.decode(&mut buf).unwrap().unwrap().unwrap(), Envelope { corr, body: response });
    }

    #[test]
    fn requests_round_trip(corr in any::<u64>(), body in arb_request()) {
        let mut codec: FrameCodec<Request, Request> = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(Envelope { corr, body: body.clone() }, &mut buf).unwrap();
        let got = codec.decode(&mut buf).unwrap().unwrap().unwrap();
        prop_assert_eq!(got, Envelope { corr, body });
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn responses_round_trip(corr in any::<u64>(), bodies in proptest::collection::vec(arb_response(), 1..4)) {
        // Several frames back to back, split at an arbitrary point, decode in order.
        let mut codec: FrameCodec<Response, Response> = FrameCodec::default();
        let mut buf = BytesMut::new();
        for (i, body) in bodies.iter().enumerate() {
            codec.encode(Envelope { corr: corr.wrapping_add(i as u64), body: body.clone() }, &mut buf).unwrap();
        }
        let mut tail = buf.split_off(buf.len() / 2);
        let mut got = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).unwrap() { got.push(frame.unwrap().body); }
        buf.unsplit(std::mem::take(&mut tail));
        while let Some(frame) = codec.decode(&mut buf).unwrap() { got.push(frame.unwrap().body); }
        prop_assert_eq!(got, bodies);
    }

    #[test]
    fn arbitrary_bodies_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_body::<Request>(&raw);
        let _ = decode_body::<Response>(&raw);
        let mut codec: FrameCodec<Response, Request> = FrameCodec::new(1 << 16);
        let mut buf = BytesMut::from(&raw[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
}

#[test]
fn a_huge_declared_length_inside_a_message_does_not_allocate_it() {
    // A Commit whose value claims 2^60 bytes but carries 3: rejected, not reserved.
    let mut body = vec![vesta_proto::PROTOCOL_VERSION]; // version
    body.extend_from_slice(&7u64.to_be_bytes());
    body.push(1); // Request::Commit
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]);
    assert!(decode_body::<Request>(&body).is_err());
}
