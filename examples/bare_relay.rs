//! The bridge benchmark's floor: the smallest tokio-tungstenite relay. It accepts a Twilio-side
//! WebSocket, dials the agent and copies every frame both ways, parsing nothing; sockets are tuned
//! like the server's (src/http/stream.rs, src/bridge/dial.rs) and TCP_NODELAY is on both.
//!
//! `cargo run --release --example bare_relay -- 127.0.0.1:9000 ws://127.0.0.1:9090/`

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let agent = args.next().unwrap_or_else(|| "ws://127.0.0.1:9090/".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let agent = agent.clone();
        tokio::spawn(async move {
            let Ok(twilio) =
                tokio_tungstenite::accept_async_with_config(stream, Some(config())).await
            else {
                return;
            };
            let Ok((upstream, _)) =
                tokio_tungstenite::connect_async_with_config(agent, Some(config()), true).await
            else {
                return;
            };
            let (mut twilio_tx, mut twilio_rx) = twilio.split();
            let (mut agent_tx, mut agent_rx) = upstream.split();
            let up = async {
                while let Some(Ok(message)) = twilio_rx.next().await {
                    if agent_tx.send(message).await.is_err() {
                        break;
                    }
                }
                let _ = agent_tx.close().await;
            };
            let down = async {
                while let Some(Ok(message)) = agent_rx.next().await {
                    if twilio_tx.send(message).await.is_err() {
                        break;
                    }
                }
                let _ = twilio_tx.close().await;
            };
            // Either side ending ends the relay, as the server's does.
            tokio::select! {
                () = up => {}
                () = down => {}
            }
        });
    }
}
