//! Allowlists: networks never banned, fleet-wide or for one agent group.
//! They are the `allowlist` and `group_allowlist` keys of the correlation
//! rules stored in the database, edited here and stored back through the
//! service, so correlation and every replica use them at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Source};
use super::policies::policy_error;
use super::ApiState;
use crate::auth::Scope;

/// Every allowlist.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllowlistsView {
    /// Never banned anywhere.
    pub global: Vec<String>,
    /// Never banned for the agents of each group.
    pub groups: GroupLists,
    /// The policy version this server runs with.
    pub policy_version: u64,
}

/// One entry to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowlistEntry {
    /// An address or a CIDR prefix.
    pub network: String,
    /// An agent group; absent: fleet-wide.
    pub group: Option<String>,
}

/// One entry to remove.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllowlistTarget {
    /// The address or prefix, as added.
    pub network: String,
    /// An agent group; absent: the fleet-wide list.
    pub group: Option<String>,
}

/// Why the rules could not be edited.
#[derive(Debug, PartialEq, Eq)]
pub enum EditError {
    /// The request is wrong (bad network or group): 400.
    Bad(String),
    /// Already listed: 409.
    Present(String),
    /// Not listed: 404.
    Absent(String),
    /// The stored rules are not a TOML table with list-shaped allowlists.
    Stored(String),
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::Bad(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m),
            EditError::Present(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            EditError::Absent(m) => ApiError::not_found(m),
            EditError::Stored(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        }
    }
}

fn network(text: &str) -> Result<IpNet, EditError> {
    fleetban_proto::parse_target(text.trim()).map_err(|_| {
        EditError::Bad(format!(
            "network {text:?}: expected an IP address or a CIDR prefix (such as 192.0.2.1 or 10.0.0.0/8)"
        ))
    })
}

fn group_name(g: &str) -> Result<(), EditError> {
    let ok = !g.is_empty()
        && g.len() <= 64
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(EditError::Bad(format!(
            "group {g:?}: expected 1 to 64 characters among letters, digits, '-', '_' and '.'"
        )))
    }
}

fn parse(text: &str) -> Result<toml::Table, EditError> {
    toml::from_str(text).map_err(|e| EditError::Stored(format!("stored rules: {e}")))
}

fn strings(v: Option<&toml::Value>, key: &str) -> Result<Vec<String>, EditError> {
    match v {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_owned).ok_or_else(|| {
                    EditError::Stored(format!("stored rules: {key} is not a list of strings"))
                })
            })
            .collect(),
        Some(_) => Err(EditError::Stored(format!(
            "stored rules: {key} is not a list"
        ))),
    }
}

/// Allowlists per agent group.
pub type GroupLists = BTreeMap<String, Vec<String>>;

/// The allowlists of stored rules (pure, for tests).
pub fn read(text: &str) -> Result<(Vec<String>, GroupLists), EditError> {
    let table = parse(text)?;
    let policy = table.get("policy").and_then(toml::Value::as_table);
    let global = strings(policy.and_then(|p| p.get("allowlist")), "policy.allowlist")?;
    let mut groups = BTreeMap::new();
    if let Some(g) = policy.and_then(|p| p.get("group_allowlist")) {
        let g = g.as_table().ok_or_else(|| {
            EditError::Stored("stored rules: policy.group_allowlist is not a table".into())
        })?;
        for (name, list) in g {
            groups.insert(
                name.clone(),
                strings(Some(list), &format!("policy.group_allowlist.{name}"))?,
            );
        }
    }
    Ok((global, groups))
}

/// Adds (`add`) or removes one entry of stored rules and returns the new
/// rules text (pure, for tests). Entries compare as networks, so
/// `192.0.2.1` and `192.0.2.1/32` are the same.
pub fn edit(
    text: &str,
    network_text: &str,
    group: Option<&str>,
    add: bool,
) -> Result<String, EditError> {
    let net = network(network_text)?;
    if let Some(g) = group {
        group_name(g)?;
    }
    let mut table = parse(text)?;
    let policy = table
        .entry("policy")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| EditError::Stored("stored rules: policy is not a table".into()))?;
    let (key, list) = match group {
        None => ("policy.allowlist".to_owned(), policy.entry("allowlist")),
        Some(g) => {
            let groups = policy
                .entry("group_allowlist")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    EditError::Stored("stored rules: policy.group_allowlist is not a table".into())
                })?;
            (format!("policy.group_allowlist.{g}"), groups.entry(g))
        }
    };
    let list = list
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| EditError::Stored(format!("stored rules: {key} is not a list")))?;
    let at = list.iter().position(|v| {
        v.as_str()
            .and_then(|s| fleetban_proto::parse_target(s).ok())
            .is_some_and(|n| n == net)
    });
    let whose = group.map_or("the fleet-wide allowlist".to_owned(), |g| {
        format!("the allowlist of group {g:?}")
    });
    match (at, add) {
        (Some(_), true) => return Err(EditError::Present(format!("{net} is already in {whose}"))),
        (None, false) => return Err(EditError::Absent(format!("{net} is not in {whose}"))),
        (None, true) => list.push(toml::Value::String(net.to_string())),
        (Some(i), false) => {
            list.remove(i);
        }
    }
    if let Some(g) = group {
        let empty = policy
            .get("group_allowlist")
            .and_then(|t| t.get(g))
            .and_then(toml::Value::as_array)
            .is_some_and(Vec::is_empty);
        if empty {
            if let Some(t) = policy
                .get_mut("group_allowlist")
                .and_then(toml::Value::as_table_mut)
            {
                t.remove(g);
            }
        }
    }
    toml::to_string(&table).map_err(|e| EditError::Stored(format!("cannot write the rules: {e}")))
}

async fn view(state: &ApiState) -> ApiResult<AllowlistsView> {
    let text = state.service.fleet_rules().await?;
    let (global, groups) = read(&text)?;
    Ok(AllowlistsView {
        global,
        groups,
        policy_version: state.service.policy_version(),
    })
}

/// Every allowlist (needs `policies:read`).
#[utoipa::path(get, path = "/api/v1/allowlists", tag = "policies", security(("bearer" = [])),
    responses((status = 200, body = AllowlistsView), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<ApiState>>,
    auth: Auth,
) -> ApiResult<Json<AllowlistsView>> {
    auth.require(Scope::PoliciesRead)?;
    Ok(Json(view(&state).await?))
}

async fn change(
    state: &ApiState,
    actor: &str,
    source: Option<std::net::IpAddr>,
    network_text: &str,
    group: Option<&str>,
    add: bool,
) -> ApiResult<AllowlistsView> {
    let text = state.service.fleet_rules().await?;
    let new = edit(&text, network_text, group, add)?;
    let version = state
        .service
        .set_fleet_rules(&new, actor)
        .await
        .map_err(policy_error)?;
    let net = network(network_text)?;
    state
        .accounts
        .audit(
            actor,
            if add {
                "allowlist.add"
            } else {
                "allowlist.remove"
            },
            &net.to_string(),
            serde_json::json!({ "group": group, "version": version }),
            source,
        )
        .await;
    view(state).await
}

/// Add a network to the fleet-wide allowlist or a group's; correlation and
/// every replica use it at once (needs `policies:write`). Already-active
/// bans are not revoked by it.
#[utoipa::path(post, path = "/api/v1/allowlists", tag = "policies", security(("bearer" = [])),
    request_body = AllowlistEntry,
    responses((status = 201, body = AllowlistsView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiJson(req): ApiJson<AllowlistEntry>,
) -> ApiResult<(StatusCode, Json<AllowlistsView>)> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let v = change(
        &state,
        &actor,
        source,
        &req.network,
        req.group.as_deref(),
        true,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Remove a network from the fleet-wide allowlist or a group's (needs
/// `policies:write`).
#[utoipa::path(delete, path = "/api/v1/allowlists", tag = "policies", security(("bearer" = [])),
    params(AllowlistTarget),
    responses((status = 200, body = AllowlistsView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn remove(
    State(state): State<Arc<ApiState>>,
    Source(source): Source,
    auth: Auth,
    ApiQuery(q): ApiQuery<AllowlistTarget>,
) -> ApiResult<Json<AllowlistsView>> {
    let actor = auth.require(Scope::PoliciesWrite)?.actor();
    let v = change(
        &state,
        &actor,
        source,
        &q.network,
        q.group.as_deref(),
        false,
    )
    .await?;
    Ok(Json(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_once_and_removed() {
        let t = edit("", "10.0.0.0/8", None, true).expect("add");
        let t = edit(&t, "192.0.2.1", Some("office"), true).expect("add to group");
        let (g, groups) = read(&t).expect("read");
        assert_eq!(g, vec!["10.0.0.0/8"]);
        assert_eq!(groups["office"], vec!["192.0.2.1/32"]);
        assert!(matches!(
            edit(&t, "192.0.2.1/32", Some("office"), true),
            Err(EditError::Present(_))
        ));
        let t = edit(&t, "192.0.2.1/32", Some("office"), false).expect("remove");
        assert!(read(&t).expect("read").1.is_empty());
        assert!(matches!(
            edit(&t, "10.0.0.1", None, false),
            Err(EditError::Absent(_))
        ));
    }

    #[test]
    fn other_rules_are_kept_and_bad_input_refused() {
        let rules = "[policy]\ngroup_scope = true\n[policy.threshold]\nhosts = 2\nwindow = \"10m\"\nbantime = \"1h\"\n";
        let t = edit(rules, "2001:db8::/32", None, true).expect("add");
        assert!(crate::policy_config::parse_rules(&t).is_ok(), "{t}");
        assert!(
            t.contains("group_scope = true") && t.contains("hosts = 2"),
            "{t}"
        );
        assert!(matches!(
            edit(rules, "10.0.0.0/33", None, true),
            Err(EditError::Bad(_))
        ));
        assert!(matches!(
            edit(rules, "10.0.0.0/8", Some("a b"), true),
            Err(EditError::Bad(_))
        ));
    }
}
