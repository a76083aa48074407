//! Binding the listener under a [`PortPolicy`], and the errors it reports.

use core::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpListener;

use crate::config::{PortPolicy, ServerConfig};
use crate::frame::{MAX_MAX_FRAME, MIN_MAX_FRAME};

/// Why the server could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindError {
    /// A fixed port is taken by another process.
    InUse {
        /// The address that was asked for.
        addr: SocketAddr,
    },
    /// Every port of a range is taken.
    RangeExhausted {
        /// The bind address.
        ip: IpAddr,
        /// First port tried.
        first: u16,
        /// Last port tried.
        last: u16,
    },
    /// The bind address is not a loopback address and non-loopback binding was not allowed.
    NonLoopback {
        /// The refused address.
        ip: IpAddr,
    },
    /// A non-loopback address was allowed but no session token is configured.
    TokenRequired {
        /// The address.
        ip: IpAddr,
    },
    /// A configuration value is out of its documented range.
    InvalidConfig {
        /// Which setting, and its rule.
        what: &'static str,
    },
    /// The connection file ([`ServerConfig::connection_file`]) could not be written. The
    /// caller knows the path (the error stays `Copy`); the message says which setting failed.
    ConnectionFile {
        /// The error kind.
        kind: io::ErrorKind,
    },
    /// Another operating-system error (permission, address not available, thread creation).
    Io {
        /// The error kind.
        kind: io::ErrorKind,
        /// The port being bound (0 when not binding).
        port: u16,
    },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InUse { addr } => write!(
                f,
                "port {} on {} is already in use by another process: stop that process, \
                 choose another port, or use an ephemeral port or a port range",
                addr.port(),
                addr.ip()
            ),
            Self::RangeExhausted { ip, first, last } => write!(
                f,
                "every port from {first} to {last} on {ip} is in use: widen the range or use an \
                 ephemeral port"
            ),
            Self::NonLoopback { ip } => write!(
                f,
                "refusing to bind {ip}: not a loopback address (allow it explicitly, with a \
                 session token)"
            ),
            Self::TokenRequired { ip } => write!(
                f,
                "binding the non-loopback address {ip} requires a session token (set \
                 {})",
                crate::config::TOKEN_ENV
            ),
            Self::InvalidConfig { what } => write!(f, "invalid configuration: {what}"),
            Self::ConnectionFile { kind } => write!(f, "cannot write the connection file: {kind}"),
            Self::Io { kind, port } => write!(f, "cannot listen on port {port}: {kind}"),
        }
    }
}

impl core::error::Error for BindError {}

/// Checks the settings the thread relies on.
pub(crate) fn validate(cfg: &ServerConfig) -> Result<(), BindError> {
    let bad = |what| Err(BindError::InvalidConfig { what });
    if !cfg.bind.is_loopback() {
        if !cfg.allow_non_loopback {
            return Err(BindError::NonLoopback { ip: cfg.bind });
        }
        if cfg.token.as_deref().is_none_or(str::is_empty) {
            return Err(BindError::TokenRequired { ip: cfg.bind });
        }
    }
    if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&cfg.max_frame) {
        return bad("max_frame must be 64 ..= 16777216");
    }
    if cfg.rx_buffer < 8 + cfg.max_frame as usize {
        return bad("rx_buffer must hold 8 + max_frame bytes");
    }
    if cfg.tx_buffer < 8 * 1024 {
        return bad("tx_buffer must be at least 8192 bytes");
    }
    if cfg
        .token
        .as_ref()
        .is_some_and(|t| t.len() > crate::message::MAX_TOKEN)
    {
        return bad("token must be at most 128 bytes");
    }
    if cfg.instance.len() != 16
        || !cfg
            .instance
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return bad("instance must be 16 lowercase hex digits");
    }
    if cfg.engine_name.len() > crate::message::MAX_ENGINE_NAME {
        return bad("engine_name must be at most 64 bytes");
    }
    if cfg.control_capacity == 0 {
        return bad("control_capacity must be at least 1");
    }
    if cfg.heartbeat_timeout.is_zero() || cfg.handshake_timeout.is_zero() {
        return bad("timeouts must be non-zero");
    }
    if let PortPolicy::Range { first, last } = cfg.port {
        if first == 0 || last < first {
            return bad("port range must be first ..= last with 0 < first <= last");
        }
    }
    Ok(())
}

/// Binds the listener: never pick-close-hope, the socket that was bound is the one served.
pub(crate) fn bind(cfg: &ServerConfig) -> Result<TcpListener, BindError> {
    validate(cfg)?;
    let ip = cfg.bind;
    match cfg.port {
        PortPolicy::Ephemeral => bind_one(SocketAddr::new(ip, 0)),
        PortPolicy::Fixed(port) => bind_one(SocketAddr::new(ip, port)),
        PortPolicy::Range { first, last } => {
            for port in first..=last {
                match bind_one(SocketAddr::new(ip, port)) {
                    Err(BindError::InUse { .. }) => continue,
                    other => return other,
                }
            }
            Err(BindError::RangeExhausted { ip, first, last })
        }
    }
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, BindError> {
    // mio sets SO_REUSEADDR on Unix (so a TIME_WAIT leftover of our own previous run does not
    // block the port) but not SO_REUSEPORT: a port another process listens on is refused.
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse { addr },
        kind => BindError::Io {
            kind,
            port: addr.port(),
        },
    })
}
