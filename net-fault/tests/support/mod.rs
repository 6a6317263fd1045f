//! Network namespaces joined by veth pairs, probes run from inside them, and the helper
//! binary. Every name carries the test process's pid, so tests run in parallel.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ire_core::{NetworkBackend, NetworkFault};
use ire_net_fault::Plan;
use nix::sched::{setns, CloneFlags};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique short tag for this process.
pub fn tag() -> String {
    format!(
        "{}{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("irt{}", tag());
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a shell command inside the namespace.
    pub fn sh(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{cmd}'", self.name))
    }

    /// What the namespace's qdiscs and nftables rules are now.
    pub fn state(&self) -> String {
        format!(
            "{}\n---\n{}\n---\n{}",
            self.sh("tc qdisc show"),
            self.sh("nft list ruleset"),
            self.sh("ip -o link show | cut -d: -f2")
        )
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            setns(std::fs::File::open(path).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins `a` and `b` with a veth pair named `ifa`/`ifb` inside them, addressed
/// `198.18.<net>.1/24` and `198.18.<net>.2/24` (the benchmarking range: it never leaves the
/// namespaces).
pub fn link(a: &Netns, ifa: &str, b: &Netns, ifb: &str, net: u8) -> (String, String) {
    let t = tag();
    let (x, y) = (format!("va{t}"), format!("vb{t}"));
    sh(&format!(
        "ip link add {x} type veth peer name {y} && ip link set {x} netns {} && ip link set {y} netns {} && \
         ip -n {} link set {x} name {ifa} && ip -n {} link set {y} name {ifb} && \
         ip -n {} addr add 198.18.{net}.1/24 dev {ifa} && ip -n {} addr add 198.18.{net}.2/24 dev {ifb} && \
         ip -n {} link set {ifa} up && ip -n {} link set {ifb} up",
        a.name, b.name, a.name, b.name, a.name, b.name, a.name, b.name
    ));
    (format!("198.18.{net}.1"), format!("198.18.{net}.2"))
}

/// Two namespaces joined by one link: the target `a` (eth0, 198.18.0.1) and its peer `b`
/// (198.18.0.2).
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub a_ip: String,
    pub b_ip: String,
}

pub fn pair() -> Pair {
    let a = Netns::new();
    let b = Netns::new();
    let (a_ip, b_ip) = link(&a, "eth0", &b, "eth0", 0);
    Pair { a, b, a_ip, b_ip }
}

/// Stops a server thread when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP echo server on `ip:port` in `ns`.
pub fn udp_echo(ns: &Netns, ip: &str, port: u16) -> Server {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let (tx, rx) = std::sync::mpsc::channel();
    ns.run(move || {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while !s.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    rx.recv().unwrap();
    Server { stop, addr }
}

/// Round trips of `count` probes sent every `every` from `ns` to the echo server at `to`;
/// `None` for a probe with no reply within `wait` after the last send.
pub fn round_trips(
    ns: &Netns,
    to: SocketAddr,
    count: usize,
    every: Duration,
    wait: Duration,
) -> Vec<Option<Duration>> {
    ns.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let start = Instant::now();
        let mut rtt = vec![None; count];
        let mut sent = 0;
        let mut buf = [0u8; 64];
        let mut last_send = start;
        loop {
            let now = Instant::now();
            if sent < count && now >= start + every * sent as u32 {
                let mut msg = [0u8; 16];
                msg[..8].copy_from_slice(&(sent as u64).to_be_bytes());
                msg[8..].copy_from_slice(&(now - start).as_nanos().to_be_bytes()[8..]);
                let _ = sock.send_to(&msg, to);
                sent += 1;
                last_send = now;
            }
            if sent == count && now > last_send + wait {
                break;
            }
            if let Ok(n) = sock.recv(&mut buf) {
                if n >= 16 {
                    let i = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
                    let t = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                    if i < count && rtt[i].is_none() {
                        rtt[i] = Some(start.elapsed() - Duration::from_nanos(t));
                    }
                }
            }
        }
        rtt
    })
    .join()
    .unwrap()
}

/// Milliseconds of the replies that came back.
pub fn millis(rtts: &[Option<Duration>]) -> Vec<f64> {
    let mut v: Vec<f64> = rtts
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

pub fn median(v: &[f64]) -> f64 {
    v[v.len() / 2]
}

/// What a UDP receiver saw of numbered datagrams.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Sequence numbers in arrival order.
    pub order: Vec<u32>,
    /// Datagrams whose content did not match their sequence number.
    pub corrupted: usize,
}

/// The content of datagram `i`: its number and a pattern derived from it.
pub fn datagram(i: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..4].copy_from_slice(&i.to_be_bytes());
    for (k, b) in v[4..].iter_mut().enumerate() {
        *b = (i as usize * 31 + k * 7) as u8;
    }
    v
}

/// Sends `count` numbered datagrams of `len` bytes from `from` to a receiver on `ip:port`
/// in `to`, one every `every`; returns what the receiver saw.
pub fn udp_stream(
    from: &Netns,
    to: &Netns,
    ip: &str,
    port: u16,
    count: u32,
    len: usize,
    every: Duration,
) -> Received {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = to.run(move || {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        tx.send(()).unwrap();
        let mut r = Received::default();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            if n < 4 {
                r.corrupted += 1;
                continue;
            }
            let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
            if n != len || buf[..n] != datagram(i, len)[..] {
                r.corrupted += 1;
            } else {
                r.order.push(i);
            }
        }
        r
    });
    rx.recv().unwrap();
    from.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let start = Instant::now();
        for i in 0..count {
            while Instant::now() < start + every * i {
                std::hint::spin_loop();
            }
            sock.send_to(&datagram(i, len), addr).unwrap();
        }
    })
    .join()
    .unwrap();
    receiver.join().unwrap()
}

/// Bytes per second a TCP receiver in `to` gets from a sender in `from` over `window`,
/// after a warm-up.
pub fn tcp_throughput(
    from: &Netns,
    to: &Netns,
    ip: &str,
    port: u16,
    warmup: Duration,
    window: Duration,
) -> f64 {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = to.run(move || {
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let start = Instant::now();
        let mut counted = 0u64;
        while start.elapsed() < warmup + window {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            if start.elapsed() >= warmup {
                counted += n as u64;
            }
        }
        counted as f64 / window.as_secs_f64()
    });
    rx.recv().unwrap();
    let total = warmup + window + Duration::from_millis(200);
    from.run(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let buf = vec![7u8; 65536];
        let start = Instant::now();
        while start.elapsed() < total {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    receiver.join().unwrap()
}

/// The UDP error counters of `ns` (`/proc/net/snmp`).
#[derive(Debug, Clone, Copy)]
pub struct UdpErrors {
    /// Datagrams dropped on input for any error (checksum, length, full buffer).
    pub in_errors: u64,
    /// Of those, for a bad checksum.
    pub checksum: u64,
    /// Of those, for a full receive buffer.
    pub rcvbuf: u64,
}

pub fn udp_errors(ns: &Netns) -> UdpErrors {
    ns.run(|| {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        let names: Vec<&str> = udp[0].split_whitespace().collect();
        let values: Vec<&str> = udp[1].split_whitespace().collect();
        let get = |n: &str| -> u64 {
            let at = names.iter().position(|x| *x == n).unwrap();
            values[at].parse().unwrap()
        };
        UdpErrors {
            in_errors: get("InErrors"),
            checksum: get("InCsumErrors"),
            rcvbuf: get("RcvbufErrors"),
        }
    })
    .join()
    .unwrap()
}

/// The helper binary: cargo's for tests; for the benchmark (an example), the one beside
/// the examples' directory.
pub fn helper() -> Command {
    match option_env!("CARGO_BIN_EXE_ire-net-fault") {
        Some(p) => Command::new(p),
        None => {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().parent().unwrap();
            Command::new(dir.join("ire-net-fault"))
        }
    }
}

/// Datagrams of `len` bytes sent from `from` to a receiver in `to` as fast as one thread
/// can for `duration`: (sent, received).
pub fn udp_flood(
    from: &Netns,
    to: &Netns,
    ip: &str,
    port: u16,
    len: usize,
    duration: Duration,
) -> (u64, u64) {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let receiver = to.run(move || {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut n = 0u64;
        loop {
            match sock.recv(&mut buf) {
                Ok(_) => n += 1,
                Err(_) if s.load(Ordering::Relaxed) => return n,
                Err(_) => {}
            }
        }
    });
    rx.recv().unwrap();
    let sent = from
        .run(move || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            let buf = vec![1u8; len];
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < duration {
                if sock.send_to(&buf, addr).is_ok() {
                    n += 1;
                }
            }
            n
        })
        .join()
        .unwrap();
    // Delayed packets are still on their way: let them arrive.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    (sent, receiver.join().unwrap())
}

/// A running `apply`: the fault is in place once it is returned.
pub struct Applied {
    pub child: Child,
    pub ready: serde_json::Value,
    pub plan: Plan,
}

impl Applied {
    /// Sends SIGTERM and waits; the emulator's statistics (its last stderr line).
    pub fn stop_with_stats(mut self) -> serde_json::Value {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        self.child.wait().unwrap();
        err.lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status's success.
    pub fn stop(mut self) -> bool {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap().success()
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn plan(
    fault_id: &str,
    fault: NetworkFault,
    backend: NetworkBackend,
    interfaces: &[&str],
) -> Plan {
    Plan::new(
        fault_id,
        fault,
        backend,
        interfaces.iter().map(|s| (*s).to_owned()).collect(),
    )
    .unwrap()
}

/// Runs `apply` in `ns` and waits for its ready line (or its failure).
pub fn apply(ns: &Netns, plan: &Plan) -> Result<Applied, String> {
    let mut child = helper()
        .arg("--netns")
        .arg(ns.path())
        .args([
            "apply",
            "--fault-id",
            &plan.fault_id,
            "--plan",
            &plan.to_json(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim().is_empty() {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        child.wait().unwrap();
        return Err(err);
    }
    Ok(Applied {
        child,
        ready: serde_json::from_str(&line).unwrap(),
        plan: plan.clone(),
    })
}

/// Runs `revert` in `ns`.
pub fn revert(ns: &Netns, plan: &Plan) {
    let out = helper()
        .arg("--netns")
        .arg(ns.path())
        .args([
            "revert",
            "--fault-id",
            &plan.fault_id,
            "--plan",
            &plan.to_json(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "revert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The probe's answer in `ns`.
pub fn probe(ns: &Netns) -> ire_net_fault::probe::Probe {
    let out = helper()
        .arg("--netns")
        .arg(ns.path())
        .args(["probe", "--fault-id", "probe-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether this kernel runs netem qdiscs, probed in a fresh namespace.
pub fn kernel_has_netem() -> Result<(), String> {
    let ns = Netns::new();
    let p = probe(&ns);
    if p.netem {
        Ok(())
    } else {
        Err(p.netem_error.unwrap_or_default())
    }
}
