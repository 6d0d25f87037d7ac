//! What a server serves, as discovery lists it (client-go `discovery.ServerPreferredResources` and
//! `ServerGroupsAndResources`): every group version's resources with scope and verbs. A group
//! version that fails is reported, not fatal (`ErrGroupDiscoveryFailed`), so one broken group does
//! not hide the rest.

use kube::Client;
use kube::core::ApiResource;
use std::collections::BTreeMap;

/// One served resource (subresources are left out).
#[derive(Debug, Clone)]
pub struct ServedResource {
    pub api_resource: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    /// Whether its version is the preferred version of its group.
    pub preferred: bool,
}

impl ServedResource {
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `pods`, or `deployments.apps` (`schema.GroupResource`).
    pub fn group_resource(&self) -> String {
        let ar = &self.api_resource;
        if ar.group.is_empty() { ar.plural.clone() } else { format!("{}.{}", ar.plural, ar.group) }
    }
}

/// The outcome of one discovery pass.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub resources: Vec<ServedResource>,
    /// Group versions (`apps/v1`, `v1`) that could not be read, with why.
    pub failed: BTreeMap<String, String>,
}

impl Discovered {
    /// Resources of the preferred version of each group.
    pub fn preferred(&self) -> impl Iterator<Item = &ServedResource> {
        self.resources.iter().filter(|r| r.preferred)
    }

    /// The resource serving `kind` at `api_version` (any version, not only the preferred one).
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<&ServedResource> {
        self.resources.iter().find(|r| r.api_resource.api_version == api_version && r.api_resource.kind == kind)
    }

    /// The error client-go reports for the failed groups, if any.
    pub fn failure(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let groups: Vec<String> = self.failed.iter().map(|(gv, e)| format!("{gv}: {e}")).collect();
        Some(format!("unable to retrieve the complete list of server APIs: {}", groups.join(", ")))
    }
}

/// Lists every group version and its resources. Fails only when the group lists themselves
/// cannot be read.
pub async fn discover(client: &Client) -> Result<Discovered, kube::Error> {
    let mut out = Discovered::default();
    let core = client.list_core_api_versions().await?;
    for (i, version) in core.versions.iter().enumerate() {
        match client.list_core_api_resources(version).await {
            Ok(list) => add(&mut out, "", version, i == 0, list),
            Err(e) => {
                out.failed.insert(version.clone(), e.to_string());
            }
        }
    }
    let groups = client.list_api_groups().await?;
    for group in groups.groups {
        let preferred = group.preferred_version.as_ref().map(|p| p.version.clone());
        for (i, gv) in group.versions.iter().enumerate() {
            let is_preferred = preferred.as_deref().map_or(i == 0, |p| p == gv.version);
            match client.list_api_group_resources(&gv.group_version).await {
                Ok(list) => add(&mut out, &group.name, &gv.version, is_preferred, list),
                Err(e) => {
                    out.failed.insert(gv.group_version.clone(), e.to_string());
                }
            }
        }
    }
    Ok(out)
}

fn add(
    out: &mut Discovered,
    group: &str,
    version: &str,
    preferred: bool,
    list: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
) {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    for r in list.resources {
        if r.name.contains('/') {
            continue; // a subresource
        }
        out.resources.push(ServedResource {
            api_resource: ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version: api_version.clone(),
                kind: r.kind,
                plural: r.name,
            },
            namespaced: r.namespaced,
            verbs: r.verbs,
            preferred,
        });
    }
}
