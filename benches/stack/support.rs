//! Plumbing of `benches/stack.rs`: a per-thread allocation counter keyed by kernel thread id
//! (so a thread spawned inside the crate under test can be counted), thread discovery and
//! affinity through `/proc`, the loophole-ipc server and handshake, and a tiny RNG.
#![allow(unsafe_code)] // libc calls: gettid, sched_getaffinity, setsockopt

use loophole_ipc::message::{encode_payload, Hello, ServerMessage, PROTOCOL_VERSION};
use loophole_ipc::net::{ServerBuilder, ServerHandle};
use loophole_ipc::rt::{bridge, AudioEndpoint, RtConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::common::servers::connect_tcp;
use super::common::wire::{FrameClient, PING_JSON};

// ---------------------------------------------------------------------------------------------
// Allocation counter keyed by thread id.

const SLOTS: usize = 32;
static WATCH_TID: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];
static WATCH_COUNT: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static WATCH_USED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's kernel id, fetched once (0 = not yet).
    static MY_TID: Cell<i32> = const { Cell::new(0) };
}

/// The calling thread's kernel thread id (`gettid`, one system call).
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no argument and cannot fail.
    unsafe { libc::gettid() }
}

fn count_one() {
    let used = WATCH_USED.load(Ordering::Acquire);
    if used == 0 {
        return;
    }
    // try_with: no panic during thread-local teardown; const init and no Drop mean the access
    // itself never allocates (no recursion into the allocator).
    let Ok(tid) = MY_TID.try_with(|t| match t.get() {
        0 => {
            let v = gettid();
            t.set(v);
            v
        }
        v => v,
    }) else {
        return;
    };
    for i in 0..used.min(SLOTS) {
        if WATCH_TID[i].load(Ordering::Relaxed) == tid {
            WATCH_COUNT[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Counts `alloc`, `alloc_zeroed` and `realloc` of watched threads; frees are not counted.
/// Everything is served by `System`.
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// GlobalAlloc contract is exactly System's; counting touches only atomics and a thread-local.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees about `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: forwarded with the caller's guarantees about `layout`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: forwarded; `ptr` came from this allocator, i.e. from System.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; `ptr` came from this allocator, i.e. from System.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A counter handle for one watched thread.
#[derive(Clone, Copy, Debug)]
pub struct Watched(pub usize);

impl Watched {
    /// Allocations of the watched thread since it was registered.
    pub fn allocs(self) -> u64 {
        WATCH_COUNT[self.0].load(Ordering::Relaxed)
    }
}

/// Starts counting the allocations of thread `tid` (any thread of this process).
pub fn watch(tid: i32) -> io::Result<Watched> {
    let i = WATCH_USED.load(Ordering::Relaxed);
    if i >= SLOTS {
        return Err(io::Error::other("too many watched threads"));
    }
    WATCH_TID[i].store(tid, Ordering::Relaxed);
    WATCH_COUNT[i].store(0, Ordering::Relaxed);
    WATCH_USED.store(i + 1, Ordering::Release);
    Ok(Watched(i))
}

/// The counter must be able to fail: an allocation on a watched thread (registered from
/// *another* thread, as for the crate's network thread) must show, one elsewhere must not.
pub fn alloc_counter_self_check() -> io::Result<()> {
    // Plain atomics for the hand-shake: a blocking channel may allocate on the waiting side.
    static TID: AtomicI32 = AtomicI32::new(0);
    static GO: AtomicUsize = AtomicUsize::new(0);
    let t = std::thread::spawn(|| {
        TID.store(gettid(), Ordering::Release);
        while GO.load(Ordering::Acquire) == 0 {
            std::hint::spin_loop();
        }
        std::hint::black_box(vec![1u8; 64]).len()
    });
    let tid = loop {
        match TID.load(Ordering::Acquire) {
            0 => std::hint::spin_loop(),
            t => break t,
        }
    };
    let w = watch(tid)?;
    let here = std::hint::black_box(vec![1u8; 64]); // this thread: not counted
    GO.store(1, Ordering::Release);
    let _ = t.join();
    drop(here);
    match w.allocs() {
        1 => Ok(()),
        n => Err(io::Error::other(format!(
            "alloc counter self-check: counted {n}, expected 1"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Threads through /proc.

/// Kernel ids of this process's threads.
pub fn task_ids() -> io::Result<Vec<i32>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc/self/task")? {
        if let Some(id) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            v.push(id);
        }
    }
    Ok(v)
}

fn comm(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The one thread named `name` that is not in `before` (waits up to 2 s for it to be named).
pub fn new_thread_named(before: &[i32], name: &str) -> io::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found: Vec<i32> = task_ids()?
            .into_iter()
            .filter(|t| !before.contains(t) && comm(*t) == name)
            .collect();
        if found.len() == 1 {
            return Ok(found[0]);
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "expected one new thread named {name}, found {found:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The CPUs thread `tid` may run on (`sched_getaffinity`).
pub fn affinity(tid: i32) -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zeroes is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which outlives the call.
    let rc =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `i` < CPU_SETSIZE, inside `set`.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}

/// Fails unless thread `tid` may run on exactly `cpu`; returns a line saying so.
pub fn check_affinity(what: &str, tid: i32, cpu: usize) -> io::Result<String> {
    let a = affinity(tid)?;
    if a != [cpu] {
        return Err(io::Error::other(format!(
            "{what} (tid {tid}) has affinity {a:?}, expected [{cpu}]"
        )));
    }
    Ok(format!("{what}: tid {tid}, sched_getaffinity = {a:?}"))
}

// ---------------------------------------------------------------------------------------------
// The stack under test.

/// A running loophole-ipc server, its network thread's id and allocation counter, and the
/// other two handles of the bridge.
pub struct Stack {
    pub handle: ServerHandle,
    /// Held so the control route stays open (nothing is sent on it).
    pub _control: loophole_ipc::control::ControlEndpoint,
    pub audio: Option<AudioEndpoint>,
    pub tid: i32,
    pub allocs: Watched,
}

/// Starts a server (`Server::builder()...spawn`) on a fresh bridge and finds its thread.
/// The thread inherits the caller's CPU affinity.
pub fn spawn_stack(builder: ServerBuilder, rt: &RtConfig) -> io::Result<Stack> {
    loophole_ipc::clock::now_ns(); // fix the clock epoch outside any timed or audio path
    let before = task_ids()?;
    let (audio, net) = bridge(rt);
    let (handle, control) = builder
        .spawn(net)
        .map_err(|e| io::Error::other(format!("server spawn: {e}")))?;
    let tid = new_thread_named(&before, "loophole-net")?;
    let allocs = watch(tid)?;
    Ok(Stack {
        handle,
        _control: control,
        audio: Some(audio),
        tid,
        allocs,
    })
}

/// `hello` as a frame payload.
pub fn hello_payload(id: u32) -> io::Result<Vec<u8>> {
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        client: heapless::String::try_from("loophole-bench").unwrap_or_default(),
        token: None,
        attachments: false,
    };
    let mut buf = vec![0u8; 512];
    let n = encode_payload(Some(id), &hello, &mut buf).map_err(enc)?;
    buf.truncate(n);
    Ok(buf)
}

pub fn enc(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Connects the bench's blocking frame client (same as for the floors) and completes the
/// handshake: preface, `hello`, `welcome` and the two snapshot frames.
pub fn connect_stack(addr: SocketAddr) -> io::Result<FrameClient<TcpStream>> {
    let mut c = FrameClient::new(connect_tcp(addr)?, PING_JSON)?;
    c.send_frame(&hello_payload(1)?)?;
    match ServerMessage::decode(c.recv_frame()?).map_err(enc)? {
        (Some(1), ServerMessage::Welcome(_)) => {}
        other => return Err(enc(format!("expected welcome, got {other:?}"))),
    }
    for _ in 0..2 {
        c.recv_frame()?; // transport.state and engine.health snapshot
    }
    Ok(c)
}

/// `SO_LINGER {on, 0}`: `close` sends RST and leaves no TIME_WAIT (for connection loops).
pub fn linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` is a valid linger struct on our stack, its size is passed; the fd is ours.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Asks for `SCHED_FIFO` at `priority` (clamped to the system's range) for the calling thread;
/// returns the priority granted or the OS error (e.g. `EPERM`).
pub fn request_fifo(priority: i32) -> io::Result<i32> {
    // SAFETY: plain queries with a valid policy constant.
    let (min, max) = unsafe {
        (
            libc::sched_get_priority_min(libc::SCHED_FIFO),
            libc::sched_get_priority_max(libc::SCHED_FIFO),
        )
    };
    let priority = priority.clamp(min, max);
    // SAFETY: sched_param is plain old data; all-zero is a valid value.
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = priority;
    // SAFETY: `pthread_self()` is the calling thread; `param` is a valid sched_param.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if r == 0 {
        Ok(priority)
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// xorshift64*: a deterministic pseudo-random sequence (no allocation, no syscall).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn online_cpus() -> usize {
    // SAFETY: sysconf takes an integer name and reads no memory of ours.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

/// `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` until `deadline_ns` of
/// [`crate::common::monotonic_ns`].
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            return;
        }
    }
}

/// A running scsynth to compare section 3 against, from `LOOPHOLE_BENCH_SCSYNTH` (its UDP
/// address, e.g. `127.0.0.1:57110`; `benches/probes/scsynth.sh` starts one on a dummy JACK
/// device with the same period). `None` when the variable is unset.
pub fn scsynth_from_env() -> io::Result<Option<std::net::UdpSocket>> {
    let Ok(addr) = std::env::var("LOOPHOLE_BENCH_SCSYNTH") else {
        return Ok(None);
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(addr.trim())?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
    scsynth_status(&sock)?; // fails here, before the run, if nothing answers
    Ok(Some(sock))
}

/// One OSC `/status` (no arguments) to scsynth and the wait for its `/status.reply`: what
/// scsynth does for a command at a random moment (queued to its audio thread, performed at the
/// start of the next hardware buffer, answered from its non-real-time thread). Other replies
/// are skipped; a timeout is an error.
pub fn scsynth_status(sock: &std::net::UdpSocket) -> io::Result<()> {
    const STATUS: &[u8] = b"/status\0,\0\0\0";
    sock.send(STATUS)?;
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf)?;
        if buf[..n].starts_with(b"/status.reply\0") {
            return Ok(());
        }
    }
}
