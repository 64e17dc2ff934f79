//! Garbage, truncated, oversized and wrong-version frames sent to the head's
//! port: each gets a typed error and a dropped connection, and the head keeps
//! serving everyone else.

use prism::proto::codec::{self, HEADER_LEN};
use prism::proto::head::{HeadRequest, HeadResponse, PeerRole};
use prism::proto::PROTOCOL_VERSION;
use prism::token::JoinToken;
use prism::transport::quic::QuicEndpoint;
use prism::transport::rpc::read_msg;
use prism::transport::tls::ClientTrust;
use prism::transport::{BoxConn, Endpoint};
use prism_test_support::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

struct Probe {
    ep: QuicEndpoint,
    head: SocketAddr,
    trust: ClientTrust,
    token: JoinToken,
}

impl Probe {
    async fn conn(&self) -> BoxConn {
        self.ep
            .connect(self.head, &self.trust)
            .await
            .expect("QUIC connect")
    }

    /// Sends raw bytes as the connection's first stream; returns the head's
    /// reply (if any) and whether the head then closed the connection.
    async fn send_raw(&self, bytes: &[u8]) -> (Option<HeadResponse>, bool) {
        let conn = self.conn().await;
        let reply = self.raw_on(&conn, bytes).await;
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .is_ok();
        (reply, closed)
    }

    async fn raw_on(&self, conn: &BoxConn, bytes: &[u8]) -> Option<HeadResponse> {
        let (mut s, mut r) = conn.open_bi().await.ok()?;
        s.write_all(bytes).await.ok()?;
        s.shutdown().await.ok()?;
        read_msg::<HeadResponse, _>(&mut r, 1 << 20)
            .await
            .ok()
            .flatten()
    }
}

fn refusal(reply: &Option<HeadResponse>) -> String {
    match reply {
        Some(HeadResponse::Error { message, .. }) => message.clone(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn failure_garbage_and_truncated_frames_do_not_disturb_the_head() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let _a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let (addr, token) = head.cluster();
    let token: JoinToken = token.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let probe = Probe {
            ep: QuicEndpoint::client([127, 0, 0, 1].into()).unwrap(),
            head: addr.parse().unwrap(),
            trust: ClientTrust::Pinned {
                ca_fingerprint: token.ca_fingerprint.clone(),
            },
            token: token.clone(),
        };

        // Plain garbage.
        let (reply, closed) = probe.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(refusal(&reply).contains("bad frame magic"), "{reply:?}");
        assert!(closed);

        // A truncated frame: the header promises 100 bytes, 10 arrive.
        let mut frame = codec::header(100).to_vec();
        frame.extend_from_slice(&[7u8; 10]);
        let (reply, closed) = probe.send_raw(&frame).await;
        assert!(refusal(&reply).contains("truncated frame"), "{reply:?}");
        assert!(closed);

        // An oversized frame announcement.
        let (reply, closed) = probe.send_raw(&codec::header(u32::MAX)).await;
        assert!(refusal(&reply).contains("exceeds the maximum"), "{reply:?}");
        assert!(closed);

        // A valid header over bytes that are not an archive.
        let mut frame = codec::header(64).to_vec();
        frame.extend_from_slice(&[0xff; 64]);
        let (reply, closed) = probe.send_raw(&frame).await;
        assert!(refusal(&reply).contains("malformed message"), "{reply:?}");
        assert!(closed);

        // A peer from another protocol version.
        let hello = HeadRequest::Hello {
            version: PROTOCOL_VERSION,
            role: PeerRole::Client,
            token: Some(probe.token.secret.clone()),
        };
        let mut frame = codec::encode(&hello).unwrap();
        frame[2..4].copy_from_slice(&99u16.to_le_bytes());
        let (reply, closed) = probe.send_raw(&frame).await;
        assert!(refusal(&reply).contains("peer speaks v99"), "{reply:?}");
        assert!(closed);

        // Garbage after a good handshake drops that connection only.
        let conn = probe.conn().await;
        let welcome = probe.raw_on(&conn, &codec::encode(&hello).unwrap()).await;
        assert!(
            matches!(welcome, Some(HeadResponse::Welcome { .. })),
            "{welcome:?}"
        );
        let _ = probe.raw_on(&conn, &[0u8; HEADER_LEN + 3]).await;
        assert!(tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .is_ok());

        // Raw UDP datagrams that are not QUIC at all.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..200u32 {
            let junk: Vec<u8> = (0..(i % 1300)).map(|b| (b ^ i) as u8).collect();
            udp.send_to(&junk, &addr).unwrap();
        }
        probe.ep.close();
    });

    // The head still serves: status works and the raylet never missed a beat.
    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS * 3));
    let status = sb.status();
    assert_eq!(sb.nodes_in_state("alive").len(), 1, "{status:#}");
    assert_eq!(status["nodes"].as_array().unwrap().len(), 1);
    let log = head.log();
    assert!(log.contains("malformed first frame"), "{log}");
    assert!(
        log.contains("malformed frame; dropping the connection"),
        "{log}"
    );
    // A new raylet can still join.
    let _b = sb.start_raylet("b", &head, &["--num-cpus", "1"]);
    assert_eq!(sb.nodes_in_state("alive").len(), 2);
}
