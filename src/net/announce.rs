//! The listen announcement and the connection file (normative text: `docs/specs/ipc/ports.md`).
//!
//! After binding, the engine prints exactly one line on stdout:
//!
//! ```text
//! LOOPHOLE_LISTEN {"host":"127.0.0.1","port":40123,"pid":4242,"protocol":1,"instance":"9f86d081884c7d65"}
//! ```
//!
//! Everything else the engine prints goes to stderr, so a supervisor can read stdout line by line
//! and take the first line with the prefix.

use core::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The fixed prefix of the announcement line (note the trailing space).
pub const ANNOUNCE_PREFIX: &str = "LOOPHOLE_LISTEN ";

/// Where and who the engine is: the content of the announcement line and the connection file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The bound IP address as text (`127.0.0.1`, `::1`), without brackets.
    pub host: heapless::String<45>,
    /// The bound TCP port.
    pub port: u16,
    /// The engine's process id.
    pub pid: u32,
    /// The protocol version the engine speaks.
    pub protocol: u16,
    /// The engine instance id (16 lowercase hex digits), the same as `welcome.instance`.
    pub instance: heapless::String<16>,
}

/// Why an announcement line could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnounceError {
    /// The line does not start with [`ANNOUNCE_PREFIX`].
    MissingPrefix,
    /// The JSON after the prefix is not a valid announcement.
    InvalidJson,
    /// The host is not an IP address.
    InvalidHost,
}

impl fmt::Display for AnnounceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingPrefix => "not an announcement line (no `LOOPHOLE_LISTEN ` prefix)",
            Self::InvalidJson => "announcement JSON is invalid or misses a field",
            Self::InvalidHost => "announcement host is not an IP address",
        })
    }
}

impl core::error::Error for AnnounceError {}

impl Announcement {
    /// The announcement of a server bound at `addr`, for this process.
    pub fn new(addr: SocketAddr, instance: &str) -> Self {
        let mut host = heapless::String::new();
        let _ = fmt::Write::write_fmt(&mut host, format_args!("{}", addr.ip()));
        let mut inst = heapless::String::new();
        let _ = inst.push_str(instance);
        Self {
            host,
            port: addr.port(),
            pid: std::process::id(),
            protocol: crate::message::PROTOCOL_VERSION,
            instance: inst,
        }
    }

    /// The compact JSON object (no prefix, no newline).
    pub fn to_json(&self) -> String {
        let mut buf = [0u8; 256];
        let n = serde_json_core::to_slice(self, &mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The full line: prefix and JSON, without the trailing newline.
    pub fn to_line(&self) -> String {
        format!("{ANNOUNCE_PREFIX}{}", self.to_json())
    }

    /// Reads an announcement line (a trailing `\r`/`\n` is ignored).
    pub fn parse_line(line: &str) -> Result<Self, AnnounceError> {
        let json = line
            .trim_end_matches(['\r', '\n'])
            .strip_prefix(ANNOUNCE_PREFIX)
            .ok_or(AnnounceError::MissingPrefix)?;
        Self::parse_json(json)
    }

    /// Reads the JSON object (the connection file's content, or a line without its prefix).
    pub fn parse_json(json: &str) -> Result<Self, AnnounceError> {
        let (a, _) = serde_json_core::from_str::<Self>(json.trim())
            .map_err(|_| AnnounceError::InvalidJson)?;
        a.addr()?;
        Ok(a)
    }

    /// The socket address to connect to.
    pub fn addr(&self) -> Result<SocketAddr, AnnounceError> {
        let ip = self
            .host
            .parse::<std::net::IpAddr>()
            .map_err(|_| AnnounceError::InvalidHost)?;
        Ok(SocketAddr::new(ip, self.port))
    }

    /// Writes the connection file atomically: a temporary file created with mode 0600 in the
    /// same directory, written and synced, then renamed over `path`. Readers see either the
    /// old file or the whole new one. Allocates (path strings); call at setup only.
    pub fn write_connection_file(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.map_or_else(|| tmp_name.clone().into(), |d| d.join(&tmp_name));
        let result = (|| {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            #[cfg(unix)]
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            writeln!(f, "{}", self.to_json())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Reads a connection file written by [`write_connection_file`](Self::write_connection_file).
    pub fn read_connection_file(path: &Path) -> io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::parse_json(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl fmt::Display for Announcement {
    /// The announcement line, without newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}
