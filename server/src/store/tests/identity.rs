//! Identity in the store: the CA, tokens and enrollments, on both databases.

use std::sync::Arc;

use super::t;
use crate::store::{NewEnrollment, NewToken, Refusal, Store, StoreError, StoredCa};

fn token(id: &str, expires: i64, uses: u32) -> NewToken {
    NewToken {
        id: id.into(),
        secret_sha256: format!("hash-of-{id}"),
        group: Some("web".into()),
        expires_at: t(expires),
        max_uses: uses,
    }
}

fn enrollment(token: &str, agent: &str, cert: &str) -> NewEnrollment {
    NewEnrollment {
        token_sha256: format!("hash-of-{token}"),
        agent_id: agent.into(),
        hostname: format!("{agent}.example"),
        cert_sha256: cert.into(),
    }
}

fn refusal(r: Result<crate::store::Enrollment, StoreError>) -> Refusal {
    match r {
        Err(StoreError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub(crate) async fn one_certificate_authority(s: Arc<dyn Store>) {
    assert_eq!(s.certificate_authority().await.expect("read"), None);
    let first = StoredCa {
        cert_pem: "cert-1".into(),
        key_pem: "key-1".into(),
    };
    let second = StoredCa {
        cert_pem: "cert-2".into(),
        key_pem: "key-2".into(),
    };
    assert_eq!(
        s.init_certificate_authority(&first, t(0))
            .await
            .expect("init"),
        first
    );
    // A second replica starting later keeps the first CA.
    assert_eq!(
        s.init_certificate_authority(&second, t(1))
            .await
            .expect("init again"),
        first
    );
    assert_eq!(s.certificate_authority().await.expect("read"), Some(first));
}

pub(crate) async fn tokens_are_used_up_and_expire(s: Arc<dyn Store>) {
    s.create_token(&token("two", 100, 2), t(0))
        .await
        .expect("create");
    s.create_token(&token("old", 10, 5), t(0))
        .await
        .expect("create");
    assert!(matches!(
        s.create_token(&token("two", 100, 2), t(0)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let e = s
        .enroll(&enrollment("two", "a", "cert-a"), t(1))
        .await
        .expect("enroll a");
    assert_eq!(
        (e.agent_id.as_str(), e.group.as_deref(), e.token_id.as_str()),
        ("a", Some("web"), "two")
    );
    assert_eq!(e.revoked_at, None);
    s.enroll(&enrollment("two", "b", "cert-b"), t(2))
        .await
        .expect("enroll b");
    assert_eq!(
        refusal(s.enroll(&enrollment("two", "c", "cert-c"), t(3)).await),
        Refusal::UsedUpToken("two".into())
    );
    assert_eq!(
        refusal(s.enroll(&enrollment("old", "c", "cert-c"), t(10)).await),
        Refusal::ExpiredToken("old".into())
    );
    assert_eq!(
        refusal(s.enroll(&enrollment("nope", "c", "cert-c"), t(3)).await),
        Refusal::UnknownToken
    );
    assert_eq!(s.credential("cert-c").await.expect("lookup"), None);
    let tokens = s.tokens().await.expect("tokens");
    assert_eq!(
        tokens
            .iter()
            .map(|t| (t.id.as_str(), t.uses, t.max_uses, t.expires_at))
            .collect::<Vec<_>>(),
        vec![("old", 0, 5, t(10)), ("two", 2, 2, t(100))],
        "refusals use nothing"
    );
    assert_eq!(
        s.credential("cert-a")
            .await
            .expect("lookup")
            .map(|e| e.agent_id),
        Some("a".into())
    );
}

pub(crate) async fn revoked_agents_may_enroll_again(s: Arc<dyn Store>) {
    s.create_token(&token("many", 100, 10), t(0))
        .await
        .expect("create");
    s.enroll(&enrollment("many", "a", "cert-a1"), t(1))
        .await
        .expect("enroll");
    // Taking over an enrolled id is refused, and uses nothing.
    assert_eq!(
        refusal(s.enroll(&enrollment("many", "a", "cert-a2"), t(2)).await),
        Refusal::AlreadyEnrolled("a".into())
    );
    assert!(matches!(
        s.revoke_agent("ghost", t(3)).await,
        Err(StoreError::NotFound(_))
    ));
    let r = s.revoke_agent("a", t(3)).await.expect("revoke");
    assert_eq!(r.revoked_at, Some(t(3)));
    // Revoking again keeps the first time.
    let r = s.revoke_agent("a", t(4)).await.expect("revoke again");
    assert_eq!(r.revoked_at, Some(t(3)));
    assert_eq!(
        s.revoked_agents().await.expect("revoked"),
        vec!["a".to_string()]
    );
    assert!(s
        .credential("cert-a1")
        .await
        .expect("lookup")
        .expect("kept")
        .revoked_at
        .is_some());
    let e = s
        .enroll(&enrollment("many", "a", "cert-a2"), t(5))
        .await
        .expect("enroll again");
    assert_eq!(e.revoked_at, None);
    assert_eq!(s.credential("cert-a1").await.expect("lookup"), None);
    assert!(s.revoked_agents().await.expect("revoked").is_empty());
    // Eight uses are left of ten: one refusal used nothing.
    for i in 0..8 {
        s.enroll(
            &enrollment("many", &format!("n{i}"), &format!("c{i}")),
            t(6),
        )
        .await
        .expect("enroll");
    }
    assert_eq!(
        refusal(s.enroll(&enrollment("many", "z", "cz"), t(6)).await),
        Refusal::UsedUpToken("many".into())
    );
    let listed = s.enrollments().await.expect("enrollments");
    assert_eq!(listed.len(), 9);
    assert_eq!(listed[0].agent_id, "a");
    assert_eq!(listed[0].cert_sha256, "cert-a2");
    assert_eq!(listed[0].enrolled_at, t(5));
}

pub(crate) async fn revoked_tokens_enroll_no_more(s: Arc<dyn Store>) {
    s.create_token(&token("multi", 100, 5), t(0))
        .await
        .expect("create");
    s.enroll(&enrollment("multi", "a", "cert-a"), t(1))
        .await
        .expect("enroll a");
    let revoked = s.revoke_token("multi", t(2)).await.expect("revoke");
    assert_eq!((revoked.revoked_at, revoked.uses), (Some(t(2)), 1));
    let again = s.revoke_token("multi", t(3)).await.expect("revoke again");
    assert_eq!(again.revoked_at, Some(t(2)), "the first time is kept");
    assert_eq!(
        refusal(s.enroll(&enrollment("multi", "b", "cert-b"), t(4)).await),
        Refusal::RevokedToken("multi".into())
    );
    assert_eq!(s.credential("cert-b").await.expect("lookup"), None);
    let a = s.credential("cert-a").await.expect("lookup").expect("a");
    assert_eq!(a.revoked_at, None, "agents it enrolled stay enrolled");
    assert_eq!(s.tokens().await.expect("tokens")[0].uses, 1);
    assert!(matches!(
        s.revoke_token("nope", t(5)).await,
        Err(StoreError::NotFound(_))
    ));
}
