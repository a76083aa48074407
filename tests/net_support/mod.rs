//! Shared fixture of the `net_*` integration tests: a server on an ephemeral loopback port, a
//! simulated audio thread, and raw-socket helpers that show exactly what a client sees.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loophole_ipc::client::{Client, ClientOptions};
use loophole_ipc::clock;
use loophole_ipc::control::ControlEndpoint;
use loophole_ipc::frame::{FrameDecoder, PREFACE};
use loophole_ipc::message::{encode_frame, Hello, Message, ServerMessage, PROTOCOL_VERSION};
use loophole_ipc::net::{Server, ServerBuilder, ServerHandle};
use loophole_ipc::rt::{bridge, Outcome, RejectReason, RtConfig, RtOp, TransportState};

/// Short timeouts so the suite stays fast.
pub fn fast() -> ServerBuilder {
    Server::builder()
        .handshake_timeout(Duration::from_millis(500))
        .heartbeat_interval(Duration::from_millis(200))
        .heartbeat_timeout(Duration::from_millis(2_000))
        .slow_consumer_timeout(Duration::from_millis(2_000))
        .flush_timeout(Duration::from_millis(300))
}

/// Shared view of the simulated audio thread.
#[derive(Default)]
pub struct AudioState {
    pub paused: AtomicBool,
    pub stop: AtomicBool,
    /// Commands the audio thread applied or rejected (pings excluded).
    pub handled: AtomicU64,
    pub callbacks: AtomicU64,
}

/// A running engine: server, control endpoint, simulated audio thread.
pub struct Engine {
    pub server: Option<ServerHandle>,
    pub control: Option<ControlEndpoint>,
    pub audio: Arc<AudioState>,
    pub addr: SocketAddr,
    audio_thread: Option<JoinHandle<()>>,
}

impl Engine {
    pub fn start(builder: ServerBuilder) -> Self {
        Self::start_with(builder, RtConfig::default())
    }

    pub fn start_with(builder: ServerBuilder, rt: RtConfig) -> Self {
        let (mut audio, net) = bridge(&rt);
        let (server, control) = builder.spawn(net).expect("server starts");
        let state = Arc::new(AudioState::default());
        let st = Arc::clone(&state);
        let _ = clock::now_ns();
        let audio_thread = std::thread::spawn(move || {
            let mut t = TransportState::default();
            let block = [0.25f32; 48];
            while !st.stop.load(Ordering::Relaxed) {
                if !st.paused.load(Ordering::Relaxed) {
                    audio.begin_callback(clock::now_ns(), 48);
                    audio.drain(|cmd| {
                        st.handled.fetch_add(1, Ordering::Relaxed);
                        apply(&mut t, &cmd.op)
                    });
                    if t.playing {
                        t.position += 48;
                    }
                    audio.publish_meters(&[&block, &block]);
                    audio.publish_transport(&t);
                    audio.end_callback(clock::now_ns());
                    st.callbacks.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let addr = server.local_addr();
        Self {
            server: Some(server),
            control: Some(control),
            audio: state,
            addr,
            audio_thread: Some(audio_thread),
        }
    }

    pub fn server(&self) -> &ServerHandle {
        self.server.as_ref().unwrap()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr, &opts()).expect("client connects")
    }

    pub fn pause_audio(&self, paused: bool) {
        self.audio.paused.store(paused, Ordering::SeqCst);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        drop(self.server.take());
        self.audio.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.audio_thread.take() {
            let _ = t.join();
        }
    }
}

/// The simulated engine's command handler: tempo above 500 bpm and node 999 are refused.
fn apply(t: &mut TransportState, op: &RtOp) -> Outcome {
    match *op {
        RtOp::Play => t.playing = true,
        RtOp::Stop => t.playing = false,
        RtOp::Seek { position } => t.position = position,
        RtOp::Tempo { bpm } if bpm > 500.0 => return Outcome::Rejected(RejectReason::OutOfRange),
        RtOp::Tempo { bpm } => t.bpm = bpm,
        RtOp::Loop {
            start,
            end,
            enabled,
        } => {
            t.loop_start = start;
            t.loop_end = end;
            t.loop_enabled = enabled;
        }
        RtOp::ParamSet { node: 999, .. } => return Outcome::Rejected(RejectReason::UnknownNode),
        RtOp::ParamSet { .. } | RtOp::Ping { .. } => {}
    }
    Outcome::Applied
}

pub fn opts() -> ClientOptions {
    let mut o = ClientOptions::default();
    o.io_timeout = Duration::from_secs(3);
    o.connect_timeout = Duration::from_secs(2);
    o
}

/// One encoded frame.
pub fn frame<M: Message>(id: Option<u32>, body: &M) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let n = encode_frame(id, body, &mut buf, u32::MAX).unwrap();
    buf.truncate(n);
    buf
}

pub fn hello(protocol: u16, token: Option<&str>) -> Hello {
    Hello {
        protocol,
        client: heapless::String::try_from("net-test").unwrap(),
        token: token.map(|t| heapless::String::try_from(t).unwrap()),
        attachments: false,
    }
}

/// A raw socket with a read timeout.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// Raw socket, preface and a valid hello: the caller then reads `welcome` etc. with [`Wire`].
pub fn raw_session(addr: SocketAddr) -> Wire {
    let mut s = raw(addr);
    s.write_all(&PREFACE).unwrap();
    s.write_all(&frame(Some(1), &hello(PROTOCOL_VERSION, None)))
        .unwrap();
    let mut w = Wire::new(s);
    let got = w.messages_until(Duration::from_secs(2), |m| m.len() >= 3);
    assert!(
        matches!(got[0], (Some(1), ServerMessage::Welcome(_))),
        "expected welcome, got {got:?}"
    );
    w
}

/// What a raw client observed.
pub struct Wire {
    pub stream: TcpStream,
    dec: FrameDecoder<Vec<u8>>,
    /// Bytes received in total (preface included).
    pub bytes: usize,
    /// The peer closed (EOF or reset).
    pub closed: bool,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        Self {
            stream,
            dec: FrameDecoder::new(vec![0u8; 8 + 65_536], 65_536).unwrap(),
            bytes: 0,
            closed: false,
        }
    }

    /// Reads what is available now (up to ~20 ms wait); returns the decoded messages.
    pub fn poll(&mut self) -> Vec<(Option<u32>, ServerMessage)> {
        let mut out = Vec::new();
        if !self.closed {
            let space = self.dec.spare();
            match self.stream.read(space) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.bytes += n;
                    self.dec.commit(n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
        while let Some(f) = self.dec.next_frame() {
            let f = f.expect("engine frames are valid");
            out.push(ServerMessage::decode(f.payload).expect("engine messages decode"));
        }
        out
    }

    /// Reads until `done(all so far)` or the peer closes or `limit` passes.
    pub fn messages_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[(Option<u32>, ServerMessage)]) -> bool,
    ) -> Vec<(Option<u32>, ServerMessage)> {
        let end = Instant::now() + limit;
        let mut all = Vec::new();
        while Instant::now() < end {
            all.extend(self.poll());
            if done(&all) || self.closed {
                break;
            }
        }
        all.extend(self.poll());
        all
    }

    /// Reads until the peer closes (or `limit`); returns everything received.
    pub fn until_closed(&mut self, limit: Duration) -> Vec<(Option<u32>, ServerMessage)> {
        self.messages_until(limit, |_| false)
    }

    pub fn send<M: Message>(&mut self, id: Option<u32>, body: &M) {
        self.stream.write_all(&frame(id, body)).unwrap();
    }
}

/// The error code of an `error` message.
pub fn code(m: &ServerMessage) -> Option<&str> {
    match m {
        ServerMessage::Error(e) => Some(e.code.as_str()),
        _ => None,
    }
}

/// Environment variable that turns this test binary into [`stand_in`]'s sleeping child.
const STAND_IN_ENV: &str = "LOOPHOLE_STAND_IN_MS";

/// A child process that lives `life` (unless killed): this test binary re-run on
/// [`stand_in_child`]. Portable stand-in for `sleep N` / `true` (Windows has neither).
pub fn stand_in(life: Duration) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "net_support::stand_in_child", "--test-threads=1"])
        .env(STAND_IN_ENV, life.as_millis().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// In [`stand_in`]'s child: sleeps the time asked. Elsewhere: does nothing.
#[test]
fn stand_in_child() {
    if let Some(ms) = std::env::var(STAND_IN_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
