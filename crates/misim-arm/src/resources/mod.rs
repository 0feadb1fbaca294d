//! The resources that are placed on hosts or hold data: VMs ([`vms`]) with their private addresses
//! ([`private_ip`]) and legacy extensions ([`extensions`]), scale sets ([`vmss`],
//! [`vmss_reconcile`]), App Service web apps ([`webapps`]) and key vaults ([`vault`]).

use std::collections::BTreeMap;

pub(crate) mod extensions;
pub(crate) mod private_ip;
pub(crate) mod vault;
pub(crate) mod vms;
pub(crate) mod vmss;
pub(crate) mod vmss_reconcile;
pub(crate) mod webapps;

/// What every create request (VM, scale set, web app) names: where the resource goes, what it is
/// called and its tags. Empty strings take defaults.
#[derive(Clone, Debug, Default)]
pub struct NewResource {
    /// Subscription GUID; empty: the default subscription.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Resource name.
    pub name: String,
    /// Location; empty: the group's location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}
