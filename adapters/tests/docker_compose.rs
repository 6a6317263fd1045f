//! Compose awareness with a real docker-compose project: keys survive recreation.
#![cfg(feature = "docker")]

mod docker_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use docker_support::{DockerTest, PID_LABEL, RUN_LABEL};
use ire_adapters::docker::{COMPOSE_PROJECT, COMPOSE_SERVICE};
use ire_core::{EnvironmentAdapter, ResourceFilter, Signal};

/// A compose project brought down (containers and network) even when the test fails.
struct ComposeProject {
    name: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl ComposeProject {
    fn new(t: &DockerTest) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("docker-compose.yml");
        // Compose project names are lower-case alphanumerics.
        let name = format!("iret{}", t.run_id.replace('-', ""));
        std::fs::write(
            &file,
            format!(
                r#"version: "2.4"
services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $$!; done"]
    labels:
      {RUN_LABEL}: "{run}"
      {PID_LABEL}: "{pid}"
"#,
                image = docker_support::IMAGE,
                run = t.run_id,
                pid = std::process::id(),
            ),
        )
        .unwrap();
        ComposeProject {
            name,
            file,
            _dir: dir,
        }
    }

    fn compose(&self, args: &[&str]) {
        let out = Command::new("docker-compose")
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.name])
            .args(args)
            .output()
            .expect("docker-compose is installed (scripts/install-test-deps.sh)");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn dir(&self) -> &Path {
        self.file.parent().unwrap()
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.name, "down", "-t", "0"])
            .current_dir(self.dir())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_containers_keep_their_keys_across_force_recreate() {
    let t = DockerTest::new("dk").await;
    let p = ComposeProject::new(&t);
    p.compose(&["up", "-d", "--scale", "web=2"]);

    let project = ResourceFilter::everything().with_label(COMPOSE_PROJECT, &p.name);
    let before = t.adapter.list_resources(&project).await.unwrap();
    let mut keys: Vec<String> = before.iter().map(|r| r.key.to_string()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("dk/{}/web/1", p.name),
            format!("dk/{}/web/2", p.name)
        ]
    );
    assert!(before.iter().all(|r| r.labels[COMPOSE_SERVICE] == "web"));
    let key1 = format!("dk/{}/web/1", p.name);
    let old = t.adapter.get_resource(&key1).await.unwrap();
    assert!(old.is_running());

    p.compose(&["up", "-d", "--scale", "web=2", "--force-recreate"]);

    let new = t.adapter.get_resource(&key1).await.unwrap();
    assert_ne!(new.id, old.id, "compose made a new container");
    assert_eq!(new.key, old.key, "under the same key");
    assert!(new.is_running());
    let after = t.adapter.list_resources(&project).await.unwrap();
    assert_eq!(after.len(), 2, "{after:?}");

    // Scaling the service through one of its containers' keys.
    let scaling = t.adapter.scaling().unwrap();
    assert_eq!(scaling.replicas(&key1).await.unwrap(), 2);
    scaling.scale(&key1, 3).await.unwrap();
    assert_eq!(scaling.replicas(&new.id).await.unwrap(), 3);
    let third = t
        .adapter
        .get_resource(&format!("dk/{}/web/3", p.name))
        .await
        .unwrap();
    assert!(third.is_running());
    assert_eq!(
        third.name,
        format!("{}_web_3", p.name),
        "named the compose way"
    );
    scaling.scale(&key1, 1).await.unwrap();
    let left = t.adapter.list_resources(&project).await.unwrap();
    assert_eq!(
        left.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        [key1.as_str()],
        "the highest numbers go first"
    );
    assert!(scaling.scale(&key1, -1).await.is_err());

    // An action by key reaches the new container.
    t.adapter
        .signals()
        .unwrap()
        .send_signal(&key1, &Signal::kill())
        .await
        .unwrap();
    let killed = t
        .wait_for(&new.id, std::time::Duration::from_secs(10), "killed", |r| {
            !r.is_running()
        })
        .await;
    assert_eq!(killed.status.reason, "ExitCode137");
}
