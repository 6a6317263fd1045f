//! Creating containers from a [`ResourceSpec`], and updating one by recreating it.
//!
//! Docker can change a container's resources in place but not its image, command,
//! environment, ports or mounts: for those, compose recreates the container, and so does
//! the adapter. The new container gets the old one's name, labels (so its key stays the
//! same), host config and network aliases; the old one is removed only once the new one
//! runs, and is put back if the new one cannot be created or started.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthConfig, HostConfig,
    NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use ire_core::{Error, ResourceSpec, Result};

use super::error::{from_bollard, is_not_modified};

/// The create request for a new container from `spec`.
pub(crate) fn create_body(
    spec: &ResourceSpec,
    labels: BTreeMap<String, String>,
) -> Result<ContainerCreateBody> {
    if spec.image.trim().is_empty() {
        return Err(Error::invalid("spec.image", "a container needs an image"));
    }
    let mut body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        labels: Some(labels.into_iter().collect()),
        host_config: Some(HostConfig::default()),
        ..Default::default()
    };
    apply_spec(&mut body, spec)?;
    Ok(body)
}

/// Overlays the non-empty parts of `spec` on `body`. The environment is merged (a
/// variable of the spec replaces the same variable); other parts replace.
fn apply_spec(body: &mut ContainerCreateBody, spec: &ResourceSpec) -> Result<()> {
    if !spec.image.trim().is_empty() {
        body.image = Some(spec.image.clone());
    }
    if !spec.command.is_empty() {
        body.entrypoint = Some(spec.command.clone());
    }
    if !spec.args.is_empty() {
        body.cmd = Some(spec.args.clone());
    }
    if !spec.environment.is_empty() {
        let mut env: BTreeMap<String, String> = body
            .env
            .iter()
            .flatten()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        env.extend(spec.environment.clone());
        body.env = Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect());
    }
    let host = body.host_config.get_or_insert_with(HostConfig::default);
    if !spec.ports.is_empty() {
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for (i, p) in spec.ports.iter().enumerate() {
            if p.container_port <= 0 || p.container_port > 65535 {
                return Err(Error::invalid(
                    format!("spec.ports[{i}].containerPort"),
                    format!("{} is not a port", p.container_port),
                ));
            }
            let proto = if p.protocol.is_empty() {
                "tcp".to_owned()
            } else {
                p.protocol.to_ascii_lowercase()
            };
            let key = format!("{}/{proto}", p.container_port);
            exposed.push(key.clone());
            if p.host_port > 0 {
                bindings.insert(
                    key,
                    Some(vec![PortBinding {
                        host_ip: None,
                        host_port: Some(p.host_port.to_string()),
                    }]),
                );
            }
        }
        body.exposed_ports = Some(exposed);
        host.port_bindings = Some(bindings);
    }
    if !spec.volumes.is_empty() {
        let mut binds = Vec::new();
        for (i, v) in spec.volumes.iter().enumerate() {
            let source = match (&v.source.host_path, v.name.is_empty()) {
                (Some(path), _) => path.clone(),
                (None, false) => v.name.clone(),
                (None, true) => {
                    return Err(Error::invalid(
                        format!("spec.volumes[{i}]"),
                        "a docker volume needs a hostPath or a volume name",
                    ))
                }
            };
            let mode = if v.read_only { ":ro" } else { "" };
            binds.push(format!("{source}:{}{mode}", v.mount_path));
        }
        host.binds = Some(binds);
    }
    if let Some(hc) = &spec.health_check {
        if hc.type_ != "exec" {
            // Docker runs only command health checks; http and tcp ones are ire's monitor's.
            return Err(Error::invalid(
                "spec.healthCheck.type",
                format!(
                    "{:?}: Docker containers run only `exec` health checks",
                    hc.type_
                ),
            ));
        }
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        body.healthcheck = Some(HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), hc.endpoint.clone()]),
            interval: Some(nanos(hc.interval)),
            timeout: Some(nanos(hc.timeout)),
            retries: Some(i64::from(hc.retries)),
            ..Default::default()
        });
    }
    Ok(())
}

/// The create request that reproduces an inspected container.
pub(crate) fn body_of(old: &ContainerInspectResponse, old_short_id: &str) -> ContainerCreateBody {
    let config = old.config.clone().unwrap_or_default();
    let endpoints: Option<HashMap<String, EndpointSettings>> = old
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .map(|nets| {
            nets.into_iter()
                .map(|(name, ep)| {
                    // Docker adds the container's short id as an alias: the new one gets its own.
                    let aliases = ep.aliases.map(|a| {
                        a.into_iter()
                            .filter(|x| !old_short_id.starts_with(x.as_str()))
                            .collect()
                    });
                    (
                        name,
                        EndpointSettings {
                            aliases,
                            links: ep.links,
                            ..Default::default()
                        },
                    )
                })
                .collect()
        });
    ContainerCreateBody {
        user: config.user,
        exposed_ports: config.exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        env: config.env,
        cmd: config.cmd,
        healthcheck: config.healthcheck,
        image: config.image,
        volumes: config.volumes,
        working_dir: config.working_dir,
        entrypoint: config.entrypoint,
        labels: config.labels,
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        host_config: old.host_config.clone(),
        networking_config: endpoints.map(|e| NetworkingConfig {
            endpoints_config: Some(e),
        }),
        ..Default::default()
    }
}

/// Replaces `old` by a container made from it and `spec`; returns the new container's id.
pub(crate) async fn recreate(
    docker: &Docker,
    old: ContainerInspectResponse,
    spec: &ResourceSpec,
    grace: Duration,
) -> Result<String> {
    let old_id = old.id.clone().unwrap_or_default();
    let name = old
        .name
        .clone()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let was_running = old.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    let short = old_id.get(..12).unwrap_or(&old_id).to_owned();
    let mut body = body_of(&old, &short);
    let before = body.clone();
    apply_spec(&mut body, spec)?;
    if body == before {
        // Nothing the spec asks differs: no need to replace the container.
        return Ok(old_id);
    }
    // Docker attaches a container to one network at create time; others are connected after.
    let extra_networks = take_extra_networks(&mut body);

    let parked = format!("{name}_ire_replaced_{short}");
    rename(docker, &old_id, &parked).await?;
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                platform: String::new(),
            }),
            body,
        )
        .await;
    let new_id = match created {
        Ok(c) => c.id,
        Err(e) => {
            rename(docker, &old_id, &name).await?;
            return Err(from_bollard(e, "container", &name));
        }
    };
    for (net, ep) in extra_networks {
        let _ = docker
            .connect_network(
                &net,
                bollard::models::NetworkConnectRequest {
                    container: new_id.clone(),
                    endpoint_config: Some(ep),
                },
            )
            .await;
    }
    if was_running {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        match docker
            .stop_container(
                &old_id,
                Some(StopContainerOptions {
                    signal: None,
                    t: Some(t),
                }),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_modified(&e) => {}
            Err(e) => return Err(from_bollard(e, "container", &old_id)),
        }
        if let Err(e) = docker.start_container(&new_id, None).await {
            // Put the old container back as it was.
            let _ = remove(docker, &new_id).await;
            rename(docker, &old_id, &name).await?;
            let _ = docker.start_container(&old_id, None).await;
            return Err(from_bollard(e, "container", &name));
        }
    }
    remove(docker, &old_id).await?;
    Ok(new_id)
}

pub(crate) fn take_extra_networks(
    body: &mut ContainerCreateBody,
) -> Vec<(String, EndpointSettings)> {
    let primary = body
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    let Some(eps) = body
        .networking_config
        .as_mut()
        .and_then(|n| n.endpoints_config.as_mut())
    else {
        return Vec::new();
    };
    if eps.len() <= 1 {
        return Vec::new();
    }
    let extra: Vec<String> = eps.keys().filter(|k| **k != primary).cloned().collect();
    extra
        .into_iter()
        .filter_map(|k| eps.remove(&k).map(|ep| (k, ep)))
        .collect()
}

async fn rename(docker: &Docker, id: &str, to: &str) -> Result<()> {
    docker
        .rename_container(
            id,
            RenameContainerOptions {
                name: to.to_owned(),
            },
        )
        .await
        .map_err(|e| from_bollard(e, "container", id))
}

async fn remove(docker: &Docker, id: &str) -> Result<()> {
    docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| from_bollard(e, "container", id))
}
