//! Policies kept in the database: the fleet's correlation rules and the
//! jail rules pushed to agents. Every change is checked first, bumps the
//! policy version and reaches the other replicas through the store.

use std::sync::Arc;

use fleetban_policy::{jails, JailRule, Policy};
use tracing::{info, warn};

use super::{Service, ServiceError};
use crate::policy_config::parse_rules;
use crate::store::Store;

/// What the service holds of the policies.
pub(super) struct Policies {
    pub version: u64,
    pub rules: Arc<Policy>,
    pub jails: Arc<Vec<JailRule>>,
}

/// Reads the policies; stored rules that no longer parse are an error
/// naming the key.
pub(super) async fn load(store: &dyn Store) -> Result<Policies, ServiceError> {
    let version = store.policy_version().await?;
    let text = store.fleet_rules().await?.unwrap_or_default();
    let rules = parse_rules(&text).map_err(|e| ServiceError::Invalid(e.to_string()))?;
    let jails = store.jail_rules().await?;
    Ok(Policies {
        version,
        rules: Arc::new(rules),
        jails: Arc::new(jails),
    })
}

/// The jail settings an agent of one group runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPolicy {
    pub version: u64,
    pub jails: Vec<JailRule>,
}

impl Service {
    /// The policy version this process runs with.
    pub fn policy_version(&self) -> u64 {
        *self.policy_version.borrow()
    }

    /// Reads the policies again if the database holds a newer version.
    pub(super) async fn reload_policies(&self, at_least: u64) -> Result<(), ServiceError> {
        if at_least != 0 && at_least <= self.policy_version() {
            return Ok(());
        }
        let loaded = match load(self.store.as_ref()).await {
            Ok(l) => l,
            Err(ServiceError::Invalid(m)) => {
                warn!(error = %m, "stored policy is invalid; the previous one stays in force");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if loaded.version <= self.policy_version() {
            return Ok(());
        }
        let version = loaded.version;
        *self
            .policies
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
        info!(version, "policies reloaded");
        self.policy_version.send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
        Ok(())
    }

    /// The jail rules for an agent of `group`.
    pub fn jail_policy_for(&self, group: &str) -> JailPolicy {
        let all = self.jail_rules_cached();
        JailPolicy {
            version: self.policy_version(),
            jails: jails::for_group(&all, group).into_iter().cloned().collect(),
        }
    }

    /// Every jail rule, from the database.
    pub async fn jail_rules(&self) -> Result<Vec<JailRule>, ServiceError> {
        Ok(self.store.jail_rules().await?)
    }

    /// Creates or replaces a jail rule; agents of its group get it at once.
    pub async fn set_jail_rule(&self, rule: &JailRule, by: &str) -> Result<u64, ServiceError> {
        rule.check()
            .map_err(|e| ServiceError::Invalid(format!("jail rule: {e}")))?;
        let version = self.store.put_jail_rule(rule, by, self.clock.now()).await?;
        info!(group = %rule.group, jail = %rule.jail, enabled = rule.enabled, version, by, "jail rule set");
        self.reload_policies(version).await?;
        Ok(version)
    }

    /// Removes a jail rule: its agents go back to their own settings.
    pub async fn remove_jail_rule(
        &self,
        group: &str,
        jail: &str,
        by: &str,
    ) -> Result<u64, ServiceError> {
        let version = self
            .store
            .delete_jail_rule(group, jail, by, self.clock.now())
            .await?;
        info!(group, jail, version, by, "jail rule removed");
        self.reload_policies(version).await?;
        Ok(version)
    }

    /// The correlation rules as stored (TOML of a `[policy]` section).
    pub async fn fleet_rules(&self) -> Result<String, ServiceError> {
        Ok(self.store.fleet_rules().await?.unwrap_or_default())
    }

    /// Replaces the correlation rules after checking them; every replica
    /// runs them from its next correlation on.
    pub async fn set_fleet_rules(&self, text: &str, by: &str) -> Result<u64, ServiceError> {
        parse_rules(text).map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let version = self
            .store
            .set_fleet_rules(text, by, self.clock.now())
            .await?;
        info!(version, by, "correlation rules set");
        self.reload_policies(version).await?;
        Ok(version)
    }
}
