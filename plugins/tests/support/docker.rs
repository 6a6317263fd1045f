//! Test containers for the catalog's docker tests: labelled with the run, removed when the
//! test ends (a panic included), and swept when a dead test run left some.

use std::process::Command;

/// The image test containers run (built by `deploy/test-images/build.sh`).
pub const IMAGE: &str = "ire/test-busybox:latest";
/// The label that marks this crate's test containers, valued with the run id.
pub const RUN_LABEL: &str = "ire.test.plugins";
/// The label holding the pid of the test process that made the container.
pub const PID_LABEL: &str = "ire.test.pid";

/// Runs the docker CLI; its trimmed stdout, or a panic with its stderr.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes containers of test runs whose process is gone.
fn sweep_dead_runs() {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={RUN_LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}"),
    ]);
    for line in out.lines() {
        let mut it = line.split_whitespace();
        let (Some(id), Some(pid)) = (it.next(), it.next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// One test's containers; all are removed on drop.
pub struct Containers {
    pub run_id: String,
}

impl Containers {
    /// A new run; `test` names it.
    pub fn new(test: &str) -> Self {
        sweep_dead_runs();
        let images = docker(&["images", "-q", IMAGE]);
        assert!(
            !images.is_empty(),
            "image {IMAGE} is missing: run deploy/test-images/build.sh"
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Containers {
            run_id: format!("{test}-{}-{}", std::process::id(), nanos % 1_000_000_000),
        }
    }

    /// The labels every container of the run carries (also given to the adapter, so that
    /// what it creates is removed too).
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        [
            (RUN_LABEL.to_owned(), self.run_id.clone()),
            (PID_LABEL.to_owned(), std::process::id().to_string()),
        ]
        .into()
    }

    /// A compose project name unique to the run.
    pub fn project(&self) -> String {
        format!("ireplug{}", self.run_id.replace('-', ""))
    }

    /// Starts a container named after the run and `suffix`, with `labels`, running `cmd`;
    /// returns its id.
    pub fn run(&self, suffix: &str, labels: &[(&str, &str)], cmd: &[&str]) -> String {
        let name = format!("ire-p-{}-{suffix}", self.run_id);
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name];
        for (k, v) in self
            .labels()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(labels.iter().copied())
        {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.push(IMAGE.into());
        args.extend(cmd.iter().map(|c| (*c).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={RUN_LABEL}={}", self.run_id),
        ]);
        let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = Command::new("docker").args(&args).output();
        }
    }
}
