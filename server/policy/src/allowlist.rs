//! Networks that are never banned: fleet-wide, and per agent group.

use std::collections::BTreeMap;

use ipnet::IpNet;

/// Allowlisted networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    pub global: Vec<IpNet>,
    /// Group name → networks allowlisted for that group's agents.
    pub groups: BTreeMap<String, Vec<IpNet>>,
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

impl Allowlist {
    /// The allowlisted network a ban of `target` would touch, for a ban
    /// scoped to `group` (`None`: the whole fleet, so every group's list
    /// counts). A ban that covers an allowlisted address would block it, so
    /// overlapping either way counts.
    pub fn blocking(&self, target: &IpNet, group: Option<&str>) -> Option<IpNet> {
        let global = self.global.iter();
        let groups: Box<dyn Iterator<Item = &IpNet>> = match group {
            Some(g) => Box::new(self.groups.get(g).into_iter().flatten()),
            None => Box::new(self.groups.values().flatten()),
        };
        global.chain(groups).find(|n| overlaps(n, target)).copied()
    }

    pub fn allows(&self, target: &IpNet, group: Option<&str>) -> bool {
        self.blocking(target, group).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn overlap_in_either_direction() {
        let mut a = Allowlist {
            global: vec![net("10.0.0.0/8")],
            ..Default::default()
        };
        a.groups.insert("web".into(), vec![net("192.0.2.5/32")]);
        assert!(a.allows(&net("10.1.2.3/32"), None));
        assert!(a.allows(&net("0.0.0.0/0"), None));
        assert!(!a.allows(&net("11.0.0.1/32"), None));
        // A group's list protects that group, and fleet-wide bans.
        assert!(a.allows(&net("192.0.2.0/24"), Some("web")));
        assert!(a.allows(&net("192.0.2.0/24"), None));
        assert!(!a.allows(&net("192.0.2.0/24"), Some("db")));
        assert_eq!(
            a.blocking(&net("192.0.2.5/32"), Some("web")),
            Some(net("192.0.2.5/32"))
        );
    }
}
