//! What a user's job does acts as that user: a job `prism submit`ted by
//! Alice (developer in vision) creates actors in its own namespace, is
//! refused one in another namespace, and a job of a custom role without
//! `actors:create` is refused any — each with the head's sentence, and
//! each refusal in the audit trail. The model registry, reached through
//! the driver's raylet, judges the job's owner the same way, and so does
//! a kill through an actor's handle.

use prism_test_support::*;
use std::process::Output;

#[prism::actor]
struct Keeper {
    n: u64,
}

#[prism::actor]
impl Keeper {
    fn new() -> Self {
        Keeper { n: 0 }
    }
    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

#[test]
#[ignore = "a job driver, started by `prism submit` in the test in this file"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").as_deref() {
        // The admin's detached actor in namespace ads, and its end.
        Ok("keeper") => {
            let k = Keeper::options()
                .namespace("ads")
                .name("keeper")
                .detached()
                .spawn()
                .unwrap();
            println!("KEEPER UP: {}", k.add(5).unwrap().get().unwrap());
            return;
        }
        Ok("end-keeper") => {
            let k = prism::get_actor_in::<Keeper>("ads", "keeper").unwrap();
            prism::kill(&k, true).unwrap();
            println!("KEEPER KILLED");
            return;
        }
        _ => {}
    }
    // Creation is asynchronous (as in Ray): a refusal shows on the first call.
    let own = Keeper::options().spawn().and_then(|k| k.add(2)?.get());
    match own {
        Ok(n) => println!("OWN NAMESPACE: {n}"),
        Err(e) => println!("OWN NAMESPACE REFUSED: {e}"),
    }
    let other = Keeper::options()
        .namespace("ads")
        .name("elsewhere")
        .spawn()
        .and_then(|k| k.add(1)?.get());
    match other {
        Ok(_) => println!("OTHER NAMESPACE: created"),
        Err(e) => println!("OTHER NAMESPACE REFUSED: {e}"),
    }
    // So does a lookup of another namespace's actor by name.
    match prism::get_actor_in::<Keeper>("ads", "elsewhere") {
        Ok(_) => println!("LOOKUP: found"),
        Err(e) => println!("LOOKUP REFUSED: {e}"),
    }
    // Killing an actor takes actors:create in its namespace, whoever holds
    // a handle to it.
    if let Ok(k) = prism::get_actor_in::<Keeper>("ads", "keeper") {
        match prism::kill(&k, true) {
            Ok(()) => println!("KILLED KEEPER"),
            Err(e) => println!("KILL REFUSED: {e}"),
        }
        match k.add(1).and_then(|r| r.get()) {
            Ok(n) => println!("KEEPER ALIVE: {n}"),
            Err(e) => println!("KEEPER GONE: {e}"),
        }
    }
    // Through its raylet, the registry judges the job's owner too.
    match prism::models::set_alias("digits", "production", 1) {
        Ok(()) => println!("PROMOTED"),
        Err(e) => println!("PROMOTE REFUSED: {e}"),
    }
}

fn submit_as(sb: &Sandbox, addr: &str, token: &str, ns: &str) -> Output {
    let exe = std::env::current_exe().unwrap();
    let mut c = std::process::Command::new(prism_bin());
    c.args(["submit", "--temp-dir"]).arg(sb.temp());
    c.args(["--namespace", ns, "--"]).arg(exe);
    c.args(["--ignored", "--exact", "child_role", "--nocapture"]);
    c.env_remove("PRISM_TOKEN").envs(sb.envs.iter().cloned());
    c.env("PRISM_USER_TOKEN", token).env("PRISM_ADDRESS", addr);
    c.stdin(std::process::Stdio::null()).output().unwrap()
}

#[test]
fn a_users_job_creates_actors_only_where_its_owner_may() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    let (addr, _) = head.cluster();
    let alice = sb.add_user("alice", "developer", "vision");
    let ok = sb.run(&[
        "role",
        "add",
        "submitter",
        "--permission",
        "jobs:submit",
        "--permission",
        "logs:read",
    ]);
    assert!(ok.status.success());
    let sam = sb.add_user("sam", "submitter", "ads");
    let admin = |role: &str| {
        let envs = sb.driver_envs(&head, &head);
        let mut job = Job::spawn_exe(&std::env::current_exe().unwrap(), role, &envs);
        job.finish(std::time::Duration::from_secs(120)).1
    };
    let said = admin("keeper");
    assert!(said.contains("KEEPER UP: 5"), "{said}");

    let out = submit_as(&sb, &addr, &alice, "vision");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("OWN NAMESPACE: 2"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("OTHER NAMESPACE REFUSED")
            && said.contains("alice (developer in vision) may not create actor access_drivers::Keeper in namespace ads: namespace ads was not granted to alice"),
        "{said}"
    );
    assert!(
        said.contains("LOOKUP REFUSED")
            && said.contains(
                "alice (developer in vision) may not read actor elsewhere in namespace ads"
            ),
        "{said}"
    );
    assert!(
        said.contains("PROMOTE REFUSED")
            && said.contains("alice (developer in vision) may not point digits@production at version 1 in namespace vision: the role lacks permission models:production"),
        "{said}"
    );
    let out = submit_as(&sb, &addr, &sam, "ads");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("OWN NAMESPACE REFUSED")
            && said.contains("sam (submitter in ads) may not create actor access_drivers::Keeper in namespace ads: the role lacks permission actors:create"),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sam finds the admin's actor in his namespace, but may not kill it.
    assert!(
        said.contains("KILL REFUSED: refused: sam (submitter in ads) may not kill actor ")
            && said.contains("(access_drivers::Keeper) in namespace ads: the role lacks permission actors:create")
            && said.contains("KEEPER ALIVE: 6"),
        "{said}"
    );
    let said = admin("end-keeper");
    assert!(said.contains("KEEPER KILLED"), "{said}");
    let trail = sb.run(&["audit", "--action", "actor.kill", "--json"]);
    let trail = String::from_utf8_lossy(&trail.stdout);
    let kills: Vec<(bool, bool)> = trail
        .lines()
        .filter(|l| l.contains("\"action\":\"actor.kill\""))
        .map(|l| {
            (
                l.contains("\"user\":\"sam\""),
                l.contains("\"outcome\":\"denied"),
            )
        })
        .collect();
    assert_eq!(kills, [(true, true), (false, false)], "{trail}");
    // A driver Alice starts by hand with her token is hers too.
    let mut envs = sb.driver_envs(&head, &head);
    envs.push(("PRISM_USER_TOKEN".into(), alice.clone()));
    envs.push(("PRISM_NAMESPACE".into(), "vision".into()));
    let mut job = Job::spawn_exe(&std::env::current_exe().unwrap(), "by-hand", &envs);
    let (_, said) = job.finish(std::time::Duration::from_secs(120));
    assert!(
        said.contains("OWN NAMESPACE: 2") && said.contains("OTHER NAMESPACE REFUSED"),
        "{said}"
    );
    let jobs = sb.run(&["job", "list", "--json"]);
    let jobs = String::from_utf8_lossy(&jobs.stdout);
    let owners: Vec<&str> = jobs.lines().filter(|l| l.contains("\"owner\"")).collect();
    // Only the two the admin ran by hand (the keeper's start and end).
    let admins = owners.iter().filter(|l| l.contains("\"admin\"")).count();
    assert_eq!(admins, 2, "{jobs}");
    let trail = sb.run(&["audit", "--action", "actor.create", "--json"]);
    let trail = String::from_utf8_lossy(&trail.stdout);
    let denied: Vec<&str> = trail
        .lines()
        .filter(|l| l.contains("\"outcome\":\"denied"))
        .collect();
    assert_eq!(denied.len(), 4, "{trail}");
    assert!(
        trail
            .lines()
            .any(|l| l.contains("\"user\":\"alice\"") && l.contains("\"outcome\":\"ok\"")),
        "{trail}"
    );
    let trail = sb.run(&["audit", "--action", "model.alias", "--json"]);
    let trail = String::from_utf8_lossy(&trail.stdout);
    assert!(
        trail.lines().any(|l| l.contains("\"user\":\"alice\"")
            && l.contains("via cluster")
            && l.contains("\"outcome\":\"denied")),
        "{trail}"
    );
}
