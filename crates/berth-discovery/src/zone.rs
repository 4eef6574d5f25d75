//! The DNS view of the namespaces: what `berth-dns` serves, built from the store.
//!
//! As Route 53 does for Cloud Map (the CreateService and RegisterInstance pages):
//! - an A record set at `<service>.<namespace>` with every serving instance's
//!   `AWS_INSTANCE_IPV4`, when the service's DnsConfig has an A record;
//! - an SRV record set at `<service>.<namespace>` (name services `_web._tcp` for the
//!   RFC 2782 style) with priority 1, weight 1, the instance's `AWS_INSTANCE_PORT` and
//!   the target `<instance-id>.<service>.<namespace>`, which gets an A record of its own;
//! - MULTIVALUE answers up to eight serving records, WEIGHTED one at random; an
//!   instance marked UNHEALTHY (custom health) is left out, except that a WEIGHTED
//!   service whose instances are all unhealthy answers as if all were healthy (Cloud
//!   Map's RoutingPolicy documentation);
//! - TTLs as the DnsConfig says; the namespace's SOA TTL for negative answers.
//!
//! HTTP namespaces and services without DnsConfig have no DNS names.

use berth_dns::{Pick, Zone};

use crate::error::DiscoveryError;
use crate::ops::{Discovery, InstanceRec};

fn ttl32(t: u64) -> u32 {
    t.min(u32::MAX as u64) as u32
}

impl Discovery {
    /// The DNS zone of every private DNS namespace, as of now.
    pub fn zone(&self) -> Result<Zone, DiscoveryError> {
        let mut zone = Zone::new(self.store.revision() as u32);
        let namespaces = self.namespaces()?;
        let services = self.services()?;
        for ns in namespaces.iter().filter(|n| n.kind == "DNS_PRIVATE") {
            zone.add_namespace(&ns.name, ttl32(ns.soa_ttl.unwrap_or(0)));
            for s in services.iter().filter(|s| s.namespace_id == ns.id) {
                let Some(dns) = &s.dns_config else { continue };
                let fqdn = format!("{}.{}", s.name, ns.name);
                let pick = match dns.routing_policy.as_str() {
                    "WEIGHTED" => Pick::One,
                    _ => Pick::Multivalue,
                };
                let all = self.instances(&s.id)?;
                let serving: Vec<&InstanceRec> = all.iter().filter(|i| i.serves()).collect();
                let chosen: Vec<&InstanceRec> = if serving.is_empty() && pick == Pick::One {
                    all.iter().collect()
                } else {
                    serving
                };
                let a_ttl = dns.ttl("A");
                for i in chosen {
                    let ip = i
                        .attributes
                        .get("AWS_INSTANCE_IPV4")
                        .and_then(|ip| ip.parse().ok());
                    if let (Some(ttl), Some(ip)) = (a_ttl, ip) {
                        zone.add_a(&fqdn, ttl32(ttl), pick, ip);
                    }
                    let port = i
                        .attributes
                        .get("AWS_INSTANCE_PORT")
                        .and_then(|p| p.parse().ok());
                    if let (Some(ttl), Some(port), Some(ip)) = (dns.ttl("SRV"), port, ip) {
                        let target = format!("{}.{fqdn}", i.id);
                        if zone.add_srv(&fqdn, ttl32(ttl), pick, port, &target) {
                            zone.add_a(&target, ttl32(a_ttl.unwrap_or(ttl)), Pick::All, ip);
                        }
                    }
                }
            }
        }
        Ok(zone)
    }
}
