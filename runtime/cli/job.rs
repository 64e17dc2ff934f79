//! `prism submit` and `prism job list | logs | stop`: job binaries are
//! shipped to the head by content hash and run there as drivers.

use crate::status::{cluster_info, HeadSession};
use crate::TempDirArg;
use anyhow::{anyhow, bail, Context};
use prism::proto::head::{HeadRequest, HeadResponse, JobInfo, JobState, JobSubmission};
use prism::JobId;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// The head, HOST:PORT (default: the newest session on this machine).
    #[arg(long, env = "PRISM_ADDRESS")]
    address: Option<String>,
    /// The join token (default: from that session).
    #[arg(long, env = "PRISM_TOKEN")]
    token: Option<String>,
    /// The cluster a cluster.yaml started (`prism up`); wins over
    /// --address and --token.
    #[arg(long)]
    cluster: Option<std::path::PathBuf>,
    #[command(flatten)]
    temp: TempDirArg,
}

impl ClusterArgs {
    pub fn connect(&self) -> anyhow::Result<HeadSession> {
        HeadSession::connect(&self.info()?)
    }

    /// Where this machine's session directories are (a driver finds its
    /// raylet there).
    pub fn temp_dir(&self) -> &std::path::Path {
        &self.temp.temp_dir
    }

    /// The head's address and token these flags name.
    pub fn info(&self) -> anyhow::Result<prism::session::ClusterInfo> {
        match &self.cluster {
            Some(c) => crate::launcher::head_info(c, &self.temp),
            None => cluster_info(self.address.clone(), self.token.clone(), &self.temp),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Return at once with the job id instead of streaming its logs.
    #[arg(long)]
    no_wait: bool,
    /// The namespace the job runs in (default: your first namespace).
    #[arg(long)]
    namespace: Option<String>,
    /// CPUs the job will use, held against its namespace's quota (the
    /// queue starts it when they are free).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs the job will use (as --num-cpus).
    #[arg(long)]
    num_gpus: Option<u32>,
    /// Memory the job will use, in bytes or with a K/M/G/T suffix.
    #[arg(long, value_parser = crate::start::parse_bytes)]
    memory: Option<u64>,
    /// Higher starts first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// The job may be stopped (and queued again) for a job of higher
    /// priority that needs its resources.
    #[arg(long)]
    spot: bool,
    /// Environment for the driver, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The job binary and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum JobCommand {
    /// Every job the head knows.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A submitted job's output.
    Logs {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The job.
        id: String,
        /// Keep printing until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Stop a submitted job (SIGTERM, then SIGKILL after 3 s).
    Stop {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The job.
        id: String,
    },
}

fn expect_ok(resp: HeadResponse) -> anyhow::Result<HeadResponse> {
    match resp {
        HeadResponse::Error { message, .. } => Err(anyhow!("the head refused: {message}")),
        other => Ok(other),
    }
}

/// What `--num-cpus`, `--num-gpus` and `--memory` declare.
fn demand(args: &SubmitArgs) -> anyhow::Result<prism::proto::common::Resources> {
    use prism_scheduler::{Quantity, ResourceSet, CPU, GPU, MEMORY, SCALE};
    let mut set = ResourceSet::new();
    if let Some(c) = args.num_cpus {
        let q = Quantity::from_f64(c).map_err(|e| anyhow!("--num-cpus {c}: {e}"))?;
        set.set(CPU, q);
    }
    if let Some(g) = args.num_gpus {
        set.set(GPU, Quantity::whole(g));
    }
    if let Some(m) = args.memory {
        set.set(MEMORY, Quantity::from_raw((m as i64).saturating_mul(SCALE)));
    }
    Ok(prism::proto::common::Resources::from(&set))
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<i32> {
    let path = PathBuf::from(&args.command[0]);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the job binary {}", path.display()))?;
    let digest = prism::raylet::workers::sha256(&bytes);
    let env = args
        .env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--env wants KEY=VALUE, got {kv:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let head = args.cluster.connect()?;
    head.rt.block_on(async {
        let (mut s, mut r) = head.client.connection().open_bi().await?;
        let req = HeadRequest::UploadBinary {
            hash: digest,
            len: bytes.len() as u64,
        };
        let sent = async {
            prism::transport::rpc::write_frame(&mut s, &req).await?;
            tokio::io::AsyncWriteExt::write_all(&mut s, &bytes).await?;
            tokio::io::AsyncWriteExt::shutdown(&mut s).await?;
            anyhow::Ok(())
        }
        .await;
        // A head that refuses the upload answers at once and stops reading:
        // its answer says why better than the broken write.
        let resp: Option<HeadResponse> =
            match prism::transport::rpc::read_msg(&mut r, 1 << 20).await {
                Ok(resp) => resp,
                Err(e) => return Err(sent.err().unwrap_or_else(|| e.into())),
            };
        match (resp, sent) {
            (Some(resp), _) => drop(expect_ok(resp)?),
            (None, Err(e)) => return Err(e),
            (None, Ok(())) => bail!("the head closed the upload"),
        }
        anyhow::Ok(())
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sub = JobSubmission {
        hash: digest,
        name,
        args: args.command[1..].to_vec(),
        env,
        namespace: args.namespace.clone().unwrap_or_default(),
        demand: demand(&args)?,
        priority: args.priority,
        spot: args.spot,
    };
    let HeadResponse::JobSubmitted { job_id } =
        expect_ok(head.request(&HeadRequest::SubmitJob(sub))?)?
    else {
        bail!("unexpected answer to SubmitJob");
    };
    eprintln!("submitted job {job_id} ({} bytes shipped)", bytes.len());
    if args.no_wait {
        println!("{job_id}");
        return Ok(0);
    }
    let job = follow(&head, job_id, true)?;
    eprintln!("job {job_id} {}", describe(&job));
    Ok(match job.state {
        JobState::Succeeded => 0,
        _ => job.exit_code.filter(|c| *c != 0).unwrap_or(1),
    })
}

fn describe(j: &JobInfo) -> String {
    let state = format!("{:?}", j.state).to_lowercase();
    match (&j.exit_code, &j.message) {
        (_, Some(m)) => format!("{state}: {m}"),
        (Some(c), None) => format!("{state} (exit code {c})"),
        _ => state,
    }
}

/// Prints output from the start; with `wait`, until the job ends.
fn follow(head: &HeadSession, job_id: JobId, wait: bool) -> anyhow::Result<JobInfo> {
    let mut offset = 0;
    let mut out = std::io::stdout();
    loop {
        let HeadResponse::Logs { data, next, job } =
            expect_ok(head.request(&HeadRequest::JobLogs { job_id, offset })?)?
        else {
            bail!("unexpected answer to JobLogs");
        };
        out.write_all(&data)?;
        out.flush()?;
        offset = next;
        let ended = !matches!(job.state, JobState::Pending | JobState::Running);
        if !data.is_empty() {
            continue;
        }
        if ended || !wait {
            return Ok(job);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn run(cmd: JobCommand) -> anyhow::Result<i32> {
    match cmd {
        JobCommand::List { cluster, json } => {
            let head = cluster.connect()?;
            let HeadResponse::Jobs(jobs) = expect_ok(head.request(&HeadRequest::ListJobs)?)? else {
                bail!("unexpected answer to ListJobs");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                println!(
                    "{:<38} {:<10} {:<9} ENTRYPOINT",
                    "JOB", "STATE", "SUBMITTED"
                );
                for j in &jobs {
                    println!(
                        "{:<38} {:<10} {:<9} {}",
                        j.job_id.to_string(),
                        format!("{:?}", j.state).to_lowercase(),
                        j.submitted,
                        j.entrypoint
                    );
                }
            }
            Ok(0)
        }
        JobCommand::Logs {
            cluster,
            id,
            follow: f,
        } => {
            let id: JobId = id.parse()?;
            let head = cluster.connect()?;
            follow(&head, id, f)?;
            Ok(0)
        }
        JobCommand::Stop { cluster, id } => {
            let id: JobId = id.parse()?;
            let head = cluster.connect()?;
            expect_ok(head.request(&HeadRequest::StopJob { job_id: id })?)?;
            eprintln!("stopping job {id}");
            Ok(0)
        }
    }
}
