//! The plugin registry (seed properties 11, 59-63, 84-88) and out-of-process plugins
//! (the example `examples/plugins/file-marker`, a Python program).

mod engine_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine_common::Rig;
use ire_actors::registry::{DefaultPluginRegistry, ProcessPlugin};
use ire_core::testsuite::{plugin_conformance, FakePlugin, PluginMetadataBuilder};
use ire_core::{
    ExecutionEngine, ExecutionStatus, Plugin, PluginConfig, PluginContext, PluginFilter,
    PluginMetadata, PluginRegistry,
};
use proptest::prelude::*;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins/file-marker")
}

/// A plugin directory holding the example plugin under `name`, version and dependencies.
fn plugin_dir(root: &Path, name: &str, version: &str, deps: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = std::fs::read_to_string(example_dir().join("plugin.yaml")).unwrap();
    let deps_yaml = if deps.is_empty() {
        "{}".to_owned()
    } else {
        format!(
            "{{{}}}",
            deps.iter()
                .map(|(n, v)| format!("{n}: \"{v}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let manifest = manifest
        .replace("name: file-marker", &format!("name: {name}"))
        .replace("version: 1.0.0", &format!("version: {version}"))
        .replace("dependencies: {}", &format!("dependencies: {deps_yaml}"))
        .replace(
            "executable: file-marker.py",
            &format!(
                "executable: {}",
                example_dir().join("file-marker.py").display()
            ),
        );
    std::fs::write(dir.join("plugin.yaml"), manifest).unwrap();
    dir
}

#[tokio::test]
async fn discovery_registers_every_plugin_of_a_directory_in_dependency_order() {
    let tmp = tempfile::tempdir().unwrap();
    // "app" depends on "base", and sorts before it.
    plugin_dir(tmp.path(), "app", "1.0.0", &[("base", "^2.1")]);
    plugin_dir(tmp.path(), "base", "2.3.0", &[]);
    plugin_dir(tmp.path(), "solo", "0.1.0", &[]);
    let reg = DefaultPluginRegistry::new();
    let found = reg.discover_from_directory(tmp.path()).await.unwrap();
    let mut names: Vec<_> = found.iter().map(|m| m.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["app", "base", "solo"]);
    assert_eq!(
        reg.get("base").unwrap().metadata().version,
        semver::Version::new(2, 3, 0)
    );
    assert!(reg.get("nope").is_err());
}

#[tokio::test]
async fn bad_plugins_are_reported_and_good_ones_still_registered() {
    let tmp = tempfile::tempdir().unwrap();
    plugin_dir(tmp.path(), "good", "1.0.0", &[]);
    plugin_dir(tmp.path(), "needs-missing", "1.0.0", &[("ghost", "^1")]);
    plugin_dir(tmp.path(), "too-new", "1.0.0", &[("good", ">=2")]);
    plugin_dir(tmp.path(), "ping", "1.0.0", &[("pong", "^1")]);
    plugin_dir(tmp.path(), "pong", "1.0.0", &[("ping", "^1")]);
    let typo = tmp.path().join("typo");
    std::fs::create_dir_all(&typo).unwrap();
    std::fs::write(
        typo.join("plugin.yaml"),
        "name: typo\nversion: 1.0.0\ndescription: d\nexecutible: x\n",
    )
    .unwrap();
    let reg = DefaultPluginRegistry::new();
    let e = reg
        .discover_from_directory(tmp.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 registered, 5 failed"), "{e}");
    assert!(e.contains("missing dependencies: ghost ^1"), "{e}");
    assert!(
        e.contains("needs good >=2, but version 1.0.0 is registered"),
        "{e}"
    );
    assert!(
        e.contains("dependency cycle: ping -> pong -> ping")
            || e.contains("dependency cycle: pong -> ping -> pong"),
        "{e}"
    );
    assert!(e.contains("typo/plugin.yaml line 4"), "{e}");
    let names: Vec<_> = reg
        .list(&PluginFilter::default())
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["good"]);
}

#[tokio::test]
async fn registration_validates_metadata_and_dependencies() {
    let reg = DefaultPluginRegistry::new();
    let bad_name = FakePlugin::with_metadata(PluginMetadata::new(
        "Bad Name",
        semver::Version::new(1, 0, 0),
        "x",
        ire_core::FaultKind::Action,
    ));
    assert!(reg.register(Arc::new(bad_name)).await.is_err());
    let no_desc = FakePlugin::with_metadata(PluginMetadata::new(
        "nodesc",
        semver::Version::new(1, 0, 0),
        " ",
        ire_core::FaultKind::Action,
    ));
    assert!(reg.register(Arc::new(no_desc)).await.is_err());
    // Missing dependency: not registered.
    let app = FakePlugin::with_metadata(
        PluginMetadataBuilder::new("app")
            .depends_on("lib", "^1.2")
            .build(),
    );
    let e = reg.register(Arc::new(app.clone())).await.unwrap_err();
    assert!(e.to_string().contains("lib ^1.2"), "{e}");
    assert!(reg.get("app").is_err());
    // Version out of range: not registered.
    reg.register(Arc::new(FakePlugin::with_metadata(
        PluginMetadataBuilder::new("lib").version("1.1.0").build(),
    )))
    .await
    .unwrap();
    let e = reg.register(Arc::new(app.clone())).await.unwrap_err();
    assert!(e.to_string().contains("version 1.1.0 is registered"), "{e}");
    reg.unregister("lib").await.unwrap();
    reg.register(Arc::new(FakePlugin::with_metadata(
        PluginMetadataBuilder::new("lib").version("1.4.0").build(),
    )))
    .await
    .unwrap();
    reg.register(Arc::new(app)).await.unwrap();
    // Duplicates and removing a depended-on plugin are refused.
    assert!(reg
        .register(Arc::new(FakePlugin::new("lib")))
        .await
        .is_err());
    let e = reg.unregister("lib").await.unwrap_err();
    assert!(e.to_string().contains("app depend on it"), "{e}");
    reg.unregister("app").await.unwrap();
    reg.unregister("lib").await.unwrap();
    assert!(reg.unregister("lib").await.is_err());
}

#[tokio::test]
async fn reload_replaces_a_plugin_without_restart_and_keeps_it_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(tmp.path(), "marker", "1.0.0", &[]);
    let rig = Rig::new().await;
    rig.registry.discover(&dir).await.unwrap();
    let manifest = dir.join("plugin.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("version: 1.0.0", "version: 1.1.0")).unwrap();
    let md = rig.registry.reload("marker").await.unwrap();
    assert_eq!(md.version, semver::Version::new(1, 1, 0));
    let listed = rig
        .engine
        .list_plugins(&PluginFilter::default())
        .await
        .unwrap();
    assert_eq!(listed[0].version, semver::Version::new(1, 1, 0));
    // A broken manifest does not replace the working plugin.
    std::fs::write(&manifest, "name: marker\nversion: [\n").unwrap();
    assert!(rig.registry.reload("marker").await.is_err());
    assert_eq!(
        rig.registry.get("marker").unwrap().metadata().version,
        semver::Version::new(1, 1, 0)
    );
    // In-process plugins have nowhere to reload from.
    rig.register(Arc::new(FakePlugin::new("inproc"))).await;
    assert!(rig.registry.reload("inproc").await.is_err());
}

#[tokio::test]
async fn out_of_process_plugin_runs_its_lifecycle_through_the_engine() {
    let rig = Rig::new().await;
    rig.registry.discover(&example_dir()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("marker.txt");
    let journal = tmp.path().join("journal");
    let r = rig.resource("web");
    let cfg = |extra: serde_json::Value| {
        let mut c = serde_json::json!({"path": target, "journal": journal});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        PluginConfig(c)
    };

    let ok = rig
        .engine
        .execute(
            rig.request("file-marker", &r)
                .with_config(cfg(serde_json::json!({}))),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, ExecutionStatus::Success, "{ok:?}");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "fake/web token=None\n"
    );
    let hooks = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(
        hooks,
        "validate\npre_execute\nexecute\npost_execute\ncleanup\n"
    );
    // The plugin's progress lines reached the engine.
    let p = rig.engine.progress(&ok.execution_id).unwrap().unwrap();
    assert_eq!(p.percent, 100);

    // A failing execute is rolled back with the snapshot the program returned: the file
    // that existed before is restored.
    std::fs::write(&target, "original").unwrap();
    std::fs::remove_file(&journal).unwrap();
    let failed = rig
        .engine
        .execute(rig.request("file-marker", &r).with_config(cfg(
            serde_json::json!({"fail": "execute", "fail-class": "fatal"}),
        )))
        .await
        .unwrap();
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert!(failed
        .error
        .as_deref()
        .unwrap()
        .contains("execute failed as configured"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "original");
    let hooks = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(hooks, "validate\npre_execute\nexecute\nrollback\ncleanup\n");

    // A config the manifest's schema refuses never reaches the program.
    std::fs::remove_file(&journal).unwrap();
    let e = rig
        .engine
        .execute(
            rig.request("file-marker", &r)
                .with_config(cfg(serde_json::json!({"pathh": "x"}))),
        )
        .await
        .unwrap_err();
    // Checked with the jsonschema crate against the manifest's schema: the error names the
    // unknown field.
    let m = e.chain_message();
    assert!(m.contains("'pathh' was unexpected"), "{m}");
    assert!(!journal.exists());
}

#[tokio::test]
async fn out_of_process_plugin_passes_the_plugin_conformance_suite() {
    let plugin = ProcessPlugin::load(&example_dir()).unwrap();
    let adapter = ire_core::testsuite::FakeAdapter::new("fake");
    let r = adapter.insert(ire_core::testsuite::ResourceBuilder::new("web").build());
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("m");
    let mut ctx = PluginContext::new("conf-1", Arc::new(adapter));
    ctx.config = PluginConfig(serde_json::json!({"path": target}));
    let snap = plugin_conformance(&plugin, &ctx, &r).await;
    assert!(snap.is_some());
    // After the suite's rollback, the file that did not exist is gone again.
    assert!(!target.exists());
}

#[tokio::test]
async fn a_program_that_breaks_the_protocol_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("noisy");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("run.sh");
    std::fs::write(&script, "#!/bin/sh\nread line\necho 'hello, not json'\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        dir.join("plugin.yaml"),
        "name: noisy\nversion: 1.0.0\ndescription: breaks the protocol\nfault-kind: action\nexecutable: run.sh\n",
    )
    .unwrap();
    let reg = DefaultPluginRegistry::new();
    let e = reg.discover(&dir).await.unwrap_err().chain_message();
    assert!(
        e.contains("not a protocol line") && e.contains("hello, not json"),
        "{e}"
    );
    assert!(reg.get("noisy").is_err());
    // And a missing executable is reported with the manifest's path.
    std::fs::write(
        dir.join("plugin.yaml"),
        "name: noisy\nversion: 1.0.0\ndescription: d\nfault-kind: action\nexecutable: gone.sh\n",
    )
    .unwrap();
    let e = reg.discover(&dir).await.unwrap_err().chain_message();
    assert!(
        e.contains("plugin.yaml executable") && e.contains("gone.sh"),
        "{e}"
    );
}

fn meta() -> impl Strategy<Value = (String, (u64, u64), Vec<String>, Vec<String>)> {
    (
        "[a-z]{1,6}",
        (0u64..3, 0u64..3),
        proptest::sample::subsequence(
            vec!["pod".to_owned(), "container".into(), "process".into()],
            0..3,
        ),
        proptest::sample::subsequence(
            vec!["exec".to_owned(), "network".into(), "signals".into()],
            0..3,
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Property 62: list returns exactly the plugins that meet every criterion.
    #[test]
    fn listing_returns_exactly_the_plugins_meeting_every_criterion(
        plugins in proptest::collection::vec(meta(), 0..8),
        names in proptest::sample::subsequence(vec!["a".to_owned(), "b".into(), "ab".into()], 0..2),
        kinds in proptest::sample::subsequence(vec!["pod".to_owned(), "container".into()], 0..2),
        caps in proptest::sample::subsequence(vec!["exec".to_owned(), "network".into()], 0..2),
        major in proptest::option::of(0u64..3),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let reg = DefaultPluginRegistry::new();
            let mut registered: Vec<PluginMetadata> = Vec::new();
            for (name, (maj, min), k, c) in plugins {
                let mut b = PluginMetadataBuilder::new(&name).version(&format!("{maj}.{min}.0"));
                for x in &k { b = b.kind(x); }
                for x in &c { b = b.requires(x); }
                let m = b.build();
                if reg.register(Arc::new(FakePlugin::with_metadata(m.clone()))).await.is_ok() {
                    registered.push(m);
                }
            }
            let filter = PluginFilter {
                names: names.clone(),
                versions: major.map(|m| vec![format!("^{m}").parse().unwrap()]).unwrap_or_default(),
                supported_kinds: kinds.clone(),
                capabilities: caps.clone(),
            };
            let mut got: Vec<String> = reg.list(&filter).unwrap().into_iter().map(|m| m.name).collect();
            got.sort();
            // An independent statement of the criteria.
            let mut want: Vec<String> = registered
                .iter()
                .filter(|m| names.is_empty() || names.contains(&m.name))
                .filter(|m| major.is_none_or(|x| m.version.major == x))
                .filter(|m| kinds.iter().all(|k| m.supported_kinds.is_empty() || m.supported_kinds.contains(k)))
                .filter(|m| caps.iter().all(|c| m.required_capabilities.contains(c)))
                .map(|m| m.name.clone())
                .collect();
            want.sort();
            prop_assert_eq!(got, want);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn the_loader_can_be_replaced() {
    let reg = DefaultPluginRegistry::new();
    reg.set_loader(Arc::new(ire_core::testsuite::FakeLoader))
        .unwrap();
    let md = reg
        .discover(Path::new("/plugins/chaos-x.so"))
        .await
        .unwrap();
    assert_eq!(md.name, "chaos-x");
    assert!(reg.get("chaos-x").is_ok());
    assert_eq!(reg.reload("chaos-x").await.unwrap().name, "chaos-x");
    let _: Arc<dyn Plugin> = reg.get("chaos-x").unwrap();
}
