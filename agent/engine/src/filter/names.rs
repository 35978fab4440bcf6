//! Group names (`user`, `ip4`, `mlfid`…) interned once for the life of the
//! process: failures carry them as `&'static str`, without counting
//! references on every line. The set is bounded by the distinct names of
//! the filters loaded.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// The one `&'static str` for `name`.
pub fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(n) = set.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_copy_per_name() {
        let a = super::intern("user");
        let b = super::intern(&String::from("user"));
        assert!(std::ptr::eq(a, b));
    }
}
