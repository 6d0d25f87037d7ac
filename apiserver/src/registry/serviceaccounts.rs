//! ServiceAccounts (`pkg/registry/core/serviceaccount`).

use super::{ResourceInfo, Scope, Strategy};

pub static INFO: ResourceInfo = ResourceInfo {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    short_names: &["sa"],
    categories: &[],
    scope: Scope::Namespaced,
    subresources: &[],
};

pub struct ServiceAccounts;

impl Strategy for ServiceAccounts {
    fn info(&self) -> &'static ResourceInfo {
        &INFO
    }
}
