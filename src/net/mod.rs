//! The network thread: one mio event loop that accepts clients on loopback, drives one
//! [`Session`](crate::session::Session) per connection and moves commands and answers between the
//! sockets, the audio thread ([`NetEndpoint`]) and the engine's control thread
//! ([`ControlEndpoint`]).
//!
//! One constructor, one handle per thread role:
//!
//! ```no_run
//! use loophole_ipc::net::Server;
//! use loophole_ipc::rt::{bridge, RtConfig};
//!
//! let (audio, net) = bridge(&RtConfig::default());
//! let (server, control) = Server::builder().spawn(net)?;
//! println!("{}", server.announcement()); // the one line on stdout
//! # drop((audio, control));
//! server.shutdown();
//! # Ok::<(), loophole_ipc::net::BindError>(())
//! ```
//!
//! # What allocates, what blocks
//!
//! [`ServerBuilder::spawn`] allocates the listener, the event list, the control queues, the
//! thread, and one receive/transmit buffer pair per connection slot (sizes from
//! [`ServerConfig`]), reused by every connection: accepting a connection and the per-message
//! path (read, decode, route, answer, telemetry, write) do not allocate (measured in
//! `tests/net_alloc.rs`). The thread blocks only in `epoll_wait`; deadlines below a millisecond
//! use a `timerfd` (see `sys.rs`).
//!
//! # Wake-up policy
//!
//! While commands are in flight to the audio thread the thread sleeps until the predicted end of
//! the callback that will answer them ([`NetEndpoint::next_callback_end_ns`] plus
//! [`ServerConfig::wake_margin`], default 0), then takes the replies, spinning up to
//! [`ServerConfig::reply_spin`] while that callback still runs; if the predicted end has passed
//! without the answers (the callback started late) it looks again every 25 µs rather than a
//! whole period later. It also polls the reply queue every [`ServerConfig::telemetry_poll`] as a
//! safety net. The audio thread makes no system call to wake it, unless the `rt-wake` feature's
//! waker is configured (`ServerBuilder::audio_waker`).

mod analysis;
mod announce;
mod bind;
mod framelog;
pub(crate) mod sys;
mod thread;

pub use analysis::AnalysisWorker;
pub use announce::{AnnounceError, Announcement, ANNOUNCE_PREFIX};
pub use bind::BindError;
pub use framelog::{FrameLogConfig, DEFAULT_BUFFER, DEFAULT_MAX_BYTES, FRAME_LOG_ENV, WRITER_POLL};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{PortPolicy, ServerConfig};
use crate::control::{control_route, ControlEndpoint};
use crate::rt::NetEndpoint;
use thread::Status;

/// Entry point: [`Server::builder`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with every default of [`ServerConfig`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            cfg: ServerConfig::default(),
            poll: None,
            frame_log: None,
            analysis: None,
            audio_wake: false,
        }
    }
}

/// Builds and starts the network thread. Every setter documents its default in
/// [`ServerConfig`].
#[derive(Debug)]
pub struct ServerBuilder {
    cfg: ServerConfig,
    /// The event loop, created early by [`ServerBuilder::audio_waker`] (`rt-wake`).
    poll: Option<(mio::Poll, Arc<mio::Waker>)>,
    /// The frame log, if any ([`ServerBuilder::frame_log`]).
    frame_log: Option<FrameLogConfig>,
    /// The network side of the analysis mailboxes and the tap count for `welcome.taps`
    /// ([`ServerBuilder::analysis_worker`]).
    analysis: Option<(crate::rt::analysis::AnalysisReader, u16)>,
    /// [`ServerBuilder::audio_waker`] was called (not merely the event loop created early).
    #[cfg_attr(not(feature = "rt-wake"), allow(dead_code))]
    audio_wake: bool,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, v: $ty) -> Self {
                self.cfg.$name = v;
                self
            }
        )*
    };
}

impl ServerBuilder {
    /// Starts from an explicit configuration.
    pub fn from_config(cfg: ServerConfig) -> Self {
        Self {
            cfg,
            poll: None,
            frame_log: None,
            analysis: None,
            audio_wake: false,
        }
    }

    /// The waker of the network thread-to-be, for [`RtConfig::with_waker`](crate::rt::RtConfig)
    /// (feature `rt-wake`): the audio thread then makes one non-blocking `write(2)` to an
    /// eventfd at the end of each callback that answered a command, and the network thread
    /// takes the answers at once instead of at the predicted callback end. Call it before
    /// creating the bridge; [`spawn`](Self::spawn) uses the same event loop. Allocates the
    /// event loop (once).
    #[cfg(feature = "rt-wake")]
    pub fn audio_waker(&mut self) -> std::io::Result<Arc<mio::Waker>> {
        self.audio_wake = true;
        self.early_poll()
    }

    /// The event loop and its waker, created once (before [`spawn`](Self::spawn) when a
    /// handle needs the waker early).
    #[cfg(feature = "rt-wake")]
    fn early_poll(&mut self) -> std::io::Result<Arc<mio::Waker>> {
        if self.poll.is_none() {
            let poll = mio::Poll::new()?;
            let waker = Arc::new(mio::Waker::new(poll.registry(), thread::WAKER)?);
            self.poll = Some((poll, waker));
        }
        Ok(self
            .poll
            .as_ref()
            .map(|(_, w)| Arc::clone(w))
            .expect("created above"))
    }

    /// Turns the analysis streams on: `welcome.taps` will be `taps` (the engine's taps,
    /// typically [`TapReader::taps`](crate::rt::TapReader::taps) of the reader the worker
    /// uses), and the returned [`AnalysisWorker`] is how the engine's analysis thread learns
    /// what the sessions subscribed and hands back the computed values (see
    /// [`rt::analysis`](crate::rt::analysis)). Without it `welcome.taps` is 0 and no client can
    /// subscribe to `scope` or `spectrum`.
    ///
    /// Allocates the mailboxes (384 KiB, once); does not fail today (the `Result` leaves room
    /// for a worker that needs the event loop). One worker per server;
    /// after the server stopped, [`AnalysisWorker::is_connected`] is false. Calling it again
    /// replaces the previous worker (which is then disconnected).
    pub fn analysis_worker(&mut self, taps: u16) -> std::io::Result<AnalysisWorker> {
        let (writer, reader) = crate::rt::analysis::analysis_bank();
        self.analysis = Some((reader, taps));
        Ok(AnalysisWorker::new(writer))
    }

    /// The configuration so far.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    setters! {
        /// Bind address ([`ServerConfig::bind`]).
        bind: std::net::IpAddr;
        /// Allow a non-loopback address ([`ServerConfig::allow_non_loopback`]).
        allow_non_loopback: bool;
        /// Port policy ([`ServerConfig::port`]).
        port: PortPolicy;
        /// Transmit buffer per connection ([`ServerConfig::tx_buffer`]).
        tx_buffer: usize;
        /// Handshake timeout ([`ServerConfig::handshake_timeout`]).
        handshake_timeout: Duration;
        /// Heartbeat interval ([`ServerConfig::heartbeat_interval`]).
        heartbeat_interval: Duration;
        /// Heartbeat timeout ([`ServerConfig::heartbeat_timeout`]).
        heartbeat_timeout: Duration;
        /// Slow-consumer limit ([`ServerConfig::slow_consumer_timeout`]).
        slow_consumer_timeout: Duration;
        /// Safety-net reply poll ([`ServerConfig::telemetry_poll`]).
        telemetry_poll: Duration;
        /// Margin after the predicted callback end ([`ServerConfig::wake_margin`]).
        wake_margin: Duration;
        /// Spin on an early wake ([`ServerConfig::reply_spin`]).
        reply_spin: Duration;
        /// Control queue capacity ([`ServerConfig::control_capacity`]).
        control_capacity: usize;
        /// Half-open connection bound ([`ServerConfig::max_half_open`]).
        max_half_open: usize;
        /// Engine name ([`ServerConfig::engine_name`]).
        engine_name: String;
        /// Sample rate for `welcome` ([`ServerConfig::sample_rate`]).
        sample_rate: u32;
        /// Block size for `welcome` ([`ServerConfig::block_size`]).
        block_size: u32;
        /// Instance id ([`ServerConfig::instance`]).
        instance: String;
        /// Report parent-pid changes as orphaning ([`ServerConfig::watch_parent`]).
        watch_parent: bool;
        /// Orphan grace period ([`ServerConfig::orphan_grace`]).
        orphan_grace: Duration;
        /// Orphan check interval ([`ServerConfig::orphan_check`]).
        orphan_check: Duration;
        /// Shutdown flush bound ([`ServerConfig::flush_timeout`]).
        flush_timeout: Duration;
    }

    /// Largest accepted frame payload ([`ServerConfig::max_frame`]); also sets the receive
    /// buffer to `8 + max_frame` unless it is larger already.
    #[must_use]
    pub fn max_frame(mut self, v: u32) -> Self {
        self.cfg.max_frame = v;
        self.cfg.rx_buffer = self.cfg.rx_buffer.max(8 + v as usize);
        self
    }

    /// Receive buffer per connection ([`ServerConfig::rx_buffer`]).
    #[must_use]
    pub fn rx_buffer(mut self, v: usize) -> Self {
        self.cfg.rx_buffer = v;
        self
    }

    /// Kernel send buffer of accepted sockets ([`ServerConfig::socket_send_buffer`]).
    #[must_use]
    pub fn socket_send_buffer(mut self, v: Option<usize>) -> Self {
        self.cfg.socket_send_buffer = v;
        self
    }

    /// Session token ([`ServerConfig::token`]); typically `token_from_env()?` (an error when
    /// the variable is not UTF-8, never `None`).
    #[must_use]
    pub fn token(mut self, v: Option<String>) -> Self {
        self.cfg.token = v;
        self
    }

    /// Connection file ([`ServerConfig::connection_file`]).
    #[must_use]
    pub fn connection_file(mut self, v: Option<PathBuf>) -> Self {
        self.cfg.connection_file = v;
        self
    }

    /// Supervisor pid to watch ([`ServerConfig::supervisor_pid`]).
    #[must_use]
    pub fn supervisor_pid(mut self, v: Option<u32>) -> Self {
        self.cfg.supervisor_pid = v;
        self
    }

    /// Frame log: every frame in and out of every connection as JSON lines in a file (see
    /// [`FrameLogConfig`] and the format in `src/net/framelog.rs`). Default `None` (off; then
    /// each read and write costs one branch). When on, the network thread copies the bytes into
    /// a buffer allocated at spawn and a thread `loophole-framelog` writes the file.
    #[must_use]
    pub fn frame_log(mut self, v: Option<FrameLogConfig>) -> Self {
        self.frame_log = v;
        self
    }

    /// Binds (per the port policy), writes the connection file if configured, and starts the
    /// network thread. Returns the thread's handle and the control thread's endpoint.
    ///
    /// Allocates; blocks only to bind and create the thread. Printing the announcement is the
    /// caller's job (`println!("{}", handle.announcement())`), so a library never writes stdout.
    pub fn spawn(self, net: NetEndpoint) -> Result<(ServerHandle, ControlEndpoint), BindError> {
        let cfg = self.cfg;
        let listener = bind::bind(&cfg)?;
        let io_err = |e: std::io::Error| BindError::Io {
            kind: e.kind(),
            port: 0,
        };
        let local_addr = listener.local_addr().map_err(io_err)?;
        let announcement = Announcement::new(local_addr, &cfg.instance);
        if let Some(path) = &cfg.connection_file {
            announcement
                .write_connection_file(path)
                .map_err(|e| BindError::ConnectionFile { kind: e.kind() })?;
        }
        #[cfg(feature = "rt-wake")]
        let early_waker = self.audio_wake;
        let (poll, waker) = match self.poll {
            Some(early) => early,
            None => {
                let poll = mio::Poll::new().map_err(io_err)?;
                let waker = mio::Waker::new(poll.registry(), thread::WAKER).map_err(io_err)?;
                (poll, Arc::new(waker))
            }
        };
        // rt-wake: the audio side wakes this server's event loop, also when the bridge served
        // an earlier server (its waker would wake a dead loop).
        #[cfg(feature = "rt-wake")]
        let mut net = net;
        #[cfg(feature = "rt-wake")]
        if early_waker || net.wakes() {
            net.set_waker(Arc::clone(&waker));
        }
        let largest_chunk = cfg.rx_buffer.max(cfg.tx_buffer);
        let frame_log = self
            .frame_log
            .as_ref()
            .map(|c| framelog::FrameLog::start(c, cfg.max_frame, largest_chunk))
            .transpose()
            .map_err(io_err)?;
        let status = Arc::new(Status {
            frame_log: frame_log.as_ref().map(framelog::FrameLog::tap),
            ..Status::default()
        });
        let orphaned = Arc::new(AtomicBool::new(false));
        let (link, endpoint) = control_route(
            cfg.control_capacity,
            Arc::clone(&waker),
            Arc::clone(&orphaned),
        );
        let handle_orphaned = Arc::clone(&orphaned);
        let connection_file = cfg.connection_file.clone();
        let mut worker = thread::Worker::new(
            cfg,
            poll,
            listener,
            net,
            link,
            Arc::clone(&status),
            orphaned,
        )
        .map_err(io_err)?;
        if let Some((reader, taps)) = self.analysis {
            worker.set_analysis(analysis::AnalysisHub::new(reader), taps);
        }
        let join = std::thread::Builder::new()
            .name("loophole-net".into())
            .spawn(move || worker.run())
            .map_err(io_err)?;
        Ok((
            ServerHandle {
                local_addr,
                announcement,
                waker,
                status,
                orphaned: handle_orphaned,
                join: Some(join),
                connection_file,
                frame_log,
            },
            endpoint,
        ))
    }
}

/// Counters of the network thread since it started. Each is monotonic; two fields may be read
/// a moment apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections given a session.
    pub accepted: u64,
    /// Connections closed at once (stopping, or every slot holds an OPEN or closing one).
    pub refused: u64,
    /// Answers that arrived for a session that had ended (or had sent its `goodbye`), and were
    /// discarded.
    pub answers_discarded: u64,
    /// Times an answer found its session's transmit buffer full and waited in the holding cell
    /// (later answers to that session waited behind it; other sessions' went on).
    pub answers_held: u64,
    /// Connections not yet OPEN closed to make room for a newer one (the oldest first, see
    /// `ServerConfig::max_half_open`).
    pub evicted: u64,
}

/// The embedding engine's handle on the network thread. Dropping it shuts the thread down.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    announcement: Announcement,
    waker: Arc<mio::Waker>,
    status: Arc<Status>,
    orphaned: Arc<AtomicBool>,
    join: Option<JoinHandle<NetEndpoint>>,
    connection_file: Option<PathBuf>,
    frame_log: Option<framelog::FrameLog>,
}

impl ServerHandle {
    /// The bound address (the real port even with an ephemeral policy).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The announcement to print on stdout (see [`Announcement`]).
    pub fn announcement(&self) -> &Announcement {
        &self.announcement
    }

    /// Whether the supervisor is gone and no client came back within the grace period.
    pub fn is_orphaned(&self) -> bool {
        self.orphaned.load(Ordering::Relaxed)
    }

    /// Whether the network thread is still running (it only ends after [`shutdown`](Self::shutdown)
    /// or an unrecoverable `epoll_wait` error).
    pub fn is_running(&self) -> bool {
        self.join.as_ref().is_some_and(|j| !j.is_finished())
    }

    /// Counters of the network thread (each read without a lock; see [`ServerStats`]).
    pub fn stats(&self) -> ServerStats {
        let s = &self.status;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            accepted: get(&s.accepted),
            refused: get(&s.refused),
            answers_discarded: get(&s.answers_discarded),
            answers_held: get(&s.answers_held),
            evicted: get(&s.evicted),
        }
    }

    /// Whether a client holds the controlling session now (stale as soon as read).
    pub fn has_client(&self) -> bool {
        self.status.client_connected.load(Ordering::Relaxed)
    }

    /// Stops the thread: stops accepting and reading, waits (up to half the flush time) for the
    /// answers still owed, sends `goodbye` (`shutdown`) to every client, flushes for at most
    /// [`ServerConfig::flush_timeout`], closes and joins. Removes the connection file. Blocks for
    /// at most about the flush timeout.
    ///
    /// Returns the bridge's [`NetEndpoint`] (`None` only if the thread panicked), so the engine
    /// decides where the bridge is freed, or starts a new server on the same bridge.
    pub fn shutdown(mut self) -> Option<NetEndpoint> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<NetEndpoint> {
        let join = self.join.take()?;
        self.status.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        let net = join.join().ok();
        if let Some(log) = &mut self.frame_log {
            log.finish(); // after the join: every frame the thread moved is in the buffer
        }
        if let Some(path) = &self.connection_file {
            let _ = std::fs::remove_file(path);
        }
        net
    }
}

impl Drop for ServerHandle {
    /// Same as [`ServerHandle::shutdown`]; the [`NetEndpoint`] is dropped.
    fn drop(&mut self) {
        drop(self.stop_and_join());
    }
}
