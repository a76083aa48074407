//! Port policy, announcement, connection file, bind refusals, half-open bound, orphan policy.

mod net_support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
use std::time::{Duration, Instant};

use loophole_ipc::config::PortPolicy;
use loophole_ipc::control::ControlOp;
use loophole_ipc::frame::PREFACE;
use loophole_ipc::net::{AnnounceError, Announcement, BindError, Server, ANNOUNCE_PREFIX};
use loophole_ipc::rt::{bridge, RtConfig};
use net_support::*;

fn net() -> loophole_ipc::rt::NetEndpoint {
    bridge(&RtConfig::default()).1
}

/// A port that is free now (for tests that need a specific number; held until the caller binds).
fn occupied() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn fixed_port_in_use_is_a_clear_error() {
    let holder = occupied();
    let port = holder.local_addr().unwrap().port();
    let err = Server::builder()
        .port(PortPolicy::Fixed(port))
        .spawn(net())
        .unwrap_err();
    assert!(
        matches!(err, BindError::InUse { addr } if addr.port() == port),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&port.to_string()) && text.contains("already in use"),
        "{text}"
    );
    // Negative control: once freed, the same fixed port binds.
    drop(holder);
    let (h, _c) = Server::builder()
        .port(PortPolicy::Fixed(port))
        .spawn(net())
        .expect("free port binds");
    assert_eq!(h.local_addr().port(), port);
}

#[test]
fn range_tries_the_next_port() {
    // Find three consecutive ports whose first is taken by us and the others are free.
    for _ in 0..50 {
        let holder = occupied();
        let first = holder.local_addr().unwrap().port();
        if first > 65_000 {
            continue;
        }
        let spawned = Server::builder()
            .port(PortPolicy::Range {
                first,
                last: first + 2,
            })
            .spawn(net());
        match spawned {
            Ok((h, _c)) => {
                let got = h.local_addr().port();
                assert!(got > first && got <= first + 2, "{got} not after {first}");
                return;
            }
            Err(BindError::RangeExhausted { .. }) => continue, // others took them: retry
            Err(e) => panic!("{e}"),
        }
    }
    panic!("never found a usable range");
}

#[test]
fn exhausted_range_names_the_range() {
    let holder = occupied();
    let p = holder.local_addr().unwrap().port();
    let err = Server::builder()
        .port(PortPolicy::Range { first: p, last: p })
        .spawn(net())
        .unwrap_err();
    assert!(
        matches!(err, BindError::RangeExhausted { first, last, .. } if first == p && last == p)
    );
    assert!(err.to_string().contains(&p.to_string()));
}

#[test]
fn non_loopback_refused_unless_allowed_with_token() {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let err = Server::builder().bind(any).spawn(net()).unwrap_err();
    assert_eq!(err, BindError::NonLoopback { ip: any });
    assert!(err.to_string().contains("0.0.0.0"));
    let err = Server::builder()
        .bind(any)
        .allow_non_loopback(true)
        .spawn(net())
        .unwrap_err();
    assert_eq!(err, BindError::TokenRequired { ip: any });
    // Allowed, with a token: binds.
    let (h, _c) = Server::builder()
        .bind(any)
        .allow_non_loopback(true)
        .token(Some("tok".into()))
        .spawn(net())
        .expect("explicitly allowed");
    assert_eq!(h.local_addr().ip(), any);
}

#[test]
fn ipv6_loopback_works() {
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if TcpListener::bind((v6, 0)).is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let e = Engine::start(fast().bind(v6));
    assert_eq!(e.addr.ip(), v6);
    let mut c = e.client();
    assert!(c.ping().is_ok());
    let a = e.server().announcement();
    assert_eq!(a.host.as_str(), "::1");
    assert_eq!(a.addr().unwrap(), e.addr);
}

#[test]
fn announcement_line_round_trips() {
    let e = Engine::start(fast().instance("00112233445566ff".into()));
    let line = e.server().announcement().to_string();
    let expected = format!(
        "LOOPHOLE_LISTEN {{\"host\":\"127.0.0.1\",\"port\":{},\"pid\":{},\"protocol\":1,\"instance\":\"00112233445566ff\"}}",
        e.addr.port(),
        std::process::id()
    );
    assert_eq!(line, expected);
    assert!(line.starts_with(ANNOUNCE_PREFIX));
    let parsed = Announcement::parse_line(&format!("{line}\n")).unwrap();
    assert_eq!(parsed.addr().unwrap(), e.addr);
    assert_eq!(parsed.instance.as_str(), e.client().instance());
    assert_eq!(
        Announcement::parse_line("hello world"),
        Err(AnnounceError::MissingPrefix)
    );
    assert_eq!(
        Announcement::parse_line("LOOPHOLE_LISTEN {\"host\":\"x\"}"),
        Err(AnnounceError::InvalidJson)
    );
}

#[test]
fn connection_file_is_atomic_and_private() {
    let dir = std::env::temp_dir().join(format!("loophole-net-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("engine.json");
    std::fs::write(&path, "stale").unwrap();
    let e = Engine::start(fast().connection_file(Some(path.clone())));
    // Unix: mode 0600. Windows: the file inherits its directory's ACL (docs/platforms.md).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let a = Announcement::read_connection_file(&path).unwrap();
    assert_eq!(a.addr().unwrap(), e.addr);
    assert_eq!(&a, e.server().announcement());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    drop(e);
    assert!(!path.exists(), "removed at shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection file that cannot be written is `BindError::ConnectionFile` with its kind, and
/// the message says so, not "cannot listen on port N" (the bind had succeeded: the port was
/// never the problem). Control: `connection_file_is_atomic_and_private` writes one.
#[test]
fn an_unwritable_connection_file_is_named_as_such() {
    let missing = std::env::temp_dir()
        .join(format!("loophole-no-such-dir-{}", std::process::id()))
        .join("engine.json");
    let err = fast()
        .connection_file(Some(missing))
        .spawn(net())
        .unwrap_err();
    assert_eq!(
        err,
        BindError::ConnectionFile {
            kind: std::io::ErrorKind::NotFound
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot write the connection file: entity not found"
    );
}

/// Beyond the half-open bound the oldest connection not yet OPEN is closed to make room
/// (session.md §2, issue 9): a newcomer is never the one refused.
#[test]
fn half_open_connections_are_bounded() {
    let e = Engine::start(
        fast()
            .max_half_open(2)
            .handshake_timeout(Duration::from_secs(5)),
    );
    let mut a = Wire::new(raw(e.addr));
    std::thread::sleep(Duration::from_millis(20));
    let mut b = Wire::new(raw(e.addr));
    std::thread::sleep(Duration::from_millis(50));
    let mut c = Wire::new(raw(e.addr));
    let t0 = Instant::now();
    a.until_closed(Duration::from_secs(1));
    assert!(
        a.closed && a.bytes == 0,
        "the oldest half-open closed at once"
    );
    assert!(t0.elapsed() < Duration::from_millis(500));
    let stats = e.server().stats();
    assert_eq!((stats.evicted, stats.refused), (1, 0), "{stats:?}");
    for w in [&mut b, &mut c] {
        w.poll();
        assert!(!w.closed, "the two newer ones stay open");
    }
    // Completing a handshake frees a half-open place: the next newcomer evicts nobody.
    b.stream.write_all(&PREFACE).unwrap();
    b.send(Some(1), &hello(1, None));
    let got = b.messages_until(Duration::from_secs(2), |m| !m.is_empty());
    assert!(matches!(
        got[0].1,
        loophole_ipc::message::ServerMessage::Welcome(_)
    ));
    let mut d = Wire::new(raw(e.addr));
    d.poll();
    std::thread::sleep(Duration::from_millis(100));
    d.poll();
    c.poll();
    assert!(
        !d.closed && !c.closed,
        "accepted below the bound, nobody evicted"
    );
    assert_eq!(e.server().stats().evicted, 1);
}

#[test]
fn orphaned_when_supervisor_dies_and_no_client_returns() {
    let mut child = stand_in(Duration::from_secs(30));
    let pid = child.id();
    let mut e = Engine::start(
        fast()
            .supervisor_pid(Some(pid))
            .orphan_check(Duration::from_millis(20))
            .orphan_grace(Duration::from_millis(300)),
    );
    let control = e.control.take().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!e.server().is_orphaned(), "supervisor alive: not orphaned");
    child.kill().unwrap();
    child.wait().unwrap();
    let t0 = Instant::now();
    let req = control
        .recv_timeout(Duration::from_secs(3))
        .expect("orphan report");
    assert_eq!(req.op, ControlOp::Orphaned);
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    assert!(e.server().is_orphaned() && control.is_orphaned());
}

#[test]
fn a_client_within_the_grace_period_defers_orphaning() {
    let mut child = stand_in(Duration::from_secs(30));
    let pid = child.id();
    let mut e = Engine::start(
        fast()
            .supervisor_pid(Some(pid))
            .orphan_check(Duration::from_millis(20))
            .orphan_grace(Duration::from_millis(400)),
    );
    let control = e.control.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut c = e.client();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(800) {
        c.ping().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !e.server().is_orphaned(),
        "a connected client keeps the engine"
    );
    assert!(control.try_recv().is_err());
    drop(c);
    let req = control
        .recv_timeout(Duration::from_secs(3))
        .expect("orphan report");
    assert_eq!(req.op, ControlOp::Orphaned);
}

#[test]
fn client_retries_until_the_engine_listens_and_detects_a_restart() {
    let port = occupied().local_addr().unwrap().port(); // free again once dropped
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let early = std::thread::spawn(move || {
        let t0 = Instant::now();
        let c = loophole_ipc::client::Client::connect(addr, &opts()).expect("retried until up");
        (t0.elapsed(), c.instance().to_owned())
    });
    std::thread::sleep(Duration::from_millis(300));
    let e = Engine::start(fast().port(PortPolicy::Fixed(port)));
    let (waited, first_instance) = early.join().unwrap();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert_eq!(first_instance, e.server().announcement().instance.as_str());
    drop(e); // the engine "restarts" on the same port
    let e2 = Engine::start(fast().port(PortPolicy::Fixed(port)));
    let c = e2.client();
    assert!(
        c.is_new_engine(&first_instance),
        "a restarted engine has a new instance id"
    );
    let second_instance = c.instance().to_owned();
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    // Negative control: reconnecting to the same engine is not a restart.
    assert!(!e2.client().is_new_engine(&second_instance));
}
