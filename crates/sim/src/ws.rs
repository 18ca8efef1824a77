//! The client side of a WebSocket as Twilio's media edge speaks it: the upgrade handshake, masked
//! frames out, and server frames parsed in place from a per-call buffer (no per-frame allocation).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use super::conn::Conn;
use super::error::SimError;
use super::rng::Rng;
use super::target::{StreamRequest, Target};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HANDSHAKE_BYTES: usize = 8 * 1024;
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Opens the Media Stream: a connection to the target's address (TLS for an `https://` target),
/// then the upgrade. Returns the connection and any frame bytes that arrived with the answer.
pub async fn connect(
    target: &Target,
    request: &StreamRequest,
    rng: &mut Rng,
) -> Result<(Conn, Vec<u8>), SimError> {
    timeout(HANDSHAKE_TIMEOUT, upgrade(target, request, rng))
        .await
        .map_err(|_| SimError::Timeout("upgrade"))?
}

async fn upgrade(
    target: &Target,
    request: &StreamRequest,
    rng: &mut Rng,
) -> Result<(Conn, Vec<u8>), SimError> {
    let mut stream = target.connect().await?;
    // Media frames are small and latency-bound: never let Nagle hold one for an ACK.
    stream
        .tcp()
        .set_nodelay(true)
        .map_err(SimError::io("stream"))?;
    let key = BASE64.encode(rng.bytes::<16>());
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: Twilio.TmeWs/1.0 (prosaas-calls-sim)\r\n",
        request.path, request.host
    );
    if let Some(sig) = &request.signature {
        head.push_str(&format!("X-Twilio-Signature: {sig}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(SimError::io("upgrade"))?;
    // A TLS session may still hold the request's records after the write.
    stream.flush().await.map_err(SimError::io("upgrade"))?;

    let mut answer = Vec::with_capacity(512);
    let head_end = loop {
        let mut chunk = [0u8; 1024];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(SimError::io("upgrade"))?;
        if n == 0 {
            return Err(SimError::BadUpgrade(
                "connection closed during the handshake",
            ));
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if answer.len() > MAX_HANDSHAKE_BYTES {
            return Err(SimError::BadUpgrade("headers too long"));
        }
    };
    check_upgrade(&answer[..head_end], &key)?;
    Ok((stream, answer.split_off(head_end + 4)))
}

fn check_upgrade(head: &[u8], key: &str) -> Result<(), SimError> {
    let head =
        std::str::from_utf8(head).map_err(|_| SimError::BadUpgrade("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(super::webhook::status_code)
        .ok_or(SimError::BadUpgrade("status line"))?;
    if status != 101 {
        return Err(SimError::UpgradeStatus(status));
    }
    let expected = BASE64.encode(Sha1::digest(format!("{key}{ACCEPT_GUID}").as_bytes()));
    let accepted = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
        })
    });
    if accepted {
        Ok(())
    } else {
        Err(SimError::BadUpgrade(
            "Sec-WebSocket-Accept missing or wrong",
        ))
    }
}

/// Appends one final, masked client frame carrying `payload`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    let header_at = out.len();
    out.push(0x80 | opcode);
    push_length(out, payload.len());
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
    debug_assert_eq!(
        out.len() - header_at,
        header_len(payload.len()) + payload.len()
    );
}

/// Bytes before the payload of a masked client frame of `len` bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2 + 4,
        126..=0xffff => 4 + 4,
        _ => 10 + 4,
    }
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    const MASKED: u8 = 0x80;
    match len {
        0..=125 => out.push(MASKED | len as u8),
        126..=0xffff => {
            out.push(MASKED | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(MASKED | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// XORs `bytes` with the mask, as if they started `offset` bytes into the payload.
pub fn apply_mask(bytes: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte ^= mask[(offset + i) % 4];
    }
}

/// One frame from the server, located in the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub fin: bool,
    pub opcode: u8,
    /// Where the payload sits in the buffer that was parsed.
    pub payload: (usize, usize),
    /// How many bytes of the buffer the frame used.
    pub consumed: usize,
}

/// Parses the frame at the start of `buf`: `Ok(None)` until it is complete. A server must not mask
/// (RFC 6455 §5.1); a masked frame is refused rather than guessed at.
pub fn parse_frame(buf: &[u8], max_payload: usize) -> Result<Option<Incoming>, SimError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err(SimError::Protocol("reserved bits set"));
    }
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 {
        return Err(SimError::Protocol("masked frame from the server"));
    }
    let (len, at) = match buf[1] & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max_payload {
        return Err(SimError::Protocol("frame larger than the receive limit"));
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    Ok(Some(Incoming {
        fin,
        opcode,
        payload: (at, at + len),
        consumed: at + len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_tungstenite() {
        use tungstenite::protocol::frame::FrameHeader;
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut wire = Vec::new();
            encode_frame(&mut wire, opcode::TEXT, &payload, [1, 2, 3, 4]);
            assert_eq!(wire.len(), header_len(len) + len);
            let mut cursor = std::io::Cursor::new(&wire);
            let (header, parsed_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(parsed_len as usize, len);
            let start = cursor.position() as usize;
            let mask = header.mask.expect("client frames are masked");
            let unmasked: Vec<u8> = wire[start..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn parses_server_frames_incrementally() {
        let mut wire = vec![0x81, 126, 0x01, 0x00];
        wire.extend(std::iter::repeat_n(b'x', 256));
        wire.extend_from_slice(&[0x88, 0x02, 0x03, 0xe8]);
        for cut in 0..wire.len() - 4 {
            if cut < 4 + 256 {
                assert_eq!(parse_frame(&wire[..cut], 1024).unwrap(), None, "{cut}");
            }
        }
        let first = parse_frame(&wire, 1024).unwrap().unwrap();
        assert_eq!(
            (first.fin, first.opcode, first.payload),
            (true, opcode::TEXT, (4, 260))
        );
        let second = parse_frame(&wire[first.consumed..], 1024).unwrap().unwrap();
        assert_eq!(second.opcode, opcode::CLOSE);
        assert!(parse_frame(&wire, 100).is_err());
        assert!(parse_frame(&[0x81, 0x85, 0, 0, 0, 0, 1], 1024).is_err());
    }

    #[test]
    fn upgrade_answer_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert!(check_upgrade(ok, key).is_ok());
        assert!(matches!(
            check_upgrade(b"HTTP/1.1 403 Forbidden", key),
            Err(SimError::UpgradeStatus(403))
        ));
        assert!(check_upgrade(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope", key).is_err());
    }
}
