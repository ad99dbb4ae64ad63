//! `NodeConnection` against a minimal node on a real socket: a request too large for one frame fails
//! alone, before it is sent, and the connection — with every other call on it — stays up.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::codec::{FramedRead, FramedWrite};
use vesta_proto::client::{ClientError, NodeConnection};
use vesta_proto::frame::{Envelope, FrameCodec};
use vesta_proto::{Commit, KeyRef, Record, Reply, Request, RequestId, Response, Status};

const MAX_FRAME: usize = 4096;

/// A node that answers every request `Ok` and, like a store node, closes the connection on a frame
/// longer than `MAX_FRAME`. Returns its address.
async fn node() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (rd, wr) = stream.into_split();
                let mut frames = FramedRead::new(rd, FrameCodec::<Response, Request>::new(MAX_FRAME));
                let mut sink = FramedWrite::new(wr, FrameCodec::<Response, Request>::new(MAX_FRAME));
                while let Some(Ok(Ok(Envelope { corr, .. }))) = frames.next().await {
                    let reply = Envelope { corr, body: Response::Reply(Reply::status(Status::Ok)) };
                    if sink.send(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn commit(value_len: usize) -> Request {
    Request::Commit(Commit {
        req: RequestId(1),
        target: KeyRef { shard: 0, namespace: Bytes::from_static(b"0"), key: Bytes::from_static(b"k") },
        record: Record { value: vec![b'v'; value_len].into(), ..Default::default() },
        keep_writer: false,
    })
}

#[tokio::test]
async fn an_oversized_request_fails_alone_and_the_connection_stays_up() {
    let stream = tokio::net::TcpStream::connect(node().await).await.unwrap();
    let conn = NodeConnection::from_stream_with_max_frame(stream, MAX_FRAME);

    // Small calls in flight around the oversized one.
    let small: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn({
                let conn = conn.clone();
                async move { conn.call(commit(100)).await }
            })
        })
        .collect();
    match conn.call(commit(MAX_FRAME)).await {
        Err(ClientError::TooLarge { len, max }) => {
            assert!(len > MAX_FRAME, "{len}");
            assert_eq!(max, MAX_FRAME);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    for call in small {
        let reply = call.await.unwrap().expect("a small call on the same connection");
        assert_eq!(reply.status(), Status::Ok);
    }
    assert!(!conn.is_closed());
    assert_eq!(conn.call(Request::Ping).await.expect("still up").status(), Status::Ok);

    // The largest request that fits goes through.
    let mut len = MAX_FRAME;
    while vesta_proto::frame::frame_len(&commit(len)).unwrap() > MAX_FRAME {
        len -= 1;
    }
    assert_eq!(conn.call(commit(len)).await.expect("fits exactly").status(), Status::Ok);
    assert!(matches!(conn.call(commit(len + 1)).await, Err(ClientError::TooLarge { .. })));
    assert_eq!(conn.call(Request::Ping).await.expect("still up").status(), Status::Ok);
}

/// Both sides over a byte stream that is not a socket (as a TLS session would be): calls in flight at
/// once are answered, each to its caller, out of order.
#[tokio::test]
async fn a_connection_runs_over_any_byte_stream() {
    let (client_io, node_io) = tokio::io::duplex(64 * 1024);
    let (mut frames, replies, writer) = vesta_proto::serve::split_io(node_io, MAX_FRAME);
    tokio::spawn(async move {
        while let Some(Ok(Ok(Envelope { corr, body }))) = frames.next().await {
            let replies = replies.clone();
            tokio::spawn(async move {
                // The first request is answered last.
                if let Request::TrimLog(t) = &body {
                    tokio::time::sleep(std::time::Duration::from_millis(10 * (3 - t.through))).await;
                }
                let message = format!("{body:?}");
                let _ = replies.send(Envelope { corr, body: Response::Reply(Reply::error(Status::Ok, message)) });
            });
        }
        let _ = writer.finish(replies).await;
    });
    let conn = NodeConnection::from_io(client_io, MAX_FRAME);
    let calls = (0..3u64).map(|through| {
        let conn = conn.clone();
        async move { conn.call(Request::TrimLog(vesta_proto::TrimLog { shard: 1, through })).await.unwrap() }
    });
    let answers = futures::future::join_all(calls).await;
    for (through, answer) in answers.into_iter().enumerate() {
        let Response::Reply(r) = answer else { panic!("{answer:?}") };
        assert!(r.message.contains(&format!("through: {through}")), "{r:?}");
    }
}

/// A node that answers each key operation with its key (in the reply's message), a batch item by item
/// — or, like a node of an older version, refuses a batch as a bad request. Counts the frames it got.
async fn echo_node(refuses_batches: bool) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frames_seen = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = frames_seen.clone();
    fn echo(request: &Request) -> Response {
        match request {
            Request::Abort(a) => Response::Reply(Reply::error(Status::Ok, String::from_utf8_lossy(&a.target.key))),
            other => Response::Reply(Reply::error(Status::BadRequest, other.kind())),
        }
    }
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (rd, wr) = stream.into_split();
        let mut frames = FramedRead::new(rd, FrameCodec::<Response, Request>::new(MAX_FRAME));
        let mut sink = FramedWrite::new(wr, FrameCodec::<Response, Request>::new(MAX_FRAME));
        while let Some(Ok(Ok(Envelope { corr, body }))) = frames.next().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let body = match body {
                Request::Batch(_) if refuses_batches => {
                    Response::Reply(Reply::error(Status::BadRequest, "unknown variant"))
                }
                Request::Batch(items) => Response::Batch(items.iter().map(echo).collect()),
                one => echo(&one),
            };
            if sink.send(Envelope { corr, body }).await.is_err() {
                return;
            }
        }
    });
    (addr, frames_seen)
}

fn abort(key: String) -> Request {
    Request::Abort(vesta_proto::Abort {
        req: RequestId(1),
        target: KeyRef { shard: 0, namespace: Bytes::from_static(b"0"), key: key.into() },
    })
}

/// Concurrent calls queued together travel as one batch frame, and each caller gets its own answer; a
/// node that refuses a batch gets every later call alone.
#[tokio::test]
async fn concurrent_calls_travel_as_batches_with_an_answer_each() {
    use std::sync::atomic::Ordering;
    let calls = |conn: NodeConnection| async move {
        let calls = (0..200).map(|i| {
            let conn = conn.clone();
            async move { conn.call(abort(format!("k{i}"))).await.ok().map(|r| r.status()) }
        });
        futures::future::join_all(calls).await
    };
    let (addr, frames) = echo_node(false).await;
    let conn =
        NodeConnection::from_stream_with_max_frame(tokio::net::TcpStream::connect(addr).await.unwrap(), MAX_FRAME);
    let each: Vec<_> = (0..200)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.call(abort(format!("k{i}"))).await })
        })
        .collect();
    for (i, answer) in each.into_iter().enumerate() {
        match answer.await.unwrap().unwrap() {
            Response::Reply(r) => assert_eq!((r.status, r.message), (Status::Ok, format!("k{i}"))),
            other => panic!("{other:?}"),
        }
    }
    assert!(frames.load(Ordering::SeqCst) < 200, "{} frames for 200 calls", frames.load(Ordering::SeqCst));

    let (addr, frames) = echo_node(true).await;
    let conn =
        NodeConnection::from_stream_with_max_frame(tokio::net::TcpStream::connect(addr).await.unwrap(), MAX_FRAME);
    let first = calls(conn.clone()).await;
    assert!(first.contains(&Some(Status::BadRequest)), "the refused batch's calls hear the refusal");
    let before = frames.load(Ordering::SeqCst);
    assert_eq!(calls(conn).await, vec![Some(Status::Ok); 200], "after a refusal, every call alone");
    assert_eq!(frames.load(Ordering::SeqCst) - before, 200);
}
