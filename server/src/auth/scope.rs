//! Roles of users, scopes of API tokens, and what each may do.

use std::fmt;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, including users, tokens, bouncer keys and the audit log.
    Admin,
    /// Reads everything but the audit log, bans and revokes, and edits
    /// policies, jails and allowlists.
    Operator,
    /// Reads decisions, events, agents, stats, policies and feeds.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role includes `scope`.
    pub fn grants(self, scope: Scope) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => !matches!(
                scope,
                Scope::AuditRead
                    | Scope::UsersWrite
                    | Scope::TokensWrite
                    | Scope::BouncersWrite
                    | Scope::AgentsWrite
            ),
            Role::Viewer => matches!(
                scope,
                Scope::DecisionsRead
                    | Scope::EventsRead
                    | Scope::AgentsRead
                    | Scope::StatsRead
                    | Scope::PoliciesRead
            ),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One permission. Endpoints name the scope they need; roles and API tokens
/// hold scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    DecisionsRead,
    DecisionsWrite,
    EventsRead,
    AgentsRead,
    /// Revoking agents and creating enrollment tokens.
    AgentsWrite,
    /// Correlation rules, jail rules, allowlists and feeds.
    PoliciesRead,
    PoliciesWrite,
    StatsRead,
    AuditRead,
    UsersWrite,
    TokensWrite,
    BouncersWrite,
}

impl Scope {
    pub const ALL: [Scope; 12] = [
        Scope::DecisionsRead,
        Scope::DecisionsWrite,
        Scope::EventsRead,
        Scope::AgentsRead,
        Scope::AgentsWrite,
        Scope::PoliciesRead,
        Scope::PoliciesWrite,
        Scope::StatsRead,
        Scope::AuditRead,
        Scope::UsersWrite,
        Scope::TokensWrite,
        Scope::BouncersWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::DecisionsRead => "decisions:read",
            Scope::DecisionsWrite => "decisions:write",
            Scope::EventsRead => "events:read",
            Scope::AgentsRead => "agents:read",
            Scope::AgentsWrite => "agents:write",
            Scope::PoliciesRead => "policies:read",
            Scope::PoliciesWrite => "policies:write",
            Scope::StatsRead => "stats:read",
            Scope::AuditRead => "audit:read",
            Scope::UsersWrite => "users:write",
            Scope::TokensWrite => "tokens:write",
            Scope::BouncersWrite => "bouncers:write",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether an API token may hold this scope. Managing users, tokens
    /// and bouncer keys takes a logged-in admin, never a token.
    pub fn grantable_to_tokens(self) -> bool {
        !matches!(
            self,
            Scope::UsersWrite | Scope::TokensWrite | Scope::BouncersWrite
        )
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who makes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User {
        id: i64,
        name: String,
        role: Role,
        session: uuid::Uuid,
    },
    Token {
        id: uuid::Uuid,
        name: String,
        scopes: Vec<Scope>,
    },
}

impl Principal {
    pub fn allows(&self, scope: Scope) -> bool {
        match self {
            Principal::User { role, .. } => role.grants(scope),
            Principal::Token { scopes, .. } => scopes.contains(&scope),
        }
    }

    /// How the audit log names them: `user:NAME` or `token:NAME`.
    pub fn actor(&self) -> String {
        match self {
            Principal::User { name, .. } => format!("user:{name}"),
            Principal::Token { name, .. } => format!("token:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Scope::parse("decisions:delete"), None);
    }

    #[test]
    fn roles_nest() {
        for s in Scope::ALL {
            assert!(Role::Admin.grants(s));
            if Role::Viewer.grants(s) {
                assert!(Role::Operator.grants(s), "{s}");
            }
        }
        assert!(!Role::Viewer.grants(Scope::DecisionsWrite));
        assert!(Role::Operator.grants(Scope::DecisionsWrite));
        assert!(!Role::Operator.grants(Scope::AuditRead));
        assert!(!Role::Operator.grants(Scope::UsersWrite));
        assert!(Role::Operator.grants(Scope::PoliciesWrite));
        assert!(!Role::Operator.grants(Scope::AgentsWrite));
        assert!(Role::Viewer.grants(Scope::PoliciesRead));
        assert!(!Role::Viewer.grants(Scope::PoliciesWrite));
    }
}
