//! Server configuration: a builder in which every limit has a documented default.
//!
//! Build one with [`Server::builder`](crate::net::Server::builder) (or [`ServerConfig::default`])
//! and start the network thread with [`ServerBuilder::spawn`](crate::net::ServerBuilder::spawn).
//! Nothing here allocates except the token and the connection-file path, once, at setup.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::frame::DEFAULT_MAX_FRAME;

/// Environment variable in which the spawning UI hands the engine its session token.
///
/// Never pass the token on the command line: `argv` is visible to every user via `ps`.
pub const TOKEN_ENV: &str = "LOOPHOLE_SESSION_TOKEN";

/// Reads the session token from [`TOKEN_ENV`]: `Ok(None)` when unset or empty.
///
/// A value that is not UTF-8 is [`TokenNotUnicode`], never `None`: an engine that read it as
/// "no token" would accept every local client (ports.md §5: a token is UTF-8). Allocates the
/// returned string.
pub fn token_from_env() -> Result<Option<String>, TokenNotUnicode> {
    match std::env::var(TOKEN_ENV) {
        Ok(t) => Ok(Some(t).filter(|t| !t.is_empty())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(TokenNotUnicode),
    }
}

/// [`TOKEN_ENV`] is set to a value that is not UTF-8 (from [`token_from_env`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenNotUnicode;

impl std::fmt::Display for TokenNotUnicode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_ENV} is not valid UTF-8 (a session token is at most 128 bytes of UTF-8)"
        )
    }
}

impl std::error::Error for TokenNotUnicode {}

/// Which TCP port the engine binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortPolicy {
    /// Let the OS pick a free port (the default). The port is announced after binding.
    Ephemeral,
    /// Exactly this port; fails with [`BindError::InUse`](crate::net::BindError::InUse) if taken.
    Fixed(u16),
    /// The first free port of `first..=last`, tried in order.
    Range {
        /// First port tried.
        first: u16,
        /// Last port tried (inclusive).
        last: u16,
    },
}

/// Everything the network thread needs, with documented defaults.
///
/// Durations are wall-clock durations of the engine's monotonic clock.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to bind. Default `127.0.0.1`; `::1` is supported. Anything that is not a loopback
    /// address is refused unless [`allow_non_loopback`](Self::allow_non_loopback) is set, and
    /// then a [`token`](Self::token) is mandatory.
    pub bind: IpAddr,
    /// Allow a non-loopback bind address. Default `false`.
    pub allow_non_loopback: bool,
    /// Port policy. Default [`PortPolicy::Ephemeral`].
    pub port: PortPolicy,
    /// Largest frame payload accepted from the client, bytes. Default 65 536; 64 … 16 777 216.
    pub max_frame: u32,
    /// Receive buffer per connection, bytes. Default `8 + max_frame`; at least that.
    pub rx_buffer: usize,
    /// Transmit buffer per connection, bytes. Default 262 144. Must hold an 8-byte preface, a
    /// `welcome`, the snapshot and one largest telemetry frame (at least 8 192).
    pub tx_buffer: usize,
    /// Kernel send buffer (`SO_SNDBUF`) of accepted sockets, bytes. Default `None` (the OS
    /// default, auto-tuned). A small value bounds what a slow reader can hold in the kernel,
    /// so back-pressure reaches the transmit buffer (and telemetry shedding) sooner.
    pub socket_send_buffer: Option<usize>,
    /// A connection must complete `hello` within this. Default 5 s.
    pub handshake_timeout: Duration,
    /// Heartbeat interval announced in `welcome.heartbeat_ms`. Default 1 s.
    pub heartbeat_interval: Duration,
    /// A client silent this long is dropped (`goodbye heartbeat_timeout`). Default 5 s.
    pub heartbeat_timeout: Duration,
    /// A client that takes none of the bytes waiting for it for this long is dropped
    /// (`goodbye slow_consumer`). Default 5 s.
    pub slow_consumer_timeout: Duration,
    /// Safety-net interval at which the reply queue is polled while commands are in flight even
    /// if the callback-end prediction is wrong or missing. Default 5 ms. With nothing in flight
    /// the queue is still drained every 10 × this (transport telemetry keeps arriving).
    pub telemetry_poll: Duration,
    /// Margin added to the predicted end of the next audio callback before checking for
    /// replies. Default 0: the thread wakes at the predicted end and spins (up to
    /// [`reply_spin`](Self::reply_spin)) if the callback is still running, or looks again every
    /// 25 µs if the callback started late. A margin trades latency (it adds to every ack) for
    /// fewer spins.
    pub wake_margin: Duration,
    /// How long the thread spins on the reply queue when it wakes before the audio callback
    /// has answered. Default 200 µs.
    pub reply_spin: Duration,
    /// Requests queued towards the control thread. Default 64.
    pub control_capacity: usize,
    /// Connections that have not completed `hello` at one time; beyond it a new connection
    /// makes one of them close: first one that already ended before `welcome` (a failed
    /// handshake still flushing its error), then the oldest still waiting for its preface, then
    /// the oldest waiting for `hello`; an established session is never evicted. So idle,
    /// trickling or failing sockets cannot lock a client out (session.md §2). Default 8.
    pub max_half_open: usize,
    /// Session token the client must present in `hello`. Default `None` (read it with
    /// [`token_from_env`]).
    pub token: Option<String>,
    /// Engine name/version for `welcome.engine`. Default `"signal/<crate version>"`.
    pub engine_name: String,
    /// Sample rate announced in `welcome`. Default 48 000.
    pub sample_rate: u32,
    /// Block size announced in `welcome`. Default 256.
    pub block_size: u32,
    /// Engine instance id (16 lowercase hex digits). Default: derived from the pid and the time
    /// at construction, new for every process.
    pub instance: String,
    /// Write a connection file here after binding (atomically, mode 0600). Default `None`.
    pub connection_file: Option<PathBuf>,
    /// The supervisor (UI) process to watch. Default `None`: no orphan detection.
    pub supervisor_pid: Option<u32>,
    /// Also report an orphan when the parent pid changes (the parent died and we were
    /// re-parented). Default `false`.
    pub watch_parent: bool,
    /// After the supervisor is gone, how long to wait for a client before reporting the engine
    /// orphaned. Default 10 s.
    pub orphan_grace: Duration,
    /// How often the supervisor is checked. Default 500 ms.
    pub orphan_check: Duration,
    /// Longest time [`ServerHandle::shutdown`](crate::net::ServerHandle::shutdown) (and drop)
    /// waits to flush the goodbye and pending answers; also how long a half-closed client's
    /// commands may wait for a full route before they are answered `shutting_down`. A
    /// half-closed client that keeps reading is kept past it, bounded by
    /// `slow_consumer_timeout` without progress (session.md §7). Default 1 s.
    pub flush_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            allow_non_loopback: false,
            port: PortPolicy::Ephemeral,
            max_frame: DEFAULT_MAX_FRAME,
            rx_buffer: 8 + DEFAULT_MAX_FRAME as usize,
            tx_buffer: 256 * 1024,
            socket_send_buffer: None,
            handshake_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            slow_consumer_timeout: Duration::from_secs(5),
            telemetry_poll: Duration::from_millis(5),
            wake_margin: Duration::ZERO,
            reply_spin: Duration::from_micros(200),
            control_capacity: 64,
            max_half_open: 8,
            token: None,
            engine_name: concat!("signal/", env!("CARGO_PKG_VERSION")).to_owned(),
            sample_rate: 48_000,
            block_size: 256,
            instance: new_instance_id(),
            connection_file: None,
            supervisor_pid: None,
            watch_parent: false,
            orphan_grace: Duration::from_secs(10),
            orphan_check: Duration::from_millis(500),
            flush_timeout: Duration::from_secs(1),
        }
    }
}

/// A fresh instance id: 16 lowercase hex digits from the pid, the wall clock and a counter,
/// mixed (not cryptographic; it only has to differ between engine processes).
pub fn new_instance_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = t ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{x:016x}")
}
