//! A lean HTTP/1.1 keep-alive connection for the load generators.
//!
//! The benchmark's clients share the two cores with the nodes they measure, so every
//! microsecond the load generator spends is taken from the system under test. A general
//! client (reqwest over hyper) cost about 30 µs of CPU per request here; this one writes a
//! request with one `write` and reads the answer with as few `read`s as the kernel allows,
//! which is what etcd's own `benchmark` tool (a thin gRPC client) amounts to. It speaks just
//! enough HTTP/1.1 for raftkv's answers: a status line, headers, and a `Content-Length`
//! body (anything else is an error, never a guess).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest head (status line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Largest body accepted.
const MAX_BODY: usize = 8 << 20;

/// One keep-alive connection to one server.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    host: String,
    out: Vec<u8>,
    input: Vec<u8>,
}

/// What the server answered.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Connection {
    /// Connects to `addr` (`host:port`, no scheme) with Nagle's algorithm off.
    pub async fn connect(addr: &str, timeout: Duration) -> io::Result<Connection> {
        let stream = connect_tcp(addr, timeout).await?;
        Ok(Connection {
            stream,
            host: addr.to_string(),
            out: Vec::with_capacity(1024),
            input: Vec::with_capacity(4096),
        })
    }

    /// Sends `method path` with `body` (sent with a `Content-Length` when `Some`) and reads
    /// the whole answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        self.out.clear();
        self.out.extend_from_slice(method.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(path.as_bytes());
        self.out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.out.extend_from_slice(self.host.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            self.out
                .extend_from_slice(b"Content-Type: application/octet-stream\r\n");
            self.out
                .extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            self.out.extend_from_slice(body);
        } else {
            self.out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&self.out).await?;
        self.read_response().await
    }

    /// Reads one response; bytes after it (there should be none) stay for the next one.
    async fn read_response(&mut self) -> io::Result<Response> {
        let head_len = loop {
            if let Some(end) = find_head_end(&self.input) {
                break end;
            }
            if self.input.len() > MAX_HEAD {
                return Err(invalid("response head longer than 16 KiB"));
            }
            self.fill().await?;
        };
        let (status, body_len) = parse_head(&self.input[..head_len])?;
        while self.input.len() < head_len + body_len {
            self.fill().await?;
        }
        let body = self.input[head_len..head_len + body_len].to_vec();
        self.input.drain(..head_len + body_len);
        Ok(Response { status, body })
    }

    /// Reads what the socket has into `input`; the server closing is an error.
    async fn fill(&mut self) -> io::Result<()> {
        self.input.reserve(4096);
        let n = self.stream.read_buf(&mut self.input).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(())
    }
}

/// A TCP connection to `addr` within `timeout`, with Nagle's algorithm off (a request is
/// one write, and must not wait for the previous answer's ACK).
pub(crate) async fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The length of the head including its blank line, once `buf` holds all of it.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The status code and body length of a response head.
fn parse_head(head: &[u8]) -> io::Result<(u16, usize)> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid(&format!("bad status line {status_line:?}")))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| invalid("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked responses are not supported"));
        }
    }
    // Bodiless statuses carry no length; anything else must say how long it is.
    let length = match (length, status) {
        (Some(n), _) => n,
        (None, 204 | 304) | (None, 100..=199) => 0,
        (None, _) => return Err(invalid("response without Content-Length")),
    };
    if length > MAX_BODY {
        return Err(invalid("response body over 8 MiB"));
    }
    Ok((status, length))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_and_refused_when_unusable() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-raft-index: 5\r\n\r\n";
        assert_eq!(find_head_end(head), Some(head.len()));
        assert_eq!(parse_head(head).ok(), Some((200, 12)));
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").ok(),
            Some((204, 0))
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[tokio::test]
    async fn a_request_round_trips_against_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            // Two requests on one connection: keep-alive.
            for _ in 0..2 {
                while !got.ends_with(b"hello") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                got.clear();
                s.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
        });
        let mut c = Connection::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        for _ in 0..2 {
            let r = c.request("PUT", "/kv/a", Some(b"hello")).await.unwrap();
            assert_eq!((r.status, r.body.as_slice()), (201, &b"ok"[..]));
        }
        server.await.unwrap();
    }
}
