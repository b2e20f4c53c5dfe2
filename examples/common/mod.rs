//! What every example shares: how the tunnel is chosen on the command line, and logging.
//!
//! `--ipr` picks the exit (a Nym address or `udp://HOST:PORT`; default: the best IPR of the
//! directory), `--nym-api` another Nym directory (a local network), `--traffic fast` the
//! high-traffic profile, and `--from-client` builds the mixnet client here, as a program with
//! its own client would, and hands it to `Tunnel::from_client_with`.

#![allow(dead_code)] // each example uses a part of this module

use clap::ValueEnum;
use smolmix::transport::mixnet::{MixnetClient, MixnetOptions, TrafficProfile};
use smolmix::{IprAddr, Tunnel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Traffic {
    Default,
    Fast,
}

#[derive(Debug, clap::Args)]
pub struct TunnelArgs {
    /// IPR exit: a Nym address or udp://HOST:PORT (default: the best IPR of the Nym directory)
    #[arg(long)]
    pub ipr: Option<IprAddr>,
    /// nym-api URL of the Nym directory (repeatable; default: mainnet's)
    #[arg(long = "nym-api", value_name = "URL")]
    pub nym_api: Vec<String>,
    /// Mixnet traffic profile
    #[arg(long, value_enum, default_value_t = Traffic::Default)]
    pub traffic: Traffic,
    /// Reply SURBs on the Connect (default 20; fewer show the IPR's extra round trip)
    #[arg(long, value_name = "N")]
    pub control_surbs: Option<u32>,
    /// Build the mixnet client here and use Tunnel::from_client_with (needs --ipr, a Nym address)
    #[arg(long)]
    pub from_client: bool,
}

impl TunnelArgs {
    pub fn mixnet_options(&self) -> MixnetOptions {
        let mut o = MixnetOptions {
            traffic: if self.traffic == Traffic::Fast { TrafficProfile::Fast } else { TrafficProfile::Default },
            ..MixnetOptions::default()
        };
        if !self.nym_api.is_empty() {
            o.nym_api_urls = self.nym_api.clone();
        }
        if let Some(n) = self.control_surbs {
            o.control_surbs = n;
        }
        o
    }

    /// The tunnel these arguments ask for.
    pub async fn open(&self) -> Result<Tunnel, Box<dyn std::error::Error>> {
        let opts = self.mixnet_options();
        if self.from_client {
            let ipr = self.ipr.clone().ok_or("--from-client needs --ipr <Nym address>")?;
            let client = build_client(&opts).await?;
            return Ok(Tunnel::from_client_with(client, ipr, opts).await?);
        }
        let mut b = Tunnel::builder().mixnet_options(opts);
        if let Some(ipr) = self.ipr.clone() {
            b = b.ipr(ipr);
        }
        Ok(b.build().await?)
    }
}

/// A mixnet client as a caller would build it with nym-sdk: its own network and profile.
async fn build_client(opts: &MixnetOptions) -> Result<MixnetClient, Box<dyn std::error::Error>> {
    Ok(nym_sdk::mixnet::MixnetClientBuilder::new_ephemeral()
        .network_details(opts.network_details()?)
        .debug_config(opts.debug_config())
        .build()?
        .connect_to_mixnet()
        .await?)
}

/// Logs to stderr, filtered by RUST_LOG.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}

/// The example's exit status: 0 when `run` says the check passed; errors on one line.
pub fn exit_code(result: Result<bool, Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
