//! The `berth` binary: parses arguments, sets up logging and the runtime, and calls
//! into the crates. Each subcommand lives in its own file under `commands/`.
#![forbid(unsafe_code)]

mod commands;

use clap::{Parser, Subcommand, ValueEnum};

/// berth: the AWS container stack (ECR today; ECS, ALB and Cloud Map to come) as one
/// self-hosted system.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax, e.g. "info" or "berth_api=debug"); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the berth server in the foreground: registry at /v2/, AWS APIs at POST /.
    Server(commands::server::Args),
    /// Join this host to a berth server as a container instance (runs its tasks).
    Agent(commands::agent::Args),
    /// Application Load Balancers the short way: create, ls, rm, route add, targets.
    Lb(commands::lb::Args),
    /// Remove registry blobs no image references (run while the server is stopped).
    Gc(commands::gc::Args),
    /// Build an image from a Dockerfile (subset) and push it to berth's registry.
    Build(commands::build::Args),
    /// Push an OCI image layout (directory or tar) to berth's registry.
    Push(commands::push::Args),
    /// Pull an image from berth's registry into an OCI image layout.
    Pull(commands::pull::Args),
    /// List repositories and their images.
    Images(commands::images::Args),
    /// Run a one-off task (FARGATE, default cluster) and stream its output.
    Run(commands::run::Args),
    /// List the tasks of a cluster.
    Ps(commands::ps::Args),
    /// Print a task's container output.
    Logs(commands::logs::Args),
    /// Stop tasks.
    Stop(commands::stop::Args),
    /// ECS services: create, ls, ps, scale, update, rm, events.
    Service(commands::service::Args),
    /// ECS clusters: create, ls, rm.
    Cluster(commands::cluster::Args),
    /// List the cluster's container instances, or drain/activate one.
    Instances(commands::instances::Args),
    /// Stop the node's tasks and remove what berth made on this host (server stopped).
    Down(commands::down::Args),
    /// Forward one host port to a task (started by the agent; not for direct use).
    #[command(hide = true)]
    Proxy(commands::proxy::Args),
    /// Supervise one container (started by the agent; not for direct use).
    #[command(hide = true)]
    Shim(commands::shim::Args),
}

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `berth service ls | head`: stdout closed by the reader is the end of the output, not
/// a crash. Rust ignores SIGPIPE, so `println!` panics on EPIPE; this hook exits quietly
/// with the shell's status for SIGPIPE instead, and leaves every other panic as it was.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> anyhow::Result<()> {
    quiet_broken_pipe();
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Server(a) => commands::server::run(a),
        Command::Agent(a) => commands::agent::run(a),
        Command::Lb(a) => commands::lb::run(a),
        Command::Gc(a) => commands::gc::run(a),
        Command::Build(a) => commands::build::run(a),
        Command::Push(a) => commands::push::run(a),
        Command::Pull(a) => commands::pull::run(a),
        Command::Images(a) => commands::images::run(a),
        Command::Shim(a) => commands::shim::run(a),
        Command::Proxy(a) => commands::proxy::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Ps(a) => commands::ps::run(a),
        Command::Logs(a) => commands::logs::run(a),
        Command::Stop(a) => commands::stop::run(a),
        Command::Service(a) => commands::service::run(a),
        Command::Cluster(a) => commands::cluster::run(a),
        Command::Instances(a) => commands::instances::run(a),
        Command::Down(a) => commands::down::run(a),
    }
}
