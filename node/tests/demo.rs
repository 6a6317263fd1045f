//! `ire demo`, the binary, as a user runs it: it succeeds, its report shows a nonzero time
//! to detect and time to recover for the service it killed, and no process is left.

use std::time::Duration;

use assert_cmd::Command;

fn alive(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'));
    !stat.is_empty() && !zombie && String::from_utf8_lossy(&cmdline).contains("demo-service")
}

#[test]
fn the_demo_measures_the_killed_service_and_leaves_no_process() {
    let out = Command::cargo_bin("ire")
        .unwrap()
        .args(["demo", "--no-progress", "-o", "json"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    let report = &v["report"];
    assert_eq!(report["state"], "Succeeded", "{report:#}");
    let kill = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["plugin"] == "kill")
        .expect("a kill step");
    let task = &kill["tasks"][0];
    assert_eq!(task["resource"], "demo/cache");
    let secs = |f: &str| {
        humantime::parse_duration(
            task[f]
                .as_str()
                .unwrap_or_else(|| panic!("{f} missing: {task:#}")),
        )
        .unwrap()
    };
    assert!(secs("time-to-detect") > Duration::ZERO, "{task:#}");
    // Recovery comes after detection: NecroOps restarts the killed service.
    assert!(secs("time-to-recover") > secs("time-to-detect"), "{task:#}");
    // The paused api recovers after its pause is reverted.
    let pause = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["plugin"] == "pause")
        .expect("a pause step");
    assert!(
        pause["tasks"][0]["time-to-recover"].is_string(),
        "{pause:#}"
    );
    // No process left: the demo checked, and so does the test, by the pids it reported.
    assert_eq!(v["leftovers"].as_array().unwrap().len(), 0);
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 4, "{v:#}");
    for s in services {
        let pid = s["pid"].as_u64().unwrap();
        assert!(!alive(pid), "{} (pid {pid}) still runs", s["name"]);
    }
    // The HTML report exists where the demo said.
    let html = v["html_report"].as_str().expect("an HTML report path");
    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.contains("demo/cache"), "{html}");
    assert!(v["wall_seconds"].as_f64().unwrap() < 60.0);
}
