//! The benchmark's floor: a bare tokio + tokio-tungstenite WebSocket server that parses nothing and
//! echoes every message back (or, with `silent`, drops it). Defaults everywhere but TCP_NODELAY.

use futures_util::{SinkExt, StreamExt};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let echo = args.next().as_deref() != Some("silent");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        // The server under test sets TCP_NODELAY too; without it Nagle would skew latency.
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if echo
                    && (message.is_text() || message.is_binary())
                    && ws.send(message).await.is_err()
                {
                    break;
                }
            }
        });
    }
}
