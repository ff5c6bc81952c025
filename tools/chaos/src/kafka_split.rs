//! Why a plain TCP proxy in front of a Kafka broker needs help, and the help.
//!
//! A Kafka client uses its bootstrap address once: the broker's metadata answer names the
//! address to use from then on (the *advertised listener*), and the client connects there for
//! produce, fetch and the group coordinator. Pointing delivery's `CARRIER_KAFKA__BROKERS` at a
//! fault proxy therefore only proxies the bootstrap connection. Making Tansu advertise the
//! proxy's address instead sends *every* service through it, so a fault meant for delivery
//! would hit ingress, router and notifier too.
//!
//! What works: Tansu listens on its own port and advertises the address of this splitter. The
//! splitter reads the first request of each connection (librdkafka opens every connection with
//! `ApiVersions`), takes the `client_id` from its header, and forwards the whole connection
//! either through the delivery fault proxy (client IDs starting with `carrier-delivery`, the
//! delivery consumer's and producer's) or straight to Tansu (everyone else). Delivery
//! bootstraps through its fault proxy too. The request header's `client_id` is a plain
//! nullable INT16-length string in every header version (flexible versions included), so the
//! split reads two fixed fields and a string, nothing version-specific.
//!
//! Left out: connections of delivery's short-lived helper clients that set no `client.id`
//! (the partition-count lookup of the worker registry) go straight to Tansu.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Largest first request read before a decision (ApiVersions is tens of bytes).
const MAX_FIRST_REQUEST_BYTES: usize = 1024 * 1024;

/// The running splitter; it stops when dropped.
pub struct KafkaSplit {
    addr: SocketAddr,
    _stop: DropGuard,
}

impl KafkaSplit {
    /// Listens on `127.0.0.1:0`; connections whose client ID starts with `proxied_prefix` go to
    /// `proxied`, all others to `direct`.
    pub async fn start(
        direct: SocketAddr,
        proxied: SocketAddr,
        proxied_prefix: &str,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let route = Route {
            direct,
            proxied,
            proxied_prefix: proxied_prefix.to_string(),
        };
        tokio::spawn(accept_loop(listener, route, stop.clone()));
        Ok(Self {
            addr,
            _stop: stop.drop_guard(),
        })
    }

    /// The address the broker must advertise.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[derive(Clone)]
struct Route {
    direct: SocketAddr,
    proxied: SocketAddr,
    proxied_prefix: String,
}

async fn accept_loop(listener: TcpListener, route: Route, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _)) => {
                let route = route.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = forward(client, &route) => {}
                    }
                });
            }
            Err(error) => {
                tracing::debug!(%error, "kafka split accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn forward(mut client: TcpStream, route: &Route) -> std::io::Result<()> {
    let mut size = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut size)).await??;
    let length = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
    if length > MAX_FIRST_REQUEST_BYTES {
        return Ok(());
    }
    let mut request = vec![0; length];
    tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut request)).await??;
    let proxied = client_id(&request).is_some_and(|id| id.starts_with(&route.proxied_prefix));
    let target = if proxied { route.proxied } else { route.direct };
    let mut upstream = TcpStream::connect(target).await?;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    upstream.write_all(&size).await?;
    upstream.write_all(&request).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The `client_id` of a Kafka request (the bytes after its 4-byte size): header fields
/// `api_key: i16`, `api_version: i16`, `correlation_id: i32`, then `client_id` as an INT16
/// length (-1 for null) and UTF-8 bytes.
pub fn client_id(request: &[u8]) -> Option<&str> {
    let length = i16::from_be_bytes(request.get(8..10)?.try_into().ok()?);
    let length = usize::try_from(length).ok()?;
    std::str::from_utf8(request.get(10..10 + length)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(client: Option<&str>) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend(18i16.to_be_bytes()); // ApiVersions
        bytes.extend(3i16.to_be_bytes());
        bytes.extend(7i32.to_be_bytes());
        match client {
            Some(client) => {
                bytes.extend((client.len() as i16).to_be_bytes());
                bytes.extend(client.as_bytes());
            }
            None => bytes.extend((-1i16).to_be_bytes()),
        }
        bytes.push(0); // tagged fields of a flexible header, then the body
        bytes
    }

    #[test]
    fn reads_the_client_id_of_a_request_header() {
        assert_eq!(
            client_id(&request(Some("carrier-delivery"))),
            Some("carrier-delivery")
        );
        assert_eq!(client_id(&request(Some(""))), Some(""));
        assert_eq!(client_id(&request(None)), None);
        assert_eq!(client_id(&request(Some("rdkafka"))[..11]), None, "truncated");
        assert_eq!(client_id(&[0, 18]), None);
    }

    /// A server that answers every connection with its name, then closes.
    async fn named_server(name: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut size = [0u8; 4];
                    let _ = stream.read_exact(&mut size).await;
                    let mut request = vec![0; i32::from_be_bytes(size) as usize];
                    let _ = stream.read_exact(&mut request).await;
                    let _ = stream.write_all(name).await;
                });
            }
        });
        addr
    }

    async fn served_by(split: &KafkaSplit, client: Option<&str>) -> Vec<u8> {
        let mut stream = TcpStream::connect(split.addr()).await.expect("connect");
        let request = request(client);
        stream
            .write_all(&(request.len() as i32).to_be_bytes())
            .await
            .expect("write");
        stream.write_all(&request).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("answer in time")
            .expect("read");
        answer
    }

    #[tokio::test]
    async fn delivery_connections_take_the_proxied_path_and_others_go_direct() {
        let direct = named_server(b"direct").await;
        let proxied = named_server(b"proxied").await;
        let split = KafkaSplit::start(direct, proxied, "carrier-delivery")
            .await
            .expect("split");
        assert_eq!(served_by(&split, Some("carrier-delivery")).await, b"proxied");
        assert_eq!(served_by(&split, Some("carrier-router")).await, b"direct");
        assert_eq!(served_by(&split, None).await, b"direct");
    }
}
