//! The resources that are placed on hosts or hold data: VMs ([`vms`]) with their private addresses
//! ([`private_ip`]) and legacy extensions ([`extensions`]), scale sets ([`vmss`],
//! [`vmss_reconcile`]), App Service web apps ([`webapps`]) and key vaults ([`vault`]).

pub(crate) mod extensions;
pub(crate) mod private_ip;
pub(crate) mod vault;
pub(crate) mod vms;
pub(crate) mod vmss;
pub(crate) mod vmss_reconcile;
pub(crate) mod webapps;
