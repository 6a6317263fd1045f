//! `pods/exec` over a websocket with the `v5.channel.k8s.io` / `v4.channel.k8s.io`
//! protocols: channel 0 stdin, 1 stdout, 2 stderr, 3 the final `Status` (with the exit
//! code for a non-zero exit), 255 a stream close (v5).
//!
//! The fake kubelet runs the command as a local process. `kill -<signal> 1` is the one
//! command it interprets itself: it delivers the signal to the pod's (simulated) main
//! process, recorded in the store, instead of signalling this machine's PID 1.

use std::process::Stdio;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::server::{error_response, Body, Shared};
use super::store::{ApiError, PODS};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

/// Answers the upgrade request and runs the session once the connection is upgraded.
pub fn upgrade(
    shared: Shared,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let flag = |name: &str| {
        query
            .iter()
            .any(|(k, v)| k == name && (v == "true" || v == "1"))
    };
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let (stdin, stdout, stderr, tty) = (flag("stdin"), flag("stdout"), flag("stderr"), flag("tty"));
    let pod_obj = match shared.store.lock().expect("store lock").get(PODS, ns, pod) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    if !stdin && !stdout && !stderr {
        return error_response(&ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    if command.is_empty() {
        return error_response(&ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let containers: Vec<String> = pod_obj["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let chosen = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, c)| c.clone());
    let ephemeral = match chosen
        .as_deref()
        .map(|c| (c, super::ephemeral::is_running(&pod_obj, c)))
    {
        Some((_, Some(true))) => chosen.clone(),
        Some((c, Some(false))) => {
            return error_response(&ApiError::bad_request(format!(
                "container {c} is not running in pod {pod}"
            )))
        }
        _ => None,
    };
    match query.iter().find(|(k, _)| k == "container") {
        Some(_) if ephemeral.is_some() => {}
        Some((_, c)) if !containers.contains(c) => {
            return error_response(&ApiError::bad_request(format!(
                "container {c} is not valid for pod {pod}"
            )))
        }
        None if containers.len() > 1 => {
            return error_response(&ApiError::bad_request(format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
        _ => {}
    }
    let headers = req.headers();
    let is_ws = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let offered = headers
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (Some(key), true) = (key, is_ws) else {
        return error_response(&ApiError::bad_request("Upgrade request required"));
    };
    let protocol = if offered.split(',').any(|p| p.trim() == "v5.channel.k8s.io") {
        "v5.channel.k8s.io"
    } else if offered.split(',').any(|p| p.trim() == "v4.channel.k8s.io") {
        "v4.channel.k8s.io"
    } else {
        return error_response(&ApiError::bad_request(format!(
            "no supported streaming protocol in {offered:?}"
        )));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (ns, pod) = (ns.to_owned(), pod.to_owned());
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let session = Session {
            shared: shared.clone(),
            ns,
            pod,
            ephemeral,
            command,
            stdin,
            tty,
            v5: protocol.starts_with("v5"),
        };
        tokio::select! {
            _ = session.run(ws) => {}
            _ = shared.shutdown.cancelled() => {}
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(
            http::header::SEC_WEBSOCKET_ACCEPT,
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
        )
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Empty::new().boxed())
        .expect("valid response")
}

struct Session {
    shared: Shared,
    ns: String,
    pod: String,
    /// The ephemeral container exec'd into, whose commands the fake kubelet answers itself.
    ephemeral: Option<String>,
    command: Vec<String>,
    stdin: bool,
    tty: bool,
    v5: bool,
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

fn success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

fn failure(message: String, reason: &str, exit_code: Option<i32>) -> Value {
    let mut s = json!({"metadata": {}, "status": "Failure", "message": message, "reason": reason});
    if let Some(code) = exit_code {
        s["details"] = json!({"causes": [{"reason": "ExitCode", "message": code.to_string()}]});
    }
    s
}

/// `kill -9 1`, `kill -KILL 1`, `kill -s TERM 1`, `kill 1` -> the signal number.
fn parse_kill(cmd: &[String]) -> Option<i32> {
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let sig = match args.as_slice() {
        ["kill", "1"] => "TERM",
        ["kill", "-s", s, "1"] => s,
        ["kill", s, "1"] => s.strip_prefix('-')?,
        _ => return None,
    };
    sig.parse::<ire_core::Signal>().ok().map(|s| s.number())
}

impl Session {
    async fn run(self, ws: Ws) {
        let (mut tx, mut rx) = ws.split();
        // The real server opens each channel with a one-byte frame.
        for ch in [STDOUT, STDERR] {
            if tx
                .send(Message::Binary(Bytes::from(vec![ch])))
                .await
                .is_err()
            {
                return;
            }
        }
        let status = if let Some(container) = &self.ephemeral {
            self.answer_ephemeral(container, &mut tx).await
        } else if let Some(sig) = parse_kill(&self.command) {
            let r = self
                .shared
                .store
                .lock()
                .expect("store lock")
                .signal(&self.ns, &self.pod, sig);
            match r {
                Ok(()) => success(),
                Err(e) => failure(e.message, "InternalError", None),
            }
        } else {
            self.run_process(&mut tx, &mut rx).await
        };
        let _ = tx.send(frame(STATUS, status.to_string().as_bytes())).await;
        let _ = tx.send(Message::Close(None)).await;
        // Drain until the client closes, so the close handshake completes.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Some(Ok(_)) = rx.next().await {}
        })
        .await;
    }

    /// An exec into an ephemeral container: answered by the test's hook.
    async fn answer_ephemeral(
        &self,
        container: &str,
        tx: &mut futures::stream::SplitSink<Ws, Message>,
    ) -> Value {
        let hook = self
            .shared
            .store
            .lock()
            .expect("store lock")
            .ephemeral
            .exec
            .clone();
        let outcome = hook
            .map(|h| h(container, &self.command))
            .unwrap_or_default();
        if !outcome.stdout.is_empty() {
            let _ = tx.send(frame(STDOUT, outcome.stdout.as_bytes())).await;
        }
        if let Some(fate) = &outcome.then {
            let _ = self
                .shared
                .store
                .lock()
                .expect("store lock")
                .set_ephemeral_state(&self.ns, &self.pod, container, fate);
        }
        if outcome.exit_code == 0 {
            success()
        } else {
            failure(
                format!(
                    "command terminated with non-zero exit code: {}",
                    outcome.exit_code
                ),
                "NonZeroExitCode",
                Some(outcome.exit_code),
            )
        }
    }

    async fn run_process(
        &self,
        tx: &mut futures::stream::SplitSink<Ws, Message>,
        rx: &mut futures::stream::SplitStream<Ws>,
    ) -> Value {
        let mut child = match tokio::process::Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(if self.stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                return failure(
                    format!(
                        "OCI runtime exec failed: exec failed: unable to start container process: exec: {:?}: {e}: unknown",
                        self.command[0]
                    ),
                    "InternalError",
                    None,
                )
            }
        };
        let mut child_stdin = child.stdin.take();
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let (mut out_open, mut err_open, mut client_open) = (true, true, true);
        let (mut ob, mut eb) = (vec![0u8; 8192], vec![0u8; 8192]);
        // With a terminal, stderr is merged into stdout.
        let err_channel = if self.tty { STDOUT } else { STDERR };
        while out_open || err_open {
            tokio::select! {
                n = out.read(&mut ob), if out_open => match n {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(n) => if tx.send(frame(STDOUT, &ob[..n])).await.is_err() { return success(); },
                },
                n = err.read(&mut eb), if err_open => match n {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(n) => if tx.send(frame(err_channel, &eb[..n])).await.is_err() { return success(); },
                },
                msg = rx.next(), if client_open => match msg {
                    Some(Ok(Message::Binary(b))) if b.first() == Some(&STDIN) => {
                        if let Some(s) = child_stdin.as_mut() {
                            let _ = s.write_all(&b[1..]).await;
                        }
                    }
                    Some(Ok(Message::Binary(b))) if self.v5 && b.as_ref() == [CLOSE, STDIN] => {
                        child_stdin = None;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        // v4 clients close the socket to end stdin.
                        client_open = false;
                        child_stdin = None;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
        drop(child_stdin);
        match child.wait().await {
            Ok(s) if s.success() => success(),
            Ok(s) => {
                let code = s.code().unwrap_or(128 + 9);
                failure(
                    format!(
                        "command terminated with non-zero exit code: error executing command {:?}, exit code {code}",
                        self.command
                    ),
                    "NonZeroExitCode",
                    Some(code),
                )
            }
            Err(e) => failure(
                format!("waiting for the command: {e}"),
                "InternalError",
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_forms_are_understood() {
        let c = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(parse_kill(&c("kill -9 1")), Some(9));
        assert_eq!(parse_kill(&c("kill -TERM 1")), Some(15));
        assert_eq!(parse_kill(&c("kill -s HUP 1")), Some(1));
        assert_eq!(parse_kill(&c("kill 1")), Some(15));
        assert_eq!(parse_kill(&c("kill -9 2")), None);
    }
}
