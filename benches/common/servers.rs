//! Baseline servers, each on its own thread serving exactly one connection.
//!
//! Every `spawn_*` binds its listener and starts a thread that pins itself to `cpu` and runs
//! `on_start` (e.g. to register an allocation counter for that thread); it returns once both
//! are done, so the caller can connect at once. The thread then accepts one connection,
//! exchanges prefaces and answers every frame until the client closes; its result says why it
//! stopped.

use super::wire::{expect_preface, frame, parse_header, MAX_PAYLOAD, PONG_JSON, PREFACE};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::thread::JoinHandle;

/// A server thread; join it after closing the client to learn whether it failed.
pub type ServerThread = JoinHandle<io::Result<()>>;

/// Something to run on the server thread after pinning, before accepting.
pub type OnStart = Box<dyn FnOnce() + Send>;

/// Starts a server thread that pins itself to `cpu` and runs `on_start`, and waits until it
/// has done so: a pinning failure is returned here rather than surfacing later as a puzzling
/// end-of-file on the client. Then the thread runs `serve`.
fn spawn_server(
    name: &str,
    cpu: usize,
    on_start: OnStart,
    serve: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<ServerThread> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let t = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(e) = super::pin_current_thread(cpu) {
                let kind = e.kind();
                let _ = ready_tx.send(Err(e));
                return Err(io::Error::new(kind, "server thread could not pin itself"));
            }
            on_start();
            let _ = ready_tx.send(Ok(()));
            serve()
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(t),
        Ok(Err(e)) => {
            let _ = t.join();
            Err(e)
        }
        Err(_) => Err(io::Error::other(format!(
            "server thread {name} died before it was ready"
        ))),
    }
}

/// Connects to a TCP server with `TCP_NODELAY` set.
pub fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The floor: blocking std TCP, `TCP_NODELAY`, read header, read payload, write a fixed pong.
pub fn spawn_raw_tcp(cpu: usize, on_start: OnStart) -> io::Result<(SocketAddr, ServerThread)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let t = spawn_server("raw-tcp", cpu, on_start, move || {
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        serve_raw(s)
    })?;
    Ok((addr, t))
}

/// The same loop as [`spawn_raw_tcp`] over a Unix stream socket in the abstract namespace
/// (nothing on the file system to clean up).
pub fn spawn_raw_uds(cpu: usize, on_start: OnStart) -> io::Result<(UnixAddr, ServerThread)> {
    let name = format!(
        "loophole-bench-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    let t = spawn_server("raw-uds", cpu, on_start, move || {
        let (s, _) = listener.accept()?;
        serve_raw(s)
    })?;
    Ok((addr, t))
}

/// Connects to a server from [`spawn_raw_uds`].
pub fn connect_uds(addr: &UnixAddr) -> io::Result<UnixStream> {
    UnixStream::connect_addr(addr)
}

/// Answers every frame with the fixed [`PONG_JSON`] frame; allocates only before the loop.
fn serve_raw<S: Read + Write>(mut s: S) -> io::Result<()> {
    expect_preface(&mut s)?;
    s.write_all(&PREFACE)?;
    let pong = frame(PONG_JSON);
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        let mut h = [0u8; 8];
        match s.read_exact(&mut h) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            r => r?,
        }
        let len = parse_header(&h)?;
        s.read_exact(&mut buf[..len])?;
        s.write_all(&pong)?;
    }
}

/// An event-loop floor: the same fixed pong as [`spawn_raw_tcp`], but from a mio `Poll`
/// loop over a non-blocking socket, the way a mio server has to read (until `WouldBlock`, so
/// one more `read` per round trip plus an `epoll_wait`). No parsing. See [`mio_floor`].
pub fn spawn_raw_mio(cpu: usize, on_start: OnStart) -> io::Result<(SocketAddr, ServerThread)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let t = spawn_server("raw-mio", cpu, on_start, move || {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        expect_preface(&mut s)?;
        s.write_all(&PREFACE)?;
        s.set_nonblocking(true)?;
        mio_floor::serve(mio::net::TcpStream::from_std(s), false)
    })?;
    Ok((addr, t))
}

/// [`spawn_raw_mio`] plus one `timerfd_settime` per pass of the loop (a timerfd registered with
/// the poll, re-armed 50 ms ahead before each `epoll_wait`), the way a server that keeps its
/// deadlines in a timerfd relative to "now" re-arms it. A diagnostic contender: the difference
/// to [`spawn_raw_mio`] is the price of that one system call per round trip.
pub fn spawn_raw_mio_timerfd(
    cpu: usize,
    on_start: OnStart,
) -> io::Result<(SocketAddr, ServerThread)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let t = spawn_server("raw-mio-tfd", cpu, on_start, move || {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        expect_preface(&mut s)?;
        s.write_all(&PREFACE)?;
        s.set_nonblocking(true)?;
        mio_floor::serve(mio::net::TcpStream::from_std(s), true)
    })?;
    Ok((addr, t))
}

/// The mio loop of [`spawn_raw_mio`]: all buffers are allocated before the loop.
pub mod mio_floor {
    use super::super::wire::{frame, parse_header, HEADER_LEN, MAX_PAYLOAD, PONG_JSON};
    use mio::{Events, Interest, Poll, Token};
    use std::io::{self, Read, Write};

    const CONN: Token = Token(0);
    /// Pending output above which the loop stops reading until the socket drains.
    const OUT_CAP: usize = 64 * 1024;

    /// Input bytes `buf[start..end]` not yet consumed, room for two whole frames.
    struct Input {
        buf: Vec<u8>,
        start: usize,
        end: usize,
    }

    /// Output bytes `buf[pos..]` not yet written.
    struct Output {
        buf: Vec<u8>,
        pos: usize,
    }

    pub(super) fn serve(mut s: mio::net::TcpStream, rearm_timer: bool) -> io::Result<()> {
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(16);
        poll.registry().register(&mut s, CONN, Interest::READABLE)?;
        let timer = if rearm_timer {
            Some(Timerfd::new(&poll)?)
        } else {
            None
        };
        let pong = frame(PONG_JSON);
        let mut input = Input {
            buf: vec![0; 2 * (HEADER_LEN + MAX_PAYLOAD)],
            start: 0,
            end: 0,
        };
        // A read can complete at most one frame per 9 input bytes: room for all their pongs
        // on top of OUT_CAP, so queuing never reallocates.
        let most_per_read = input.buf.len() / (HEADER_LEN + 1) + 1;
        let mut out = Output {
            buf: Vec::with_capacity(OUT_CAP + most_per_read * pong.len()),
            pos: 0,
        };
        let mut writable_registered = false;
        loop {
            if let Some(t) = &timer {
                t.arm_ns(50_000_000)?;
            }
            match poll.poll(&mut events, None) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            if !pump(&mut s, &mut input, &mut out, &pong)? {
                return Ok(()); // end of stream
            }
            let want_write = out.pos < out.buf.len();
            if want_write != writable_registered {
                let interest = if want_write {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                poll.registry().reregister(&mut s, CONN, interest)?;
                writable_registered = want_write;
            }
        }
    }

    /// A timerfd registered with the poll (never fires in practice: re-armed 50 ms ahead).
    struct Timerfd(std::os::fd::OwnedFd);

    impl Timerfd {
        fn new(poll: &Poll) -> io::Result<Self> {
            // SAFETY: timerfd_create takes no pointers; a negative result is checked below.
            let fd = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a fresh descriptor owned by nothing else.
            let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            poll.registry().register(
                &mut mio::unix::SourceFd(&raw),
                Token(1),
                Interest::READABLE,
            )?;
            Ok(Self(fd))
        }

        fn arm_ns(&self, ns: u64) -> io::Result<()> {
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: (ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (ns % 1_000_000_000) as libc::c_long,
                },
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&self.0);
            // SAFETY: `spec` is a valid itimerspec on the stack; the old-value pointer may be null.
            if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
    }

    /// Flushes, reads and answers until the socket would block either way. `Ok(false)` at
    /// end of stream.
    fn pump(
        s: &mut mio::net::TcpStream,
        input: &mut Input,
        out: &mut Output,
        pong: &[u8],
    ) -> io::Result<bool> {
        loop {
            flush(s, out)?;
            if out.buf.len() - out.pos + pong.len() > OUT_CAP {
                return Ok(true); // wait for WRITABLE before reading more
            }
            if input.end == input.buf.len() {
                input.buf.copy_within(input.start..input.end, 0);
                input.end -= input.start;
                input.start = 0;
            }
            match s.read(&mut input.buf[input.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => input.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            answer_frames(input, out, pong)?;
        }
    }

    /// Queues one pong per complete frame in `input`.
    fn answer_frames(input: &mut Input, out: &mut Output, pong: &[u8]) -> io::Result<()> {
        while input.end - input.start >= HEADER_LEN {
            let h: &[u8; HEADER_LEN] = input.buf[input.start..input.start + HEADER_LEN]
                .try_into()
                .expect("8 bytes");
            let len = parse_header(h)?;
            if input.end - input.start < HEADER_LEN + len {
                break;
            }
            input.start += HEADER_LEN + len;
            if out.pos == out.buf.len() {
                out.buf.clear();
                out.pos = 0;
            }
            out.buf.extend_from_slice(pong);
        }
        if input.start == input.end {
            input.start = 0;
            input.end = 0;
        }
        Ok(())
    }

    fn flush(s: &mut mio::net::TcpStream, out: &mut Output) -> io::Result<()> {
        while out.pos < out.buf.len() {
            match s.write(&out.buf[out.pos..]) {
                Ok(n) => out.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        out.buf.clear();
        out.pos = 0;
        Ok(())
    }
}

/// The obvious alternative: a tokio current-thread runtime, `Framed` with `LengthDelimitedCodec`
/// and serde_json decoding into / encoding from structs. See [`tokio_design`].
pub fn spawn_tokio(cpu: usize, on_start: OnStart) -> io::Result<(SocketAddr, ServerThread)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let t = spawn_server("tokio", cpu, on_start, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        rt.block_on(tokio_design::serve(listener))
    })?;
    Ok((addr, t))
}

/// What a Rust developer would write first with tokio, kept deliberately idiomatic.
///
/// It is the cheap end of that design: the envelope is decoded straight into a typed struct
/// whose body is the ping body. A server with many message kinds would decode `body` into a
/// `serde_json::Value` or a `RawValue` first and pay more.
pub mod tokio_design {
    use super::super::wire::PREFACE;
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use serde::{Deserialize, Serialize};
    use std::io;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::{Framed, LengthDelimitedCodec};

    #[derive(Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
        name: String,
        id: u32,
        body: PingBody,
    }

    #[derive(Deserialize)]
    struct PingBody {
        nonce: u32,
    }

    #[derive(Serialize)]
    struct Reply<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        name: &'a str,
        #[serde(rename = "ref")]
        reference: u32,
        body: PongBody,
    }

    #[derive(Serialize)]
    struct PongBody {
        nonce: u32,
        t_engine_us: u64,
    }

    /// The codec: a 4-byte big-endian length counting only the payload, followed by 4 more
    /// header bytes (encoding, flags, reserved) that stay at the front of each decoded item;
    /// encoding an item `[1, 0, 0, 0, payload..]` writes the same 8-byte header.
    fn codec() -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_offset(0)
            .length_field_length(4)
            .length_adjustment(4)
            .num_skip(4)
            .max_frame_length(65_536)
            .new_codec()
    }

    fn invalid(e: impl std::fmt::Display) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e.to_string())
    }

    pub(super) async fn serve(listener: std::net::TcpListener) -> io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let mut preface = [0u8; 8];
        stream.read_exact(&mut preface).await?;
        if preface != PREFACE {
            return Err(invalid("bad preface"));
        }
        stream.write_all(&PREFACE).await?;
        let start = Instant::now();
        let mut framed = Framed::new(stream, codec());
        while let Some(item) = framed.next().await {
            let item = item?;
            if item.len() < 4 || item[..4] != [1, 0, 0, 0] {
                return Err(invalid("bad frame header"));
            }
            let env: Envelope = serde_json::from_slice(&item[4..]).map_err(invalid)?;
            if env.kind != "command" || env.name != "ping" {
                return Err(invalid(format!("unexpected {} {}", env.kind, env.name)));
            }
            let reply = Reply {
                kind: "reply",
                name: "pong",
                reference: env.id,
                body: PongBody {
                    nonce: env.body.nonce,
                    t_engine_us: start.elapsed().as_micros() as u64,
                },
            };
            let mut out = Vec::with_capacity(128);
            out.extend_from_slice(&[1, 0, 0, 0]);
            serde_json::to_writer(&mut out, &reply).map_err(invalid)?;
            framed.send(Bytes::from(out)).await?;
        }
        Ok(())
    }
}
