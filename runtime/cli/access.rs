//! `prism user`, `prism role`, `prism audit` and `prism login`: people's
//! accounts, what their roles allow, and the hash-chained trail of every
//! change (the rules are the head's, `prism::head::access`).

use crate::job::ClusterArgs;
use crate::models::utc;
use anyhow::{anyhow, bail};
use prism::proto::access::{AccessReply, AccessRequest, AuditEntry, AuditQuery};
use prism::proto::head::{HeadRequest, HeadResponse};

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user and print their token (shown once; the head keeps
    /// only its hash).
    Add {
        /// Letters, digits, `-`, `_`.
        name: String,
        /// admin, developer, viewer, or a custom role.
        #[arg(long)]
        role: String,
        /// A namespace they may act in (repeatable; `*` for all; default: `default`).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Revoke a user's token at once (their open connections too).
    Revoke {
        /// The user.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Every user.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Who this CLI acts as, and what it may do.
    Whoami {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum RoleCommand {
    /// Define (or redefine) a custom role as a set of permissions.
    Add {
        /// Its name.
        name: String,
        /// A permission, e.g. `jobs:submit` (repeatable).
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Every role and its permissions.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// `prism audit`'s flags.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only this user's actions.
    #[arg(long)]
    user: Option<String>,
    /// Only actions starting with this (`job`, `user.add`).
    #[arg(long)]
    action: Option<String>,
    /// Only entries this recent (`90s`, `30m`, `2h`, `7d`) or since this
    /// time (milliseconds since the epoch).
    #[arg(long)]
    since: Option<String>,
    /// At most this many, the newest.
    #[arg(long, default_value_t = 0)]
    limit: u32,
    /// Print JSON lines (one entry per line: the export format).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Re-read the whole trail from the head's database and check its hash
    /// chain; exits 1 naming the first altered or missing entry.
    Verify {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// `prism login`'s flags.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The head, HOST:PORT.
    #[arg(long)]
    address: String,
    /// Your token, as `prism user add` printed it.
    #[arg(long, env = "PRISM_USER_TOKEN")]
    token: String,
}

fn access(cluster: &ClusterArgs, req: AccessRequest) -> anyhow::Result<AccessReply> {
    let head = cluster.connect()?;
    match head.request(&HeadRequest::Access(req))? {
        HeadResponse::Access(r) => Ok(r),
        other => Err(anyhow!("unexpected answer from the head: {other:?}")),
    }
}

/// The namespace the caller's jobs run in unless told (as `prism submit`
/// runs them): their first one, `default` for the admin (`*`).
pub(crate) fn home_namespace(cluster: &ClusterArgs) -> anyhow::Result<String> {
    let AccessReply::Me(me) = access(cluster, AccessRequest::WhoAmI)? else {
        bail!("unexpected answer to WhoAmI");
    };
    Ok(match me.namespaces.first() {
        Some(n) if n != "*" => n.clone(),
        _ => "default".into(),
    })
}

pub fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            role,
            namespaces,
            cluster,
        } => {
            let AccessReply::UserAdded { user, token } = access(
                &cluster,
                AccessRequest::AddUser {
                    name,
                    role,
                    namespaces,
                },
            )?
            else {
                bail!("unexpected answer to AddUser");
            };
            eprintln!(
                "added user {} ({} in {}); give them this token (it is not shown again):",
                user.name,
                user.role,
                user.namespaces.join(", ")
            );
            println!("{token}");
        }
        UserCommand::Revoke { name, cluster } => {
            access(&cluster, AccessRequest::RevokeUser { name: name.clone() })?;
            println!("revoked {name}: their token no longer works");
        }
        UserCommand::List { cluster, json } => {
            let AccessReply::Users(users) = access(&cluster, AccessRequest::ListUsers)? else {
                bail!("unexpected answer to ListUsers");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
                return Ok(());
            }
            println!(
                "{:<16} {:<12} {:<24} {:<10} {:<20} STATE",
                "NAME", "ROLE", "NAMESPACES", "BY", "CREATED"
            );
            for u in users {
                let state = u
                    .revoked_ms
                    .map_or("active".to_string(), |t| format!("revoked {}", utc(t)));
                let ns = u.namespaces.join(",");
                println!(
                    "{:<16} {:<12} {:<24} {:<10} {:<20} {state}",
                    u.name,
                    u.role,
                    ns,
                    u.created_by,
                    utc(u.created_ms)
                );
            }
        }
        UserCommand::Whoami { cluster, json } => {
            let AccessReply::Me(me) = access(&cluster, AccessRequest::WhoAmI)? else {
                bail!("unexpected answer to WhoAmI");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&me)?);
            } else {
                println!("{} ({} in {})", me.name, me.role, me.namespaces.join(", "));
                println!("permissions: {}", me.permissions.join(", "));
            }
        }
    }
    Ok(())
}

pub fn role(cmd: RoleCommand) -> anyhow::Result<()> {
    let (cluster, req) = match cmd {
        RoleCommand::Add {
            name,
            permissions,
            cluster,
        } => (cluster, AccessRequest::AddRole { name, permissions }),
        RoleCommand::List { cluster } => (cluster, AccessRequest::ListRoles),
    };
    let AccessReply::Roles(roles) = access(&cluster, req)? else {
        bail!("unexpected answer about roles");
    };
    for r in roles {
        let kind = if r.builtin { "built in" } else { "custom" };
        println!("{:<12} ({kind}) {}", r.name, r.permissions.join(", "));
    }
    Ok(())
}

/// `--since`: a duration back from now, or epoch milliseconds.
fn since_ms(s: &str, now_ms: u64) -> anyhow::Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow!("--since {s:?}: expected e.g. 30m, 2h, 7d or epoch milliseconds"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("--since {s:?}: the unit must be s, m, h or d"),
    };
    Ok(now_ms.saturating_sub(secs * 1000))
}

/// Runs `prism audit`; the exit code is 1 when `verify` finds a break.
pub fn audit(args: AuditArgs) -> anyhow::Result<i32> {
    if let Some(AuditCommand::Verify { cluster }) = args.command {
        let AccessReply::Verified { entries, broken } =
            access(&cluster, AccessRequest::VerifyAudit)?
        else {
            bail!("unexpected answer to VerifyAudit");
        };
        return Ok(match broken {
            None => {
                println!("audit trail intact: {entries} entries, hash chain verified");
                0
            }
            Some(why) => {
                println!("audit trail BROKEN ({entries} entries read): {why}");
                1
            }
        });
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let query = AuditQuery {
        user: args.user,
        action: args.action,
        since_ms: args
            .since
            .as_deref()
            .map(|s| since_ms(s, now_ms))
            .transpose()?,
        limit: args.limit,
    };
    let AccessReply::Audit(entries) = access(&args.cluster, AccessRequest::Audit(query))? else {
        bail!("unexpected answer to Audit");
    };
    if args.json {
        for e in &entries {
            println!("{}", serde_json::to_string(e)?);
        }
    } else {
        print_table(&entries);
    }
    Ok(0)
}

fn print_table(entries: &[AuditEntry]) {
    println!(
        "{:>5} {:<20} {:<12} {:<22} {:<22} {:<10} OUTCOME / TARGET",
        "SEQ", "TIME (UTC)", "USER", "FROM", "ACTION", "NAMESPACE"
    );
    for e in entries {
        println!(
            "{:>5} {:<20} {:<12} {:<22} {:<22} {:<10} {} / {}",
            e.seq,
            utc(e.ts_ms),
            e.user,
            e.origin,
            e.action,
            e.namespace,
            e.outcome,
            e.target
        );
    }
}

/// Adds what the CLI did (`cluster.up`, `serve.deploy`) to the head's
/// audit trail, in the caller's name. Best effort: the action happened, so
/// a head that cannot be told gets a warning, not a failure.
pub fn note(info: &prism::session::ClusterInfo, action: &str, target: String) {
    let req = HeadRequest::Access(AccessRequest::Record {
        action: action.into(),
        target,
    });
    let told = crate::status::HeadSession::connect(info).and_then(|h| h.request(&req));
    if let Err(e) = told {
        eprintln!("warning: cannot add {action} to the audit trail: {e:#}");
    }
}

/// Checks the token against the head, then saves it (mode 0600).
pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let token: prism::token::UserToken = args.token.parse()?;
    let info = prism::session::ClusterInfo {
        head_address: args.address.clone(),
        token: token.to_string(),
    };
    let head = crate::status::HeadSession::connect(&info)?;
    let HeadResponse::Access(AccessReply::Me(me)) =
        head.request(&HeadRequest::Access(AccessRequest::WhoAmI))?
    else {
        bail!("unexpected answer to WhoAmI");
    };
    let path = crate::credentials::save(&args.address, &token)?;
    println!(
        "logged in to {} as {} ({} in {}); credentials in {}",
        args.address,
        me.name,
        me.role,
        me.namespaces.join(", "),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_durations_and_epoch_milliseconds() {
        assert_eq!(since_ms("90s", 100_000).unwrap(), 10_000);
        assert_eq!(since_ms("2h", 10_000_000).unwrap(), 2_800_000);
        assert_eq!(since_ms("1700000000000", 5).unwrap(), 1_700_000_000_000);
        assert!(since_ms("3 weeks", 5).is_err());
        assert!(since_ms("3w", 5).is_err());
    }
}
