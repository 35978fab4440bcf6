//! Policies kept in the database: the fleet's correlation rules (a
//! `[policy]` TOML section) and the jail rules pushed to agents. Every
//! change is checked by the service first; one it refuses is a 422 naming
//! what is wrong, and nothing is stored.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use fleetban_policy::JailRule;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, Auth, Source};
use super::ApiState;
use crate::auth::Scope;
use crate::service::ServiceError;

/// A policy the service refused: 422 with its reason.
pub fn policy_error(e: ServiceError) -> ApiError {
    match e {
        ServiceError::Invalid(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", m)
        }
        e => e.into(),
    }
}

/// The correlation rules.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesView {
    /// The `[policy]` section as stored (TOML).
    pub rules: String,
    /// The same, as JSON (tables become objects).
    #[schema(value_type = Object)]
    pub structured: serde_json::Value,
    /// The policy version this server runs with.
    pub policy_version: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRules {
    /// A `[policy]` section in TOML: `allowlist`, `group_allowlist`,
    /// `shared_jails`, `group_scope`, `[policy.threshold]`,
    /// `[policy.recidive]`, `[policy.subnet]`, `widest_v4`, `widest_v6`.
    pub rules: String,
}

/// Largest rules text accepted, in bytes.
pub const MAX_RULES: usize = 64 * 1024;

pub(super) fn rules_view(text: String, version: u64) -> RulesView {
    let structured = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    RulesView {
        rules: text,
        structured,
        policy_version: version,
    }
}

/// The fleet's correlation rules (needs `policies:read`).
#[utoipa::path(get, path = "/api/v1/policies/rules", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = RulesView), (status = 403, body = ErrorBody)))]
pub async fn get_rules(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<RulesView>> {
    auth.require(Scope::PoliciesRead)?;
    let text = state.service.fleet_rules().await?;
    Ok(Json(rules_view(text, state.service.policy_version())))
}

/// Replace the correlation rules; every replica runs them from its next
/// correlation on (needs `policies:write`). Rules that do not parse or
/// check are refused with 422 naming the key and line.
#[utoipa::path(put, path = "/api/v1/policies/rules", tag = "policies", security(("bearer" = [])),
    request_body = PutRules,
    responses((status = 200, body = RulesView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_rules(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<PutRules>,
) -> ApiResult<Json<RulesView>> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    if req.rules.contains('\0') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            "the rules hold a NUL character",
        ));
    }
    if req.rules.len() > MAX_RULES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            format!("the rules are longer than {MAX_RULES} bytes"),
        ));
    }
    let version = state
        .service
        .set_fleet_rules(&req.rules, &actor)
        .await
        .map_err(policy_error)?;
    state
        .accounts
        .audit(
            &actor,
            "policy.rules.set",
            "rules",
            serde_json::json!({ "version": version }),
            source,
        )
        .await;
    Ok(Json(rules_view(req.rules, version)))
}

/// One jail's settings for one agent group.
#[derive(Debug, Serialize, ToSchema)]
pub struct JailRuleView {
    /// An agent group, or `*` for every agent.
    pub group: String,
    pub jail: String,
    pub enabled: bool,
    /// Absent: the agent's own setting.
    pub maxretry: Option<u32>,
    /// A duration such as `10m`; absent: the agent's own setting.
    pub findtime: Option<String>,
    pub bantime: Option<String>,
}

fn duration_text(d: chrono::Duration) -> String {
    d.to_std()
        .map(|s| humantime::format_duration(s).to_string())
        .unwrap_or_else(|_| format!("{}s", d.num_seconds()))
}

impl From<&JailRule> for JailRuleView {
    fn from(r: &JailRule) -> Self {
        JailRuleView {
            group: r.group.clone(),
            jail: r.jail.clone(),
            enabled: r.enabled,
            maxretry: r.maxretry,
            findtime: r.findtime.map(duration_text),
            bantime: r.bantime.map(duration_text),
        }
    }
}

/// Every jail rule (needs `policies:read`).
#[utoipa::path(get, path = "/api/v1/policies/jails", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = Vec<JailRuleView>), (status = 403, body = ErrorBody)))]
pub async fn list_jails(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<Vec<JailRuleView>>> {
    auth.require(Scope::PoliciesRead)?;
    let rules = state.service.jail_rules().await?;
    Ok(Json(rules.iter().map(JailRuleView::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutJail {
    /// Default: true. `false` stops the jail on the group's agents.
    pub enabled: Option<bool>,
    /// Failures within `findtime` that ban: 1 to 1000000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub maxretry: Option<u32>,
    /// `10m`, `1h`…; absent: the agent's own setting.
    pub findtime: Option<String>,
    pub bantime: Option<String>,
}

fn jail_duration(field: &str, text: Option<&str>) -> Result<Option<chrono::Duration>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    humantime::parse_duration(text.trim())
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                format!("{field} {text:?}: expected a duration such as 10m, 1h or 7d"),
            )
        })
}

/// Largest `maxretry` a jail rule may set.
pub const MAX_MAXRETRY: u32 = 1_000_000;

/// The jail rule a request asks for (pure, for tests); the service checks
/// names and ranges.
pub fn jail_rule(group: &str, jail: &str, req: &PutJail) -> Result<JailRule, ApiError> {
    if let Some(n) = req.maxretry.filter(|n| *n > MAX_MAXRETRY) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            format!("maxretry {n}: expected 1 to {MAX_MAXRETRY}"),
        ));
    }
    Ok(JailRule {
        group: group.to_owned(),
        jail: jail.to_owned(),
        enabled: req.enabled.unwrap_or(true),
        maxretry: req.maxretry,
        findtime: jail_duration("findtime", req.findtime.as_deref())?,
        bantime: jail_duration("bantime", req.bantime.as_deref())?,
    })
}

/// Create or replace a jail's settings for an agent group (`*`: every
/// agent); its agents get them at once (needs `policies:write`).
#[utoipa::path(put, path = "/api/v1/policies/jails/{group}/{jail}", tag = "policies", security(("bearer" = [])),
    params(("group" = String, Path, description = "an agent group, or `*`"), ("jail" = String, Path)),
    request_body = PutJail,
    responses((status = 200, body = JailRuleView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_jail(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path((group, jail)): Path<(String, String)>,
    ApiJson(req): ApiJson<PutJail>,
) -> ApiResult<Json<JailRuleView>> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let rule = jail_rule(&group, &jail, &req)?;
    let version = state
        .service
        .set_jail_rule(&rule, &actor)
        .await
        .map_err(policy_error)?;
    let view = JailRuleView::from(&rule);
    state
        .accounts
        .audit(
            &actor,
            "policy.jail.set",
            &format!("{group}/{jail}"),
            serde_json::json!({
                "enabled": view.enabled, "maxretry": view.maxretry,
                "findtime": view.findtime, "bantime": view.bantime, "version": version,
            }),
            source,
        )
        .await;
    Ok(Json(view))
}

/// Remove a jail rule: its agents go back to their own settings (needs
/// `policies:write`).
#[utoipa::path(delete, path = "/api/v1/policies/jails/{group}/{jail}", tag = "policies", security(("bearer" = [])),
    params(("group" = String, Path), ("jail" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_jail(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    Path((group, jail)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let named = |s: &str| s == fleetban_policy::jails::ALL_GROUPS || super::agents::plausible_id(s);
    if !named(&group) || !named(&jail) {
        return Err(ApiError::not_found(format!(
            "no jail rule for {jail:?} in group {group:?}"
        )));
    }
    let version = state
        .service
        .remove_jail_rule(&group, &jail, &actor)
        .await
        .map_err(policy_error)?;
    state
        .accounts
        .audit(
            &actor,
            "policy.jail.remove",
            &format!("{group}/{jail}"),
            serde_json::json!({ "version": version }),
            source,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_durations_parse_or_name_the_field() {
        let req = PutJail {
            enabled: None,
            maxretry: Some(3),
            findtime: Some("10m".into()),
            bantime: Some("soon".into()),
        };
        let e = jail_rule("web", "sshd", &req).expect_err("bad bantime");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("bantime \"soon\""), "{}", e.message);
        let ok = jail_rule(
            "web",
            "sshd",
            &PutJail {
                bantime: None,
                ..req
            },
        )
        .expect("rule");
        assert!(ok.enabled);
        assert_eq!(ok.findtime, Some(chrono::Duration::minutes(10)));
        assert_eq!(JailRuleView::from(&ok).findtime.as_deref(), Some("10m"));
    }
}
