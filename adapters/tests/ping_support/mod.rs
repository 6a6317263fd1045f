//! Reading busybox `ping`'s summary: the network-fault tests measure from inside targets.

/// The `ping` command line: `count` probes 50 ms apart, a second's wait for late replies.
pub fn ping_command(ip: &str, count: u32) -> Vec<String> {
    format!("busybox ping -c {count} -i 0.05 -W 1 {ip}")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Replies received and the average round trip in milliseconds, from ping's summary.
pub fn parse_ping(stdout: &str) -> (u32, Option<f64>) {
    let received = stdout
        .lines()
        .find_map(|l| {
            l.split_once("transmitted, ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let avg = stdout.lines().find_map(|l| {
        l.split_once("min/avg/max = ")?
            .1
            .split('/')
            .nth(1)?
            .parse()
            .ok()
    });
    (received, avg)
}
