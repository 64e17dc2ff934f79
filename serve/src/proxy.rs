//! The HTTP ingress: an actor whose process serves HTTP/1.1 (axum on
//! hyper) on the serve runtime and routes each request by path prefix to a
//! deployment's router. Answers: 200 with the model's bytes; 400 for a body
//! the model cannot decode; 404 for no route; 413 past the body limit; 500
//! for a model error; 503 with `Retry-After` when overloaded or without
//! replicas; 504 past the request timeout. Every answer carries an
//! `x-request-id` (the caller's, or a new one).

use crate::client::{self, Routes};
use crate::metrics::Metrics;
use crate::ServeError;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Where the proxy listens.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct ProxySpec {
    /// Interface to bind.
    pub host: String,
    /// Port (0: any free one).
    pub port: u16,
}

/// The largest request body the proxy accepts.
pub const MAX_BODY: usize = 64 << 20;

/// The HTTP ingress actor.
#[prism::actor]
pub struct Proxy {
    addr: String,
    stop: Arc<Notify>,
    server: RefCell<Option<tokio::task::JoinHandle<()>>>,
}

#[prism::actor]
impl Proxy {
    fn new(spec: ProxySpec) -> Self {
        let listener =
            std::net::TcpListener::bind((spec.host.as_str(), spec.port)).unwrap_or_else(|e| {
                panic!(
                    "the HTTP proxy cannot listen on {}:{}: {e}",
                    spec.host, spec.port
                )
            });
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let routes = client::routes();
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let server = client::runtime().spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("the HTTP proxy's listener: {e}");
                    return;
                }
            };
            let app = axum::Router::new()
                .fallback(handle)
                .with_state(Arc::new(Ingress {
                    routes,
                    ids: AtomicU64::new(0),
                    metrics: Metrics::new(),
                }));
            // Graceful: on `drain`, stop accepting and finish what is in flight.
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.notified().await });
            if let Err(e) = serve.await {
                tracing::error!("the HTTP proxy stopped: {e}");
            }
        });
        Proxy {
            addr,
            stop,
            server: RefCell::new(Some(server)),
        }
    }

    /// `host:port` it serves on.
    async fn address(&self) -> Result<String, String> {
        Ok(self.addr.clone())
    }

    /// Its process.
    async fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Stops accepting connections and waits (at most 30 s) for the
    /// requests in flight to be answered.
    async fn drain(&self) -> bool {
        self.stop.notify_one();
        let server = self.server.borrow_mut().take();
        match server {
            Some(h) => tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .is_ok(),
            None => true,
        }
    }
}

struct Ingress {
    routes: Arc<Routes>,
    ids: AtomicU64,
    metrics: Metrics,
}

async fn handle(State(s): State<Arc<Ingress>>, req: Request) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{:x}-{}",
                std::process::id(),
                s.ids.fetch_add(1, Ordering::Relaxed)
            )
        });
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let (deployment, mut resp) = route(&s, &path, req).await;
    if let Some((d, v)) = deployment {
        s.metrics
            .answered(&d, &v, resp.status().as_u16(), start.elapsed());
        if let Some(v) = Some(&v)
            .filter(|v| !v.is_empty())
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            resp.headers_mut().insert("x-prism-version", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Answers one request; names the deployment and version it went to, if any.
async fn route(s: &Ingress, path: &str, req: Request) -> (Option<(String, String)>, Response) {
    match path {
        "/-/healthz" => return (None, (StatusCode::OK, "ok").into_response()),
        "/-/routes" => {
            let table: serde_json::Map<String, serde_json::Value> = s
                .routes
                .prefixes()
                .into_iter()
                .map(|(p, d, _)| (p, serde_json::Value::String(d)))
                .collect();
            return (None, axum::Json(table).into_response());
        }
        "/-/metrics" => {
            let now: Vec<(String, usize, u32)> = s
                .routes
                .known()
                .into_iter()
                .filter_map(|d| s.routes.router(&d).map(|r| (d, r.replicas(), r.queued())))
                .collect();
            let text = s.metrics.encode(&now);
            let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            return (None, ([(header::CONTENT_TYPE, ct)], text).into_response());
        }
        _ => {}
    }
    let Some((deployment, content_type)) = s.routes.match_path(path) else {
        let known: Vec<String> = s.routes.prefixes().into_iter().map(|(p, _, _)| p).collect();
        let msg = format!("no application serves {path} (routes: {known:?})\n");
        return (None, (StatusCode::NOT_FOUND, msg).into_response());
    };
    let key = s.routes.sticky_header(&deployment).and_then(|h| {
        req.headers()
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let body: Bytes = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("the request body could not be read (limit {MAX_BODY} bytes): {e}\n");
            return (
                Some((deployment, String::new())),
                (StatusCode::PAYLOAD_TOO_LARGE, msg).into_response(),
            );
        }
    };
    let Some(router) = s.routes.router(&deployment) else {
        let e = ServeError::NoDeployment {
            name: deployment.clone(),
            known: s.routes.known(),
        };
        return (Some((deployment, String::new())), error(e));
    };
    let (answer, version) = s
        .routes
        .call(&deployment, router, body.to_vec(), key.as_deref())
        .await;
    let resp = match answer {
        Ok(bytes) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(bytes))
            .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
        Err(e) => error(e),
    };
    (Some((deployment, version)), resp)
}

fn error(e: ServeError) -> Response {
    let status = e.http_status();
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        format!("{e}\n"),
    )
        .into_response();
    if status == 503 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
