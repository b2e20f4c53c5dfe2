//! A minimal WebSocket echo server (tokio-tungstenite), for the netns suite and demos.
//!
//!     cargo run --release --example ws_echo_server -- --listen 192.0.2.2:8765 --lifetime 300
//!
//! Echoes every text and binary message back on the same connection. Prints `listening on
//! ADDR` once bound; exits by itself after `--lifetime` seconds so a test can never leave it
//! running.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

#[derive(Parser)]
struct Args {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: SocketAddr,
    /// Exit after this many seconds
    #[arg(long, default_value_t = 600)]
    lifetime: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let serve = async {
        loop {
            let (stream, peer) = listener.accept().await?;
            tokio::spawn(async move {
                let mut ws = match tokio_tungstenite::accept_async(stream).await {
                    Ok(ws) => ws,
                    Err(e) => return eprintln!("{peer}: handshake failed: {e}"),
                };
                let mut echoed = 0u64;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                        echoed += 1;
                    }
                }
                println!("{peer}: {echoed} messages echoed");
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(args.lifetime), serve).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}
