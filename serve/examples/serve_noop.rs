//! The no-op application the serving figures are measured on: an embedded
//! cluster, `replicas` no-op replicas behind the HTTP proxy, its URL
//! printed; serves until Ctrl-C.
//!
//!     cargo run --release -p prism-serve --example serve_noop -- [replicas] [port]
//!     wrk -t2 -c16 -d10s http://127.0.0.1:8000/noop

use prism_serve::{Application, Deployment, Model};

/// Answers every request with the same 5 bytes.
struct Noop;

impl Model for Noop {
    type Request = Vec<u8>;
    type Response = Vec<u8>;
    fn new(_config: &serde_json::Value) -> Result<Self, String> {
        Ok(Noop)
    }
    async fn call(&self, _req: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(b"hello".to_vec())
    }
}
prism_serve::model!(Noop);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let replicas: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let port: u16 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8000);
    let _cluster = prism::InitOptions::new()
        .num_cpus(replicas as f64 + 1.0)
        .init()?;
    let url = prism_serve::start("127.0.0.1", port)?;
    prism_serve::run(
        Application::new("noop").deployment(
            Deployment::new::<Noop>("noop")
                .replicas(replicas)
                .max_ongoing_requests(64)
                .max_queued_requests(1024)
                .route_prefix("/noop"),
        ),
    )?;
    println!("serving {replicas} no-op replica(s) at {url}/noop");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        let _ = tx.send(());
    });
    let _ = rx.recv();
    prism_serve::shutdown()?;
    Ok(())
}
