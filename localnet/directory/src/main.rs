//! `smolmix-directory --listen ADDR --node-version V --mixnode SPEC… --gateway SPEC…`
//!
//! Serves the Nym directory of a local network (see the crate doc). Runs until SIGINT/SIGTERM.
//! `RUST_LOG` sets the log level (default: one `info` line per request).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use smolmix_directory::nodes::NodeSpec;
use smolmix_directory::responses::Clock;
use smolmix_directory::{serve, Directory};

#[derive(Debug, Parser)]
#[command(
    name = "smolmix-directory",
    about = "A stand-in for nym-api serving a local Nym network (tests and demos only)"
)]
struct Args {
    /// Address to serve HTTP on.
    #[arg(long)]
    listen: SocketAddr,
    /// Release the nodes report (`nym-node --version`, "Build Version").
    #[arg(long)]
    node_version: String,
    /// A mixnode: id=N,layer=1|2|3,ip=ADDR,details=FILE[,mix-port=P][,version=V] (repeatable).
    #[arg(long = "mixnode", value_name = "SPEC", value_parser = |s: &str| NodeSpec::parse(s, false))]
    mixnodes: Vec<NodeSpec>,
    /// An exit gateway: id=N,ip=ADDR,details=FILE[,ws-port=P][,mix-port=P][,version=V][,hostname=H]
    /// (repeatable).
    #[arg(long = "gateway", value_name = "SPEC", value_parser = |s: &str| NodeSpec::parse(s, true))]
    gateways: Vec<NodeSpec>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("smolmix-directory: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut specs = args.mixnodes;
    specs.extend(args.gateways);
    let dir = Arc::new(Directory { specs, node_version: args.node_version, clock: Clock::starting_now() });
    println!("listening on {}", args.listen);
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    tokio::select! {
        r = serve(listener, dir) => {
            if let Err(e) = r {
                eprintln!("smolmix-directory: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        () = stop => {}
    }
    std::process::ExitCode::SUCCESS
}
