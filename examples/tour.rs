//! The README's tour, as a program CI runs (`tests/readme_tour.rs`): each
//! `// readme:<name>` … `// readme:end` region below is one of the README's
//! code blocks, verbatim (less its indentation), and the test fails when
//! the two differ. Runs on an embedded cluster on any machine, GPU or not
//! (`cargo run --example tour`), or on the cluster at `PRISM_ADDRESS`.

fn main() -> prism::Result<()> {
    tour::main()
}

// Kept as the README shows it, column-aligned comments and all.
#[rustfmt::skip]
mod tour {
    use std::time::Duration;

    // readme:api
    #[prism::remote]
    fn square(x: u64) -> u64 {
        x * x
    }

    #[prism::remote]
    async fn fetch(url: String) -> Vec<u8> {
        url.into_bytes() // async fns too
    }

    pub fn main() -> prism::Result<()> {
        // No PRISM_ADDRESS: an embedded cluster (head + raylet in this process,
        // workers as subprocesses) that stops when `cluster` is dropped. Its node
        // may declare resources the machine lacks, so GPU code runs anywhere.
        // With PRISM_ADDRESS=host:port: joins that cluster's raylet on this machine.
        let cluster = prism::InitOptions::new()
            .num_cpus(4.0).num_gpus(1).resource("accel", 2.0)
            .init()?;

        let refs = (0..1000u64).map(square::remote).collect::<prism::Result<Vec<_>>>()?;
        let total: u64 = prism::get_all(&refs)?.into_iter().sum();
        assert_eq!(total, (0..1000u64).map(|x| x * x).sum::<u64>());

        let x = prism::put(&vec![1u64, 2, 3])?;              // into the object store
        let y = square::remote(&refs[3])?;                   // refs as arguments: resolved first
        let r = square::options()                            // per-call options
            .num_cpus(2.0).num_gpus(1.0).resource("accel", 1.0)
            .max_retries(0).retry_exceptions(true)
            .spread()                                        // or .node_affinity(id, soft) / .label_selector("zone=a")
            .name("big-square")
            .remote(7u64)?;
        let (ready, pending) = prism::wait(&refs, 10, Some(Duration::from_secs(1)))?;
        let v = r.get_timeout(Duration::from_secs(30))?;     // or r.get(), or r.await in async code
        let page = fetch::remote("https://example.com".to_string())?.get()?;
        prism::cancel(&y, /* force: kill the worker */ true)?;
        println!("{total} {v} {} ready, {} pending, {} bytes", ready.len(), pending.len(), page.len());
        match square::options().num_gpus(8.0).fail_if_infeasible().remote(1u64)?.get() {
            Err(prism::Error::Task(prism::TaskError::Infeasible { reason, .. })) => println!("{reason}"),
            other => panic!("8 GPUs on one node? {other:?}"),
        }
        assert_eq!(x.get()?, vec![1, 2, 3]);

        the_rest(&cluster)?;                                 // actors, groups, the store: below
        drop(cluster);
        println!("TOUR OK");
        Ok(())
    }
    // readme:end

    // readme:actor-class
    #[prism::actor]
    struct Counter { n: u64 }

    #[prism::actor]
    impl Counter {
        fn new(start: u64) -> Self { Counter { n: start } }
        fn add(&mut self, by: u64) -> u64 { self.n += by; self.n }
        async fn peek(&self) -> u64 { self.n }          // async &self methods may interleave
    }

    #[prism::remote]
    fn add_twice(c: prism::ActorHandle<Counter>) -> u64 {
        c.add(1u64).and_then(|r| r.get()).unwrap();      // handles travel into tasks and actors
        c.add(1u64).and_then(|r| r.get()).unwrap()
    }
    // readme:end

    fn the_rest(cluster: &prism::Cluster) -> prism::Result<()> {
        actors()?;
        placement_groups()?;
        serving().expect("the serving tour");
        if let Some(dir) = cluster.session_dir() {
            let ready: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("ready.json")).unwrap()).unwrap();
            let socket_path = std::path::Path::new(ready["store_socket"].as_str().unwrap());
            object_store(socket_path).expect("the store tour");
        }
        Ok(())
    }

    fn actors() -> prism::Result<()> {
        // readme:actors
        let c = Counter::options()
            .num_cpus(0.5).num_gpus(1.0)                    // held for the actor's lifetime
            .name("counter").namespace("app").detached()    // named; lives until killed
            .max_restarts(2).max_task_retries(1)            // constructor re-run on a new worker
            .max_concurrency(4)                             // up to 4 async &self calls at once
            .spawn(0u64)?;
        let five = c.add(5u64)?.get()?;                     // calls from one handle run in order
        let same: prism::ActorHandle<Counter> = prism::get_actor_in("app", "counter")?;
        let seven = add_twice::remote(same)?.get()?;
        assert_eq!((five, seven, c.peek()?.get()?), (5, 7, 7));
        prism::kill(&c, /* no_restart */ true)?;            // later calls: TaskError::ActorDied
        // readme:end
        Ok(())
    }

    #[prism::remote]
    fn train_step(batch: Vec<f32>) -> f32 {
        batch.iter().sum()
    }

    #[prism::actor]
    struct Worker;

    #[prism::actor]
    impl Worker {
        fn new() -> Self { Worker }
        fn node(&self) -> String { prism::node_id().map(|n| n.to_string()).unwrap_or_default() }
    }

    fn placement_groups() -> prism::Result<()> {
        // readme:pg
        use prism::{Bundle, PlacementGroup, PlacementStrategy};
        let pg = PlacementGroup::create(
            vec![Bundle::new().cpus(1.0).gpus(0.5); 2],     // 2 bundles, all or none
            PlacementStrategy::Pack,                        // SPREAD, STRICT_PACK, STRICT_SPREAD
        )?;
        pg.ready(Duration::from_secs(30))?;                 // Err says why: "infeasible: …" or "still pending after …: …"
        let r = train_step::options().placement_group(&pg, 0).remote(vec![0.5f32; 4])?;   // runs on bundle 0's resources
        let w = Worker::options().num_gpus(0.5).placement_group(&pg, 1).spawn()?;
        assert_eq!(r.get()?, 2.0);
        println!("worker on {}", w.node()?.get()?);
        pg.remove()?;                                       // frees every bundle, kills what runs inside
        // readme:end
        Ok(())
    }

    // readme:serve
    use prism_serve::{Application, Deployment, Json, Model};

    struct Doubler { by: f32 }                                // one per replica

    impl Model for Doubler {
        type Request = Json<Vec<f32>>;                        // or Vec<u8>, String
        type Response = Json<Vec<f32>>;
        fn new(config: &serde_json::Value) -> Result<Self, String> {   // load weights here
            Ok(Doubler { by: config["by"].as_f64().unwrap_or(2.0) as f32 })
        }
        async fn call(&self, Json(x): Json<Vec<f32>>) -> Result<Json<Vec<f32>>, String> {
            Ok(Json(x.iter().map(|v| v * self.by).collect()))
        }                                                     // or call_batch(Vec<Request>)
    }
    prism_serve::model!(Doubler);                              // replicas find it by name

    fn serving() -> Result<(), prism_serve::ServeError> {
        let url = prism_serve::start("127.0.0.1", 0)?;        // the HTTP proxy; 0: any free port
        prism_serve::run(Application::new("math").deployment(
            Deployment::new::<Doubler>("doubler")
                .replicas(2).num_cpus(0.5)                    // replica actors, spread over nodes
                .max_ongoing_requests(16)                     // per replica; then a queue; then HTTP 503
                .batching(8, Duration::from_millis(2))        // call_batch gets up to 8 requests
                .user_config(serde_json::json!({ "by": 3.0 }))
                .route_prefix("/double"),
        ))?;                                                  // curl -d '[1,2]' $url/double  →  [3.0,6.0]
        let doubler = prism_serve::get_handle::<Doubler>("doubler")?;   // typed calls, same router
        assert_eq!(doubler.call(Json(vec![1.0, 2.0]))?, Json(vec![3.0, 6.0]));
        println!("served at {url}/double");
        prism_serve::shutdown()                               // drains, then stops everything
    }
    // readme:end

    fn object_store(socket_path: &std::path::Path) -> Result<(), prism::object_store::ObjectError> {
        // readme:store
        use prism::object_store::{DType, StoreClient, TensorMeta};
        use std::time::Duration;

        // The socket path is in the node's session directory (ready.json: store_socket).
        let store = StoreClient::connect(socket_path)?;
        let id = store.put(b"hello")?;                               // one copy into shared memory
        let meta = TensorMeta::contiguous(DType::F32, &[2, 3]);
        let t = store.put_tensor(&meta, bytemuck::cast_slice(&[0.5f32; 6]))?;
        let view = store.get(t, Duration::from_secs(5))?;            // a view of the shared pages, no copy
        let floats: &[f32] = view.tensor()?.as_slice()?;
        let config = store.put_value(&("weights".to_string(), vec![1u64, 2, 3]))?;
        let object = store.get(config, Duration::from_secs(5))?;
        let archived = object.archived::<(String, Vec<u64>)>()?;    // rkyv, read in place
        assert_eq!((floats[5], archived.0.as_str(), archived.1.len()), (0.5, "weights", 3));
        drop(view);                                                  // releases the reference
        store.unpin(id)?;                                            // owner done: freed
        // readme:end
        Ok(())
    }
}
