//! Options and helpers shared by the client subcommands (push, pull, images, build).

use std::path::PathBuf;

use anyhow::Context as _;
use berth_client::{ApiClient, Credentials, ImageRef, RegistryClient};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Default endpoint: the server's default listen address.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:5000";

#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// URL of the berth server (its --listen address).
    #[arg(long, alias = "endpoint", env = "BERTH_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    pub endpoint_url: String,
    /// Data directory of a local berth server, to use the credentials it wrote there.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

impl ClientArgs {
    pub fn api(&self) -> anyhow::Result<ApiClient> {
        let creds = Credentials::discover(self.data_dir.as_deref())
            .context("cannot find AWS credentials for berth")?;
        Ok(ApiClient::new(&self.endpoint_url, creds))
    }

    /// An API client and a logged-in registry client.
    pub fn registry(&self) -> anyhow::Result<(ApiClient, RegistryClient)> {
        let api = self.api()?;
        let reg = RegistryClient::login(&api)
            .with_context(|| format!("cannot log in to the registry at {}", self.endpoint_url))?;
        Ok((api, reg))
    }
}

/// Checks that a reference's registry, if any, is the one we talk to.
pub fn check_registry(r: &ImageRef, api: &ApiClient) -> anyhow::Result<()> {
    if let Some(host) = &r.registry {
        if host != api.host() {
            anyhow::bail!(
                "image {r} names registry {host}, but the endpoint is {} (set --endpoint-url)",
                api.endpoint()
            );
        }
    }
    Ok(())
}

/// A byte progress bar for one blob; drawn only when stderr is a terminal.
pub fn bar(label: &str, size: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {bytes:>10}/{total_bytes:10} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// `sha256:0123456789ab` for display.
pub fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    hex.chars().take(12).collect()
}
