//! The named group values of one failure (`user`, `ip4`, `mlfid`…). A
//! failure has a handful, so a small vector searched in order beats a map:
//! no tree nodes to allocate and free on every line.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups(Vec<(&'static str, String)>);

impl Groups {
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether `name` holds a non-empty value.
    pub fn truthy(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| !v.is_empty())
    }

    /// Sets `name`, replacing an earlier value.
    pub fn insert(&mut self, name: &'static str, value: String) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.swap_remove(i).1)
    }

    /// Takes every value of `other`, replacing earlier ones.
    pub fn extend(&mut self, other: Groups) {
        for (n, v) in other.0 {
            self.insert(n, v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every group by name, for tools that show them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }
}

impl FromIterator<(&'static str, String)> for Groups {
    fn from_iter<I: IntoIterator<Item = (&'static str, String)>>(iter: I) -> Self {
        let mut g = Groups::default();
        for (n, v) in iter {
            g.insert(n, v);
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::Groups;

    #[test]
    fn later_values_replace_earlier_ones() {
        let mut g: Groups = [("user", "a".to_owned()), ("ip4", "1.2.3.4".to_owned())]
            .into_iter()
            .collect();
        g.insert("user", "b".to_owned());
        let mut other = Groups::default();
        other.insert("ip4", "5.6.7.8".to_owned());
        other.insert("nofail", String::new());
        g.extend(other);
        assert_eq!(g.get("user").map(String::as_str), Some("b"));
        assert_eq!(g.get("ip4").map(String::as_str), Some("5.6.7.8"));
        assert!(!g.truthy("nofail") && g.get("nofail").is_some());
        assert_eq!(g.remove("user").as_deref(), Some("b"));
        assert!(g.get("user").is_none());
        assert_eq!(
            g.to_map().keys().cloned().collect::<Vec<_>>(),
            vec!["ip4".to_owned(), "nofail".to_owned()]
        );
    }
}
