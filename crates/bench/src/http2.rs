//! A lean HTTP/2 client (cleartext, prior knowledge) for the load generators: several
//! clients share one connection, each request on its own stream.
//!
//! This is how etcd's own `benchmark` tool drives etcd: `--clients` gRPC callers
//! multiplexed over `--conns` HTTP/2 connections (one by default). Multiplexing matters on
//! loopback, where a request costs more in the kernel (a `read`, a `write`, a wake-up on each
//! side) than in the server: one connection carries the requests of many clients per
//! system call. The client is the `h2` crate straight, without hyper's pooling on top.

use std::io;
use std::time::Duration;

use crate::http1::{connect_tcp, Response};
use bytes::Bytes;

/// Largest body accepted.
const MAX_BODY: usize = 8 << 20;

/// A handle on one HTTP/2 connection; clones share the connection.
#[derive(Debug, Clone)]
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl Connection {
    /// Connects to `addr` (`host:port`, no scheme) with Nagle's algorithm off, and drives
    /// the connection on a task of the current runtime until every handle is dropped.
    pub async fn connect(addr: &str, timeout: Duration) -> io::Result<Connection> {
        let stream = connect_tcp(addr, timeout).await?;
        let (send, connection) = h2::client::Builder::new()
            // Answers are small; a large window keeps flow control out of the way.
            .initial_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(h2_error)?;
        tokio::spawn(async move {
            // The connection's end shows up as an error on the next request.
            let _ = connection.await;
        });
        Ok(Connection {
            send,
            authority: addr.to_string(),
        })
    }

    /// Sends `method path` with `body` on a new stream and reads the whole answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> io::Result<Response> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.authority))
            .body(())
            .map_err(|e| invalid(&format!("building the request: {e}")))?;
        let mut send = self.send.clone().ready().await.map_err(h2_error)?;
        let (answer, mut stream) = send
            .send_request(request, body.is_none())
            .map_err(h2_error)?;
        if let Some(body) = body {
            stream.send_data(body, true).map_err(h2_error)?;
        }
        let (head, mut incoming) = answer.await.map_err(h2_error)?.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = incoming.data().await {
            let chunk = chunk.map_err(h2_error)?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(invalid("response body over 8 MiB"));
            }
            body.extend_from_slice(&chunk);
            incoming
                .flow_control()
                .release_capacity(chunk.len())
                .map_err(h2_error)?;
        }
        Ok(Response {
            status: head.status.as_u16(),
            body,
        })
    }
}

fn h2_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        if let Some(io) = e.into_io() {
            return io;
        }
        return io::Error::other("HTTP/2 I/O error");
    }
    io::Error::other(e)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clients' requests on one connection, each answered on its own stream.
    #[tokio::test]
    async fn requests_share_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(socket).await.unwrap();
            let mut answered = 0;
            while let Some(stream) = conn.accept().await {
                let (request, mut respond) = stream.unwrap();
                let (head, mut body) = request.into_parts();
                let mut got = Vec::new();
                while let Some(chunk) = body.data().await {
                    got.extend_from_slice(&chunk.unwrap());
                }
                let answer = format!("{} {} {}", head.method, head.uri.path(), got.len());
                let response = http::Response::builder().status(201).body(()).unwrap();
                let mut send = respond.send_response(response, false).unwrap();
                send.send_data(Bytes::from(answer), true).unwrap();
                answered += 1;
                if answered == 2 {
                    // Let the answers go out before the connection is dropped.
                    std::future::poll_fn(|cx| conn.poll_closed(cx)).await.ok();
                    break;
                }
            }
        });
        let conn = Connection::connect(&addr, Duration::from_secs(5))
            .await
            .unwrap();
        let other = conn.clone();
        let (a, b) = tokio::join!(
            conn.request("PUT", "/kv/a", Some(Bytes::from_static(b"hello"))),
            other.request("GET", "/kv/b", None),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.status, a.body.as_slice()), (201, &b"PUT /kv/a 5"[..]));
        assert_eq!((b.status, b.body.as_slice()), (201, &b"GET /kv/b 0"[..]));
        drop((conn, other));
        server.await.unwrap();
    }
}
