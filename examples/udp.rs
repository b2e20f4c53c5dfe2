//! A DNS query through a smolmix tunnel: hickory-proto builds and parses it, a userspace
//! `UdpSocket` carries it.
//!
//!     cargo run --release --example udp -- --ipr udp://198.51.100.1:51820 --server 192.0.2.2:53 --name smolmix.test
//!
//! Prints one line `<name> <type> <addresses...>` per query and exits 0 if every query got an
//! answer. UDP through a mixnet is lossy: each query is tried `--tries` times. No root needed.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use smolmix::UdpSocket;

#[derive(Clone, Copy, ValueEnum)]
enum Type {
    A,
    Aaaa,
    Both,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    tunnel: common::TunnelArgs,
    /// DNS server, IP:PORT
    #[arg(long, default_value = "192.0.2.2:53")]
    server: SocketAddr,
    /// Name to resolve
    #[arg(long, default_value = "smolmix.test")]
    name: String,
    /// Record type(s)
    #[arg(long, value_enum, default_value = "both")]
    r#type: Type,
    /// Attempts per query
    #[arg(long, default_value_t = 3)]
    tries: u32,
    /// Seconds to wait for each answer
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let name = Name::from_ascii(&args.name)?;
    let types: &[RecordType] = match args.r#type {
        Type::A => &[RecordType::A],
        Type::Aaaa => &[RecordType::AAAA],
        Type::Both => &[RecordType::A, RecordType::AAAA],
    };
    let tunnel = args.tunnel.open().await?;
    let socket = tunnel.udp_socket().await?;
    let mut all_answered = true;
    for &rtype in types {
        match query(&socket, &args, &name, rtype).await {
            Ok(addrs) if !addrs.is_empty() => println!("{} {rtype} {}", args.name, addrs.join(" ")),
            Ok(_) => {
                println!("{} {rtype} (no records)", args.name);
                all_answered = false;
            }
            Err(e) => {
                println!("{} {rtype} failed: {e}", args.name);
                all_answered = false;
            }
        }
    }
    drop(socket);
    tunnel.shutdown().await;
    Ok(all_answered)
}

async fn query(
    socket: &UdpSocket,
    args: &Args,
    name: &Name,
    rtype: RecordType,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), rtype));
    let id = msg.metadata.id;
    let wire = msg.to_vec()?;
    let mut buf = [0u8; 1500];
    for _ in 0..args.tries {
        socket.send_to(&wire, args.server).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
        // Skip stray datagrams (another server, an older attempt's late answer) until the deadline.
        while let Ok(r) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            let (n, from) = r?;
            let Ok(reply) = Message::from_vec(&buf[..n]) else { continue };
            if from != args.server || reply.metadata.id != id {
                continue;
            }
            if reply.metadata.response_code != ResponseCode::NoError {
                return Err(format!("server answered {}", reply.metadata.response_code).into());
            }
            return Ok(reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    RData::AAAA(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect());
        }
    }
    Err(format!("no answer from {} after {} tries", args.server, args.tries).into())
}
