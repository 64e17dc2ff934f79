use super::*;
use crate::launcher::config::ClusterConfig;

fn repo_file() -> ClusterConfig {
    ClusterConfig::parse("cluster.yaml", include_str!("../../../../cluster.yaml")).unwrap()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_repository_file_is_a_namespace_a_head_and_a_deployment_per_group() {
    let c = repo_file();
    let o = objects(&c);
    assert_eq!(
        kinds(&o),
        [
            "Namespace",
            "Service",
            "PersistentVolumeClaim",
            "Deployment",
            "Deployment",
            "Deployment"
        ]
    );
    assert_eq!(o[3]["metadata"]["name"], "demo-head");
    assert_eq!(o[3]["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(o[4]["metadata"]["name"], "demo-worker-cpu");
    assert_eq!(o[4]["spec"]["replicas"], 2);
    assert_eq!(o[5]["metadata"]["name"], "demo-worker-accel");
    assert_eq!(o[5]["spec"]["replicas"], 0);
    for d in &o[3..] {
        assert_eq!(d["metadata"]["namespace"], "prism");
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            d["spec"]["template"]["metadata"]["labels"]
        );
    }
    // QUIC is UDP; the dashboard TCP.
    let ports = &o[1]["spec"]["ports"];
    assert_eq!(ports[0]["protocol"], "UDP");
    assert_eq!(ports[0]["port"], 6379);
    assert_eq!(ports[1]["port"], 8265);
}

#[test]
fn nodes_get_the_files_resources_and_labels_and_pods_are_sized_to_them() {
    let c = repo_file();
    let o = objects(&c);
    let cpu = &o[4]["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&cpu["args"]);
    assert_eq!(args[..2], ["start", "--block"]);
    for want in [
        "--num-cpus",
        "--labels",
        "pool=cpu",
        "$(POD_IP)",
        "$(POD_NAME)",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    // 2 CPUs; 2G offered to tasks + 512M of object store.
    assert_eq!(cpu["resources"]["requests"]["cpu"], "2000m");
    assert_eq!(cpu["resources"]["limits"]["memory"], "2560Mi");
    let accel = strings(&o[5]["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(accel.contains(&r#"{"accel":1.0}"#.to_string()), "{accel:?}");
}

#[test]
fn gpus_become_nvidia_limits() {
    let c = ClusterConfig::parse(
        "c.yaml",
        "cluster_name: My_Cluster\nprovider: {type: local}\nworker_groups:\n  - {name: gpu_big, min: 1, max: 2, resources: {num_cpus: 8, num_gpus: 8, memory: 64G}, labels: {accelerator: h100}}\n",
    )
    .unwrap();
    let o = objects(&c);
    let d = &o[4];
    assert_eq!(d["metadata"]["name"], "my-cluster-worker-gpu-big");
    let r = &d["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(r["limits"]["nvidia.com/gpu"], "8");
    assert_eq!(r["limits"]["memory"], "64Gi");
    assert!(r["requests"].get("nvidia.com/gpu").is_none());
    let args = strings(&d["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(
        args.windows(2).any(|w| w == ["--num-gpus", "8"]),
        "{args:?}"
    );
}

#[test]
fn the_token_is_never_in_the_manifests_but_in_the_secret_they_name() {
    let c = repo_file();
    let yaml = manifests(&c, "cluster.yaml").unwrap();
    assert!(!yaml.contains("BEGIN"), "no key material");
    assert!(yaml.contains("secretKeyRef"));
    assert!(yaml.contains("demo-identity"));
    let id = prism::head::identity::ClusterIdentity::generate().unwrap();
    let s = secret(&c, &id);
    assert_eq!(s["metadata"]["name"], "demo-identity");
    assert_eq!(s["stringData"]["token"], id.token.to_string());
    // The head takes its identity from the mounted Secret; the token
    // reaches every container through its environment, not its arguments.
    let head = &objects(&c)[3]["spec"]["template"]["spec"]["containers"][0];
    assert!(strings(&head["args"]).contains(&"--identity".to_string()));
    assert!(!strings(&head["args"]).iter().any(|a| a.contains("token")));
}

#[test]
fn a_fixed_port_in_the_file_is_kept_and_port_0_becomes_6379() {
    let mut c = repo_file();
    assert_eq!(ports(&c), (6379, 8265));
    c.head.port = 7000;
    c.head.dashboard_port = Some(9000);
    let args = head_args(&c);
    assert!(args.windows(2).any(|w| w == ["--port", "7000"]));
    assert!(args.windows(2).any(|w| w == ["--dashboard-port", "9000"]));
    assert_eq!(args.iter().filter(|a| *a == "--port").count(), 1);
    assert!(head_address(&c).ends_with(".prism.svc.cluster.local:7000"));
}

#[test]
fn sizes_read_as_kubernetes_quantities() {
    assert_eq!(quantity(2 << 30), "2Gi");
    assert_eq!(quantity((2 << 30) + (512 << 20)), "2560Mi");
    assert_eq!(quantity(1000), "1000");
}

#[test]
fn a_bad_kubernetes_section_names_its_field() {
    let e = ClusterConfig::parse(
        "c.yaml",
        "cluster_name: t\nprovider: {type: local}\nkubernetes: {namespace: Team_A}\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("c.yaml: kubernetes.namespace:"),
        "{e}"
    );
    let e = ClusterConfig::parse(
        "c.yaml",
        "cluster_name: t\nprovider: {type: local}\nkubernetes: {head_storage: lots}\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("kubernetes.head_storage"), "{e}");
    let e = ClusterConfig::parse(
        "c.yaml",
        "cluster_name: t\nprovider: {type: local}\nkubernetes:\n  imagex: a\n",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("c.yaml:4:3: kubernetes: unknown field `imagex`"),
        "{e}"
    );
}
