//! The head's one way to reach a raylet: a request on the raylet's peer
//! endpoint with the head's node certificate, through
//! [`crate::transport::rpc::call`], over one cached connection per raylet,
//! bounded by one timeout (`PRISM_RAYLET_RPC_TIMEOUT_MS`). Bundle
//! operations, actor restarts and state listings all go through it.

use crate::proto::codec::{Decode, Encode};
use crate::transport::rpc::{call, read_msg, write_msg};
use crate::transport::tls::ClientTrust;
use crate::transport::{BoxConn, Endpoint};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The largest answer accepted from a raylet (a listing of its tasks).
const MAX_ANSWER: usize = 64 << 20;

/// Dials raylets for the head.
#[derive(Debug)]
pub struct RayletDialer {
    endpoint: Arc<dyn Endpoint>,
    trust: ClientTrust,
    timeout: Duration,
    conns: tokio::sync::Mutex<HashMap<SocketAddr, BoxConn>>,
}

impl RayletDialer {
    /// Calls go out from `endpoint` with `trust`, each bounded by `timeout`.
    pub fn new(endpoint: Arc<dyn Endpoint>, trust: ClientTrust, timeout: Duration) -> Arc<Self> {
        Arc::new(RayletDialer {
            endpoint,
            trust,
            timeout,
            conns: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// One request to the raylet at `addr` and its answer, within the
    /// timeout. A cached connection that fails is dropped and the request
    /// tried once more on a fresh one.
    pub async fn call<Req: Encode, Resp: Decode>(
        &self,
        addr: &str,
        req: &Req,
    ) -> Result<Resp, String> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad raylet address {addr:?}: {e}"))?;
        let attempt = async {
            let mut last = String::new();
            for _ in 0..2 {
                let conn = self.connect(sock).await?;
                match call::<Req, Resp>(&*conn, req, MAX_ANSWER).await {
                    Ok(r) => return Ok(r),
                    Err(e) => {
                        last = e.to_string();
                        self.conns.lock().await.remove(&sock);
                    }
                }
            }
            Err(last)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                self.conns.lock().await.remove(&sock);
                Err(format!("no answer from {sock} in {:?}", self.timeout))
            }
        }
    }

    /// Sends `req` (reaching the raylet and writing the request bounded by
    /// the timeout) and waits for the answer however long the work takes:
    /// an actor's restart answers when its constructor has run.
    pub async fn call_until_done<Req: Encode, Resp: Decode>(
        &self,
        addr: &str,
        req: &Req,
    ) -> Result<Resp, String> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad raylet address {addr:?}: {e}"))?;
        let send = async {
            let conn = self.connect(sock).await?;
            let (mut s, r) = conn.open_bi().await.map_err(|e| e.to_string())?;
            write_msg(&mut s, req).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(r)
        };
        let mut r = match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.conns.lock().await.remove(&sock);
                return Err(e);
            }
            Err(_) => {
                self.conns.lock().await.remove(&sock);
                return Err(format!("no answer from {sock} in {:?}", self.timeout));
            }
        };
        read_msg::<Resp, _>(&mut r, MAX_ANSWER)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the raylet closed the stream".to_string())
    }

    /// The cached connection, or a new one. The cache is not held while
    /// dialling: a raylet that does not answer delays no call to another.
    async fn connect(&self, sock: SocketAddr) -> Result<BoxConn, String> {
        if let Some(c) = self.conns.lock().await.get(&sock) {
            return Ok(c.clone());
        }
        let c = self
            .endpoint
            .connect(sock, &self.trust)
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.conns.lock().await.entry(sock).or_insert(c).clone())
    }
}
