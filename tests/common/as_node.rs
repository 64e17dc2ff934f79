//! Speaking to the head with a real raylet's certificate, for tests that
//! check what the head answers a node (included with `#[path]`).

use prism::client::{ClientError, HeadClient};
use prism::proto::head::{HeadRequest, HeadResponse, PeerRole};
use prism::transport::quic::QuicEndpoint;
use prism::transport::tls::{ClientTrust, NodeIdentity};
use prism_test_support::Node;
use std::sync::Arc;

/// A raylet's certificate, read from its session directory.
pub fn identity_of(node: &Node) -> NodeIdentity {
    let read = |f: &str| std::fs::read_to_string(node.session.join(f)).unwrap();
    NodeIdentity {
        ca_pem: read("node-ca.pem"),
        cert_pem: read("node.pem"),
        key_pem: read("node.key"),
    }
}

/// Sends `requests` to `head` in order over one connection that shows
/// `node`'s certificate, and returns the answers.
pub fn requests_as(
    head: &Node,
    node: &Node,
    requests: &[HeadRequest],
) -> Vec<Result<HeadResponse, ClientError>> {
    let (addr, _) = head.cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ep = QuicEndpoint::client([127, 0, 0, 1].into()).unwrap();
        let trust = ClientTrust::Mutual(Arc::new(identity_of(node)));
        let client = HeadClient::connect(
            &ep,
            addr.parse().unwrap(),
            &trust,
            None,
            PeerRole::Raylet,
            &prism::Config::default(),
        )
        .await
        .unwrap();
        let mut answers = Vec::new();
        for r in requests {
            answers.push(client.request(r).await);
        }
        client.close();
        answers
    })
}
