//! Scaling compose services: the replica count of the service a container belongs to.
//!
//! Scaling up clones the service's newest container the way `docker-compose up --scale`
//! does (same config, host config, networks and aliases; the next container numbers, so
//! the new containers get the keys `<instance>/<project>/<service>/<n>`); scaling down
//! stops and removes the highest-numbered containers. Containers outside compose have no
//! service to scale.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerSummary;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use ire_core::{Error, Result};

use super::convert::{COMPOSE_NUMBER, COMPOSE_PROJECT, COMPOSE_SERVICE};
use super::error::{from_bollard, is_not_modified};
use super::recreate::{body_of, take_extra_networks};

/// The containers of one compose service, ordered by container number.
pub(crate) async fn service_containers(
    docker: &Docker,
    project: &str,
    service: &str,
) -> Result<Vec<(u32, ContainerSummary)>> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{COMPOSE_PROJECT}={project}"),
            format!("{COMPOSE_SERVICE}={service}"),
        ],
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| from_bollard(e, "compose service", &format!("{project}/{service}")))?;
    let mut out: Vec<(u32, ContainerSummary)> = list
        .into_iter()
        .filter_map(|c| {
            let n = c.labels.as_ref()?.get(COMPOSE_NUMBER)?.parse().ok()?;
            Some((n, c))
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    // While compose recreates, two containers share a number: count it once.
    out.dedup_by_key(|(n, _)| *n);
    Ok(out)
}

/// The name compose would give container `n` of the service, from a sibling's name
/// (`shop_web_1` -> `shop_web_<n>`, `shop-web-1` -> `shop-web-<n>`).
fn sibling_name(template: &str, template_n: u32, n: u32) -> String {
    let suffix = template_n.to_string();
    match template.strip_suffix(&suffix) {
        Some(stem) if stem.ends_with('_') || stem.ends_with('-') => format!("{stem}{n}"),
        _ => format!("{template}_{n}"),
    }
}

/// Sets the service's container count to `replicas`.
pub(crate) async fn scale(
    docker: &Docker,
    project: &str,
    service: &str,
    replicas: i32,
    grace: Duration,
) -> Result<()> {
    let want = usize::try_from(replicas)
        .map_err(|_| Error::invalid("replicas", format!("{replicas} is negative")))?;
    let current = service_containers(docker, project, service).await?;
    if want > current.len() {
        let (template_n, template) = current.last().ok_or_else(|| {
            Error::not_found("compose service container", format!("{project}/{service}"))
        })?;
        let template_id = template.id.clone().unwrap_or_default();
        let inspected = docker
            .inspect_container(&template_id, None)
            .await
            .map_err(|e| from_bollard(e, "container", &template_id))?;
        let template_name = inspected
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned();
        let short = template_id.get(..12).unwrap_or(&template_id).to_owned();
        let mut next = *template_n;
        for _ in current.len()..want {
            next += 1;
            let mut body = body_of(&inspected, &short);
            body.labels
                .get_or_insert_with(HashMap::new)
                .insert(COMPOSE_NUMBER.to_owned(), next.to_string());
            let extra = take_extra_networks(&mut body);
            let name = sibling_name(&template_name, *template_n, next);
            let created = docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        platform: String::new(),
                    }),
                    body,
                )
                .await
                .map_err(|e| from_bollard(e, "container", &name))?;
            for (net, ep) in extra {
                let _ = docker
                    .connect_network(
                        &net,
                        bollard::models::NetworkConnectRequest {
                            container: created.id.clone(),
                            endpoint_config: Some(ep),
                        },
                    )
                    .await;
            }
            docker
                .start_container(&created.id, None)
                .await
                .map_err(|e| from_bollard(e, "container", &name))?;
        }
    } else {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        for (_, c) in current.iter().skip(want).rev() {
            let id = c.id.clone().unwrap_or_default();
            match docker
                .stop_container(
                    &id,
                    Some(StopContainerOptions {
                        signal: None,
                        t: Some(t),
                    }),
                )
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_modified(&e) => {}
                Err(e) => return Err(from_bollard(e, "container", &id)),
            }
            docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| from_bollard(e, "container", &id))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_are_named_the_compose_way() {
        assert_eq!(sibling_name("shop_web_1", 1, 3), "shop_web_3");
        assert_eq!(sibling_name("shop-web-2", 2, 10), "shop-web-10");
        assert_eq!(sibling_name("custom", 1, 2), "custom_2");
    }
}
