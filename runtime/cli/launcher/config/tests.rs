use super::*;

const GOOD: &str = "cluster_name: demo
provider:
  type: local
head:
  port: 0
  resources: {num_cpus: 2}
worker_groups:
  - name: cpu
    min: 2
    max: 4
    resources: {num_cpus: 1, memory: 2G, custom: {accel: 1}}
    labels: {pool: cpu}
";

fn err(text: &str) -> String {
    ClusterConfig::parse("cluster.yaml", text)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_good_file_parses_with_defaults() {
    let c = ClusterConfig::parse("cluster.yaml", GOOD).unwrap();
    assert_eq!(c.cluster_name, "demo");
    assert_eq!(c.provider, Provider::Local);
    assert_eq!(
        c.worker_groups[0].resources.memory,
        Some(Bytes::Text("2G".into()))
    );
    assert_eq!(c.autoscaler.idle_timeout_s, 60);
}

#[test]
fn the_repositorys_cluster_yaml_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.yaml");
    ClusterConfig::load(&path).unwrap();
}

#[test]
fn a_wrong_type_names_file_line_column_and_field() {
    let text = GOOD.replace("max: 4", "max: ten");
    assert_eq!(
        err(&text),
        "cluster.yaml:10:10: worker_groups[0].max: invalid type: string \"ten\", expected u32"
    );
}

#[test]
fn an_unknown_field_is_an_error() {
    let text = GOOD.replace("    max: 4", "    max: 4\n    maxx: 5");
    let e = err(&text);
    assert!(
        e.starts_with("cluster.yaml:11:5: worker_groups[0]: unknown field `maxx`"),
        "{e}"
    );
}

#[test]
fn an_unknown_provider_lists_the_known_ones() {
    let e = err(&GOOD.replace("type: local", "type: cloud"));
    assert!(e.starts_with("cluster.yaml:3:"), "{e}");
    assert!(
        e.contains("unknown variant `cloud`") && e.contains("local") && e.contains("ssh"),
        "{e}"
    );
}

#[test]
fn missing_fields_and_bad_yaml_are_named() {
    let e = err("provider: {type: local}\n");
    assert!(e.contains("missing field `cluster_name`"), "{e}");
    let e = err("cluster_name: [unclosed\n");
    assert!(e.starts_with("cluster.yaml:"), "{e}");
    let e = err(&GOOD.replace("    min: 2\n", "    min: 2\n      oops: 1\n"));
    assert!(e.starts_with("cluster.yaml:"), "{e}");
}

#[test]
fn checks_after_parsing_name_the_field() {
    assert_eq!(
        err(&GOOD.replace("min: 2", "min: 5")),
        "cluster.yaml: worker_groups[0].min: 5 is above max (4)"
    );
    assert_eq!(
        err(&GOOD.replace("memory: 2G", "memory: 2Q")),
        "cluster.yaml: worker_groups[0].resources.memory: \"2Q\" is not a size like 4G or 1073741824"
    );
    let two = GOOD.replace(
        "worker_groups:\n",
        "worker_groups:\n  - {name: cpu, max: 1}\n",
    );
    assert_eq!(
        err(&two),
        "cluster.yaml: worker_groups[1].name: \"cpu\" names two groups"
    );
    assert!(
        err(&GOOD.replace("cluster_name: demo", "cluster_name: a/b"))
            .starts_with("cluster.yaml: cluster_name:")
    );
}

#[test]
fn ssh_needs_a_host_per_minimum_worker() {
    let text = GOOD.replace(
        "  type: local",
        "  type: ssh\n  head_ip: 10.0.0.1\n  worker_ips: [10.0.0.2]\n  ssh_user: u\n  ssh_private_key: /k",
    );
    assert_eq!(
        err(&text),
        "cluster.yaml: provider.worker_ips: 1 hosts for 2 workers (the groups' min)"
    );
}
