//! A TCP proxy on loopback that injects network faults between a client and its upstream, so a
//! test can put a slow, partitioned or cut network between a service and the broker or Postgres.
//!
//! Point the client at [`FaultProxy::addr`] instead of the upstream, then change the network's
//! behaviour at any time with [`FaultProxy::set_mode`]:
//! - [`FaultMode::Pass`]: bytes flow as they come.
//! - [`FaultMode::Delay`]: every chunk is held this long before it is forwarded, in both
//!   directions. Chunks travel as a pipeline, so latency rises but throughput does not collapse.
//! - [`FaultMode::Drop`]: a partition. Connections stay open and new ones are accepted, but no
//!   byte is forwarded; what was sent waits (as unacknowledged TCP segments would) and flows
//!   when the mode changes back, unless a side gave up and closed meanwhile.
//! - [`FaultMode::Cut`]: every current connection is reset at once, and new connections are
//!   reset as soon as they are accepted, until the mode changes.
//!
//! The handle is a cheap `Clone`; the proxy stops (and closes its connections) when the last
//! handle is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How the proxied network behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Bytes flow as they come.
    Pass,
    /// Added latency per chunk, in both directions.
    Delay(Duration),
    /// Nothing is forwarded; connections stay open (a network partition).
    Drop,
    /// Every connection is reset, current and new.
    Cut,
}

impl std::fmt::Display for FaultMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultMode::Pass => formatter.write_str("pass"),
            FaultMode::Delay(delay) => write!(formatter, "delay {} ms", delay.as_millis()),
            FaultMode::Drop => formatter.write_str("drop"),
            FaultMode::Cut => formatter.write_str("cut"),
        }
    }
}

/// Bytes read from one side at a time (and the unit the delay applies to).
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks read ahead of the writer per direction (the delay pipeline's depth).
const PIPELINE_CHUNKS: usize = 64;

/// A running proxy; clones share it.
#[derive(Clone)]
pub struct FaultProxy {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<FaultMode>,
    open_connections: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` to `upstream`, in [`FaultMode::Pass`].
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        Self::start_on("127.0.0.1:0".parse().expect("loopback address"), upstream).await
    }

    /// Starts a proxy listening on `listen` (e.g. an address chosen before the upstream starts).
    pub async fn start_on(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (mode, mode_receiver) = watch::channel(FaultMode::Pass);
        let open_connections = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            upstream,
            mode_receiver,
            open_connections.clone(),
            shutdown.clone(),
        ));
        Ok(FaultProxy {
            inner: Arc::new(Inner {
                addr,
                upstream,
                mode,
                open_connections,
                shutdown,
            }),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The address the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.upstream
    }

    /// Changes the network's behaviour, for current and new connections, at once.
    pub fn set_mode(&self, mode: FaultMode) {
        self.inner.mode.send_replace(mode);
    }

    pub fn mode(&self) -> FaultMode {
        *self.inner.mode.borrow()
    }

    /// Client connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.inner.open_connections.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<FaultMode>,
    open_connections: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of file descriptors and the like: try again shortly.
                tracing::debug!(%error, "fault proxy accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if *mode.borrow() == FaultMode::Cut {
            reset(client);
            continue;
        }
        let guard = ConnectionGuard::new(open_connections.clone());
        tokio::spawn(connection(
            client,
            upstream,
            mode.clone(),
            shutdown.clone(),
            guard,
        ));
    }
}

/// Counts a connection as open while it lives.
struct ConnectionGuard(Arc<AtomicUsize>);

impl ConnectionGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes with a TCP reset (no FIN, unsent data discarded): the peer sees the cut at once.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: watch::Receiver<FaultMode>,
    shutdown: CancellationToken,
    _guard: ConnectionGuard,
) {
    let connect = tokio::select! {
        _ = shutdown.cancelled() => return,
        connect = TcpStream::connect(upstream) => connect,
    };
    let mut server = match connect {
        Ok(server) => server,
        Err(error) => {
            tracing::debug!(%error, %upstream, "fault proxy cannot reach its upstream");
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cut_watch = mode.clone();
    let cut = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let forward = async {
            tokio::try_join!(
                direction(client_read, server_write, mode.clone()),
                direction(server_read, client_write, mode.clone()),
            )
        };
        tokio::select! {
            _ = forward => false,
            _ = cut_watch.wait_for(|mode| *mode == FaultMode::Cut) => true,
            _ = shutdown.cancelled() => true,
        }
    };
    if cut {
        reset(client);
        reset(server);
    }
}

/// Forwards one direction until its reader ends, then half-closes the writer: a reader task
/// stamps each chunk with its due time and a writer task sends it then, so chunks travel as a
/// pipeline.
async fn direction<R, W>(reader: R, writer: W, mode: watch::Receiver<FaultMode>) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>(PIPELINE_CHUNKS);
    tokio::try_join!(
        read_chunks(reader, chunks, mode.clone()),
        write_chunks(writer, due, mode),
    )?;
    Ok(())
}

async fn read_chunks<R: AsyncRead + Unpin>(
    mut reader: R,
    chunks: mpsc::Sender<(Instant, Vec<u8>)>,
    mut mode: watch::Receiver<FaultMode>,
) -> std::io::Result<()> {
    loop {
        // A partition reads nothing: the sender's bytes wait in its socket buffers.
        if mode.wait_for(|mode| *mode != FaultMode::Drop).await.is_err() {
            return Ok(());
        }
        let mut chunk = vec![0; CHUNK_BYTES];
        let read = reader.read(&mut chunk).await?;
        if read == 0 {
            return Ok(()); // dropping `chunks` tells the writer the stream ended
        }
        chunk.truncate(read);
        let delay = match *mode.borrow() {
            FaultMode::Delay(delay) => delay,
            _ => Duration::ZERO,
        };
        if chunks.send((Instant::now() + delay, chunk)).await.is_err() {
            return Ok(());
        }
    }
}

async fn write_chunks<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut due: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut mode: watch::Receiver<FaultMode>,
) -> std::io::Result<()> {
    while let Some((at, chunk)) = due.recv().await {
        tokio::time::sleep_until(at).await;
        if mode.wait_for(|mode| *mode != FaultMode::Drop).await.is_err() {
            return Ok(());
        }
        writer.write_all(&chunk).await?;
    }
    writer.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback: every connection gets its bytes back, then EOF after the
    /// client's EOF.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    let _ = writer.shutdown().await;
                });
            }
        });
        addr
    }

    async fn roundtrip(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
        stream.write_all(bytes).await.expect("write");
        let mut answer = vec![0; bytes.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
            .await
            .expect("echo within 5 s")
            .expect("read");
        answer
    }

    /// True if nothing arrives on `stream` within `wait` (and it is not closed).
    async fn silent_for(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(wait, stream.read(&mut byte)).await.is_err()
    }

    /// True if `stream` ends (EOF or reset) within `wait`.
    async fn closes_within(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut buffer = [0u8; 64];
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }

    #[tokio::test]
    async fn pass_forwards_both_ways_and_ends_with_the_client() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        assert_eq!(proxy.mode(), FaultMode::Pass);
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"hello").await, b"hello");
        let large = vec![7u8; 1024 * 1024];
        assert_eq!(roundtrip(&mut stream, &large).await, large, "a megabyte, chunked");
        assert_eq!(proxy.open_connections(), 1);

        // Half-close: the upstream sees EOF, ends, and the client sees EOF in turn.
        stream.shutdown().await.expect("shutdown");
        assert!(closes_within(&mut stream, Duration::from_secs(5)).await);
        crate::eventually(Duration::from_secs(5), "the connection to be released", || {
            let open = proxy.open_connections();
            async move { (open == 0).then_some(()) }
        })
        .await;
    }

    #[tokio::test]
    async fn delay_adds_latency_in_both_directions_without_serialising_chunks() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        let delay = Duration::from_millis(200);
        // A clone is the same proxy.
        proxy.clone().set_mode(FaultMode::Delay(delay));
        assert_eq!(proxy.mode(), FaultMode::Delay(delay));

        let started = Instant::now();
        assert_eq!(roundtrip(&mut stream, b"ping").await, b"ping");
        assert!(
            started.elapsed() >= 2 * delay,
            "one round trip crosses the delay twice: {:?}",
            started.elapsed()
        );

        // Five chunks sent 20 ms apart: pipelined they take about 2 × 200 + 80 ms, one after the
        // other they would take 5 × 400 ms.
        let started = Instant::now();
        for index in 0..5u8 {
            stream.write_all(&[index]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut answer = [0u8; 5];
        stream.read_exact(&mut answer).await.expect("read");
        assert_eq!(answer, [0, 1, 2, 3, 4], "order is kept");
        let elapsed = started.elapsed();
        assert!(elapsed >= 2 * delay, "{elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(1_500),
            "chunks are pipelined: {elapsed:?}"
        );

        proxy.set_mode(FaultMode::Pass);
        let started = Instant::now();
        assert_eq!(roundtrip(&mut stream, b"again").await, b"again");
        assert!(started.elapsed() < delay, "back to pass: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn drop_forwards_nothing_keeps_connections_open_and_delivers_once_healed() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut before = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(roundtrip(&mut before, b"up").await, b"up");

        proxy.set_mode(FaultMode::Drop);
        before.write_all(b"held").await.expect("write");
        assert!(
            silent_for(&mut before, Duration::from_millis(500)).await,
            "nothing crosses a partition, and the connection stays open"
        );
        // A connection opened during the partition is accepted and then hears nothing.
        let mut during = TcpStream::connect(proxy.addr()).await.expect("connect");
        during.write_all(b"new").await.expect("write");
        assert!(silent_for(&mut during, Duration::from_millis(300)).await);
        assert_eq!(proxy.open_connections(), 2);

        proxy.set_mode(FaultMode::Pass);
        let mut answer = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), before.read_exact(&mut answer))
            .await
            .expect("healed within 5 s")
            .expect("read");
        assert_eq!(&answer, b"held", "what waited flows once healed");
        let mut answer = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), during.read_exact(&mut answer))
            .await
            .expect("healed within 5 s")
            .expect("read");
        assert_eq!(&answer, b"new");
    }

    #[tokio::test]
    async fn cut_resets_every_connection_and_refuses_new_ones_until_pass() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(roundtrip(&mut open, b"up").await, b"up");
        // A connection held in a partition is cut too.
        let mut held = TcpStream::connect(proxy.addr()).await.expect("connect");
        proxy.set_mode(FaultMode::Drop);
        held.write_all(b"x").await.expect("write");

        proxy.set_mode(FaultMode::Cut);
        assert!(
            closes_within(&mut open, Duration::from_secs(1)).await,
            "an open connection is cut at once"
        );
        assert!(closes_within(&mut held, Duration::from_secs(1)).await);
        // New connections are closed as soon as they are accepted.
        for _ in 0..3 {
            // Refused outright (a connect error) is a cut too.
            if let Ok(mut stream) = TcpStream::connect(proxy.addr()).await {
                let _ = stream.write_all(b"anyone?").await;
                assert!(closes_within(&mut stream, Duration::from_secs(1)).await);
            }
        }
        crate::eventually(Duration::from_secs(5), "cut connections to be released", || {
            let open = proxy.open_connections();
            async move { (open == 0).then_some(()) }
        })
        .await;

        proxy.set_mode(FaultMode::Pass);
        let mut after = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(roundtrip(&mut after, b"back").await, b"back");
    }

    #[tokio::test]
    async fn an_unreachable_upstream_closes_the_client_connection() {
        // A port nothing listens on: bind, read the port, close.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        let proxy = FaultProxy::start(closed).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert!(closes_within(&mut stream, Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn the_proxy_stops_when_its_last_handle_is_dropped() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let addr = proxy.addr();
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(roundtrip(&mut stream, b"up").await, b"up");
        drop(proxy);
        assert!(closes_within(&mut stream, Duration::from_secs(2)).await);
    }
}
