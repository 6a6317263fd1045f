//! Listing page by page (seed property 94): one API request of at most `page-size` items
//! at a time, followed with the server's `continue` token, across the kinds a filter asks
//! for. Nothing here holds more than one page.

use std::fmt;
use std::str::FromStr;

use futures::stream::{self, BoxStream, StreamExt};
use ire_core::{Error, Resource, ResourceFilter, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use super::convert::{
    deployment_to_resource, pod_to_resource, statefulset_to_resource, WorkloadKind,
};
use super::error::{from_kube, Target};
use super::selector::server_selectors;
use super::Inner;

/// Where a paged listing continues: the kind being listed and the API server's token.
///
/// Opaque to callers; it prints as a string so that an HTTP API can hand it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    kind_index: usize,
    continue_token: Option<String>,
}

impl fmt::Display for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.kind_index,
            self.continue_token.as_deref().unwrap_or("")
        )
    }
}

impl FromStr for PageToken {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "page token",
                format!("{s:?} is not a token this adapter issued"),
            )
        };
        let (k, c) = s.split_once(':').ok_or_else(bad)?;
        Ok(PageToken {
            kind_index: k.parse().map_err(|_| bad())?,
            continue_token: (!c.is_empty()).then(|| c.to_owned()),
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePage {
    /// The resources of this page that match the filter (at most one server page).
    pub resources: Vec<Resource>,
    /// Where the next page starts, `None` after the last.
    pub next: Option<PageToken>,
}

/// The kinds a filter lists: every kind (pods, deployments, statefulsets) unless it
/// names some.
pub(crate) fn kinds_for(filter: &ResourceFilter) -> Vec<WorkloadKind> {
    if filter.kinds.is_empty() {
        return WorkloadKind::ALL.to_vec();
    }
    WorkloadKind::ALL
        .into_iter()
        .filter(|k| filter.kinds.iter().any(|f| f == k.as_str()))
        .collect()
}

impl Inner {
    fn list_params(
        &self,
        filter: &ResourceFilter,
        kind: WorkloadKind,
        cont: Option<String>,
    ) -> Result<Option<ListParams>> {
        let sel = server_selectors(filter, kind)?;
        if sel.matches_nothing {
            return Ok(None);
        }
        Ok(Some(ListParams {
            label_selector: sel.label_selector,
            field_selector: sel.field_selector,
            limit: Some(self.page_size),
            continue_token: cont,
            ..ListParams::default()
        }))
    }

    /// One server page of one kind: matching resources and the server's continue token.
    async fn server_page(
        &self,
        filter: &ResourceFilter,
        kind: WorkloadKind,
        cont: Option<String>,
    ) -> Result<(Vec<Resource>, Option<String>)> {
        let Some(lp) = self.list_params(filter, kind, cont)? else {
            return Ok((Vec::new(), None));
        };
        let scope = self.list_scope();
        let target = Target {
            kind: kind.as_str(),
            name: scope.unwrap_or("*"),
        };
        let (resources, next) = match kind {
            WorkloadKind::Pod => {
                self.list_one_page::<Pod>(scope, &lp, target, pod_to_resource)
                    .await?
            }
            WorkloadKind::Deployment => {
                self.list_one_page::<Deployment>(scope, &lp, target, deployment_to_resource)
                    .await?
            }
            WorkloadKind::StatefulSet => {
                self.list_one_page::<StatefulSet>(scope, &lp, target, statefulset_to_resource)
                    .await?
            }
        };
        let matching = resources
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect();
        Ok((matching, next.filter(|c| !c.is_empty())))
    }

    /// One page of the listing that starts at `token` (the first page for `None`).
    pub(crate) async fn list_page(
        &self,
        filter: &ResourceFilter,
        token: Option<&PageToken>,
    ) -> Result<ResourcePage> {
        let kinds = kinds_for(filter);
        let (index, cont) = match token {
            Some(t) => (t.kind_index, t.continue_token.clone()),
            None => (0, None),
        };
        let Some(&kind) = kinds.get(index) else {
            return match token {
                Some(t) => Err(Error::invalid(
                    "page token",
                    format!("{t} does not belong to this filter"),
                )),
                None => Ok(ResourcePage {
                    resources: Vec::new(),
                    next: None,
                }),
            };
        };
        let (resources, server_next) = self.server_page(filter, kind, cont).await?;
        let next = match server_next {
            Some(c) => Some(PageToken {
                kind_index: index,
                continue_token: Some(c),
            }),
            None if index + 1 < kinds.len() => Some(PageToken {
                kind_index: index + 1,
                continue_token: None,
            }),
            None => None,
        };
        Ok(ResourcePage { resources, next })
    }

    /// Every page, lazily: the next request is made when the previous page is consumed.
    pub(crate) fn list_pages(
        self,
        filter: ResourceFilter,
    ) -> BoxStream<'static, Result<Vec<Resource>>> {
        // State: None = done; Some(None) = first page; Some(Some(t)) = continue at t.
        stream::unfold(Some(None::<PageToken>), move |state| {
            let inner = self.clone();
            let filter = filter.clone();
            async move {
                let token = state?;
                match inner.list_page(&filter, token.as_ref()).await {
                    Ok(page) => Some((Ok(page.resources), page.next.map(Some))),
                    Err(e) => Some((Err(e), None)),
                }
            }
        })
        .boxed()
    }

    /// The filter's page (`offset`, `limit`), walking server pages and stopping as soon
    /// as the page is full.
    pub(crate) async fn list_resources(&self, filter: &ResourceFilter) -> Result<Vec<Resource>> {
        let mut pages = self.clone().list_pages(filter.without_page());
        let mut skip = filter.offset;
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            for r in page? {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if filter.limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
                out.push(r);
            }
            if filter.limit.is_some_and(|l| out.len() >= l) {
                return Ok(out);
            }
        }
        Ok(out)
    }

    /// Finds an object by UID, one page at a time.
    pub(crate) async fn find_by_uid(&self, uid: &str) -> Result<Resource> {
        let filter = ResourceFilter {
            kinds: WorkloadKind::ALL
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            ..ResourceFilter::default()
        };
        let mut pages = self.clone().list_pages(filter);
        while let Some(page) = pages.next().await {
            if let Some(r) = page?.into_iter().find(|r| r.id == uid) {
                return Ok(r);
            }
        }
        Err(Error::not_found("resource", uid))
    }
}

impl Inner {
    /// One server page of objects of kind `K`, converted, with the continue token.
    async fn list_one_page<K>(
        &self,
        scope: Option<&str>,
        lp: &ListParams,
        target: Target<'_>,
        convert: fn(&str, &K) -> Result<Resource>,
    ) -> Result<(Vec<Resource>, Option<String>)>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let list = self
            .api::<K>(scope)
            .list(lp)
            .await
            .map_err(|e| from_kube(e, target))?;
        let resources = list
            .items
            .iter()
            .map(|o| convert(&self.name, o))
            .collect::<Result<Vec<_>>>()?;
        Ok((resources, list.metadata.continue_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip() {
        let t = PageToken {
            kind_index: 1,
            continue_token: Some("1001:ns/a".into()),
        };
        assert_eq!(t.to_string().parse::<PageToken>().unwrap(), t);
        let t = PageToken {
            kind_index: 2,
            continue_token: None,
        };
        assert_eq!(t.to_string().parse::<PageToken>().unwrap(), t);
        assert!("x".parse::<PageToken>().is_err());
    }
}
