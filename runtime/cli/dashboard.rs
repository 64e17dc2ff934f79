//! `prism start --head` runs the dashboard beside the head: its flags, its
//! read-only token (kept in the session, so a recovered head keeps it), and
//! starting it once the head serves.

use prism::session::SessionDir;
use prism::token::JoinToken;
use std::net::{IpAddr, SocketAddr};

/// Ray's dashboard port.
pub const DEFAULT_PORT: u16 = 8265;

#[derive(clap::Args, Debug, Clone)]
pub struct DashboardArgs {
    /// With --head: the dashboard's HTTP port (default 8265, or any free
    /// port if that one is taken; 0 picks a free one).
    #[arg(long, env = "PRISM_DASHBOARD_PORT")]
    dashboard_port: Option<u16>,
    /// With --head: the address the dashboard listens on (0.0.0.0 to reach
    /// it from other machines; every request needs a token either way).
    #[arg(long, default_value = "127.0.0.1")]
    dashboard_host: IpAddr,
    /// With --head: no dashboard.
    #[arg(long)]
    no_dashboard: bool,
    /// With --head: the namespaces whose jobs, actors, tasks, workers and
    /// logs the read-only dashboard token sees, comma-separated (`*`: all).
    /// The head enforces it, as for a user with the viewer role.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "*",
        env = "PRISM_DASHBOARD_VIEWER_NAMESPACES"
    )]
    dashboard_viewer_namespaces: Vec<String>,
}

impl DashboardArgs {
    /// A precise error for flags that cannot work, before anything starts.
    pub fn check(&self) -> anyhow::Result<()> {
        let ns = &self.dashboard_viewer_namespaces;
        if let Some(bad) = ns
            .iter()
            .find(|n| !prism::head::access::users::valid_namespace(n))
        {
            anyhow::bail!(
                "--dashboard-viewer-namespaces: invalid namespace {bad:?} (use 1-63 letters, digits, '-' or '_', or * for all)"
            );
        }
        Ok(())
    }
}

/// The session's read-only dashboard token (made on first use).
fn viewer_token(session: &SessionDir) -> anyhow::Result<String> {
    if let Some(t) = session.read("dashboard_token")? {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let t = prism_dashboard::new_viewer_token();
    session.write_secret("dashboard_token", &t)?;
    Ok(t)
}

/// Binds and starts the dashboard for the head at `head`; returns its URL.
/// Must run inside the head's tokio runtime.
pub fn start(
    args: &DashboardArgs,
    head: SocketAddr,
    token: &JoinToken,
    session: &SessionDir,
) -> anyhow::Result<Option<String>> {
    if args.no_dashboard {
        return Ok(None);
    }
    let opts = prism_dashboard::DashboardOptions {
        bind: SocketAddr::new(
            args.dashboard_host,
            args.dashboard_port.unwrap_or(DEFAULT_PORT),
        ),
        any_port_if_taken: args.dashboard_port.is_none(),
        head,
        token: token.clone(),
        viewer_token: viewer_token(session)?,
        viewer_namespaces: args.dashboard_viewer_namespaces.clone(),
        cache: std::time::Duration::from_millis(
            std::env::var("PRISM_DASHBOARD_CACHE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(500),
        ),
    };
    let dashboard = prism_dashboard::Dashboard::bind(opts)?;
    let url = format!("http://{}", dashboard.local_addr());
    tokio::spawn(dashboard.serve(std::future::pending()));
    tracing::info!(%url, "dashboard serving");
    Ok(Some(url))
}

/// The lines of the start banner about the dashboard.
pub fn banner(url: &str, session: &SessionDir) -> String {
    let token = session
        .read("dashboard_token")
        .ok()
        .flatten()
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    format!(
        "Dashboard: {url}  (read-only token: {token}; or log in with the cluster token to stop jobs)"
    )
}
