//! `berth proxy` (hidden): one host port mapping of a `bridge`-mode task, forwarded
//! to the task's address by a small process of its own (Docker's userland proxy), so
//! that the mapping outlives an agent restart. Prints `ready` once the port is bound,
//! or `error: ...` and exits 1; stops on SIGTERM.

use std::net::SocketAddr;

use anyhow::Context as _;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Host address and port to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The task's address and container port.
    #[arg(long)]
    target: SocketAddr,
    /// tcp or udp.
    #[arg(long, default_value = "tcp")]
    protocol: String,
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match a.protocol.as_str() {
            "tcp" => match tokio::net::TcpListener::bind(a.listen).await {
                Ok(l) => {
                    println!("ready");
                    berth_net::run_tcp_proxy(l, a.target, terminated()).await;
                    Ok(())
                }
                Err(e) => {
                    println!("error: cannot listen on {}: {e}", a.listen);
                    std::process::exit(1);
                }
            },
            "udp" => match tokio::net::UdpSocket::bind(a.listen).await {
                Ok(s) => {
                    println!("ready");
                    berth_net::run_udp_proxy(
                        s,
                        a.target,
                        berth_net::proxy::DEFAULT_UDP_IDLE_TIMEOUT,
                        terminated(),
                    )
                    .await;
                    Ok(())
                }
                Err(e) => {
                    println!("error: cannot listen on {}/udp: {e}", a.listen);
                    std::process::exit(1);
                }
            },
            other => anyhow::bail!("--protocol {other}: expected tcp or udp"),
        }
    })
}
