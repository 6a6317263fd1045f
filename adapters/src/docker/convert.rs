//! Docker containers as ire resources: stable keys, phases, labels and specs.

use std::collections::HashMap;

use bollard::models::{ContainerInspectResponse, ContainerSummary};
use ire_core::resource::phase;
use ire_core::{
    Condition, Labels, Port, Resource, ResourceKey, ResourceSpec, ResourceStatus, Result,
};

/// Compose's label naming a container's project.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// Compose's label naming a container's service.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Compose's label numbering a service's containers from 1.
pub const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";
/// The resource kind of every docker resource.
pub const KIND_CONTAINER: &str = "container";

/// The parts of a container the adapter reads, from a list entry or an inspection.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerView {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: Labels,
    /// Docker's state: created, running, paused, restarting, removing, exited, dead.
    pub state: String,
    /// Docker's human status ("Up 3 minutes", "Exited (137) 2 seconds ago").
    pub status_text: String,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub health: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Labels,
    pub ports: Vec<Port>,
    pub pid: Option<i64>,
    pub created: Option<String>,
    pub restart_count: Option<i64>,
}

fn labels_of(map: Option<HashMap<String, String>>) -> Labels {
    map.unwrap_or_default().into_iter().collect()
}

impl From<ContainerSummary> for ContainerView {
    fn from(c: ContainerSummary) -> Self {
        let state = c.state.map(|s| s.to_string()).unwrap_or_default();
        let status_text = c.status.unwrap_or_default();
        ContainerView {
            id: c.id.unwrap_or_default(),
            name: c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            image: c.image.unwrap_or_default(),
            labels: labels_of(c.labels),
            exit_code: exit_code_from_status(&status_text),
            state,
            status_text,
            ports: c
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| Port {
                    name: String::new(),
                    container_port: i32::from(p.private_port),
                    host_port: p.public_port.map(i32::from).unwrap_or(0),
                    protocol: p.typ.map(|t| t.to_string()).unwrap_or_default(),
                })
                .collect(),
            created: c.created.map(|t| t.to_string()),
            cmd: c.command.map(|c| vec![c]).unwrap_or_default(),
            ..Default::default()
        }
    }
}

impl From<ContainerInspectResponse> for ContainerView {
    fn from(c: ContainerInspectResponse) -> Self {
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        let env = config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let ports = c
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default()
            .into_iter()
            .map(|(spec, bindings)| {
                let (port, proto) = spec.split_once('/').unwrap_or((spec.as_str(), "tcp"));
                Port {
                    name: String::new(),
                    container_port: port.parse().unwrap_or(0),
                    host_port: bindings
                        .and_then(|b| b.into_iter().next())
                        .and_then(|b| b.host_port)
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                    protocol: proto.to_owned(),
                }
            })
            .collect();
        ContainerView {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            image: config.image.unwrap_or_default(),
            labels: labels_of(config.labels),
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            status_text: state.error.clone().unwrap_or_default(),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
            env,
            ports,
            pid: state.pid.filter(|p| *p > 0),
            created: c.created.map(|t| t.to_string()),
            restart_count: c.restart_count,
        }
    }
}

/// "Exited (137) 3 seconds ago" -> 137.
fn exit_code_from_status(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split_once(')')?.0.parse().ok()
}

/// The ire phase of a Docker state.
pub(crate) fn phase_of_state(state: &str) -> &'static str {
    match state {
        "running" => phase::RUNNING,
        "created" | "restarting" => phase::PENDING,
        "paused" => phase::PAUSED,
        "exited" => phase::STOPPED,
        "dead" => phase::FAILED,
        "removing" => phase::DELETED,
        _ => phase::UNKNOWN,
    }
}

/// The Docker states that an ire phase covers (for the server-side `status` filter).
pub(crate) fn states_of_phase(p: &str) -> &'static [&'static str] {
    match p {
        phase::RUNNING => &["running"],
        phase::PENDING => &["created", "restarting"],
        phase::PAUSED => &["paused"],
        phase::STOPPED => &["exited"],
        phase::FAILED => &["dead"],
        phase::DELETED => &["removing"],
        _ => &[],
    }
}

/// The stable key: `<adapter>/<project>/<service>/<n>` for compose containers, else
/// `<adapter>/<container-name>`.
pub(crate) fn key_of(adapter: &str, name: &str, labels: &Labels) -> Result<ResourceKey> {
    match compose_identity(labels) {
        Some((project, service, number)) => ResourceKey::new(adapter, [project, service, number]),
        None => ResourceKey::new(adapter, [name]),
    }
}

/// Project, service and container number, when all three compose labels are present.
pub(crate) fn compose_identity(labels: &Labels) -> Option<(&str, &str, &str)> {
    Some((
        labels.get(COMPOSE_PROJECT)?.as_str(),
        labels.get(COMPOSE_SERVICE)?.as_str(),
        labels.get(COMPOSE_NUMBER)?.as_str(),
    ))
}

/// How a resource id given to the adapter names a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerRef {
    /// A container id, id prefix or name: Docker resolves it.
    Direct(String),
    /// `<adapter>/<name>`.
    Name(String),
    /// `<adapter>/<project>/<service>/<n>`.
    Compose {
        project: String,
        service: String,
        number: String,
    },
}

/// Reads `id` as a key of this adapter instance when it is one, else as a runtime id.
pub(crate) fn parse_ref(adapter: &str, id: &str) -> ContainerRef {
    let Some(rest) = id.strip_prefix(adapter).and_then(|r| r.strip_prefix('/')) else {
        return ContainerRef::Direct(id.to_owned());
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [name] if !name.is_empty() => ContainerRef::Name((*name).to_owned()),
        [p, s, n] if !p.is_empty() && !s.is_empty() && !n.is_empty() => ContainerRef::Compose {
            project: (*p).to_owned(),
            service: (*s).to_owned(),
            number: (*n).to_owned(),
        },
        // Not a key shape of this adapter: let Docker try it (and answer not-found).
        _ => ContainerRef::Direct(id.to_owned()),
    }
}

/// Builds the resource for a container seen by this adapter instance.
pub(crate) fn to_resource(adapter: &str, c: ContainerView) -> Result<Resource> {
    let key = key_of(adapter, &c.name, &c.labels)?;
    let mut phase = phase_of_state(&c.state).to_owned();
    if c.state == "exited" && c.oom_killed {
        phase = phase::FAILED.to_owned();
    }
    let reason = match (c.state.as_str(), c.exit_code) {
        (_, _) if c.oom_killed => "OOMKilled".to_owned(),
        ("exited" | "dead", Some(code)) => format!("ExitCode{code}"),
        ("restarting", _) => "Restarting".to_owned(),
        _ => String::new(),
    };
    let mut conditions = Vec::new();
    if let Some(h) = &c.health {
        let mut cond = Condition::new(
            "Healthy",
            match h.as_str() {
                "healthy" => "True",
                "unhealthy" => "False",
                _ => "Unknown",
            },
        );
        cond.reason = h.clone();
        conditions.push(cond);
    }
    let mut annotations = Labels::new();
    annotations.insert("docker.state".into(), c.state.clone());
    if !c.image.is_empty() {
        annotations.insert("docker.image".into(), c.image.clone());
    }
    if let Some(created) = &c.created {
        annotations.insert("docker.created".into(), created.clone());
    }
    if let Some(code) = c.exit_code {
        annotations.insert("docker.exit-code".into(), code.to_string());
    }
    let mut metadata = ire_core::Metadata::new();
    if let Some(pid) = c.pid {
        metadata.insert("pid".into(), pid.into());
    }
    if let Some(n) = c.restart_count {
        metadata.insert("restartCount".into(), n.into());
    }
    Ok(Resource {
        key,
        id: c.id,
        name: c.name,
        kind: KIND_CONTAINER.to_owned(),
        labels: c.labels,
        annotations,
        status: ResourceStatus {
            phase,
            conditions,
            message: c.status_text,
            reason,
        },
        spec: ResourceSpec {
            image: c.image,
            ports: c.ports,
            environment: c.env,
            command: c.entrypoint,
            args: c.cmd,
            ..Default::default()
        },
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn compose_containers_are_keyed_by_project_service_and_number() {
        let l = labels(&[
            (COMPOSE_PROJECT, "shop"),
            (COMPOSE_SERVICE, "redis"),
            (COMPOSE_NUMBER, "2"),
        ]);
        assert_eq!(
            key_of("dk", "shop_redis_2", &l).unwrap().as_str(),
            "dk/shop/redis/2"
        );
        assert_eq!(
            key_of("dk", "web", &Labels::new()).unwrap().as_str(),
            "dk/web"
        );
    }

    #[test]
    fn ids_parse_as_keys_only_under_this_adapter() {
        assert_eq!(parse_ref("dk", "dk/web"), ContainerRef::Name("web".into()));
        assert_eq!(
            parse_ref("dk", "dk/shop/redis/1"),
            ContainerRef::Compose {
                project: "shop".into(),
                service: "redis".into(),
                number: "1".into()
            }
        );
        assert_eq!(
            parse_ref("dk", "abc123"),
            ContainerRef::Direct("abc123".into())
        );
        assert_eq!(
            parse_ref("dk", "other/web"),
            ContainerRef::Direct("other/web".into())
        );
        assert_eq!(
            parse_ref("dk", "dkx/web"),
            ContainerRef::Direct("dkx/web".into())
        );
        assert_eq!(
            parse_ref("dk", "dk/a/b"),
            ContainerRef::Direct("dk/a/b".into())
        );
    }

    #[test]
    fn every_phase_maps_back_to_the_states_it_came_from() {
        for state in [
            "created",
            "running",
            "paused",
            "restarting",
            "removing",
            "exited",
            "dead",
        ] {
            let p = phase_of_state(state);
            assert!(states_of_phase(p).contains(&state), "{state} -> {p}");
        }
    }

    #[test]
    fn exit_codes_are_read_from_list_status() {
        assert_eq!(
            exit_code_from_status("Exited (137) 2 seconds ago"),
            Some(137)
        );
        assert_eq!(exit_code_from_status("Up 3 minutes"), None);
    }
}
