//! Seed property 5: ire-core names no environment. Adding one must never require a change
//! here, so its sources must not mention docker, kubernetes, k8s, kube, bollard, ecs or nomad.

use std::path::{Path, PathBuf};

const BANNED_SUBSTRINGS: &[&str] = &["docker", "kubernetes", "k8s", "kube", "bollard"];
const BANNED_WORDS: &[&str] = &["ecs", "nomad"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The offending words of one line: banned substrings anywhere in an identifier-like token,
/// banned words only as whole tokens (so `secs` or `specs` don't count as `ecs`).
fn offences(line: &str) -> Vec<String> {
    let lower = line.to_ascii_lowercase();
    let mut found = Vec::new();
    for token in lower.split(|c: char| !c.is_ascii_alphanumeric()) {
        if token.is_empty() {
            continue;
        }
        if BANNED_SUBSTRINGS.iter().any(|b| token.contains(b)) || BANNED_WORDS.contains(&token) {
            found.push(token.to_owned());
        }
    }
    found
}

#[test]
fn the_checker_finds_environment_names() {
    assert_eq!(offences("let c = DockerClient::new();"), ["dockerclient"]);
    assert_eq!(offences("// talks to the k8s API"), ["k8s"]);
    assert_eq!(offences("ECS task"), ["ecs"]);
    assert!(offences("timeout_secs: specs").is_empty());
}

#[test]
fn core_sources_name_no_environment() {
    let mut files = Vec::new();
    for dir in ["src", "tests"] {
        rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), &mut files);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    files.push(manifest);
    let this_file = Path::new(file!()).file_name().unwrap().to_owned();
    let mut bad = Vec::new();
    for f in files {
        if f.file_name() == Some(this_file.as_os_str()) {
            continue; // The list of banned words itself.
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for word in offences(line) {
                bad.push(format!("{}:{}: {word}", f.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "ire-core names environments:\n{}",
        bad.join("\n")
    );
    assert!(
        !std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap()
            .contains("openraft"),
        "ire-core depends on the consensus stack"
    );
}
